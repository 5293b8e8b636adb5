"""Real parts: an in-memory VectorStoreIndex over 200 SciFact documents embedded with MiniLM,
a RetrieverQueryEngine with our PointwiseRerank on SmolLM2.

The answer-writing LLM is LlamaIndex's own local Hugging Face integration
(``llama-index-llms-huggingface``'s ``HuggingFaceLLM``, loaded offline from the provisioned
SmolLM2 folder); embeddings are ``llama-index-embeddings-huggingface``'s ``HuggingFaceEmbedding``
over the provisioned MiniLM folder.
"""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from llama_index.core import VectorStoreIndex
from llama_index.core.query_engine import RetrieverQueryEngine
from llama_index.core.schema import MetadataMode, QueryBundle, TextNode
from llama_index.postprocessor.rerank_plugins import PointwiseRerank, RerankPluginsRerank

from rerank_plugins import registry

pytestmark = [pytest.mark.integration, pytest.mark.slow]

N_QUERIES = 1  # CPU time: each query is several SmolLM2 calls
K = 10  # candidates from the vector store
TOP_N = 3


@pytest.fixture(scope="module")
def index(scifact: Any, minilm: Path) -> VectorStoreIndex:
    pytest.importorskip("llama_index.embeddings.huggingface", reason="pip install llama-index-embeddings-huggingface")
    from llama_index.embeddings.huggingface import HuggingFaceEmbedding

    embed = HuggingFaceEmbedding(model_name=str(minilm), device="cpu")
    nodes = [TextNode(text=text, id_=docid) for docid, text in scifact.corpus.items()]
    return VectorStoreIndex(nodes, embed_model=embed)


@pytest.fixture(scope="module")
def llm(smollm2: Path) -> Any:
    pytest.importorskip("llama_index.llms.huggingface", reason="pip install llama-index-llms-huggingface")
    from llama_index.llms.huggingface import HuggingFaceLLM
    from transformers import AutoTokenizer

    tokenizer = AutoTokenizer.from_pretrained(smollm2)

    def completion_to_prompt(text: str) -> str:
        return tokenizer.apply_chat_template(
            [{"role": "user", "content": text}], tokenize=False, add_generation_prompt=True
        )

    return HuggingFaceLLM(
        model_name=str(smollm2),
        tokenizer_name=str(smollm2),
        max_new_tokens=12,
        device_map="cpu",
        generate_kwargs={"do_sample": False},
        completion_to_prompt=completion_to_prompt,
    )


def test_query_engine_with_pointwise_rerank(scifact: Any, smollm2: Path, index: VectorStoreIndex, llm: Any) -> None:
    retriever = index.as_retriever(similarity_top_k=K)
    reranker = PointwiseRerank(model=str(smollm2), top_n=TOP_N)
    engine = RetrieverQueryEngine.from_args(retriever, llm=llm, node_postprocessors=[reranker])
    direct = registry.create("pointwise", model=str(smollm2))
    # one loaded model for the postprocessor, the generic class and the direct reranker
    assert reranker.reranker_instance.core is direct.core  # type: ignore[attr-defined]
    generic = RerankPluginsRerank(reranker="pointwise", model=str(smollm2), top_n=TOP_N)
    assert generic.reranker_instance.core is direct.core  # type: ignore[attr-defined]

    for qid, query in list(scifact.queries.items())[:N_QUERIES]:
        candidates = retriever.retrieve(query)
        # the real embedding retriever finds the judged document in its top K of 200
        assert set(scifact.qrels[qid]) & {n.node.node_id for n in candidates}, qid
        hits = direct.rerank(query, [n.node.get_content(metadata_mode=MetadataMode.EMBED) for n in candidates], TOP_N)
        expected_ids = [candidates[h.index].node.node_id for h in hits]
        expected_scores = [h.score for h in hits]
        retrieval = {n.node.node_id: n.score for n in candidates}

        response = engine.query(query)
        got = response.source_nodes
        assert [n.node.node_id for n in got] == expected_ids
        assert [n.score for n in got] == pytest.approx(expected_scores, abs=1e-4)
        assert [n.node.metadata["retrieval_score"] for n in got] == pytest.approx([retrieval[i] for i in expected_ids])
        assert isinstance(response.response, str) and response.response.strip()

    # async path: same nodes through aretrieve (no answer generation, to keep the test short)
    qid, query = next(iter(scifact.queries.items()))
    sync_nodes = engine.retrieve(QueryBundle(query))
    async_nodes = asyncio.run(engine.aretrieve(QueryBundle(query)))
    assert [n.node.node_id for n in async_nodes] == [n.node.node_id for n in sync_nodes]
    assert [n.score for n in async_nodes] == pytest.approx([n.score for n in sync_nodes], abs=1e-4)
