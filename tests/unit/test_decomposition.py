"""Query decomposition: parsing fixtures, fallback, fusion on hand-built rankings, the trace, the pipeline."""

from __future__ import annotations

import asyncio
import math
import threading
from types import SimpleNamespace

import pytest

from rerank_plugins.decomposition import (
    DEFAULT_PROMPT,
    Decomposer,
    Decomposition,
    DecompositionRetriever,
    PooledDocument,
    Provenance,
    as_batch_retriever,
    fuse,
    normalize_question,
    parse_subquestions,
    query_list,
    rerank_pool,
)
from rerank_plugins.testing import KeywordReranker
from rerank_plugins.types import BaseReranker

Q = "Which company made the biggest profit in 2023, NVIDIA or Apple?"

# (model output, expected sub-questions) -- every form a small model has been seen to produce.
PARSE_FIXTURES = [
    (
        "1. How much profit did NVIDIA make in 2023?\n2. How much profit did Apple make in 2023?",
        ["How much profit did NVIDIA make in 2023?", "How much profit did Apple make in 2023?"],
    ),
    # Q asks about the prompt example's subject, so the example's sub-questions are right answers
    # (an echo of them for another question is dropped: test_example_echo_is_dropped_for_other_questions)
    (
        "1. What was NVIDIA's profit in 2023?\n2. What was Apple's profit in 2023?\n3. Who leads Apple?",
        ["What was NVIDIA's profit in 2023?", "What was Apple's profit in 2023?", "Who leads Apple?"],
    ),
    ("1) NVIDIA profit 2023\n2) Apple profit 2023", ["NVIDIA profit 2023", "Apple profit 2023"]),
    ("(1) NVIDIA profit 2023\n(2) Apple profit 2023", ["NVIDIA profit 2023", "Apple profit 2023"]),
    (
        "- NVIDIA profit 2023\n* Apple profit 2023\n\u2022 Google profit 2023",
        ["NVIDIA profit 2023", "Apple profit 2023", "Google profit 2023"],
    ),
    (
        "Sub-question 1: What did NVIDIA earn?\nSub-question 2: What did Apple earn?",
        ["What did NVIDIA earn?", "What did Apple earn?"],
    ),
    (
        "1. Sub-question 1: What did NVIDIA earn?\n2. Sub-question 2: What did Apple earn?",
        ["What did NVIDIA earn?", "What did Apple earn?"],
    ),
    ("Q1: What did NVIDIA earn?\nQ2: What did Apple earn?", ["What did NVIDIA earn?", "What did Apple earn?"]),
    ("**1. What did NVIDIA earn?**\n**2. What did Apple earn?**", ["What did NVIDIA earn?", "What did Apple earn?"]),
    ('["What did NVIDIA earn?", "What did Apple earn?"]', ["What did NVIDIA earn?", "What did Apple earn?"]),
    (
        '```json\n["What did NVIDIA earn?", "What did Apple earn?"]\n```',
        ["What did NVIDIA earn?", "What did Apple earn?"],
    ),
    (
        '{"sub_questions": ["What did NVIDIA earn?", "What did Apple earn?"]}',
        ["What did NVIDIA earn?", "What did Apple earn?"],
    ),
    (
        'Here you go: {"questions": [{"question": "What did NVIDIA earn?"}, {"query": "What did Apple earn?"}]}',
        ["What did NVIDIA earn?", "What did Apple earn?"],
    ),
    ("```\n1. What did NVIDIA earn?\n2. What did Apple earn?\n```", ["What did NVIDIA earn?", "What did Apple earn?"]),
    (
        "Sure! Here are the sub-questions:\n\n1. What did NVIDIA earn?\n2. What did Apple earn?\n\nI hope this helps.",
        ["What did NVIDIA earn?", "What did Apple earn?"],
    ),
    ("1. What did NVIDIA earn? 2. What did Apple earn?", ["What did NVIDIA earn?", "What did Apple earn?"]),
    ("What did NVIDIA earn? What did Apple earn?", ["What did NVIDIA earn?", "What did Apple earn?"]),
    (
        "Sub-questions: 1. What did NVIDIA earn? 2. What did Apple earn?",
        ["What did NVIDIA earn?", "What did Apple earn?"],
    ),
    ("1. \"What did NVIDIA earn?\"\n2. 'What did Apple earn?'", ["What did NVIDIA earn?", "What did Apple earn?"]),
    # duplicates (case, punctuation, spacing) collapse to the first form
    ("1. What did NVIDIA earn?\n2. what did nvidia  earn\n3. What did NVIDIA earn ?!", ["What did NVIDIA earn?"]),
    # an echo of the question (with or without the prompt's "Question:" label) is not a sub-question
    (f"Question: {Q}\n1. What did NVIDIA earn?", ["What did NVIDIA earn?"]),
    (f"1. {Q}\n2. What did Apple earn?", ["What did Apple earn?"]),
    # echo of the whole prompt: instruction lines and the example question are dropped; the
    # example's sub-questions fit Q (same names) and are kept
    (
        DEFAULT_PROMPT.replace("{n}", "3").replace("{question}", Q) + "\n1. What did Apple earn?",
        ["What was NVIDIA's profit in 2023?", "What was Apple's profit in 2023?", "What did Apple earn?"],
    ),
    # garbage, fragments and chatter only
    ("", []),
    ("   \n\n  ", []),
    ("1.\n2.\n3.", []),
    ("???", []),
    ("Yes", []),
    ("I cannot help with that.", []),
    ("Sure! Here are the sub-questions:", []),
    ("<|im_end|>", []),
    ("{not json at all", []),
    ('{"answer": 42}', []),
    ("[1, 2, 3]", []),
    ("Answer: NVIDIA made more.", []),
    ("x" * 500 + " word", []),
    # plain lines without question marks are kept (they are good search queries)
    ("NVIDIA annual profit 2023\nApple annual profit 2023", ["NVIDIA annual profit 2023", "Apple annual profit 2023"]),
    # a generation cut mid-line keeps what it has
    ("1. What did NVIDIA earn in 2023?\n2. What did Apple", ["What did NVIDIA earn in 2023?", "What did Apple"]),
]


