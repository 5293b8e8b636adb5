"""``run_benchmark(in_flight=N)`` / ``rerank-plugins bench --in-flight N``: N queries reranked at once."""

from __future__ import annotations

import threading
import time

from rerank_plugins import registry
from rerank_plugins.evaluation.bench import MethodSpec, run_benchmark
from rerank_plugins.evaluation.loaders import Candidate, RerankQuery
from rerank_plugins.testing import KeywordReranker


class _Overlapping(KeywordReranker):
    """Records how many calls run at once."""

    active = 0
    peak = 0
    lock = threading.Lock()

    def rerank_with_stats(self, query, documents, top_k=None):  # type: ignore[no-untyped-def]
        # the bench's entry point (it records the call's statistics)
        cls = type(self)
        with cls.lock:
            cls.active += 1
            cls.peak = max(cls.peak, cls.active)
        time.sleep(0.05)
        try:
            return super().rerank_with_stats(query, documents, top_k)
        finally:
            with cls.lock:
                cls.active -= 1


def test_queries_run_at_once_and_the_report_gives_wall_seconds(tmp_path):
    registry.register("overlapping", lambda **_: _Overlapping(), overwrite=True)
    queries = [
        RerankQuery(f"q{i}", "red apple", (Candidate("d1", "blue sky", 2.0), Candidate("d2", "red apple", 1.0)))
        for i in range(8)
    ]
    qrels = {q.qid: {"d2": 1} for q in queries}
    result = run_benchmark(queries, qrels, [MethodSpec("overlapping")], out_dir=tmp_path, plot=False,
                           bare_forward=False, in_flight=4)
    assert 2 <= _Overlapping.peak <= 4
    row = next(r for r in result.summary if r["label"] == "overlapping")
    assert row["queries"] == 8 and row["in_flight"] == 4 and row["wall_s_per_q"] > 0
    assert row["metrics"]["nDCG@10"] == 1.0
    assert "4 queries in flight" in result.markdown
    assert result.data["config"]["in_flight"] == 4
