"""``dtype="auto"`` on CPU: bf16 detection, resolution, and float32 scores from bf16 weights.

The detection is tested on injected flag sets (no dependence on this machine's CPU); the
bfloat16 tests load the tiny random models with ``dtype="bfloat16"`` explicitly.
"""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from rerank_plugins.rerankers.cross_encoder import CrossEncoderReranker
from rerank_plugins.rerankers.pointwise import PointwiseReranker
from rerank_plugins.retrieval import SentenceTransformerEmbedder, get_embedder
from rerank_plugins.scoring import cpu, get_core, load_model, resolve_dtype
from rerank_plugins.scoring import model as model_module
from rerank_plugins.scoring.cpu import CpuDtype, auto_cpu_dtype, choose_cpu_dtype
from rerank_plugins.scoring.model import load_cross_encoder, weights_dtype

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
        raising=False,  # torch before 2.5 has no torch.cpu.get_capabilities
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


# --------------------------------------------------------------------------- float32 scores from bf16 weights


@pytest.fixture(scope="module")
def bf16_core(tiny_model):
    return get_core(tiny_model, device="cpu", dtype="bfloat16")


def _bf16_representable(x: torch.Tensor) -> bool:
    return bool((x.to(torch.bfloat16).float() == x).all())


def test_next_token_logits_are_float32_dot_products_of_bf16_states(bf16_core) -> None:
    assert bf16_core.dtype == torch.bfloat16 and "dtype=torch.bfloat16" in repr(bf16_core)
    ids = bf16_core.tokenize("the quick brown fox jumps over the lazy dog")
    wanted = list(range(3, 40))
    got = bf16_core.next_token_logits([ids], wanted)
    assert got.dtype == torch.float32
    model = bf16_core.model
    with torch.inference_mode():
        hidden = model.get_decoder()(input_ids=torch.tensor([ids])).last_hidden_state[0, -1]
    head = model.get_output_embeddings().weight[wanted]
    expected = head.float() @ hidden.float()
    torch.testing.assert_close(got[0], expected, rtol=1e-5, atol=1e-5)
    # not rounded to bf16 on the way (37 random logits all on the bf16 grid would be a fluke)
    assert not _bf16_representable(got[0])


def test_suffix_attention_rows_are_float32_probabilities(bf16_core, tiny_model) -> None:
    ids = bf16_core.tokenize("Paris is the capital of France. Question: what is the capital of France?")
    prefix, suffix = ids[:8], ids[8:]
    rows = bf16_core.suffix_attention(prefix, [suffix])[0]
    assert rows.dtype == torch.float32 and rows.shape == (len(suffix), len(ids))
    n_heads = bf16_core.model.config.num_attention_heads
    n_layers = bf16_core.model.config.num_hidden_layers
    # each row is a sum of n_heads * n_layers softmax rows computed in float32
    torch.testing.assert_close(rows.sum(-1), torch.full((len(suffix),), float(n_heads * n_layers)), rtol=0, atol=1e-5)
    fp32 = get_core(tiny_model, device="cpu", dtype="float32").suffix_attention(prefix, [suffix])[0]
    # bf16 activations move each head's probabilities a little (under 0.02 on this tiny model)
    assert float((rows - fp32).abs().max()) < 0.02 * n_heads * n_layers


def test_captured_attention_scores_are_computed_in_float32() -> None:
    from types import SimpleNamespace

    from rerank_plugins.scoring import attention

    torch.manual_seed(0)
    # scores around +-20, where bf16 rounds to steps of 0.125 (up to 6% on exp(score))
    q = (torch.randn(1, 4, 3, 16) * 2).to(torch.bfloat16)
    k = (torch.randn(1, 2, 10, 16) * 2).to(torch.bfloat16)
    v = torch.randn(1, 2, 10, 16).to(torch.bfloat16)
    cap = attention._Capture({0: attention._LayerPlan(slot=0)}, n_slots=1, total=10, q_len=3, stop_after=None)
    attention._active.capture = cap
    try:
        out, _ = attention._capture_attention(SimpleNamespace(layer_idx=0), q, k, v, None, scaling=0.25)
    finally:
        attention._active.capture = None
    assert out.dtype == torch.bfloat16 and out.shape == (1, 3, 4, 16)
    kf = k.float().repeat_interleave(2, dim=1)
    scores = q.float() @ kf.transpose(2, 3) * 0.25
    causal = torch.arange(10)[None, :] <= torch.arange(7, 10)[:, None]
    expected = torch.softmax(scores.masked_fill(~causal, float("-inf")), dim=-1)[0].sum(0)
    assert cap.rows.dtype == torch.float32
    torch.testing.assert_close(cap.rows[0], expected, rtol=1e-5, atol=1e-6)