@pytest.mark.parametrize(("raw", "expected"), PARSE_FIXTURES, ids=[f"fixture{i}" for i in range(len(PARSE_FIXTURES))])
def test_parse_fixtures(raw: str, expected: list[str]) -> None:
    ignore = DEFAULT_PROMPT.replace("{n}", "3").splitlines()
    assert parse_subquestions(raw, question=Q, ignore=[ln for ln in ignore if "{" not in ln]) == expected


def test_the_readme_example_question_keeps_its_sub_questions() -> None:
    """The README's question, answered with the prompt example's own (correct) sub-questions."""
    answer = "1. What was NVIDIA's profit in 2023?\n2. What was Apple's profit in 2023?"
    dec = Decomposer(lambda p: answer).decompose("Which company made the bigger profit in 2023, NVIDIA or Apple?")
    assert (dec.fallback, dec.sub_questions) == (
        False,
        ("What was NVIDIA's profit in 2023?", "What was Apple's profit in 2023?"),
    )


@pytest.mark.parametrize(
    "question",
    [
        "Who directed Jaws?",
        "What was Microsoft's profit in 2023?",
        "Which company made the bigger profit, Google or Apple?",
    ],
)
def test_example_echo_is_dropped_for_other_questions(question: str) -> None:
    """For any question that does not name everything the example names, its lines are an echo."""
    echo = "1. What was NVIDIA's profit in 2023?\n2. What was Apple's profit in 2023?\n3. Who leads Apple?"
    dec = Decomposer(lambda p: DEFAULT_PROMPT.replace("{n}", "3").replace("{question}", question) + "\n" + echo)
    got = dec.decompose(question)
    assert got.sub_questions == ("Who leads Apple?",)


def test_instruction_echo_is_dropped_even_when_it_names_the_question_s_numbers() -> None:
    """Instruction lines name nothing (at most "3"), so they never pass as sub-questions."""
    prompt = DEFAULT_PROMPT.replace("{n}", "3")
    got = parse_subquestions(prompt.replace("{question}", "Who won 3 Oscars?"), question="Who won 3 Oscars?",
                             ignore=[ln for ln in prompt.splitlines() if "{" not in ln])  # fmt: skip
    assert got == []


