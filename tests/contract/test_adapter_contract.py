"""One contract suite run against every framework adapter class (LlamaIndex and LangChain).

Each adapter is driven through a small per-framework "face" (build inputs, call sync/async,
read back text, score and metadata), with a fake reranker whose scores are known, so every
expectation is exact. The fake is registered under each strategy name, so the per-strategy
classes are exercised through the real registry path they use in production.
"""

from __future__ import annotations

import asyncio
import copy
import threading
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import pytest
from pydantic import ValidationError

from rerank_plugins import registry
from rerank_plugins.types import BaseReranker

BUILTIN_STRATEGIES = {"identity", "pointwise", "cross-encoder", "listwise", "pairwise", "attention"}

# Known scores per text: the expected order is fully determined.
TEXTS = ["alpha", "bravo", "charlie", "delta", "echo"]
FAKE_SCORES = {"alpha": 0.1, "bravo": 0.9, "charlie": 0.5, "delta": 0.3, "echo": 0.7}
RETRIEVAL_SCORES = [0.95, 0.9, 0.85, 0.8, 0.75]
EXPECTED = [("bravo", 0.9), ("echo", 0.7), ("charlie", 0.5), ("delta", 0.3), ("alpha", 0.1)]


class FakeReranker(BaseReranker):
    """Scores documents from a fixed table; records calls and which entry point was used.

    The adapters call ``rerank_scores`` / ``arerank_scores`` (through
    ``rerank_plugins.fusion.rank_documents``): every document's score, with the caller's top_k.
    """

    name = "fake"

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.calls: list[tuple[str, str, list[str], int | None]] = []

    def score(self, query: str, documents: list[str]) -> list[float]:
        return [FAKE_SCORES[d] for d in documents]

    def rerank_scores(
        self, query: str, documents: Sequence[str], top_k: int | None = None
    ) -> tuple[list[float], dict[str, float]]:
        self.calls.append(("rerank_scores", query, list(documents), top_k))
        return super().rerank_scores(query, documents, top_k)

    async def arerank_scores(
        self, query: str, documents: Sequence[str], top_k: int | None = None
    ) -> tuple[list[float], dict[str, float]]:
        self.calls.append(("arerank_scores", query, list(documents), top_k))
        # call the sync base directly so the recorded entry point stays "arerank_scores"
        return await asyncio.to_thread(BaseReranker.rerank_scores, self, query, documents, top_k)


def relevance(text: str) -> float:
    """The fake's normalised relevance: min-max of FAKE_SCORES within a call over TEXTS."""
    lo, hi = min(FAKE_SCORES.values()), max(FAKE_SCORES.values())
    return (FAKE_SCORES[text] - lo) / (hi - lo)


@dataclass
class Face:
    """How the suite talks to one framework."""

    name: str
    classes: list[type]
    generic: type
    score_key: str  # metadata key the adapter adds
    make: Callable[[list[str], list[float]], list[Any]]
    run: Callable[[Any, list[Any], str], list[Any]]
    arun: Callable[[Any, list[Any], str], Any]
    text: Callable[[Any], str]
    score: Callable[[Any], float]
    metadata: Callable[[Any], dict[str, Any]]
    added_value: Callable[[float, float], Any]  # (retrieval score, rerank score) -> value under score_key
    dump: Callable[[list[Any]], Any]
    hidden_metadata: Callable[[Any, str, Any], None]  # add a metadata key kept out of the reranked text
    flags: tuple[dict[str, Any], ...] = ({},)  # adapter settings that change how results are copied
    retrieval_option: dict[str, Any] | None = None  # how the adapter finds the items' retrieval scores


def _llama_face() -> Face:
    pytest.importorskip("llama_index.core")
    from llama_index.core.schema import NodeWithScore, TextNode
    from llama_index.postprocessor.rerank_plugins import POSTPROCESSORS, RerankPluginsRerank

    return Face(
        name="llama_index",
        classes=[*POSTPROCESSORS.values(), RerankPluginsRerank],
        generic=RerankPluginsRerank,
        score_key="retrieval_score",
        make=lambda texts, scores: [
            # "pos" is kept out of the embed text, so the reranker sees exactly TEXTS
            NodeWithScore(
                node=TextNode(text=t, id_=f"n{i}", metadata={"pos": i}, excluded_embed_metadata_keys=["pos"]),
                score=s,
            )
            for i, (t, s) in enumerate(zip(texts, scores, strict=True))
        ],
        run=lambda a, items, q: a.postprocess_nodes(items, query_str=q),
        arun=lambda a, items, q: a.apostprocess_nodes(items, query_str=q),
        text=lambda n: n.node.get_content(),
        score=lambda n: n.score,
        metadata=lambda n: n.node.metadata,
        added_value=lambda retrieval, rerank: retrieval,
        dump=lambda items: [n.model_dump() for n in items],
        hidden_metadata=_llama_hidden_metadata,
        flags=({}, {"keep_retrieval_score": False}),
    )


