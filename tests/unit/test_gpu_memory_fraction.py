"""gpu_memory_fraction: the cap that lets the reranker share a GPU with the generator LLM."""

from __future__ import annotations

import math

import pytest
import torch

from rerank_plugins.scoring import get_core, model


@pytest.mark.parametrize("bad", [0, 0.0, -0.25, 1.5, math.nan, math.inf, "0.5", True, [0.5]])
def test_bad_fractions_are_a_value_error_naming_the_argument(tiny_model, bad):
    with pytest.raises(ValueError, match="gpu_memory_fraction"):
        get_core(tiny_model, gpu_memory_fraction=bad)


def test_on_cpu_the_cap_is_accepted_and_changes_nothing(tiny_model, monkeypatch):
    calls: list[object] = []
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda *a: calls.append(a))
    capped = get_core(tiny_model, device="cpu", gpu_memory_fraction=0.5)
    assert capped is get_core(tiny_model, device="cpu")  # the cap is not part of the model's identity
    assert calls == []


@pytest.mark.parametrize("fraction", [0.3, 1, 1.0])
def test_on_cuda_the_cap_is_set_for_that_device_before_loading(monkeypatch, tmp_path, fraction):
    events: list[tuple[object, ...]] = []
    cuda = torch.device("cuda", 1)
    monkeypatch.setattr(model, "resolve_device", lambda device: cuda)
    monkeypatch.setattr(torch.cuda, "set_per_process_memory_fraction", lambda f, d: events.append(("cap", f, d)))
    monkeypatch.setattr(model, "_load_once", lambda key, load: events.append(("load",)) or "loaded")
    (tmp_path / "config.json").write_text("{}")
    assert model.load_model(tmp_path, gpu_memory_fraction=fraction) == "loaded"
    assert events == [("cap", fraction, cuda), ("load",)]