def test_parse_max_subquestions_keeps_the_first() -> None:
    raw = "1. a b\n2. c d\n3. e f\n4. g h"
    assert parse_subquestions(raw, max_subquestions=2) == ["a b", "c d"]
    assert parse_subquestions(raw, max_subquestions=None) == ["a b", "c d", "e f", "g h"]


@pytest.mark.parametrize("raw", [None, 3, b"1. What?", ["What did Apple earn?"], {"q": 1}])
def test_parse_non_text_gives_nothing(raw: object) -> None:
    assert parse_subquestions(raw) == []


def test_normalize_question() -> None:
    assert normalize_question("  What's  NVIDIA's profit?? ") == "what s nvidia s profit"
    assert normalize_question("...") == ""


# --------------------------------------------------------------------------- decomposer


def test_decomposer_callable_prompt_and_result() -> None:
    prompts: list[str] = []

    def llm(prompt: str) -> str:
        prompts.append(prompt)
        return "1. What did NVIDIA earn?\n2. What did Apple earn?\n3. What did Google earn?\n4. extra query here"

    d = Decomposer(llm, max_subquestions=3)
    result = d.decompose(Q)
    assert result == Decomposition(
        Q,
        ("What did NVIDIA earn?", "What did Apple earn?", "What did Google earn?"),
        False,
        "",
        "1. What did NVIDIA earn?\n2. What did Apple earn?\n3. What did Google earn?\n4. extra query here",
    )
    assert prompts == [DEFAULT_PROMPT.replace("{n}", "3").replace("{question}", Q)]
    # a callable answer is parsed as is (the "1." assistant prefix applies to the core only)
    assert d.assistant_prefix == ""


@pytest.mark.parametrize(
    ("raw", "reason"),
    [
        ("", "empty output"),
        ("   ", "empty output"),
        ("I cannot help with that.", "no usable sub-question"),
        (f"1. {Q}", "no usable sub-question"),
        (None, "model returned NoneType, not text"),
        (42, "model returned int, not text"),
    ],
)
def test_decomposer_falls_back_and_says_why(raw: object, reason: str) -> None:
    result = Decomposer(lambda prompt: raw).decompose(Q)  # type: ignore[arg-type, return-value]
    assert result.fallback is True
    assert result.sub_questions == (Q,)
    assert result.reason == reason
    assert query_list(result) == [Q]


def test_decomposer_llm_error_raises_by_default_and_falls_back_on_request() -> None:
    def broken(prompt: str) -> str:
        raise ConnectionError("server down")

    with pytest.raises(ConnectionError, match="server down"):
        Decomposer(broken).decompose(Q)
    result = Decomposer(broken, on_error="fallback").decompose(Q)
    assert (result.fallback, result.sub_questions, result.reason) == (
        True,
        (Q,),
        "llm error: ConnectionError: server down",
    )


async def test_adecompose_uses_the_async_callable() -> None:
    async def allm(prompt: str) -> str:
        await asyncio.sleep(0)
        return "- What did Apple earn?"

    d = Decomposer(lambda p: "- never used sync", acomplete=allm)
    assert (await d.adecompose(Q)).sub_questions == ("What did Apple earn?",)
    # without acomplete, the sync callable runs in a worker thread
    assert (await Decomposer(lambda p: "- via thread query").adecompose(Q)).sub_questions == ("via thread query",)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"max_subquestions": 0}, "max_subquestions"),
        ({"max_subquestions": True}, "max_subquestions"),
        ({"prompt": "no placeholder"}, "prompt"),
        ({"max_new_tokens": 0}, "max_new_tokens"),
        ({"on_error": "ignore"}, "on_error"),
    ],
)
def test_decomposer_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        Decomposer(lambda p: "", **kwargs)  # type: ignore[arg-type]


def test_decomposer_rejects_a_non_callable_llm() -> None:
    with pytest.raises(ValueError, match="llm must be"):
        Decomposer(42)  # type: ignore[arg-type]


class ScoringOnlyBackend:
    """A backend that scores but cannot generate (as a cross-encoder or a logits-only server)."""

    name = "scoring-only"
    capabilities = frozenset({"prompts", "logits"})


