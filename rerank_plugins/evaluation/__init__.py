"""Evaluation: loaders for BEIR / TREC / RankGPT / multi-hop files, ir-measures metrics, every benchmark.

The benchmarks (``bench``: rerankers, ``retrieval_bench``, ``decomposition_bench``,
``injection_bench``) share the measuring helpers of ``measure`` and run as ``rerank-plugins``
subcommands. This package sits above the library: no module of scoring, rerankers, retrieval,
decomposition or the adapters imports it.

Example:
    >>> from rerank_plugins.evaluation import evaluate
    >>> evaluate({"q": {"d1": 1}}, {"q": ["d0", "d1"]}, ["RR@10"]).aggregate
    {'RR@10': 0.5}
"""

from __future__ import annotations

from rerank_plugins.evaluation.loaders import (
    BeirDataset,
    Candidate,
    Context,
    DataFormatError,
    MultiHopExample,
    Qrels,
    RerankQuery,
    Run,
    default_data_dir,
    load_beir,
    load_beir_corpus,
    load_beir_qrels,
    load_beir_queries,
    load_candidates,
    load_multihop,
    load_qrels,
    load_trec_qrels,
    load_trec_run,
    multihop_to_rerank,
    rerank_queries_from_run,
)
from rerank_plugins.evaluation.metrics import DEFAULT_MEASURES, Evaluation, evaluate, parse_measures

__all__ = [
    "DEFAULT_MEASURES",
    "BeirDataset",
    "Candidate",
    "Context",
    "DataFormatError",
    "Evaluation",
    "MultiHopExample",
    "Qrels",
    "RerankQuery",
    "Run",
    "default_data_dir",
    "evaluate",
    "load_beir",
    "load_beir_corpus",
    "load_beir_qrels",
    "load_beir_queries",
    "load_candidates",
    "load_multihop",
    "load_qrels",
    "load_trec_qrels",
    "load_trec_run",
    "multihop_to_rerank",
    "parse_measures",
    "rerank_queries_from_run",
]