def _llama_hidden_metadata(node: Any, key: str, value: Any) -> None:
    node.node.metadata[key] = value
    node.node.excluded_embed_metadata_keys.append(key)


def _langchain_face() -> Face:
    pytest.importorskip("langchain_core")
    from langchain_core.documents import Document
    from langchain_rerank_plugins import COMPRESSORS, RerankPluginsRerank

    return Face(
        name="langchain",
        classes=[*COMPRESSORS.values(), RerankPluginsRerank],
        generic=RerankPluginsRerank,
        score_key="relevance_score",
        make=lambda texts, scores: [
            Document(page_content=t, id=f"d{i}", metadata={"pos": i, "retrieval": s})
            for i, (t, s) in enumerate(zip(texts, scores, strict=True))
        ],
        run=lambda a, items, q: list(a.compress_documents(items, q)),
        arun=lambda a, items, q: a.acompress_documents(items, q),
        text=lambda d: d.page_content,
        score=lambda d: d.metadata["relevance_score"],
        metadata=lambda d: d.metadata,
        added_value=lambda retrieval, rerank: rerank,
        dump=lambda items: [d.model_dump() for d in items],
        hidden_metadata=lambda doc, key, value: doc.metadata.__setitem__(key, value),
        retrieval_option={"retrieval_score_key": "retrieval"},
    )


FACES = {"llama_index": _llama_face, "langchain": _langchain_face}


def _cases() -> list[Any]:
    cases = []
    for face_name, strategies in (
        ("llama_index", [*sorted(BUILTIN_STRATEGIES), None]),
        ("langchain", [*sorted(BUILTIN_STRATEGIES), None]),
    ):
        for strategy in strategies:
            cases.append(pytest.param((face_name, strategy), id=f"{face_name}-{strategy or 'generic'}"))
    return cases


@pytest.fixture
def fakes(monkeypatch: pytest.MonkeyPatch) -> list[FakeReranker]:
    """Register the fake under every strategy name (restored after the test)."""
    made: list[FakeReranker] = []

    def factory(**options: Any) -> FakeReranker:
        made.append(FakeReranker(**options))
        return made[-1]

    monkeypatch.setattr(registry, "_registered", dict(registry._registered))
    for name in [*BUILTIN_STRATEGIES, "fake"]:
        registry.register(name, factory, overwrite=True)
    return made


@dataclass
class Case:
    face: Face
    strategy: str | None

    def build(self, **kwargs: Any) -> Any:
        if self.strategy is None:
            return self.face.generic(reranker="fake", **kwargs)
        cls = next(c for c in self.face.classes if getattr(c, "strategy", None) == self.strategy)
        return cls(**kwargs)


@pytest.fixture(params=_cases())
def case(request: pytest.FixtureRequest, fakes: list[FakeReranker]) -> Case:
    face_name, strategy = request.param
    return Case(FACES[face_name](), strategy)


def _result(face: Face, out: list[Any]) -> list[tuple[str, float]]:
    return [(face.text(o), face.score(o)) for o in out]


def test_every_builtin_strategy_has_a_class_in_both_frameworks() -> None:
    for make in FACES.values():
        face = make()
        strategies = {getattr(c, "strategy", None) for c in face.classes} - {None}
        assert strategies == set(registry._BUILTIN) == BUILTIN_STRATEGIES, face.name


def test_order_and_scores(case: Case, fakes: list[FakeReranker]) -> None:
    adapter = case.build(model="fake-model")
    out = case.face.run(adapter, case.face.make(TEXTS, RETRIEVAL_SCORES), "which?")
    assert _result(case.face, out) == EXPECTED
    # built once at construction, through the registry, with the model option passed on
    assert len(fakes) == 1
    assert fakes[0].options == {"model": "fake-model"}
    assert fakes[0].calls == [("rerank_scores", "which?", TEXTS, None)]


def test_top_n(case: Case, fakes: list[FakeReranker]) -> None:
    adapter = case.build(top_n=2)
    out = case.face.run(adapter, case.face.make(TEXTS, RETRIEVAL_SCORES), "which?")
    assert _result(case.face, out) == EXPECTED[:2]
    assert fakes[0].calls[0][3] == 2
    # top_n larger than the input keeps everything
    big = case.build(top_n=50)
    assert _result(case.face, case.face.run(big, case.face.make(TEXTS, RETRIEVAL_SCORES), "q")) == EXPECTED