class GeneratingBackend:
    """A backend test double with the two primitives a decomposer needs; records its prompts."""

    name = "generating-double"
    capabilities = frozenset({"prompts", "generate"})

    def __init__(self) -> None:
        self.prompts: list[list[int]] = []

    def encode_chat(self, parts, *, system=None, assistant_prefix=""):  # type: ignore[no-untyped-def]
        return SimpleNamespace(input_ids=[len(parts[0]), len(assistant_prefix)])

    def generate(self, prompts, max_new_tokens=64):  # type: ignore[no-untyped-def]
        self.prompts.extend(list(p) for p in prompts)
        return [" NVIDIA profit\n2. Apple profit"] * len(prompts)


def test_a_backend_without_generation_fails_at_construction() -> None:
    from rerank_plugins.scoring import MissingPrimitiveError

    with pytest.raises(MissingPrimitiveError, match=r"decomposition .* text generation \('generate'\).*'scoring-only'"):
        Decomposer(ScoringOnlyBackend())  # type: ignore[arg-type]


def test_any_backend_with_prompts_and_generate_writes_the_sub_questions() -> None:
    backend = GeneratingBackend()
    d = Decomposer(backend, max_new_tokens=8)  # type: ignore[arg-type]
    assert d.core is backend and d.assistant_prefix == "1."
    # the forced "1." opens the answer, so the generated text continues a numbered list
    assert d.decompose_batch(["Who earned more?", "Q two?"])[0].sub_questions == ("NVIDIA profit", "Apple profit")
    assert len(backend.prompts) == 2


def test_decompose_rejects_a_blank_question() -> None:
    with pytest.raises(ValueError, match="query"):
        Decomposer(lambda p: "- a b").decompose("  ")


def test_query_list_original_first_and_dedup() -> None:
    dec = Decomposition(Q, ("What did Apple earn?", Q.upper(), "what did apple earn"))
    assert query_list(dec) == [Q, "What did Apple earn?"]
    assert query_list(dec, include_original=False) == ["What did Apple earn?", Q.upper()]
    # a fallback always keeps the question
    assert query_list(Decomposition.trivial(Q), include_original=False) == [Q]


# --------------------------------------------------------------------------- fusion

R0 = [("a", 0.9, "A"), ("b", 0.8, "B"), ("c", 0.7, "C")]
R1 = [("c", 0.95, "C"), ("d", 0.6, "D"), ("a", 0.5, "A")]
R2 = [("e", 0.4, "E"), ("c", 0.3, "C")]


def test_rrf_exact_scores_and_order() -> None:
    pool = fuse([R0, R1, R2], queries=["q0", "q1", "q2"])
    got = [(d.id, d.fused_score) for d in pool]
    # c: 1/63 + 1/61 + 1/62; a: 1/61 + 1/63; b: 1/62; d: 1/62; e: 1/61
    assert [d for d, _ in got] == ["c", "a", "e", "b", "d"]
    expected = {"c": 1 / 63 + 1 / 61 + 1 / 62, "a": 1 / 61 + 1 / 63, "e": 1 / 61, "b": 1 / 62, "d": 1 / 62}
    for doc_id, score in got:
        assert math.isclose(score, expected[doc_id], rel_tol=1e-12)


def test_rrf_k_changes_the_order() -> None:
    # with k=0 a single first place (1/1) beats two third places (1/3 + 1/3)
    r0 = [("x", 1.0, "X"), ("y", 0.9, "Y"), ("z", 0.8, "Z")]
    r1 = [("w", 1.0, "W"), ("v", 0.9, "V"), ("z", 0.8, "Z")]
    assert [d.id for d in fuse([r0, r1], rrf_k=0)][:2] == ["x", "w"]
    assert [d.id for d in fuse([r0, r1], rrf_k=60)][0] == "z"


def test_trace_lists_every_query_with_rank_and_score() -> None:
    pool = {d.id: d for d in fuse([R0, R1, R2], queries=["q0", "q1", "q2"])}
    assert pool["c"].found_by == (
        Provenance(0, "q0", 3, 0.7),
        Provenance(1, "q1", 1, 0.95),
        Provenance(2, "q2", 2, 0.3),
    )
    assert pool["e"].trace() == [{"query_index": 2, "query": "q2", "rank": 1, "score": 0.4}]


