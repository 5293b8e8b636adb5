"""The query-rows attention capture against transformers' eager ``output_attentions``.

Every model here is a tiny random model built in-process. The capture runs under SDPA (or
the architecture's default kernel) and must give the eager attention probabilities of the
suffix rows, summed over heads and layers, to float tolerance: sliding-window layers whose
window is shorter than the prompt, Gemma 2 logit soft-capping, Qwen3 q/k norms and grouped KV
heads included.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest
import torch

from rerank_plugins.scoring import get_core
from rerank_plugins.scoring.attention import (
    CAPTURE_IMPLEMENTATION,
    attention_to_spans,
    check_supported,
    resolve_layers,
    span_sums,
)
from rerank_plugins.testing import tiny_model_dir

TEXT = "Query: what is the capital of France? Document: Paris is the capital of France. the a an of in on"
PREFIX = 17  # the window of 6 below is shorter than this prefix: sliding caches get trimmed

# arch -> config overrides (window 6 < prompt length exercises sliding-window caches and masks)
ARCHS: dict[str, dict] = {
    "llama": {},
    "qwen2": dict(use_sliding_window=True, sliding_window=6, max_window_layers=1, layer_types=None),
    "mistral": dict(sliding_window=6),
    "qwen3": {},
    "gemma": {},
    "gemma2": dict(sliding_window=6, attn_logit_softcapping=5.0, query_pre_attn_scalar=24),
    "gemma3_text": dict(
        sliding_window=6,
        layer_types=["sliding_attention", "full_attention", "sliding_attention"],
        query_pre_attn_scalar=24,
    ),
}


def build_model(arch: str, root: Path, **overrides) -> Path:
    """A 3-layer random model of ``arch`` sharing the tiny test tokenizer."""
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    src = tiny_model_dir("llama")
    out = root / arch
    if (out / "config.json").exists():  # built earlier in this session with the same settings
        return out
    out.mkdir()
    for f in src.iterdir():
        if f.name.startswith(("tokenizer", "special_tokens")) or f.suffix == ".jinja":
            shutil.copy(f, out / f.name)
    tok = AutoTokenizer.from_pretrained(out)
    kwargs = dict(
        vocab_size=len(tok), hidden_size=64, intermediate_size=128, num_hidden_layers=3,
        num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=4096,
        tie_word_embeddings=True, pad_token_id=tok.pad_token_id, eos_token_id=tok.eos_token_id, bos_token_id=None,
    )
    kwargs.update(overrides)
    torch.manual_seed(0)
    model = AutoModelForCausalLM.from_config(AutoConfig.for_model(arch, **kwargs))
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)  # peaky attention, so a wrong row would show
    model.save_pretrained(out)
    return out


@pytest.fixture(scope="module")
def model_root(tmp_path_factory) -> Path:
    return tmp_path_factory.mktemp("attention-archs")


def eager_rows(folder: Path, ids: list[int], start: int) -> tuple[torch.Tensor, ...]:
    """Per layer, eager attention of positions ``start:`` summed over heads: [q, n]."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    with torch.no_grad():
        out = model(torch.tensor([ids]), output_attentions=True)
    return tuple(a[0, :, start:, :].sum(0) for a in out.attentions)


@pytest.mark.parametrize("arch", sorted(ARCHS))
def test_capture_equals_eager_attentions(arch, model_root):
    folder = build_model(arch, model_root, **ARCHS[arch])
    # Gemma 2's soft-capping has no SDPA path: it runs eager (transformers 5's default for it;
    # transformers 4 defaults to SDPA there, which drops the soft-capping from the prefix pass).
    core = get_core(folder, attn_implementation="eager" if arch == "gemma2" else "sdpa")
    kernel = core.model.config._attn_implementation
    ids = core.tokenize(TEXT)
    assert len(ids) > PREFIX + 3
    eager = eager_rows(folder, ids, PREFIX)
    suffix, short = ids[PREFIX:], ids[PREFIX : PREFIX + 3]
    for layers in (None, [0], [1], [0, 2]):
        rows, rows_short = core.suffix_attention(ids[:PREFIX], [suffix, short], layers=layers)
        picked = range(3) if layers is None else layers
        ref = sum(eager[i] for i in picked)
        assert rows.shape == (len(suffix), len(ids))
        torch.testing.assert_close(rows, ref, atol=2e-5, rtol=1e-4)
        # the second suffix ran on the restored prefix cache, not after the first suffix
        torch.testing.assert_close(rows_short, ref[:3, : PREFIX + 3], atol=2e-5, rtol=1e-4)
        # each row: one unit of probability per head and layer
        torch.testing.assert_close(rows.sum(-1), torch.full((len(suffix),), 4.0 * len(picked)))
    per_layer = core.suffix_attention(ids[:PREFIX], [suffix], layers=[2, 0], per_layer=True)[0]
    torch.testing.assert_close(per_layer, torch.stack([eager[0], eager[2]]), atol=2e-5, rtol=1e-4)
    assert core.model.config._attn_implementation == kernel != CAPTURE_IMPLEMENTATION


