"""FAISS retrieval with the provisioned MiniLM: build, save, reload in a new process, query."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest

pytest.importorskip("faiss")

from rerank_plugins.retrieval import FaissIndex, get_embedder, index_folder

pytestmark = pytest.mark.integration

MODEL = os.environ.get("RERANK_EMBED_MODEL")
needs_model = pytest.mark.skipif(
    not MODEL, reason="RERANK_EMBED_MODEL is unset: run provision.py and source its exports"
)

DOCS = {
    "whales.txt": "Blue whales are the largest animals ever known to have lived.",
    "python.md": "Python is a programming language with dynamic typing and garbage collection.",
    "paris.txt": "Paris is the capital and most populous city of France.",
    "faiss.md": "FAISS is a library for efficient similarity search of dense vectors.",
}


@needs_model
def test_minilm_index_round_trip_in_a_new_process(tmp_path):
    for name, text in DOCS.items():
        (tmp_path / "docs" / name).parent.mkdir(exist_ok=True)
        (tmp_path / "docs" / name).write_text(text, encoding="utf-8")
    index = index_folder(tmp_path / "docs", embedder=MODEL)
    assert (index.kind, index.dimension, len(index)) == ("flat", 384, 4)

    # exact search equals cosine similarity computed directly with sentence-transformers
    model = get_embedder(MODEL).model
    q = "What is the capital of France?"
    d = model.encode(list(DOCS.values()), normalize_embeddings=True)
    qv = model.encode([q], normalize_embeddings=True)[0]
    want = sorted(zip(DOCS, (d @ qv).tolist(), strict=True), key=lambda t: -t[1])
    got = index.search(q, k=4)
    assert [r.id for r in got] == [name for name, _ in want]
    np.testing.assert_allclose([r.score for r in got], [s for _, s in want], atol=1e-5)

    index.save(tmp_path / "idx")
    script = (
        "import json, sys; from rerank_plugins.retrieval import FaissIndex; "
        "idx = FaissIndex.load(sys.argv[1]); "
        "print(json.dumps([[r.id, r.score] for r in idx.search(sys.argv[2], k=2)]))"
    )
    out = subprocess.run(
        [sys.executable, "-c", script, str(tmp_path / "idx"), "similarity search library"],
        capture_output=True, text=True, check=True, timeout=300,
    )  # fmt: skip
    reloaded = json.loads(out.stdout.strip().splitlines()[-1])
    fresh = [[r.id, r.score] for r in index.search("similarity search library", k=2)]
    assert [r[0] for r in reloaded] == [r[0] for r in fresh] == ["faiss.md", reloaded[1][0]]
    np.testing.assert_allclose([r[1] for r in reloaded], [r[1] for r in fresh], atol=1e-5)
    assert FaissIndex.load(tmp_path / "idx").embedder is get_embedder(MODEL)  # shared once per process