def test_max_fusion_uses_the_best_score() -> None:
    pool = fuse([R0, R1, R2], method="max")
    assert [(d.id, d.fused_score) for d in pool] == [("c", 0.95), ("a", 0.9), ("b", 0.8), ("d", 0.6), ("e", 0.4)]


def test_none_fusion_keeps_first_seen_order() -> None:
    pool = fuse([R0, R1, R2], method="none")
    assert [(d.id, d.fused_score) for d in pool] == [("a", 0.0), ("b", -1.0), ("c", -2.0), ("d", -3.0), ("e", -4.0)]


def test_fusion_ties_keep_first_seen_order() -> None:
    pool = fuse([[("p", 1.0, "P")], [("q", 1.0, "Q")], [("r", 1.0, "R")]])
    assert [d.id for d in pool] == ["p", "q", "r"]


def test_fusion_dedups_repeats_inside_one_ranking_at_best_rank() -> None:
    pool = fuse([[("a", 0.9, "A"), ("a", 0.1, "A again"), ("b", 0.5, "B")]])
    assert [(d.id, d.text, len(d.found_by)) for d in pool] == [("a", "A", 1), ("b", "B", 1)]
    assert math.isclose(pool[1].fused_score, 1 / 62)


def test_fusion_accepts_objects_and_keeps_payloads() -> None:
    class Hit:
        def __init__(self, id: str, score: float, text: str) -> None:
            self.id, self.score, self.text = id, score, text

    h = Hit("7", 0.5, "seven")
    pool = fuse([[h, ("8", 0.4, "eight", {"node": 8})]])
    assert [(d.id, d.payload) for d in pool] == [("7", h), ("8", {"node": 8})]
    assert pool[0].id == "7" and fuse([[(7, 0.5, "int id")]])[0].id == "7"


def test_fusion_empty_inputs() -> None:
    assert fuse([]) == []
    assert fuse([[], []]) == []


@pytest.mark.parametrize(
    ("rankings", "kwargs", "match"),
    [
        ([R0], {"method": "borda"}, "method"),
        ([R0], {"rrf_k": -1}, "rrf_k"),
        ([R0], {"queries": ["a", "b"]}, "queries"),
        ("abc", {}, "rankings"),
        ([[("a", 0.1)]], {}, r"rankings\[0\]\[0\]"),
        ([[("a", "high", "A")]], {}, "score"),
        ([[("a", 0.1, 5)]], {}, "text"),
        ([[42]], {}, r"rankings\[0\]\[0\]"),
    ],
)
def test_fusion_bad_arguments(rankings: object, kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        fuse(rankings, **kwargs)  # type: ignore[arg-type]


# --------------------------------------------------------------------------- rerank and pipeline


class LengthReranker(BaseReranker):
    """Longer text first: an order independent of retrieval, to see that the rerank happened."""

    name = "length"

    def __init__(self) -> None:
        self.queries: list[str] = []

    def score(self, query: str, documents: list[str]) -> list[float]:
        self.queries.append(query)
        return [float(len(d)) for d in documents]


def test_rerank_pool_uses_the_original_question_and_pool_size() -> None:
    pool = fuse([[("a", 1.0, "aa"), ("b", 0.9, "bbbb"), ("c", 0.8, "cccccc")]])
    rr = LengthReranker()
    out = rerank_pool("original?", pool, rr, pool_size=2)
    assert [(d.id, d.rerank_score, d.score) for d in out] == [("b", 4.0, 4.0), ("a", 2.0, 2.0)]
    assert rr.queries == ["original?"]
    assert out[0].found_by == pool[1].found_by  # the trace survives reranking


DOCS = {
    "n": "NVIDIA reported a profit of 30 billion in 2023",
    "a": "Apple reported a profit of 97 billion in 2023",
    "g": "Google reported a profit of 74 billion in 2023",
    "f": "Apples and pears are fruit",
}


class FakeBatchRetriever:
    """Word-overlap retriever over DOCS recording each batched call."""

    def __init__(self) -> None:
        self.calls: list[tuple[list[str], int]] = []

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float, str]]]:
        self.calls.append((list(queries), k))
        out = []
        for q in queries:
            words = set(normalize_question(q).split())
            scored = [(i, float(len(words & set(normalize_question(t).split()))), t) for i, t in DOCS.items()]
            out.append(sorted(scored, key=lambda r: -r[1])[:k])
        return out


