"""Served models against llama.cpp's real server (the xllamacpp wheel), on SmolLM2.

Agreement: the server runs a float32 copy of ``$RERANK_TEST_GGUF`` (dequantised with the gguf
package, float32 KV cache) and the in-process core loads the same ``.gguf`` (transformers
dequantises it the same way), so both compute with the same weights: pointwise, listwise FIRST,
PRP, listwise generate mode and the decomposer must give the same rankings, with scores equal to
float32 round-off (measured: pointwise log-odds within 3e-5 on DL19 passages). Served quantised
(Q4_1 as provisioned), llama.cpp computes with 4-bit weights and 8-bit activations: the
pointwise log-odds then differ from the in-process ones by 0.1 on average (README, Served
models), so the quantised server is used here only where exact numbers do not matter.
"""

from __future__ import annotations

import asyncio
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from rerank_plugins import registry
from rerank_plugins.decomposition import Decomposer
from rerank_plugins.scoring import get_core
from rerank_plugins.scoring.served import ServedModel, ServedModelError
from rerank_plugins.scoring.served.local import dequantize_gguf

pytest.importorskip("httpx")
pytest.importorskip("xllamacpp")

THREADS = 2  # llama.cpp threads per server (CI machines are small and shared)
N_QUERIES, DEPTH, DOC_TOKENS = 3, 5, 48  # the first DL19 queries, their BM25 top passages, cut to 48 tokens


class ServerProcess:
    """``python -m rerank_plugins.scoring.served.local`` in a child process (so a test can kill it)."""

    def __init__(self, gguf: Path, log: Path, *, f32_kv: bool = False, parallel: int = 4) -> None:
        args = [sys.executable, "-m", "rerank_plugins.scoring.served.local", str(gguf), "--threads", str(THREADS),
                "--parallel", str(parallel), "--ctx", "8192", "--until-stdin-closes"]
        if f32_kv:
            args.append("--f32-kv")
        self.log = log
        self._err = log.open("wb")
        self.proc = subprocess.Popen(args, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._err)
        line = self._first_line(timeout=180)
        if not line.startswith("listening "):
            self.stop()
            raise RuntimeError(f"the llama.cpp server did not start ({line!r}); its log: {log}")
        self.url = line.split(" ", 1)[1].strip()

    def _first_line(self, timeout: float) -> str:
        out: list[str] = []
        reader = threading.Thread(target=lambda: out.append(self.proc.stdout.readline().decode()), daemon=True)
        reader.start()
        reader.join(timeout)
        return out[0] if out else ""

    def name(self, tokenizer: Path | str, query: str = "") -> str:
        return f"{self.url}/v1{query}#{tokenizer}"

    def kill(self) -> None:
        self.proc.kill()
        self.proc.wait(30)

    def stop(self) -> None:
        if self.proc.poll() is None:
            self.proc.stdin.close()
            try:
                self.proc.wait(30)
            except subprocess.TimeoutExpired:
                self.kill()
        self._err.close()


@pytest.fixture(scope="session")
def f32_gguf(smollm2_gguf, tmp_path_factory) -> Path:
    return dequantize_gguf(smollm2_gguf, tmp_path_factory.mktemp("gguf") / "smollm2-f32.gguf")


@pytest.fixture(scope="session")
def exact_server(f32_gguf, tmp_path_factory):
    server = ServerProcess(f32_gguf, tmp_path_factory.mktemp("logs") / "exact.log", f32_kv=True, parallel=8)
    yield server
    server.stop()


@pytest.fixture(scope="session")
def served_exact(exact_server, smollm2):
    with ServedModel(exact_server.name(smollm2)) as model:
        yield model


@pytest.fixture(scope="session")
def gguf_core(smollm2_gguf, smollm2):
    """The in-process core on the same .gguf (dequantised to float32 by transformers)."""
    return get_core(str(smollm2_gguf), tokenizer=str(smollm2), device="cpu", dtype="float32")


@pytest.fixture(scope="session")
def dl19(data_dir):
    from rerank_plugins.evaluation.loaders import load_candidates

    queries = load_candidates(data_dir / "trec-dl-2019" / "bm25_dl19_top100.jsonl")[:N_QUERIES]
    return [(q.query, [c.text for c in q.candidates[:DEPTH]]) for q in queries]


def test_the_server_is_llama_cpp_with_its_context(served_exact):
    d = served_exact.describe()
    assert d["api"] == "llamacpp" and d["method"] == "logit_bias push + post_sampling_probs"
    assert served_exact.max_length == 8192
    assert {"prompts", "logits", "generate"} <= served_exact.capabilities


@pytest.mark.parametrize(
    "name, options, queries, depth, tolerance",
    [
        ("pointwise", {}, N_QUERIES, DEPTH, 2e-3),
        ("listwise", {"mode": "first", "window": DEPTH}, N_QUERIES, DEPTH, 2e-3),
        ("pairwise", {}, 2, 4, 0.0),  # all 12 ordered pairs of 4 passages per query
    ],
)
def test_served_and_in_process_agree_on_the_same_weights(
    served_exact, gguf_core, dl19, name, options, queries, depth, tolerance
):
    remote = registry.create(name, model=served_exact, doc_max_tokens=DOC_TOKENS, **options)
    local = registry.create(name, model=gguf_core, doc_max_tokens=DOC_TOKENS, **options)
    for query, docs in dl19[:queries]:
        assert_same_ranking(remote.rerank(query, docs[:depth]), local.rerank(query, docs[:depth]), tolerance)


