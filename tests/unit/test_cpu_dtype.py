"""``dtype="auto"`` on CPU: bf16 detection and resolution.

The detection is tested on injected flag sets (no dependence on this machine's CPU).
"""

from __future__ import annotations

import logging

import pytest
import torch

from rerank_plugins.scoring import cpu, load_model, resolve_dtype
from rerank_plugins.scoring import model as model_module
from rerank_plugins.scoring.cpu import CpuDtype, auto_cpu_dtype, choose_cpu_dtype

CPU = torch.device("cpu")
ZEN4 = {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512_bf16", "avx512_vnni"}
SAPPHIRE_RAPIDS = ZEN4 | {"amx_bf16", "amx_tile", "amx_int8"}
SKYLAKE = {"avx2", "avx512f", "avx512bw", "avx512vl", "avx512dq"}
GRAVITON3 = {"fp", "asimd", "bf16", "i8mm", "sve"}


# --------------------------------------------------------------------------- detection


@pytest.mark.parametrize(
    ("flags", "dtype", "reason"),
    [
        (SAPPHIRE_RAPIDS, torch.bfloat16, "bfloat16: the CPU has amx_bf16"),
        (ZEN4, torch.bfloat16, "bfloat16: the CPU has avx512_bf16"),
        ({"AVX512_BF16"}, torch.bfloat16, "bfloat16: the CPU has avx512_bf16"),
        (SKYLAKE, torch.float32, "float32: the CPU has none of amx_bf16, avx512_bf16"),
        (set(), torch.float32, "float32: the CPU has none of amx_bf16, avx512_bf16"),
        (GRAVITON3, torch.float32, "float32: ARM bf16 is not used by dtype='auto' (unmeasured)"),
    ],
)
def test_choose_cpu_dtype_on_injected_flags(flags, dtype, reason) -> None:
    assert choose_cpu_dtype(flags) == CpuDtype(dtype, reason)


def test_no_onednn_means_float32_whatever_the_flags() -> None:
    choice = choose_cpu_dtype(SAPPHIRE_RAPIDS, onednn=False)
    assert choice.dtype == torch.float32 and "oneDNN" in choice.reason


def test_proc_cpuinfo_flags_x86_and_arm(tmp_path) -> None:
    x86 = tmp_path / "x86"
    x86.write_text("processor\t: 0\nmodel name\t: AMD EPYC\nflags\t\t: fpu avx2 avx512_bf16\n\nprocessor\t: 1\n")
    arm = tmp_path / "arm"
    arm.write_text("processor\t: 0\nFeatures\t: fp asimd bf16 i8mm\nCPU implementer\t: 0x41\n")
    assert cpu._proc_flags(x86) == {"fpu", "avx2", "avx512_bf16"}
    assert cpu._proc_flags(arm) == {"fp", "asimd", "bf16", "i8mm"}
    assert cpu._proc_flags(tmp_path / "missing") == frozenset()
    assert cpu._proc_flags(tmp_path) == frozenset()  # a folder: unreadable, not a crash


def test_cpu_flags_prefer_torch_and_fall_back_to_proc_cpuinfo(monkeypatch) -> None:
    monkeypatch.setattr(
        torch.cpu,
        "get_capabilities",
        lambda: {"amx_bf16": True, "avx2": True, "avx512_bf16": False, "l2_cache_size": 1},
    )
    monkeypatch.setattr(cpu, "_proc_flags", lambda path="/proc/cpuinfo": frozenset({"from_proc"}))
    cpu.cpu_flags.cache_clear()
    try:
        assert cpu.cpu_flags() == {"amx_bf16", "avx2"}
        cpu.cpu_flags.cache_clear()
        monkeypatch.delattr(torch.cpu, "get_capabilities")
        assert cpu.cpu_flags() == {"from_proc"}
    finally:
        cpu.cpu_flags.cache_clear()


@pytest.fixture
def detected(monkeypatch):
    """Replace this machine's flags with injected ones (and forget the cached detection)."""

    def set_flags(flags: set[str]) -> None:
        monkeypatch.setattr(cpu, "cpu_flags", lambda: frozenset(flags))
        cpu._detected.cache_clear()

    monkeypatch.delenv(cpu.ENV_VAR, raising=False)
    yield set_flags
    cpu._detected.cache_clear()


def test_auto_cpu_dtype_detects_once_and_logs_once(detected, monkeypatch, caplog) -> None:
    calls = []
    detected(ZEN4)
    real = cpu.choose_cpu_dtype
    monkeypatch.setattr(cpu, "choose_cpu_dtype", lambda *a, **k: calls.append(1) or real(*a, **k))
    monkeypatch.setattr(cpu, "_logged", set())
    with caplog.at_level(logging.INFO, logger="rerank_plugins.scoring.cpu"):
        assert auto_cpu_dtype().dtype == torch.bfloat16
        assert auto_cpu_dtype().dtype == torch.bfloat16
    assert len(calls) == 1
    assert [r.getMessage() for r in caplog.records] == ["dtype='auto' on CPU: bfloat16: the CPU has avx512_bf16"]


@pytest.mark.parametrize(("value", "dtype"), [("float32", torch.float32), ("BFloat16", torch.bfloat16)])
def test_environment_variable_replaces_the_detection(detected, monkeypatch, value, dtype) -> None:
    detected(SKYLAKE if dtype == torch.bfloat16 else SAPPHIRE_RAPIDS)
    monkeypatch.setenv(cpu.ENV_VAR, value)
    assert auto_cpu_dtype() == CpuDtype(dtype, f"{value.lower()}: set by RERANK_CPU_DTYPE")
    monkeypatch.setenv(cpu.ENV_VAR, "auto")
    assert auto_cpu_dtype().dtype == (torch.float32 if dtype == torch.bfloat16 else torch.bfloat16)
    monkeypatch.setenv(cpu.ENV_VAR, "int8")
    with pytest.raises(ValueError, match="RERANK_CPU_DTYPE"):
        auto_cpu_dtype()


# --------------------------------------------------------------------------- resolution


def test_auto_on_cpu_follows_the_detection_and_explicit_dtype_wins(detected) -> None:
    detected(SAPPHIRE_RAPIDS)
    assert resolve_dtype(None, CPU) == torch.bfloat16
    assert resolve_dtype("auto", CPU) == torch.bfloat16
    assert resolve_dtype("float32", CPU) == torch.float32
    assert resolve_dtype(torch.float16, CPU) == torch.float16
    detected(ZEN4)
    assert resolve_dtype("auto", CPU) == torch.bfloat16
    detected(SKYLAKE)
    assert resolve_dtype("auto", CPU) == torch.float32
    assert resolve_dtype("bfloat16", CPU) == torch.bfloat16
    assert resolve_dtype(torch.bfloat16, CPU) == torch.bfloat16


def test_other_devices_do_not_ask_the_cpu(monkeypatch) -> None:
    def fail() -> CpuDtype:
        raise AssertionError("the CPU detection ran for a non-CPU device")

    monkeypatch.setattr(model_module, "auto_cpu_dtype", fail)
    assert resolve_dtype("auto", torch.device("cuda")) == torch.bfloat16
    assert resolve_dtype("auto", torch.device("mps")) == torch.float32


def test_auto_loads_the_detected_dtype_and_shares_the_explicit_instance(tiny_model, detected) -> None:
    detected(SAPPHIRE_RAPIDS)
    lm = load_model(tiny_model, device="cpu")
    assert lm.dtype == torch.bfloat16
    assert {p.dtype for p in lm.model.parameters()} == {torch.bfloat16}
    assert load_model(tiny_model, device="cpu", dtype="bfloat16") is lm
    detected(SKYLAKE)
    assert load_model(tiny_model, device="cpu").dtype == torch.float32
