"""Real-model fixtures: the provisioned models (env vars) and a 200-document SciFact slice."""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path

import pytest

PROVISION_HINT = "run provision.py and export its variables (see the main README, Tests)"


def env_path(var: str) -> Path:
    """The provisioned model path in ``var``, or skip saying how to provision it."""
    value = os.environ.get(var)
    if not value:
        pytest.skip(f"{var} is not set; {PROVISION_HINT}")
    path = Path(value)
    if not path.exists():
        pytest.fail(f"{var}={value} does not exist; {PROVISION_HINT}")
    return path


@pytest.fixture(scope="session")
def smollm2() -> Path:
    return env_path("RERANK_TEST_LLM")


@pytest.fixture(scope="session")
def minilm() -> Path:
    return env_path("RERANK_EMBED_MODEL")


@dataclass(frozen=True)
class SciFactSlice:
    corpus: dict[str, str]  # 200 documents: the relevant ones of the test queries first
    queries: dict[str, str]  # test queries whose relevant documents are all in the slice
    qrels: dict[str, dict[str, int]]


@pytest.fixture(scope="session")
def scifact() -> SciFactSlice:
    from rerank_plugins.evaluation.loaders import default_data_dir, load_beir

    folder = default_data_dir() / "scifact"
    if not folder.exists():
        pytest.skip(f"SciFact not found at {folder}; set RERANK_DATA_DIR")
    ds = load_beir(folder, split="test")
    wanted: list[str] = []
    queries: dict[str, str] = {}
    for qid in sorted(ds.qrels, key=int)[:40]:
        queries[qid] = ds.queries[qid]
        wanted += [d for d in ds.qrels[qid] if d not in wanted]
    fillers = [d for d in sorted(ds.corpus, key=int) if d not in wanted]
    ids = (wanted + fillers)[:200]
    return SciFactSlice(
        corpus={d: ds.corpus[d] for d in ids},
        queries={q: t for q, t in queries.items() if all(d in ids for d in ds.qrels[q])},
        qrels={q: ds.qrels[q] for q in queries},
    )
