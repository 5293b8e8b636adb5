"""FaissRetriever with real weights: MiniLM embeddings over a SciFact slice, SmolLM2 pointwise rerank.

Also checks that LlamaIndex's own in-memory vector store (VectorStoreIndex with
HuggingFaceEmbedding over the same MiniLM) ranks exactly as our FAISS index does, so either
can feed the rerankers.
"""

from __future__ import annotations

import os
from pathlib import Path

import pytest

pytest.importorskip("faiss")

from llama_index.core import VectorStoreIndex
from llama_index.core.llms import MockLLM
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, QueryBundle, TextNode
from llama_index.postprocessor.rerank_plugins import FaissRetriever, PointwiseRerank

from rerank_plugins import registry
from rerank_plugins.evaluation.loaders import default_data_dir, load_beir

pytestmark = [pytest.mark.integration, pytest.mark.slow]
HINT = "run provision.py and export its variables (see the main README, Tests)"


def _model(var: str) -> str:
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set; {HINT}")
    return value


@pytest.fixture(scope="module")
def data() -> tuple[list[TextNode], dict[str, str], dict[str, dict[str, int]]]:
    folder = default_data_dir() / "scifact"
    if not folder.exists():
        pytest.skip(f"SciFact not found at {folder}; set RERANK_DATA_DIR")
    ds = load_beir(folder, split="test")
    qids = sorted(ds.qrels, key=int)[:3]
    wanted = [d for q in qids for d in ds.qrels[q]]
    ids = list(dict.fromkeys(wanted + sorted(ds.corpus, key=int)))[:60]
    nodes = [TextNode(id_=d, text=ds.corpus[d]) for d in ids]
    return nodes, {q: ds.queries[q] for q in qids}, {q: ds.qrels[q] for q in qids}


def test_faiss_matches_llama_index_vector_store_and_feeds_the_reranker(data, tmp_path: Path) -> None:
    pytest.importorskip("llama_index.embeddings.huggingface", reason="pip install llama-index-embeddings-huggingface")
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    minilm, smollm2 = _model("RERANK_EMBED_MODEL"), _model("RERANK_TEST_LLM")
    nodes, queries, qrels = data
    FaissRetriever.from_nodes(nodes, embedder=minilm).index.save(tmp_path / "idx")
    faiss_retriever = FaissRetriever.load(tmp_path / "idx", similarity_top_k=10)
    store = VectorStoreIndex(nodes, embed_model=HuggingFaceEmbedding(model_name=minilm, device="cpu"))
    store_retriever = store.as_retriever(similarity_top_k=10)

    for qid, query in queries.items():
        ours, theirs = faiss_retriever.retrieve(query), store_retriever.retrieve(query)
        assert [n.node.node_id for n in ours] == [n.node.node_id for n in theirs]
        assert [n.score for n in ours] == pytest.approx([n.score for n in theirs], abs=1e-4)
        assert set(qrels[qid]) & {n.node.node_id for n in ours}, qid  # the judged document is retrieved

    # retrieve with FAISS, rerank with an LLM (one query, top 5: an LLM on CPU is slow)
    faiss_retriever.similarity_top_k = 5
    reranker = PointwiseRerank(model=smollm2, top_n=3)
    engine = RetrieverQueryEngine.from_args(faiss_retriever, llm=MockLLM(max_tokens=4), node_postprocessors=[reranker])
    query = next(iter(queries.values()))
    candidates = faiss_retriever.retrieve(query)
    texts = [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in candidates]
    hits = registry.create("pointwise", model=smollm2).rerank(query, texts, 3)
    got = engine.query(query).source_nodes
    assert [n.node.node_id for n in got] == [candidates[h.index].node.node_id for h in hits]
    assert [n.score for n in got] == pytest.approx([h.score for h in hits], abs=1e-4)


async def test_query_bundles_and_similarity_top_k_as_llama_index_vector_retriever(data) -> None:
    """A string, a QueryBundle, HyDE-style custom_embedding_strs (one or several, averaged), through
    retrieve and aretrieve, rank as LlamaIndex's own vector retriever over the same MiniLM does."""
    pytest.importorskip("llama_index.embeddings.huggingface", reason="pip install llama-index-embeddings-huggingface")
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    minilm = _model("RERANK_EMBED_MODEL")
    nodes, queries, _ = data
    ours = FaissRetriever.from_nodes(nodes, embedder=minilm, similarity_top_k=4)
    store = VectorStoreIndex(nodes, embed_model=HuggingFaceEmbedding(model_name=minilm, device="cpu"))
    q1, q2 = list(queries.values())[:2]
    bundles = [
        lambda: q1,
        lambda: QueryBundle(q1),
        lambda: QueryBundle("unrelated words", custom_embedding_strs=[q1]),
        lambda: QueryBundle("unrelated words", custom_embedding_strs=[q1, q2]),
    ]
    for top_k in (1, 4):
        ours.similarity_top_k = top_k
        theirs = store.as_retriever(similarity_top_k=top_k)
        for make in bundles:  # a fresh bundle each time: LlamaIndex's retriever stores its embedding in it
            want = theirs.retrieve(make())
            assert len(want) == top_k
            for got in (ours.retrieve(make()), await ours.aretrieve(make())):
                assert [n.node.node_id for n in got] == [n.node.node_id for n in want]
                assert [n.score for n in got] == pytest.approx([n.score for n in want], abs=1e-4)