def _llm(prompt: str) -> str:
    return "1. NVIDIA profit\n2. Apple profit\n3. Google profit"


def test_pipeline_one_batched_search_and_trace() -> None:
    retriever = FakeBatchRetriever()
    pipe = DecompositionRetriever(retriever, decomposer=Decomposer(_llm), k=1)
    result = pipe.retrieve("Who made the most money?")
    assert retriever.calls == [(["Who made the most money?", "NVIDIA profit", "Apple profit", "Google profit"], 1)]
    assert result.queries == ("Who made the most money?", "NVIDIA profit", "Apple profit", "Google profit")
    # q0 finds nothing relevant: its top-1 is the first doc with 0 overlap ("n"); sub-questions find n, a, g
    assert [d.id for d in result.documents] == ["n", "a", "g"]
    assert [(p.query_index, p.rank) for p in result.documents[0].found_by] == [(0, 1), (1, 1)]
    assert set(result.timings) == {"decompose", "retrieve", "fuse", "rerank"}


def test_pipeline_reranks_against_the_original_question() -> None:
    rr = LengthReranker()
    pipe = DecompositionRetriever(FakeBatchRetriever(), decomposer=Decomposer(_llm), reranker=rr, k=2, top_k=2)
    result = pipe.retrieve("Profit question?")
    assert rr.queries == ["Profit question?"]
    # the two longest texts of the pool (n and g have 46 characters, a 45; ties keep pool order)
    assert [d.id for d in result.documents] == ["n", "g"]
    assert {d.id for d in result.pool} == {"n", "a", "g"}
    assert all(d.rerank_score is not None for d in result.documents)


def test_pipeline_without_decomposer_is_plain_retrieval() -> None:
    retriever = FakeBatchRetriever()
    result = DecompositionRetriever(retriever, k=2).retrieve("Apple profit")
    assert result.decomposition.fallback is True
    assert retriever.calls == [(["Apple profit"], 2)]
    assert [d.id for d in result.documents] == ["a", "n"]


def test_pipeline_fallback_when_the_llm_says_nothing_useful() -> None:
    pipe = DecompositionRetriever(FakeBatchRetriever(), decomposer=Decomposer(lambda p: "Sure!"), k=1)
    result = pipe.retrieve("Apple profit")
    assert (result.decomposition.fallback, result.queries) == (True, ("Apple profit",))


def test_pipeline_over_a_faiss_index() -> None:
    pytest.importorskip("faiss")
    from rerank_plugins.retrieval import FaissIndex, HashingEmbedder

    index = FaissIndex.build(list(DOCS.values()), ids=list(DOCS), embedder=HashingEmbedder(256), kind="flat")
    pipe = DecompositionRetriever(index, decomposer=Decomposer(_llm), reranker=KeywordReranker(), k=1)
    result = pipe.retrieve("NVIDIA Apple Google profit")
    assert {d.id for d in result.documents} == {"n", "a", "g"}
    assert all(isinstance(d, PooledDocument) and d.payload.id == d.id for d in result.documents)


async def test_pipeline_async_matches_sync() -> None:
    pipe = DecompositionRetriever(FakeBatchRetriever(), decomposer=Decomposer(_llm), reranker=LengthReranker(), k=2)
    sync = pipe.retrieve("Profit question?")
    asyn = await pipe.aretrieve("Profit question?")
    assert [(d.id, d.rerank_score) for d in asyn.documents] == [(d.id, d.rerank_score) for d in sync.documents]


class BarrierRetriever(FakeBatchRetriever):
    """Each search waits until ``parties`` searches have started: only concurrent calls get through."""

    def __init__(self, parties: int) -> None:
        super().__init__()
        self.barrier = threading.Barrier(parties, timeout=10)

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float, str]]]:
        self.barrier.wait()  # BrokenBarrierError after 10 s if the searches ran one after another
        return super().search(queries, k)