def test_pointwise_scores_are_float32_and_rank_like_float32(bf16_core, tiny_model) -> None:
    docs = [
        "Paris is the capital of France.",
        "Berlin is the capital of Germany.",
        "the quick brown fox jumps over the lazy dog",
        "bananas are yellow",
        "France is a country in Europe and Paris is its largest city.",
        "yes",
    ]
    query = "what is the capital of France?"
    bf16 = PointwiseReranker(bf16_core, calibrate=False)
    fp32 = PointwiseReranker(get_core(tiny_model, device="cpu", dtype="float32"), calibrate=False)
    assert bf16.describe()["dtype"] == "bfloat16" and fp32.describe()["dtype"] == "float32"
    s16 = np.array(bf16.score(query, docs))
    s32 = np.array(fp32.score(query, docs))
    assert len(set(s16.tolist())) == len(docs)  # no ties from bf16 rounding
    error = float(np.abs(s16 - s32).max())
    # Equal rankings are expected only where float32's gaps exceed the bf16 error; on this
    # tiny model every gap does (checked here, so the ranking check below is not luck).
    gaps = np.diff(np.sort(s32))
    assert gaps.min() > 2 * error, (gaps, error)
    assert np.argsort(-s16).tolist() == np.argsort(-s32).tolist()


# --------------------------------------------------------------------------- cross-encoder and embedder


def test_cross_encoder_in_bf16_keeps_a_float32_head(tiny_cross_encoder) -> None:
    ce = load_cross_encoder(tiny_cross_encoder, device="cpu", dtype="bfloat16")
    assert weights_dtype(ce) == torch.bfloat16
    if not hasattr(ce, "set_keep_in_fp32_modules"):
        # sentence-transformers before 6 cannot keep a module in float32: the scores stay bf16 (logged)
        assert model_module.keep_head_float32(ce) is None
        return
    assert ce.keep_in_fp32_modules == ["0.model.classifier"]
    assert ce[0].model.classifier.weight.dtype == torch.bfloat16  # storage unchanged
    pairs = [("capital of France", d) for d in ["Paris", "Berlin", "a fox", "Paris, France", "yes", "no"]]
    identity = torch.nn.Identity()
    s16 = ce.predict(pairs, activation_fn=identity, show_progress_bar=False)
    ref = load_cross_encoder(tiny_cross_encoder, device="cpu", dtype="float32")
    assert ref.keep_in_fp32_modules == []
    s32 = ref.predict(pairs, activation_fn=identity, show_progress_bar=False)
    np.testing.assert_allclose(s16, s32, atol=0.02)
    assert not _bf16_representable(torch.from_numpy(np.asarray(s16, dtype=np.float32)))
    r = CrossEncoderReranker(str(tiny_cross_encoder), device="cpu", dtype="bfloat16")
    assert weights_dtype(r.core.encoder) == torch.bfloat16 and r.describe()["dtype"] == "bfloat16"
    assert CrossEncoderReranker(str(tiny_cross_encoder), device="cpu", dtype="float32").describe()["dtype"] == "float32"


def test_cross_encoder_auto_follows_the_detection(tiny_cross_encoder, detected) -> None:
    detected(SAPPHIRE_RAPIDS)
    assert load_cross_encoder(tiny_cross_encoder, device="cpu") is load_cross_encoder(
        tiny_cross_encoder, device="cpu", dtype="bfloat16"
    )


def test_embedder_dtype(tiny_cross_encoder, detected) -> None:
    emb = SentenceTransformerEmbedder(str(tiny_cross_encoder), device="cpu", dtype="bfloat16")
    assert emb.dtype == "bfloat16" and "dtype='bfloat16'" in repr(emb)
    vectors = emb.embed_documents(["a cat", "a dog"])
    assert vectors.dtype == np.float32 and vectors.shape == (2, emb.dimension)
    detected(SAPPHIRE_RAPIDS)
    shared = get_embedder(str(tiny_cross_encoder), device="cpu")
    assert shared.dtype == "bfloat16"
    assert get_embedder(str(tiny_cross_encoder), device="cpu", dtype="bfloat16") is shared
    detected(SKYLAKE)
    assert get_embedder(str(tiny_cross_encoder), device="cpu").dtype == "float32"
