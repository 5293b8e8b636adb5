"""A quality floor for every registered strategy: structure alone (test_contract.py) is passed by
a scorer with its sign flipped; this is not.

The judged set: six questions, each with one planted passage that answers it in the question's
own words and four planted off-topic passages, the answer at a different position in each
(first, last and between), so neither input order nor a position bias can pass.

The floor: in every query the answer scores strictly above every off-topic passage, i.e. ranks
first. Why this margin: a sign flip ranks the answer last in all six queries; a ranking
independent of relevance (shuffled scores, a constant score) puts the answer first with
probability 1/5 per query, (1/5)**6 = 6.4e-5 for all six. The floor is rank-based, not a score
gap, because the strategies' scores live on different scales (log-odds, window logits, win
counts, attention mass); ``-s`` prints each query's answer-over-best-distractor gap.

Every LLM strategy runs, with its defaults, on SmolLM2-135M-Instruct (RERANK_TEST_LLM) and on
Qwen2.5-Coder-0.5B-Instruct (RERANK_QUALITY_LLM). The set was written once and run once; the
(model, strategy) pairs that miss the floor are strict xfails carrying what was measured (fp32,
CPU), so a fix shows up as an XPASS failure and a regression of a passing pair as a failure.
Listwise and pairwise, which miss the judged floor on both models, and the cross-encoder, which
has only a tiny random model here, get the knowable floor instead: their exact ranking on a
tiny model, computed from plain prompts and forward passes without the strategy's code, which
a sign flip reverses. Identity must return the input order. ``test_the_floor_fails_*``
show the floor rejects a sign flip and a shuffle of a strategy that clears it.
"""

from __future__ import annotations

import random
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from rerank_plugins import registry
from rerank_plugins.types import Hit

from .strategies import names

OFF_TOPIC = [
    "The stock market closed higher on Tuesday after a volatile session.",
    "Basketball is played by two teams of five players on a court.",
    "The recipe calls for two cups of flour, one egg and a pinch of salt.",
    "Python lists can be sorted in place with the sort method.",
    "The train to Boston departs from platform nine every hour.",
    "Mount Everest is the highest mountain in the Himalayas.",
    "Jazz music grew up in New Orleans in the early twentieth century.",
    "The new phone has a larger battery and a faster processor.",
]


@dataclass(frozen=True)
class Judged:
    query: str
    documents: tuple[str, ...]
    relevant: int  # index of the answering passage


def _judged(query: str, answer: str, position: int, off_topic: Sequence[int]) -> Judged:
    docs = [OFF_TOPIC[i] for i in off_topic]
    docs.insert(position, answer)
    return Judged(query, tuple(docs), position)


JUDGED = [
    _judged("What is the capital of France?", "Paris is the capital of France.", 2, [0, 1, 2, 3]),
    _judged("How many legs does a spider have?", "A spider has eight legs.", 4, [4, 5, 6, 7]),
    _judged("What do bees make?", "Bees make honey from the nectar of flowers.", 0, [1, 3, 5, 7]),
    _judged("What color is the sky on a clear day?", "On a clear day the sky is blue.", 3, [0, 2, 4, 6]),
    _judged("Who wrote Romeo and Juliet?", "Romeo and Juliet was written by William Shakespeare.", 1, [2, 3, 6, 7]),
    _judged("At what temperature does water boil?", "Water boils at 100 degrees Celsius.", 4, [0, 1, 4, 5]),
]

LLM_STRATEGIES = sorted(set(names()) - {"identity", "cross-encoder"})
MODELS = {"smollm2": "RERANK_TEST_LLM", "qwen": "RERANK_QUALITY_LLM"}

# Measured misses, answer-over-best-distractor gaps per query in JUDGED order.
KNOWN_MISSES = {
    ("smollm2", "listwise"): "0/6 answers first (gaps -3.34 -3.38 -1.32 -2.52 -1.32 -4.38 uncalibrated, the "
    "default; calibrated -3.27 -4.15 -3.55 -2.13 -1.02 -4.24, the last passage ranked last in 5/6 queries)",
    ("smollm2", "pairwise"): "0/6 answers first (gaps -3.5 -1.5 -0.5 -4.0 -2.5 0.0 wins); in the first query "
    "P(first passage) is 0.44-0.54 for all 20 ordered pairs: the 135M model is at chance on PRP",
    ("smollm2", "pointwise"): "4/6 answers first (gaps -0.25 +0.23 -0.20 +0.42 +0.29 +0.18, calibrated; "
    "uncalibrated 3/6): the yes/no log-odds of the 135M model barely separate answers from off-topic text",
    ("qwen", "listwise"): "3/6 answers first (gaps +1.05 +1.22 -3.29 -3.26 -1.21 +1.23 uncalibrated, the default; "
    "calibrated +1.07 +1.08 -2.15 -3.13 -2.08 +1.09)",
    ("qwen", "pairwise"): "every score ties (gap 0.0 in 6/6): the two orders of each pair disagree (in the "
    "first query P(first passage) is 0.64-0.84 for all 20 ordered pairs), so the ties rule scores every pair "
    "0.5; aggregation='soft' would keep the signal",
}


