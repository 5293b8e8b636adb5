"""ICR attention reranker: scoring math on hand-built tensors, prompt spans, and end-to-end
scores recomputed from transformers' eager ``output_attentions`` on the tiny random model."""

from __future__ import annotations

import pytest
import torch

from rerank_plugins import registry
from rerank_plugins.rerankers.attention import (
    PROMPTS,
    AttentionReranker,
    calibrated_token_scores,
    document_scores,
    outlier_keep_mask,
    parse_layers,
)
from rerank_plugins.rerankers.windows import window_schedule

DOCS = [
    "Paris is the capital of France.",
    "The quick brown fox jumps over the lazy dog.",
    "Berlin is the capital of Germany.",
]
QUERY = "what is the capital of France?"

# ---------------------------------------------------------------------------- pure functions


def test_calibration_uses_means_so_lengths_compare():
    real = torch.tensor([[0.6, 0.2, 0.0], [0.2, 0.2, 0.4]])  # 2 query tokens
    cf = torch.tensor([[0.1, 0.1, 0.1], [0.3, 0.1, 0.1], [0.2, 0.1, 0.4]])  # 3 content-free tokens
    got = calibrated_token_scores(real, cf)
    torch.testing.assert_close(got, torch.tensor([0.4 - 0.2, 0.2 - 0.1, 0.2 - 0.2]))
    torch.testing.assert_close(calibrated_token_scores(real), torch.tensor([0.4, 0.2, 0.2]))
    with pytest.raises(ValueError, match="same positions"):
        calibrated_token_scores(real, torch.ones(1, 4))
    with pytest.raises(ValueError, match="non-empty"):
        calibrated_token_scores(torch.ones(0, 3))


def test_outlier_mask_drops_tokens_below_mean_minus_two_std():
    # document tokens at 1..10; position 0 (template) and 11 (query) are outside every span
    scores = torch.tensor([50.0, 1, 1, 1, 1, 1, 1, 1, 1, 1, -5.0, 50.0])
    spans = [(1, 6), (6, 11)]
    keep = outlier_keep_mask(scores, spans, 2.0)
    # over the 10 document tokens: mean 0.4, std 1.8 -> threshold -3.2: only -5 goes
    assert keep.tolist() == [False] + [True] * 9 + [False, False]
    assert outlier_keep_mask(scores, spans, None).tolist() == [False] + [True] * 10 + [False]
    assert document_scores(scores, spans, keep) == [5.0, 4.0]
    assert document_scores(scores, spans) == [5.0, -1.0]
    assert outlier_keep_mask(scores, [(3, 3)], 2.0).tolist() == [False] * 12


def test_window_schedule_and_layers():
    assert window_schedule(3, 5, 2) == [(0, 3)]
    assert window_schedule(7, 4, 2) == [(3, 7), (1, 5), (0, 4)]
    with pytest.raises(ValueError, match="stride"):
        window_schedule(7, 4, 5)
    assert parse_layers("-4:") == "-4:"
    assert parse_layers((0, 2)) == [0, 2]
    with pytest.raises(ValueError, match="slice"):
        parse_layers("1-3")


# ---------------------------------------------------------------------------- prompts and spans


@pytest.fixture(scope="module")
def reranker(tiny_model):
    return AttentionReranker(str(tiny_model))


def test_spans_cover_each_document_and_the_query(reranker):
    tok = reranker.core.tokenizer
    q = reranker.core.tokenize(QUERY)
    ids, spans, q_start = reranker._encode(q, DOCS)
    specials = {tok.convert_tokens_to_ids(t) for t in ("<|im_start|>", "<|im_end|>")}
    assert ids[0] in specials and ids[-1] not in {t for t in q}  # template head and tail around the user turn
    for (s, e), doc in zip(spans, DOCS, strict=True):
        assert tok.decode(ids[s:e]) == doc
        assert not specials & set(ids[s:e])
    assert tok.decode(ids[q_start : q_start + len(q)]) == QUERY
    assert tok.decode(ids[spans[-1][1] : q_start]) == "\n\n" + PROMPTS["retrieval"][1]
    assert tok.decode(ids[q_start + len(q) :]) == "<|im_end|>\n<|im_start|>assistant\n"
    assert spans == sorted(spans)


def test_reversed_order_and_truncation(tiny_model):
    r = AttentionReranker(str(tiny_model), order="reversed", doc_max_tokens=3, prompt="qa")
    tok = r.core.tokenizer
    before = r.core.stats.snapshot()["truncated_documents"]
    ids, spans, q_start = r._encode(r.core.tokenize(QUERY), DOCS)
    assert r.core.stats.snapshot()["truncated_documents"] - before == 3
    assert spans == sorted(spans, reverse=True)  # the first document sits nearest the query
    for (s, e), doc in zip(spans, DOCS, strict=True):
        assert e - s == 3
        assert ids[s:e] == r.core.tokenize(doc)[:3]
    assert tok.decode(ids[spans[0][1] : q_start]).endswith("Question: ")
    assert tok.decode(ids[spans[0][0] - 4 : spans[0][0]]).endswith("[3] ")


# ---------------------------------------------------------------------------- end to end