def test_metadata_keys_and_values(case: Case) -> None:
    adapter = case.build()
    items = case.face.make(TEXTS, RETRIEVAL_SCORES)
    out = case.face.run(adapter, items, "which?")
    by_text = {case.face.text(i): (i, s) for i, s in zip(items, RETRIEVAL_SCORES, strict=True)}
    for o in out:
        original, retrieval = by_text[case.face.text(o)]
        expected = dict(case.face.metadata(original))
        expected[case.face.score_key] = case.face.added_value(retrieval, case.face.score(o))
        text = case.face.text(o)
        expected.update({"rerank_score": FAKE_SCORES[text], "rerank_relevance": pytest.approx(relevance(text))})
        assert case.face.metadata(o) == expected


def test_inputs_are_not_mutated(case: Case) -> None:
    adapter = case.build(top_n=3)
    items = case.face.make(TEXTS, RETRIEVAL_SCORES)
    before = copy.deepcopy(case.face.dump(items))
    out = case.face.run(adapter, items, "which?")
    asyncio.run(case.face.arun(adapter, items, "which?"))
    assert case.face.dump(items) == before
    for o in out:
        assert all(o is not i for i in items)
        assert all(case.face.metadata(o) is not case.face.metadata(i) for i in items)


def test_returned_metadata_is_a_deep_copy(case: Case) -> None:
    """Editing a result's nested metadata (or the result itself) never reaches the inputs, under
    every setting that changes how results are built."""
    for flags in case.face.flags:
        adapter = case.build(**flags)
        items = case.face.make(TEXTS, RETRIEVAL_SCORES)
        for i, item in enumerate(items):
            case.face.hidden_metadata(item, "nested", {"tags": [f"t{i}"], "source": {"page": i}})
        before = copy.deepcopy(case.face.dump(items))
        outs = [case.face.run(adapter, items, "which?"), list(asyncio.run(case.face.arun(adapter, items, "which?")))]
        for out in outs:
            assert len(out) == len(items)
            for o in out:
                assert all(o is not i for i in items)
                nested = case.face.metadata(o)["nested"]
                nested["tags"].append("edited")
                nested["source"]["page"] = -1
                case.face.metadata(o)["new"] = 1
        assert case.face.dump(items) == before, flags


def test_uncopyable_metadata_values_are_shared_not_fatal(case: Case) -> None:
    """A client or lock in metadata cannot be deep-copied: it is kept by reference, the rest is detached."""
    lock = threading.Lock()
    adapter = case.build()
    items = case.face.make(TEXTS, RETRIEVAL_SCORES)
    for item in items:
        case.face.hidden_metadata(item, "client", lock)
        case.face.hidden_metadata(item, "tags", ["x"])
    for out in (case.face.run(adapter, items, "which?"), list(asyncio.run(case.face.arun(adapter, items, "which?")))):
        assert len(out) == len(items)
        for o in out:
            assert case.face.metadata(o)["client"] is lock
            case.face.metadata(o)["tags"].append("edited")
    assert all(case.face.metadata(i)["tags"] == ["x"] for i in items)


def test_empty_input(case: Case) -> None:
    adapter = case.build(top_n=3)
    assert case.face.run(adapter, [], "which?") == []
    assert list(asyncio.run(case.face.arun(adapter, [], "which?"))) == []


def test_async_parity(case: Case, fakes: list[FakeReranker]) -> None:
    adapter = case.build(top_n=4)
    items = case.face.make(TEXTS, RETRIEVAL_SCORES)
    sync_out = case.face.run(adapter, items, "which?")
    async_out = list(asyncio.run(case.face.arun(adapter, items, "which?")))
    assert _result(case.face, async_out) == _result(case.face, sync_out) == EXPECTED[:4]
    assert [case.face.metadata(o) for o in async_out] == [case.face.metadata(o) for o in sync_out]
    # the async path awaits the reranker's own coroutine, not the sync path in a thread
    assert [c[0] for c in fakes[0].calls] == ["rerank_scores", "arerank_scores"]


def test_concurrent_async_calls(case: Case) -> None:
    adapter = case.build(top_n=2)

    async def many() -> list[Any]:
        return await asyncio.gather(
            *(case.face.arun(adapter, case.face.make(TEXTS, RETRIEVAL_SCORES), f"q{i}") for i in range(8))
        )

    for out in asyncio.run(many()):
        assert _result(case.face, list(out)) == EXPECTED[:2]