def _cases() -> list[object]:
    cases = []
    for model in MODELS:
        for name in LLM_STRATEGIES:
            miss = KNOWN_MISSES.get((model, name))
            marks = [pytest.mark.xfail(strict=True, reason=f"measured: {miss}")] if miss else []
            cases.append(pytest.param(model, name, marks=marks, id=f"{model}-{name}"))
    return cases


def floor_violations(reranker: Any, judged: Sequence[Judged] = JUDGED) -> tuple[list[str], list[float]]:
    """Queries where the answer does not score strictly above every off-topic passage, and the
    per-query gap (answer score minus the best off-topic score)."""
    violations, gaps = [], []
    for j in judged:
        hits = reranker.rerank(j.query, list(j.documents))
        assert sorted(h.index for h in hits) == list(range(len(j.documents)))
        score = {h.index: h.score for h in hits}
        best_other = max(s for i, s in score.items() if i != j.relevant)
        gaps.append(score[j.relevant] - best_other)
        if not score[j.relevant] > best_other:
            violations.append(f"{j.query!r}: ranking {[h.index for h in hits]}, answer is {j.relevant}")
    return violations, gaps


class SignFlipped:
    """A strategy with its scores negated."""

    def __init__(self, inner: Any) -> None:
        self.inner = inner

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[Hit]:
        hits = [Hit(h.index, -h.score) for h in self.inner.rerank(query, documents)]
        return sorted(hits, key=lambda h: -h.score)[:top_k]


class Shuffled:
    """A strategy whose scores are dealt to the documents at random (fixed seed)."""

    def __init__(self, inner: Any, seed: int = 0) -> None:
        self.inner, self.rng = inner, random.Random(seed)

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[Hit]:
        scores = [h.score for h in self.inner.rerank(query, documents)]
        self.rng.shuffle(scores)
        return sorted((Hit(i, s) for i, s in enumerate(scores)), key=lambda h: -h.score)[:top_k]


_built: dict[tuple[str, str], Any] = {}


def _llm(name: str, model: Path) -> Any:
    if (str(model), name) not in _built:
        _built[str(model), name] = registry.create(name, model=str(model))
    return _built[str(model), name]


@pytest.fixture(scope="module")
def models(smollm2: Path, quality_llm: Path) -> dict[str, Path]:
    return {"smollm2": smollm2, "qwen": quality_llm}


@pytest.mark.parametrize(("model", "name"), _cases())
def test_every_llm_strategy_ranks_the_answer_first(models: dict[str, Path], model: str, name: str) -> None:
    violations, gaps = floor_violations(_llm(name, models[model]))
    print(f"{model} {name}: answer-over-best-distractor gaps {[round(g, 3) for g in gaps]}")
    assert violations == [], f"{name} misses the floor on {model} in {len(violations)}/6 queries: {violations}"


def test_the_floor_fails_a_sign_flip(smollm2: Path) -> None:
    inner = _llm("attention", smollm2)
    assert floor_violations(inner)[0] == []
    violations, gaps = floor_violations(SignFlipped(inner))
    assert len(violations) == len(JUDGED)  # the answer is last everywhere
    assert all(g < 0 for g in gaps)


def test_the_floor_fails_shuffled_scores(smollm2: Path) -> None:
    violations, _ = floor_violations(Shuffled(_llm("attention", smollm2)))
    assert violations  # a relevance-free ranking passes all six with probability 6.4e-5


def test_identity_keeps_the_input_order() -> None:
    r = registry.create("identity")
    for j in JUDGED:
        hits = r.rerank(j.query, list(j.documents))
        assert [h.index for h in hits] == list(range(len(j.documents)))


