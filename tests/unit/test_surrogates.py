"""Lone surrogates reach no tokenizer: the cross-encoder and the embedder see U+FFFD instead.

Hugging Face tokenizers raise ``TypeError`` on a lone surrogate; the documented behaviour is
:func:`rerank_plugins.text.clean_text` (U+FFFD in its place), so scores equal those of the
cleaned text. (The FAISS index: tests/unit/test_retrieval_index.py; the LLM strategies go
through the scoring core.)
"""

from __future__ import annotations

import numpy as np

from rerank_plugins import registry
from rerank_plugins.retrieval import SentenceTransformerEmbedder

DOCS = ["Paris \ud800 is the capital", "plain text", "\udfff", "Berlin \udc80\ud800 city"]
QUERY = "capital \ud800 of France"


def _clean(text: str) -> str:
    return "".join("\ufffd" if 0xD800 <= ord(c) <= 0xDFFF else c for c in text)


def test_cross_encoder_scores_lone_surrogates_as_replacement_characters(tiny_cross_encoder) -> None:
    reranker = registry.create("cross-encoder", model=str(tiny_cross_encoder))
    hits = reranker.rerank(QUERY, DOCS)
    assert sorted(h.index for h in hits) == list(range(len(DOCS)))
    assert hits == reranker.rerank(_clean(QUERY), [_clean(d) for d in DOCS])


def test_embedder_embeds_lone_surrogates_as_replacement_characters(tiny_cross_encoder) -> None:
    emb = SentenceTransformerEmbedder(str(tiny_cross_encoder))
    got = emb.embed_documents(DOCS)
    assert got.shape == (len(DOCS), emb.dimension)
    np.testing.assert_allclose(got, emb.embed_documents([_clean(d) for d in DOCS]))
    np.testing.assert_allclose(emb.embed_queries([QUERY]), emb.embed_queries([_clean(QUERY)]))