@pytest.mark.parametrize(
    "bad",
    [
        {"top_n": 0},
        {"top_n": -3},
        {"top_n": "many"},
        {"top_n": True},
        {"top_n": "2"},
        {"top_n": 2.0},
        {"reranker_kwargs": "x"},
        {"no_such_option": 1},
        {"fusion": "max"},
        {"fusion_k": 0},
        {"fusion_weight": 1.5},
        {"score_threshold": 1.5},
        {"score_threshold": True},
        {"score_threshold": "0.5"},
    ],
    ids=[
        "top_n=0",
        "top_n<0",
        "top_n-str",
        "top_n-bool",
        "top_n-digit-str",
        "top_n-float",
        "kwargs-not-dict",
        "unknown-field",
        "fusion-unknown",
        "fusion_k=0",
        "fusion_weight>1",
        "threshold>1",
        "threshold-bool",
        "threshold-str",
    ],
)
def test_bad_config_is_a_validation_error(case: Case, bad: dict[str, Any]) -> None:
    # a pydantic ValidationError is a ValueError, and it names the field
    with pytest.raises(ValidationError, match=next(iter(bad))):
        case.build(**bad)


@pytest.mark.parametrize("value", [1, 0, "false", None])
def test_llama_index_keep_retrieval_score_is_a_real_bool(value: Any, fakes: list[FakeReranker]) -> None:
    face = _llama_face()
    with pytest.raises(ValidationError, match="keep_retrieval_score"):
        face.generic(reranker="fake", keep_retrieval_score=value)


def test_blank_query_is_a_value_error(case: Case) -> None:
    adapter = case.build()
    with pytest.raises(ValueError, match="query"):
        case.face.run(adapter, case.face.make(TEXTS, RETRIEVAL_SCORES), "  ")


@pytest.mark.parametrize("face_name", sorted(FACES))
def test_generic_takes_a_reranker_instance(face_name: str) -> None:
    face = FACES[face_name]()
    fake = FakeReranker()
    adapter = face.generic(reranker=fake, top_n=1)
    assert _result(face, face.run(adapter, face.make(TEXTS, RETRIEVAL_SCORES), "q")) == EXPECTED[:1]
    assert fake.calls == [("rerank_scores", "q", TEXTS, 1)]
    with pytest.raises(ValueError, match="registry name"):
        face.generic(reranker=FakeReranker(), model="m")
    with pytest.raises(ValidationError):
        face.generic(reranker=42)


@pytest.mark.parametrize("face_name", sorted(FACES))
def test_generic_unknown_name_lists_known_ones(face_name: str) -> None:
    with pytest.raises(ValueError, match=r"unknown reranker name 'nope'.*identity"):
        FACES[face_name]().generic(reranker="nope")


@pytest.mark.parametrize("face_name", sorted(FACES))
def test_real_identity_strategy(face_name: str) -> None:
    """No fake: the registry's identity baseline through each framework keeps the input order."""
    face = FACES[face_name]()
    cls = next(c for c in face.classes if getattr(c, "strategy", None) == "identity")
    out = face.run(cls(top_n=3), face.make(TEXTS, RETRIEVAL_SCORES), "q")
    assert [face.text(o) for o in out] == TEXTS[:3]
    assert [face.score(o) for o in out] == [0.0, -1.0, -2.0]


def test_adapters_naming_one_model_share_one_loaded_model(tiny_model: Any, tiny_cross_encoder: Any) -> None:
    """Two postprocessors and two compressors naming the same model hold one model object,
    and the adapters return exactly the scores of the reranker called directly."""
    llama = _llama_face()
    lc = _langchain_face()
    pointwise = [
        *(next(c for c in f.classes if getattr(c, "strategy", None) == "pointwise") for f in (llama, lc)),
    ]
    adapters = [cls(model=str(tiny_model), top_n=3) for cls in pointwise for _ in range(2)]
    adapters += [f.generic(reranker="pointwise", model=str(tiny_model)) for f in (llama, lc)]
    cores = {id(a.reranker_instance.core) for a in adapters}
    assert len(cores) == 1
    direct = registry.create("pointwise", model=str(tiny_model)).rerank("which?", TEXTS, 3)
    assert direct[0].score != direct[1].score
    expected = [(TEXTS[h.index], h.score) for h in direct]
    for a, face in zip(adapters[:4], (llama, llama, lc, lc), strict=True):
        assert _result(face, face.run(a, face.make(TEXTS, RETRIEVAL_SCORES), "which?")) == expected

    cross = [
        next(c for c in f.classes if getattr(c, "strategy", None) == "cross-encoder")(model=str(tiny_cross_encoder))
        for f in (llama, lc, llama)
    ]
    assert len({id(a.reranker_instance.core) for a in cross}) == 1