@pytest.fixture(scope="module")
def spread_cross_encoder(tiny_cross_encoder: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The tiny cross-encoder with its weights redrawn wider (std 0.2, as tiny_model_dir does):
    at BERT's init std of 0.02 its scores for these pairs agree to 1e-5, and after the sigmoid
    several tie exactly, so no order would be knowable."""
    import shutil

    import torch
    from transformers import AutoModelForSequenceClassification

    out = tmp_path_factory.mktemp("spread-ce")
    for f in tiny_cross_encoder.iterdir():
        if f.is_file() and not f.name.endswith((".safetensors", ".bin")):
            shutil.copy(f, out / f.name)
    model = AutoModelForSequenceClassification.from_pretrained(tiny_cross_encoder)
    torch.manual_seed(0)
    with torch.no_grad():
        for p in model.parameters():
            if p.dim() > 1:
                p.normal_(0.0, 0.2)
    model.save_pretrained(out)
    return out


def test_cross_encoder_matches_a_plain_forward_pass(spread_cross_encoder: Path) -> None:
    """Exact ranking from a tiny random cross-encoder, against transformers without
    sentence-transformers: the sequence-classification logit of each (query, passage) pair."""
    import torch
    from transformers import AutoModelForSequenceClassification, AutoTokenizer

    tok = AutoTokenizer.from_pretrained(spread_cross_encoder)
    model = AutoModelForSequenceClassification.from_pretrained(spread_cross_encoder).eval()
    r = registry.create("cross-encoder", model=str(spread_cross_encoder))
    for j in JUDGED:
        batch = tok([j.query] * len(j.documents), list(j.documents), padding=True, return_tensors="pt")
        with torch.no_grad():
            logits = model(**batch).logits[:, 0]
        expected = sorted(range(len(logits)), key=lambda i: -float(logits[i]))
        ordered = logits[expected]
        assert float((ordered[:-1] - ordered[1:]).min()) > 1e-5, "reference scores too close to order"
        hits = r.rerank(j.query, list(j.documents))
        assert [h.index for h in hits] == expected
        # sentence-transformers applies a sigmoid to a one-label head: a monotone map of the logit
        assert [h.score for h in hits] == pytest.approx(torch.sigmoid(ordered).tolist(), abs=1e-6)


# --------------------------------------------------------------------------------------------
# Listwise and pairwise miss the judged floor on both provisioned models (measured above), so
# their contract-tier floor is an exact ranking on the tiny model, computed here from plain
# prompts and the core's next-token logits alone (no strategy code): a sign flip reverses it.

PRP_PROMPT = (
    'Given a query "{query}", which of the following two passages is more relevant to the query?'
    '\n\nPassage A: "{a}"\n\nPassage B: "{b}"\n\nOutput Passage A or Passage B:'
)


def _p_first_wins(core: Any, query: str, a: str, b: str) -> float:
    import torch

    from rerank_plugins.scoring import Document

    head, rest = PRP_PROMPT.replace("{query}", query).split("{a}")
    mid, tail = rest.split("{b}")
    enc = core.encode_chat([head, Document(a), mid, Document(b), tail], assistant_prefix="Passage")
    logits = core.next_token_logits([enc.input_ids], core.token_ids([" A", " B"]))
    return float(torch.softmax(logits, dim=1)[0, 0])


def test_pairwise_allpair_is_the_ties_rule_over_plain_prompts(tiny_core: Any) -> None:
    r = registry.create("pairwise", model=tiny_core, schedule="allpair")
    for j in JUDGED:
        docs, n = list(j.documents), len(j.documents)
        wins = [0.0] * n
        for i in range(n):
            for k in range(n):
                if i != k:
                    as_a = _p_first_wins(tiny_core, j.query, docs[i], docs[k]) > 0.5
                    as_b = _p_first_wins(tiny_core, j.query, docs[k], docs[i]) < 0.5
                    wins[i] += 1.0 if as_a and as_b else 0.5 if as_a or as_b else 0.0
        expected = sorted(range(n), key=lambda i: (-wins[i], i))
        hits = r.rerank(j.query, docs)
        assert [(h.index, h.score) for h in hits] == [(i, wins[i]) for i in expected]
        if len(set(wins)) > 1:  # a sign flip puts a document with the fewest wins first
            flipped_first = SignFlipped(r).rerank(j.query, docs)[0].index
            assert wins[flipped_first] == min(wins) < wins[expected[0]]


def test_listwise_window_is_sorted_by_plain_identifier_logits(tiny_core: Any) -> None:
    from rerank_plugins.scoring import Document

    r = registry.create("listwise", model=tiny_core, window=5, calibrate=None)
    ids = r.ids
    for j in JUDGED:
        docs = list(j.documents)
        parts: list[Any] = [f"{r.options.instruction}\n\nQuery: {j.query}\n"]
        for k, text in enumerate(docs):
            parts += [ids.open_text, [ids.token_ids[k]], ids.close_text, Document(" " + text.strip())]
        parts.append(f"\n\nQuery: {j.query}\n" + r.options.answer_instruction.replace("{n}", str(len(docs))))
        prompt = tiny_core.encode_chat(parts, assistant_prefix=ids.answer_prefix).input_ids
        logits = tiny_core.next_token_logits([prompt], list(ids.token_ids[: len(docs)]))[0]
        expected = sorted(range(len(docs)), key=lambda k: -float(logits[k]))
        assert [h.index for h in r.rerank(j.query, docs)] == expected
        assert [h.index for h in SignFlipped(r).rerank(j.query, docs)] == expected[::-1]
