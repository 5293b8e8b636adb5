"""One module per reranking strategy; each takes the shared scoring core, none loads a model."""