# --------------------------------------------------------------------------- fusion, relevance, thresholds


def _ranked(**kwargs: Any) -> list[tuple[str, float]]:
    from rerank_plugins.fusion import rank_documents

    return [(TEXTS[d.index], d.score) for d in rank_documents(FakeReranker(), "which?", TEXTS, **kwargs)]


def test_rrf_fusion_with_the_input_order(case: Case, fakes: list[FakeReranker]) -> None:
    adapter = case.build(fusion="rrf", top_n=4)
    out = case.face.run(adapter, case.face.make(TEXTS, RETRIEVAL_SCORES), "which?")
    expected = _ranked(fusion={"fusion": "rrf"}, top_k=4)
    # alpha, first in the input and last for the reranker, climbs to second
    assert _result(case.face, out) == expected and [t for t, _ in expected] == ["bravo", "alpha", "charlie", "echo"]
    assert fakes[0].calls[0][3] == 4  # the caller's top_n still reaches the strategy
    # the reranker's own score and relevance stay in the metadata
    assert [case.face.metadata(o)["rerank_score"] for o in out] == [FAKE_SCORES[t] for t, _ in expected]
    async_out = list(asyncio.run(case.face.arun(adapter, case.face.make(TEXTS, RETRIEVAL_SCORES), "which?")))
    assert _result(case.face, async_out) == expected


def test_weighted_rrf_leans_on_the_input_order(case: Case) -> None:
    adapter = case.build(fusion="rrf", fusion_weight=0.1)
    out = case.face.run(adapter, case.face.make(TEXTS, RETRIEVAL_SCORES), "which?")
    expected = _ranked(fusion={"fusion": "rrf", "fusion_weight": 0.1})
    # a weight of 0.1 keeps the input order, even where the reranker puts alpha last
    assert _result(case.face, out) == expected and [t for t, _ in expected] == TEXTS


def test_interpolation_with_the_retrieval_scores(case: Case) -> None:
    reversed_scores = list(reversed(RETRIEVAL_SCORES))  # the retriever liked echo best
    adapter = case.build(fusion="interpolate", fusion_weight=0.5, **(case.face.retrieval_option or {}))
    out = case.face.run(adapter, case.face.make(TEXTS, reversed_scores), "which?")
    expected = _ranked(fusion={"fusion": "interpolate", "fusion_weight": 0.5}, retrieval_scores=reversed_scores)
    assert _result(case.face, out) == expected and expected[0][0] == "echo"
    # without retrieval scores the input order stands in for them
    if case.face.retrieval_option:
        blind = case.build(fusion="interpolate", retrieval_score_key=None)
        got = _result(case.face, case.face.run(blind, case.face.make(TEXTS, reversed_scores), "which?"))
        assert got == _ranked(fusion={"fusion": "interpolate"})


def test_score_threshold_then_top_n(case: Case) -> None:
    items = case.face.make(TEXTS, RETRIEVAL_SCORES)
    out = case.face.run(case.build(score_threshold=0.5), items, "which?")
    # relevance (min-max of the fake's scores): bravo 1, echo 0.75, charlie 0.5, delta 0.25, alpha 0
    assert _result(case.face, out) == EXPECTED[:3]
    assert all(case.face.metadata(o)["rerank_relevance"] >= 0.5 for o in out)
    assert _result(case.face, case.face.run(case.build(score_threshold=0.5, top_n=2), items, "which?")) == EXPECTED[:2]
    assert case.face.run(case.build(score_threshold=1.0), items, "which?")[0] is not None
    assert len(case.face.run(case.build(score_threshold=1.0), items, "which?")) == 1


def test_outputs_are_json_serialisable_plain_floats(case: Case) -> None:
    import json

    import numpy as np

    # numpy retrieval scores (as some retrievers return them) come back as plain floats
    items = case.face.make(TEXTS, [np.float64(s) for s in RETRIEVAL_SCORES])
    for kwargs in ({}, {"fusion": "rrf"}, {"fusion": "interpolate", **(case.face.retrieval_option or {})}):
        out = case.face.run(case.build(**kwargs), items, "which?")
        for o in out:
            md = case.face.metadata(o)
            added = {k: md[k] for k in ("rerank_score", "rerank_relevance", case.face.score_key)}
            assert all(type(v) is float for v in [*added.values(), case.face.score(o)]), added
            json.dumps(added)
            assert 0.0 <= md["rerank_relevance"] <= 1.0
        if case.face.name == "llama_index":
            json.dumps([case.face.metadata(o) for o in out])