async def test_aretrieve_runs_a_sync_search_once_per_query_concurrently() -> None:
    retriever = BarrierRetriever(parties=4)  # the question and its three sub-questions
    pipe = DecompositionRetriever(retriever, decomposer=Decomposer(_llm), reranker=LengthReranker(), k=2)
    result = await pipe.aretrieve("Who made the most money?")
    assert sorted(retriever.calls) == sorted(([q], 2) for q in result.queries)
    sync = DecompositionRetriever(FakeBatchRetriever(), decomposer=Decomposer(_llm), reranker=LengthReranker(), k=2)
    want = sync.retrieve("Who made the most money?")
    assert [(d.id, d.rerank_score, d.found_by) for d in result.documents] == [
        (d.id, d.rerank_score, d.found_by) for d in want.documents
    ]


class AsyncBatchRetriever:
    """Offers an async batch search (as the framework faces do); records how many calls overlap."""

    def __init__(self, rankings: list[list[tuple[str, float, str]]] | None = None) -> None:
        self.rankings = rankings
        self.calls: list[list[str]] = []

    def search(self, queries: list[str], k: int) -> list[list[tuple[str, float, str]]]:
        raise AssertionError("aretrieve must await asearch")

    async def asearch(self, queries: list[str], k: int) -> list[list[tuple[str, float, str]]]:
        self.calls.append(list(queries))
        await asyncio.sleep(0)
        return self.rankings if self.rankings is not None else FakeBatchRetriever().search(queries, k)


async def test_aretrieve_awaits_an_async_batch_search() -> None:
    retriever = AsyncBatchRetriever()
    result = await DecompositionRetriever(retriever, decomposer=Decomposer(_llm), k=1).aretrieve("Profit?")
    assert retriever.calls == [list(result.queries)]
    assert [d.id for d in result.documents] == ["n", "a", "g"]


