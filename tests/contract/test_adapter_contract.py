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
from rerank_plugins.types import BaseReranker, Hit

BUILTIN_STRATEGIES = {"identity", "pointwise", "cross-encoder", "listwise", "pairwise", "attention"}

# Known scores per text: the expected order is fully determined.
TEXTS = ["alpha", "bravo", "charlie", "delta", "echo"]
FAKE_SCORES = {"alpha": 0.1, "bravo": 0.9, "charlie": 0.5, "delta": 0.3, "echo": 0.7}
RETRIEVAL_SCORES = [0.95, 0.9, 0.85, 0.8, 0.75]
EXPECTED = [("bravo", 0.9), ("echo", 0.7), ("charlie", 0.5), ("delta", 0.3), ("alpha", 0.1)]


class FakeReranker(BaseReranker):
    """Scores documents from a fixed table; records calls and which entry point was used."""

    name = "fake"

    def __init__(self, **options: Any) -> None:
        self.options = options
        self.calls: list[tuple[str, str, list[str], int | None]] = []

    def score(self, query: str, documents: list[str]) -> list[float]:
        return [FAKE_SCORES[d] for d in documents]

    def rerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[Hit]:
        self.calls.append(("rerank", query, list(documents), top_k))
        return super().rerank(query, documents, top_k)

    async def arerank(self, query: str, documents: Sequence[str], top_k: int | None = None) -> list[Hit]:
        self.calls.append(("arerank", query, list(documents), top_k))
        # call the sync base directly so the recorded entry point stays "arerank"
        return await asyncio.to_thread(BaseReranker.rerank, self, query, documents, top_k)


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
    assert fakes[0].calls == [("rerank", "which?", TEXTS, None)]


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
    assert [c[0] for c in fakes[0].calls] == ["rerank", "arerank"]


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
    assert fake.calls == [("rerank", "q", TEXTS, 1)]
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
