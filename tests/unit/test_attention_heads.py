"""Per-head attention capture: chosen (layer, head) pairs against eager ``output_attentions``.

The tiny random models of test_attention_primitive (grouped KV heads, a sliding window shorter
than the prompt, Gemma 3's mixed layer types) run under SDPA; the capture must give each head's
eager attention probabilities for the suffix rows, and their sum over any chosen pairs.
"""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

from rerank_plugins.scoring import get_core
from rerank_plugins.scoring.attention import plan_capture, resolve_heads
from tests.unit.test_attention_primitive import ARCHS, PREFIX, TEXT, build_model


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("attention-heads")


def eager_heads(folder: Path, ids: list[int], start: int) -> torch.Tensor:
    """Eager attention of positions ``start:``, per layer and head: [layers, heads, q, n]."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    return torch.stack([a[0, :, start:, :] for a in out.attentions])


@pytest.mark.parametrize("arch", ["llama", "qwen2", "gemma3_text"])
def test_per_head_rows_equal_eager_heads(arch: str, model_root: Path) -> None:
    folder = build_model(arch, model_root, **ARCHS[arch])
    core = get_core(folder, attn_implementation="sdpa")
    ids = core.tokenize(TEXT)
    eager = eager_heads(folder, ids, PREFIX)  # [3, 4, q, n]
    suffix, short = ids[PREFIX:], ids[PREFIX : PREFIX + 3]

    every, every_short = core.suffix_attention(ids[:PREFIX], [suffix, short], per_head=True)
    assert every.shape == (3 * 4, len(suffix), len(ids))
    torch.testing.assert_close(every.view(3, 4, len(suffix), len(ids)), eager, atol=2e-5, rtol=1e-4)
    torch.testing.assert_close(every_short, eager.flatten(0, 1)[:, :3, : PREFIX + 3], atol=2e-5, rtol=1e-4)

    pairs = [(2, 1), (0, 3), (2, 0)]
    chosen = core.suffix_attention(ids[:PREFIX], [suffix], heads=pairs, per_head=True)[0]
    torch.testing.assert_close(chosen, torch.stack([eager[la, h] for la, h in pairs]), atol=2e-5, rtol=1e-4)
    summed = core.suffix_attention(ids[:PREFIX], [suffix], heads=pairs)[0]
    torch.testing.assert_close(summed, sum(eager[la, h] for la, h in pairs), atol=2e-5, rtol=1e-4)
    # one unit of probability per chosen head
    torch.testing.assert_close(summed.sum(-1), torch.full((len(suffix),), 3.0))

    per_layer_heads = core.suffix_attention(ids[:PREFIX], [suffix], layers=[1], per_head=True)[0]
    torch.testing.assert_close(per_layer_heads, eager[1], atol=2e-5, rtol=1e-4)


def test_all_heads_sum_is_the_layer_sum_bit_for_bit(tiny_core) -> None:
    """heads=None keeps the head-summed path: the result is exactly the per-layer slices' sum order."""
    ids = tiny_core.tokenize(TEXT)
    plain = tiny_core.suffix_attention(ids[:PREFIX], [ids[PREFIX:]])[0]
    again = tiny_core.suffix_attention(ids[:PREFIX], [ids[PREFIX:]], heads=None, per_head=False)[0]
    assert torch.equal(plain, again)
    # every pair named explicitly sums the same probabilities (in another order: float tolerance)
    n_layers, n_heads = tiny_core.attention_layout()
    pairs = [(la, h) for la in range(n_layers) for h in range(n_heads)]
    explicit = tiny_core.suffix_attention(ids[:PREFIX], [ids[PREFIX:]], heads=pairs)[0]
    torch.testing.assert_close(explicit, plain, atol=1e-6, rtol=1e-5)


def test_layers_above_the_highest_chosen_head_are_not_run(model_root: Path) -> None:
    folder = build_model("llama", model_root, **ARCHS["llama"])
    core = get_core(folder, attn_implementation="sdpa")
    ids = core.tokenize(TEXT)
    runs = [0, 0, 0]
    decoder = core.model.get_decoder().layers
    hooks = [layer.register_forward_pre_hook(lambda *_, k=k: runs.__setitem__(k, runs[k] + 1)) for k, layer in
             enumerate(decoder)]
    try:
        core.suffix_attention(ids[:PREFIX], [ids[PREFIX:], ids[PREFIX : PREFIX + 2]], heads=[(1, 2), (0, 0)])
    finally:
        for h in hooks:
            h.remove()
    # the prefix and both suffixes enter layers 0 and 1 (each stops inside layer 1); layer 2 never runs
    assert runs == [3, 3, 0]


def test_bad_head_choices(tiny_core) -> None:
    ids = tiny_core.tokenize(TEXT)
    n_layers, n_heads = tiny_core.attention_layout()
    before = tiny_core.stats.snapshot()["forward_passes"]
    for kwargs, message in [
        ({"heads": [(n_layers, 0)]}, "out of range"),
        ({"heads": [(0, n_heads)]}, "out of range"),
        ({"heads": [(0, 1), (0, 1)]}, "named twice"),
        ({"heads": []}, "at least one"),
        ({"heads": [(0, True)]}, "pairs of ints"),
        ({"heads": [(0, 1, 2)]}, r"\(layer, head\) pairs"),
        ({"heads": "0:1"}, "list of"),
        ({"heads": [(0, 1)], "layers": [0]}, "not both"),
        ({"heads": [(0, 1)], "per_layer": True}, "per_head"),
        ({"per_layer": True, "per_head": True}, "exclude each other"),
    ]:
        with pytest.raises(ValueError, match=message):
            tiny_core.suffix_attention(ids[:PREFIX], [ids[PREFIX:]], **kwargs)
    # refused before any forward pass
    assert tiny_core.stats.snapshot()["forward_passes"] == before


def test_plan_capture_pure() -> None:
    plan, n = plan_capture(3, 2, heads=[(2, 1), (0, 0), (2, 0)])
    assert n == 1 and sorted(plan) == [0, 2]
    assert (plan[2].slot, plan[2].heads, plan[2].slots) == (0, [0, 1], None)
    plan, n = plan_capture(3, 2, heads=[(2, 1), (0, 0), (2, 0)], per_head=True)
    assert n == 3 and (plan[2].heads, plan[2].slots, plan[0].slots) == ([1, 0], [0, 2], [1])
    plan, n = plan_capture(3, 2, layers=[-1, 0], per_head=True)
    assert n == 4 and (plan[0].slots, plan[2].slots, plan[2].heads) == ([0, 1], [2, 3], None)
    plan, n = plan_capture(3, 2)
    assert n == 1 and all(p.slot == 0 and p.heads is None for p in plan.values())
    assert resolve_heads(3, 2, [[1, 1]]) == [(1, 1)]