def eager_scores(folder, reranker: AttentionReranker, calibrate: bool) -> list[float]:
    """The ICR scores recomputed from full eager attention maps of the two whole prompts."""
    from transformers import AutoModelForCausalLM

    model = AutoModelForCausalLM.from_pretrained(folder, attn_implementation="eager", dtype=torch.float32)
    q = reranker.core.tokenize(QUERY)
    cf = reranker.core.tokenize("N/A")
    ids, spans, q0 = reranker._encode(q, DOCS)
    cf_ids = ids[:q0] + cf + ids[q0 + len(q) :]

    def rows(prompt: list[int], n: int) -> torch.Tensor:
        with torch.no_grad():
            att = model(torch.tensor([prompt]), output_attentions=True).attentions
        return sum(a[0, :, q0 : q0 + n, :q0].sum(0) for a in att)

    real = rows(ids, len(q)).mean(0)
    token = real - rows(cf_ids, len(cf)).mean(0) if calibrate else real
    flat = torch.cat([token[s:e] for s, e in spans])
    threshold = flat.mean() - 2 * flat.std(unbiased=False)
    return [float(torch.where(token[s:e] >= threshold, token[s:e], 0).sum()) for s, e in spans]


@pytest.mark.parametrize("calibrate", [True, False])
def test_scores_equal_eager_recomputation(tiny_model, calibrate):
    r = AttentionReranker(str(tiny_model), calibrate=calibrate, attn_implementation="sdpa")
    got = r.score(QUERY, DOCS)
    want = eager_scores(tiny_model, r, calibrate)
    assert got == pytest.approx(want, abs=1e-5)
    assert r.rerank_with_stats(QUERY, DOCS)[1]["windows"] == 1.0
    assert [h.index for h in r.rerank(QUERY, DOCS)] == sorted(range(3), key=lambda i: -want[i])


def test_calibration_costs_only_the_query_tokens(reranker):
    before = reranker.core.stats.snapshot()
    reranker.score(QUERY, DOCS)
    after = reranker.core.stats.snapshot()
    q, cf = reranker.core.tokenize(QUERY), reranker.core.tokenize("N/A")
    ids, _, q0 = reranker._encode(q, DOCS)
    tail = len(ids) - q0 - len(q)
    assert after["forward_passes"] - before["forward_passes"] == 3
    assert after["prompt_tokens"] - before["prompt_tokens"] == len(ids) + len(cf) + tail


def test_layer_subset_matches_a_manual_sum(tiny_model):
    full = AttentionReranker(str(tiny_model), layers="1:", outlier_std=None)
    first = AttentionReranker(str(tiny_model), layers=[0], outlier_std=None)
    both = AttentionReranker(str(tiny_model), outlier_std=None)
    a, b, c = (x.score(QUERY, DOCS) for x in (full, first, both))
    assert [x + y for x, y in zip(a, b, strict=True)] == pytest.approx(c, abs=1e-5)


def test_sliding_windows(tiny_model):
    docs = DOCS + ["Rome is the capital of Italy.", "yes no", "the a an of in on"]
    r = AttentionReranker(str(tiny_model), window=3, stride=2)
    scores = r.score(QUERY, docs)
    assert r.rerank_with_stats(QUERY, docs)[1]["windows"] == 3.0  # (3, 6), (1, 4), (0, 3)
    hits = r.rerank(QUERY, docs)
    assert sorted(h.index for h in hits) == list(range(6))
    # the last window's three documents rank above the three finalised earlier
    bound = 2 * 4 * 2 + 1  # heads * layers of the tiny model
    top = [h.score for h in hits[:3]]
    assert all(-bound / 2 < s < bound / 2 for s in top)
    assert all(s < -bound / 2 for s in (h.score for h in hits[3:]))
    # one window holding everything is the plain single-prompt score
    assert AttentionReranker(str(tiny_model), window=6).score(QUERY, docs) == pytest.approx(
        AttentionReranker(str(tiny_model)).score(QUERY, docs), abs=1e-6
    )
    assert len(scores) == 6


def test_auto_window_when_the_list_does_not_fit(tiny_model):
    r = AttentionReranker(str(tiny_model))
    r.core.max_length, saved = 160, r.core.max_length
    try:
        hits, stats = r.rerank_with_stats(QUERY, DOCS * 3)
        assert stats["windows"] > 1
        assert sorted(h.index for h in hits) == list(range(9))
    finally:
        r.core.max_length = saved


def test_registered_and_validates_arguments(tiny_model):
    assert isinstance(registry.create("attention", model=str(tiny_model)), AttentionReranker)
    for kwargs, match in [
        ({"prompt": "chat"}, "prompt"),
        ({"order": "random"}, "order"),
        ({"doc_max_tokens": 0}, "doc_max_tokens"),
        ({"calibrate": "yes"}, "calibrate"),
        ({"outlier_std": -1}, "outlier_std"),
        ({"window": 2, "stride": 3}, "stride"),
        ({"layers": "5:"}, "selects no layer"),
        ({"layers": [9]}, "out of range"),
        ({"content_free_query": " "}, "content_free_query"),
    ]:
        with pytest.raises(ValueError, match=match):
            AttentionReranker(str(tiny_model), **kwargs)
    d = AttentionReranker(str(tiny_model), layers="0:1").describe()
    assert d["name"] == "attention" and d["layers"] == "0:1" and d["calibrate"] is True