def assert_same_ranking(got, want, tolerance: float) -> None:
    """Each document's score within ``tolerance``, and every pair whose scores differ by more than
    twice that in the same order (documents closer than that are ties both ways round)."""
    got_score = {h.index: h.score for h in got}
    want_score = {h.index: h.score for h in want}
    assert got_score.keys() == want_score.keys()
    for i, score in want_score.items():
        assert got_score[i] == pytest.approx(score, abs=tolerance), (i, got_score, want_score)
    rank = {h.index: r for r, h in enumerate(got)}
    for a in want_score:
        for b in want_score:
            if want_score[a] > want_score[b] + 2 * tolerance:
                assert rank[a] < rank[b], (a, b, got_score, want_score)


def test_generate_mode_and_the_decomposer_agree(served_exact, gguf_core, exact_server, smollm2, dl19):
    query, docs = dl19[0]
    options = {"mode": "generate", "window": 3, "doc_max_tokens": 32}
    got = registry.create("listwise", model=served_exact, **options).rerank(query, docs[:3])
    want = registry.create("listwise", model=gguf_core, **options).rerank(query, docs[:3])
    assert [h.index for h in got] == [h.index for h in want]
    questions = [q for q, _ in dl19[:2]]
    remote = Decomposer(exact_server.name(smollm2), max_new_tokens=12).decompose_batch(questions)
    local = Decomposer(gguf_core, max_new_tokens=12).decompose_batch(questions)
    assert [d.raw for d in remote] == [d.raw for d in local]


def test_sixteen_queries_in_flight_give_the_in_process_scores(exact_server, smollm2, gguf_core):
    docs = ["Paris is the capital of France.", "Bananas are yellow."]
    queries = [f"capital city number {i} of France" for i in range(16)]
    local = registry.create("pointwise", model=gguf_core, calibrate=False)
    with ServedModel(exact_server.name(smollm2), max_in_flight=16) as model:
        r = registry.create("pointwise", model=model, calibrate=False)

        async def together():
            return await asyncio.gather(*(r.arerank(q, docs) for q in queries))

        results = asyncio.run(together())
        assert model.stats.requests == 16 * 2
    for q, hits in zip(queries, results, strict=True):
        assert_same_ranking(hits, local.rerank(q, docs), 2e-3)


def test_a_server_killed_mid_run_fails_the_call_naming_it(smollm2_gguf, smollm2, tmp_path):
    server = ServerProcess(smollm2_gguf, tmp_path / "killed.log", parallel=2)
    try:
        model = ServedModel(server.name(smollm2), max_retries=1, timeout=60)
        r = registry.create("pointwise", model=model, calibrate=False)
        docs = [f"Passage {i} about the capital of France, Paris, on the Seine." for i in range(40)]
        with ThreadPoolExecutor(1) as pool:
            future = pool.submit(r.rerank, "capital of France", docs)
            deadline = time.monotonic() + 120
            while model.stats.requests < 2 and time.monotonic() < deadline and not future.done():
                time.sleep(0.05)
            server.kill()
            with pytest.raises(ServedModelError) as err:
                future.result(timeout=120)
        assert server.url in str(err.value) and "of 40" in str(err.value)
        model.close()
    finally:
        server.stop()


def test_a_model_the_server_does_not_serve_is_refused(exact_server, smollm2):
    served = r"does not serve a model named 'qwen'; it serves \['.*smollm2-f32.gguf'\]"
    with pytest.raises(ServedModelError, match=served):
        ServedModel(exact_server.name(smollm2, "?model=qwen"))


def test_the_tokenizer_of_another_model_is_refused(exact_server, tiny_model):
    with pytest.raises(ServedModelError, match="does not match the model served at"):
        ServedModel(exact_server.name(tiny_model))


def test_attention_on_the_served_model_names_the_in_process_backend(served_exact):
    from rerank_plugins.scoring import MissingPrimitiveError

    with pytest.raises(MissingPrimitiveError, match="in-process backend"):
        registry.create("attention", model=served_exact)


def test_a_url_works_in_both_adapters(exact_server, smollm2):
    lc = pytest.importorskip("langchain_rerank_plugins")
    li = pytest.importorskip("llama_index.postprocessor.rerank_plugins")
    from langchain_core.documents import Document
    from llama_index.core.schema import NodeWithScore, TextNode

    name = exact_server.name(smollm2)
    texts = ["Bananas are yellow.", "Paris is the capital of France."]
    docs = lc.PointwiseRerank(model=name, top_n=1).compress_documents(
        [Document(page_content=t) for t in texts], "capital of France"
    )
    nodes = li.PointwiseRerank(model=name, top_n=1).postprocess_nodes(
        [NodeWithScore(node=TextNode(text=t), score=0.0) for t in texts], query_str="capital of France"
    )
    assert docs[0].page_content == nodes[0].node.get_content()