def test_aretrieve_keeps_a_faiss_batch_in_one_call(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("faiss")
    from rerank_plugins.retrieval import FaissIndex, HashingEmbedder

    index = FaissIndex.build(list(DOCS.values()), ids=list(DOCS), embedder=HashingEmbedder(256), kind="flat")
    calls: list[list[str]] = []
    search_batch = index.search_batch
    monkeypatch.setattr(
        index, "search_batch", lambda queries, k: calls.append(list(queries)) or search_batch(queries, k)
    )
    pipe = DecompositionRetriever(index, decomposer=Decomposer(_llm), k=1)
    result = asyncio.run(pipe.aretrieve("NVIDIA Apple Google profit"))
    assert calls == [list(result.queries)]  # one embedding pass for every query
    assert [d.id for d in result.documents] == [d.id for d in pipe.retrieve("NVIDIA Apple Google profit").documents]


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_pipeline_rejects_a_wrong_number_of_rankings(run_async: bool) -> None:
    retriever = AsyncBatchRetriever(rankings=[[]]) if run_async else (lambda qs, k: [[]])
    pipe = DecompositionRetriever(retriever, decomposer=Decomposer(_llm))
    with pytest.raises(ValueError, match="1 rankings for 4 queries"):
        asyncio.run(pipe.aretrieve("Q?")) if run_async else pipe.retrieve("Q?")


def test_aretrieve_checks_each_query_s_search_too() -> None:
    pipe = DecompositionRetriever(lambda qs, k: [[], []], decomposer=Decomposer(_llm))
    with pytest.raises(ValueError, match="2 rankings for 1 queries"):
        asyncio.run(pipe.aretrieve("Q?"))


@pytest.mark.parametrize("run_async", [False, True], ids=["sync", "async"])
def test_a_decomposition_made_beforehand_is_used_as_is(run_async: bool) -> None:
    asked: list[str] = []
    pipe = DecompositionRetriever(FakeBatchRetriever(), decomposer=Decomposer(lambda p: asked.append(p) or ""), k=1)
    dec = Decomposer(_llm).decompose_batch(["Profit?"])[0]
    result = (
        asyncio.run(pipe.aretrieve("Profit?", decomposition=dec))
        if run_async
        else pipe.retrieve("Profit?", decomposition=dec)
    )
    assert asked == []
    assert result.decomposition is dec and result.queries == (
        "Profit?",
        "NVIDIA profit",
        "Apple profit",
        "Google profit",
    )
    with pytest.raises(ValueError, match="another question"):
        pipe.retrieve("Other?", decomposition=dec)


@pytest.mark.parametrize(
    ("kwargs", "match"),
    [
        ({"fusion": "borda"}, "fusion"),
        ({"k": 0}, r"^k must"),
        ({"k": True}, r"^k must"),
        ({"k": None}, r"^k must"),
        ({"pool_size": True}, "pool_size"),
        ({"top_k": 2.0}, "top_k"),
        ({"include_original": "false"}, "include_original"),
        ({"rrf_k": -2}, "rrf_k"),
        ({"rrf_k": True}, "rrf_k"),
        ({"reranker": "pointwise"}, "reranker"),
        ({"decomposer": "llm"}, "decomposer"),
    ],
)
def test_pipeline_bad_arguments(kwargs: dict[str, object], match: str) -> None:
    with pytest.raises(ValueError, match=match):
        DecompositionRetriever(FakeBatchRetriever(), **kwargs)  # type: ignore[arg-type]


def test_as_batch_retriever_rejects_other_objects() -> None:
    with pytest.raises(ValueError, match="retriever must"):
        as_batch_retriever(42)


# --------------------------------------------------------------------------- the core path (tiny random model)


def test_decomposer_on_the_core_batches_and_never_raises(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("torch")
    import torch

    from rerank_plugins.scoring import get_core
    from rerank_plugins.testing import tiny_model_dir

    core = get_core(tiny_model_dir())
    d = Decomposer(core, max_new_tokens=8)
    prompts: list[list[int]] = []
    real_generate = core.generate

    def spy(rows, **kw):  # type: ignore[no-untyped-def]
        prompts.extend(list(r) for r in rows)
        return real_generate(rows, **kw)

    monkeypatch.setattr(core, "generate", spy)
    questions = ["What is the capital of France?", "Who wrote Dune?"]
    before = core.stats.snapshot()
    results = d.decompose_batch(questions)
    after = core.stats.snapshot()
    assert [r.question for r in results] == questions
    tok = core.tokenizer
    for q, ids, r in zip(questions, prompts, results, strict=True):
        # the prompt is the rendered question in the tokenizer's own chat template, answer opened with "1."
        chat = [{"role": "user", "content": d.render(q)}]
        assert tok.decode(ids) == tok.apply_chat_template(chat, tokenize=False, add_generation_prompt=True) + "1."
        # the raw answer is plain greedy decoding of that prompt (seeded weights: knowable exactly)
        ref = core.model.generate(
            input_ids=torch.tensor([ids]), max_new_tokens=8, do_sample=False, pad_token_id=tok.pad_token_id
        )
        raw = tok.decode(ref[0, len(ids) :], skip_special_tokens=True)
        assert r.raw == raw
        # and what becomes of it is exactly what the parser makes of that text
        assert r == d.parse(q, raw)
    # one batched generation: at most max_new_tokens decoding steps for both questions together
    assert after["forward_passes"] - before["forward_passes"] <= 8
    assert d.assistant_prefix == "1."


def test_lone_surrogates_in_model_output_become_replacement_characters(tiny_cross_encoder) -> None:
    """Bad model output never raises: sub-questions carry U+FFFD, and the pipeline over a FAISS
    index whose embedder tokenizes runs to the end."""
    from rerank_plugins.retrieval import FaissIndex, SentenceTransformerEmbedder

    raw = "1. Who founded \ud800 Apple?\n2. When was \udfff NVIDIA founded?"
    dec = Decomposer(lambda p: raw).decompose("Who founded Apple and \ud800 NVIDIA?")
    assert dec.sub_questions == ("Who founded \ufffd Apple?", "When was \ufffd NVIDIA founded?")
    assert dec.raw == raw
    assert parse_subquestions('["Where is \\ud800 Paris?"]') == ["Where is \ufffd Paris?"]
    index = FaissIndex.build(["Apple was founded by Jobs", "NVIDIA was founded in 1993"],
                             embedder=SentenceTransformerEmbedder(str(tiny_cross_encoder)))  # fmt: skip
    result = DecompositionRetriever(index, decomposer=Decomposer(lambda p: raw), k=2).retrieve("Who founded \ud800?")
    assert sorted(d.text for d in result.documents) == ["Apple was founded by Jobs", "NVIDIA was founded in 1993"]