def test_sliding_window_rows_are_zero_outside_the_window(model_root):
    folder = build_model("mistral", model_root, sliding_window=6)
    core = get_core(folder, attn_implementation="sdpa")
    ids = core.tokenize(TEXT)
    rows = core.suffix_attention(ids[:PREFIX], [ids[PREFIX:]])[0]
    for i in range(rows.shape[0]):
        pos = PREFIX + i
        assert torch.all(rows[i, : pos - 5] == 0)  # window 6: positions pos-5 .. pos
        assert torch.all(rows[i, pos + 1 :] == 0)  # causal
        assert torch.all(rows[i, pos - 5 : pos + 1] > 0)


def test_attention_to_spans_matches_eager(tiny_model):
    core = get_core(tiny_model, attn_implementation="sdpa")
    ids = core.tokenize(TEXT)
    spans = [(0, 5), (5, 12), (12, 12), (3, 17)]
    got = attention_to_spans(core, ids, spans, (PREFIX, PREFIX + 4), layers=[1])
    ref = eager_rows(tiny_model, ids, PREFIX)[1][:4]
    want = torch.stack([ref[:, s:e].sum(-1) for s, e in spans], dim=-1)
    assert got.shape == (4, 4)
    torch.testing.assert_close(got, want, atol=2e-5, rtol=1e-4)
    assert torch.all(got[:, 2] == 0)


def test_counts_forward_passes_and_tokens(tiny_core):
    ids = tiny_core.tokenize(TEXT)
    before = tiny_core.stats.snapshot()
    tiny_core.suffix_attention(ids[:10], [ids[10:], ids[10:12]])
    after = tiny_core.stats.snapshot()
    assert after["forward_passes"] - before["forward_passes"] == 3
    assert after["prompt_tokens"] - before["prompt_tokens"] == len(ids) + 2


def test_bad_arguments(tiny_core):
    ids = tiny_core.tokenize(TEXT)
    with pytest.raises(ValueError, match="prefix"):
        tiny_core.suffix_attention([], [ids])
    with pytest.raises(ValueError, match="suffixes"):
        tiny_core.suffix_attention(ids, [[]])
    with pytest.raises(ValueError, match="out of range"):
        tiny_core.suffix_attention(ids[:5], [ids[5:]], layers=[7])
    with pytest.raises(ValueError, match="before the query span"):
        attention_to_spans(tiny_core, ids, [(0, 12)], (10, 12))
    with pytest.raises(ValueError, match="exceeds the model's context"):
        tiny_core.suffix_attention(ids * 200, [ids])


def test_unsupported_architecture_fails_clearly(model_root):
    folder = build_model("phi3", model_root, pad_token_id=None)
    core = get_core(folder)
    with pytest.raises(ValueError, match="does not support model type 'phi3'"):
        check_supported(core.model)
    with pytest.raises(ValueError, match="supported: gemma, gemma2"):
        core.suffix_attention([1, 2], [[3]])


def test_span_sums_and_layers_pure():
    rows = torch.arange(12, dtype=torch.float32).reshape(2, 6)
    assert span_sums(rows, [(0, 2), (2, 6), (4, 4)]).tolist() == [[1.0, 14.0, 0.0], [13.0, 38.0, 0.0]]
    assert span_sums(rows, []).shape == (2, 0)
    with pytest.raises(ValueError, match="outside"):
        span_sums(rows, [(3, 7)])
    assert resolve_layers(4, None) == [0, 1, 2, 3]
    assert resolve_layers(4, [-1, 0, 0]) == [0, 3]
    with pytest.raises(ValueError, match="at least one"):
        resolve_layers(4, [])
