"""FaissRetriever with real weights: MiniLM embeddings over a SciFact slice, SmolLM2 pointwise rerank."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pytest

pytest.importorskip("faiss")

from langchain_classic.retrievers import ContextualCompressionRetriever
from langchain_core.documents import Document
from langchain_rerank_plugins import FaissRetriever, PointwiseRerank

from rerank_plugins import registry
from rerank_plugins.evaluation.loaders import default_data_dir, load_beir

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HINT = "run provision.py and export its variables (see the main README, Tests)"


def _model(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set; {HINT}")
    return value


def test_faiss_retrieve_then_llm_rerank(tmp_path: Path) -> None:
    minilm, smollm2 = _model("RERANK_EMBED_MODEL"), _model("RERANK_TEST_LLM")
    folder = default_data_dir() / "scifact"
    if not folder.exists():
        pytest.skip(f"SciFact not found at {folder}; set RERANK_DATA_DIR")
    ds = load_beir(folder, split="test")
    qid = sorted(ds.qrels, key=int)[0]
    ids = list(dict.fromkeys([*ds.qrels[qid], *sorted(ds.corpus, key=int)]))[:40]
    docs = [Document(id=d, page_content=ds.corpus[d], metadata={"source": "scifact"}) for d in ids]
    FaissRetriever.from_documents(docs, embedder=minilm).index.save(tmp_path / "idx")

    base = FaissRetriever.load(tmp_path / "idx", k=5)  # top 5: an LLM on CPU is slow
    pipeline = ContextualCompressionRetriever(
        base_retriever=base, base_compressor=PointwiseRerank(model=smollm2, top_n=3)
    )
    query = ds.queries[qid]
    candidates = base.invoke(query)
    assert set(ds.qrels[qid]) & {d.id for d in candidates}  # the judged document is retrieved
    hits = registry.create("pointwise", model=smollm2).rerank(query, [d.page_content for d in candidates], 3)

    for got in (pipeline.invoke(query), asyncio.run(pipeline.ainvoke(query))):
        assert [d.id for d in got] == [candidates[h.index].id for h in hits]
        assert [d.metadata["relevance_score"] for d in got] == pytest.approx([h.score for h in hits], abs=1e-4)
        assert [d.metadata["score"] for d in got] == [candidates[h.index].metadata["score"] for h in hits]
