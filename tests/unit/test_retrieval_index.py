"""FAISS index logic against brute-force numpy, with fake embedders (no model weights)."""

from __future__ import annotations

import json
import sys
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import pytest

pytest.importorskip("faiss")

from rerank_plugins.retrieval import (
    FAISS_HINT,
    FaissIndex,
    HashingEmbedder,
    IndexLoadError,
    import_faiss,
)
from rerank_plugins.retrieval import index as index_module

DIM = 16


class TableEmbedder:
    """Fake embedder: the text ``"v17"`` embeds to row 17 of a fixed random table."""

    def __init__(self, table: np.ndarray, name: str = "table") -> None:
        self.table = table.astype(np.float32)
        self._name = name

    @property
    def name(self) -> str:
        return self._name

    @property
    def dimension(self) -> int:
        return self.table.shape[1]

    def embed_documents(self, texts: Sequence[str], *, batch_size: int = 64, show_progress: bool | None = None):
        return np.stack([self.table[int(t[1:])] for t in texts]) if texts else np.zeros((0, self.dimension))

    def embed_queries(self, texts: Sequence[str], *, batch_size: int = 64):
        return self.embed_documents(texts)

    def spec(self) -> dict[str, Any]:
        return {"kind": "table", "name": self._name, "dimension": self.dimension}


@pytest.fixture(scope="module")
def table() -> np.ndarray:
    return np.random.default_rng(0).standard_normal((600, DIM)).astype(np.float32)


def texts(n: int, start: int = 0) -> list[str]:
    return [f"v{i}" for i in range(start, start + n)]


def brute_force(docs: np.ndarray, queries: np.ndarray, k: int, metric: str, normalize: bool):
    """Reference top-k (indices, scores) with numpy; higher score is better."""
    if normalize:
        docs = docs / np.linalg.norm(docs, axis=1, keepdims=True)
        queries = queries / np.linalg.norm(queries, axis=1, keepdims=True)
    s = queries @ docs.T if metric == "ip" else -((queries[:, None, :] - docs[None, :, :]) ** 2).sum(-1)
    order = np.argsort(-s, axis=1, kind="stable")[:, :k]
    return order, np.take_along_axis(s, order, axis=1)


def result_ids(results) -> list[list[str]]:
    return [[r.id for r in row] for row in results]


@pytest.mark.parametrize(("metric", "normalize"), [("ip", True), ("ip", False), ("l2", False), ("l2", True)])
def test_flat_search_equals_brute_force(table, metric, normalize):
    docs, queries = table[:500], table[500:520]
    index = FaissIndex.build(texts(500), embedder=TableEmbedder(table), kind="flat", metric=metric, normalize=normalize)
    got = index.search_batch(texts(20, start=500), k=10)
    want_idx, want_scores = brute_force(docs, queries, 10, metric, normalize)
    assert result_ids(got) == [[str(i) for i in row] for row in want_idx]
    np.testing.assert_allclose([[r.score for r in row] for row in got], want_scores, rtol=1e-4, atol=1e-4)
    assert got[3][0].text == f"v{want_idx[3][0]}"


def test_ivf_with_every_list_probed_is_exact(table):
    index = FaissIndex.build(texts(500), embedder=TableEmbedder(table), kind="ivf", nlist=8, nprobe=8)
    assert index.factory == "IVF8,Flat"
    want_idx, _ = brute_force(table[:500], table[500:520], 10, "ip", True)
    assert result_ids(index.search_batch(texts(20, start=500), k=10)) == [[str(i) for i in r] for r in want_idx]


def test_auto_kind_by_corpus_size(monkeypatch, table):
    emb = TableEmbedder(table)
    assert FaissIndex.build(texts(50), embedder=emb).kind == "flat"
    monkeypatch.setattr(index_module, "AUTO_FLAT_MAX", 40)
    monkeypatch.setattr(index_module, "AUTO_IVF_MAX", 400)
    auto_ivf = FaissIndex.build(texts(300), embedder=emb)
    assert (auto_ivf.kind, auto_ivf.factory) == ("ivf", "IVF7,Flat")  # min(4 sqrt(300), 300 // 39)
    auto_pq = FaissIndex.build(texts(500), embedder=emb)
    assert (auto_pq.kind, auto_pq.factory) == ("ivfpq", "IVF12,PQ2x3")  # 2**3 codes <= 500 // 39


def test_hnsw_finds_each_document_itself(table):
    index = FaissIndex.build(texts(300), embedder=TableEmbedder(table), kind="hnsw", hnsw_m=16)
    assert index.factory == "IDMap2,HNSW16"
    assert [row[0].id for row in index.search_batch(texts(300), k=1)] == [str(i) for i in range(300)]


def test_search_batch_matches_single_searches_and_k_larger_than_index(table):
    index = FaissIndex.build(texts(30), embedder=TableEmbedder(table), kind="flat")
    batch = index.search_batch(["v3", "v7", "v11"], k=5)
    assert batch == [index.search(q, k=5) for q in ["v3", "v7", "v11"]]
    assert len(index.search("v3", k=100)) == 30
    assert index.search_batch([], k=3) == []
    with pytest.raises(ValueError, match="k must be a positive int"):
        index.search("v3", k=0)
    with pytest.raises(ValueError, match="queries must be a sequence"):
        index.search_batch("v3")


def test_empty_index(tmp_path, table):
    index = FaissIndex(TableEmbedder(table))
    assert len(index) == 0
    assert index.search("v1") == []
    assert index.search_batch(["v1", "v2"], k=3) == [[], []]
    index.add([])
    assert len(index) == 0
    index.save(tmp_path / "empty")
    loaded = FaissIndex.load(tmp_path / "empty", embedder=TableEmbedder(table))
    assert (len(loaded), loaded.kind, loaded.search("v1")) == (0, "flat", [])
    loaded.add(["v5"], ids=["five"])
    assert loaded.search("v5")[0].id == "five"


def test_cannot_save_untrained_ivf(tmp_path, table):
    with pytest.raises(ValueError, match="cannot save an empty ivf index"):
        FaissIndex(TableEmbedder(table), kind="ivf").save(tmp_path / "x")


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
def test_delete_then_search_never_returns_deleted(kind, table):
    opts: dict[str, Any] = {"nlist": 4, "nprobe": 4, "pq_nbits": 4} if kind.startswith("ivf") else {}
    index = FaissIndex.build(texts(400), embedder=TableEmbedder(table), kind=kind, **opts)
    gone = [str(i) for i in range(0, 400, 3)]
    assert index.delete(gone) == len(gone)
    assert len(index) == 400 - len(gone)
    assert "0" not in index and "1" in index
    hits = index.search_batch(texts(400), k=20)
    assert not {r.id for row in hits for r in row} & set(gone)
    if kind != "ivfpq":  # exact or graph storage: every remaining document finds itself
        kept = [i for i in range(400) if i % 3]
        assert [hits[i][0].id for i in kept] == [str(i) for i in kept]


def test_delete_matches_brute_force_on_the_rest(table):
    index = FaissIndex.build(texts(200), embedder=TableEmbedder(table), kind="flat")
    index.delete([str(i) for i in range(100)])
    want_idx, _ = brute_force(table[100:200], table[500:510], 5, "ip", True)
    assert result_ids(index.search_batch(texts(10, start=500), k=5)) == [[str(i + 100) for i in r] for r in want_idx]


def test_add_and_delete_errors(table):
    index = FaissIndex.build(texts(5), ids=list("abcde"), embedder=TableEmbedder(table))
    with pytest.raises(ValueError, match=r"ids already in the index: \['c'\]"):
        index.add(["v9"], ids=["c"])
    with pytest.raises(ValueError, match="'x' appears more than once"):
        index.add(["v9", "v10"], ids=["x", "x"])
    with pytest.raises(ValueError, match=r"unknown ids: \['zz'\]"):
        index.delete(["a", "zz"])
    assert len(index) == 5  # nothing removed by the failed call
    with pytest.raises(ValueError, match="one id per text"):
        index.add(["v9"], ids=["p", "q"])
    with pytest.raises(ValueError, match="not JSON-serialisable"):
        index.add(["v9"], metadatas=[{"f": object()}])
    with pytest.raises(ValueError, match="texts must be a sequence of str"):
        index.add("v9")
    index.delete(["c"])
    index.add(["v2"], ids=["c"], metadatas=[{"again": True}])  # an id can come back after deletion
    assert index.get("c").metadata == {"again": True}
    assert index.ids == ["a", "b", "d", "e", "c"]


def test_metadata_is_copied(table):
    index = FaissIndex.build(["v1"], ids=["one"], metadatas=[{"tag": "x"}], embedder=TableEmbedder(table))
    hit = index.search("v1")[0]
    hit.metadata["tag"] = "changed"
    assert index.search("v1")[0].metadata == {"tag": "x"}


@pytest.mark.parametrize("kind", ["flat", "ivf", "ivfpq", "hnsw"])
def test_save_load_round_trip(tmp_path, kind, table):
    emb = TableEmbedder(table)
    opts: dict[str, Any] = {"nlist": 4, "nprobe": 2, "pq_nbits": 4} if kind.startswith("ivf") else {}
    index = FaissIndex.build(
        texts(300), ids=[f"d{i}" for i in range(300)], metadatas=[{"n": i} for i in range(300)],
        embedder=emb, kind=kind, **opts,
    )  # fmt: skip
    index.delete(["d0", "d1"])
    before = index.search_batch(texts(10, start=500), k=7)
    index.save(tmp_path / "idx")
    loaded = FaissIndex.load(tmp_path / "idx", embedder=emb)
    assert (loaded.kind, loaded.factory, len(loaded)) == (index.kind, index.factory, 298)
    assert loaded.params == index.params
    assert loaded.search_batch(texts(10, start=500), k=7) == before
    loaded.add(["v0"], ids=["new"])  # fresh FAISS ids do not collide with saved ones
    found = [r.id for r in loaded.search("v0", k=299)]
    if kind == "ivfpq":  # lossy PQ codes: "new" is retrieved, not necessarily first
        assert "new" in found
    else:
        assert found[0] == "new"
    assert len(set(found)) == len(found)


def test_saved_files_are_plain(tmp_path, table):
    FaissIndex.build(["v1", "v2"], ids=["a", "b"], embedder=TableEmbedder(table)).save(tmp_path)
    manifest = json.loads((tmp_path / "manifest.json").read_text())
    assert manifest["format"] == "rerank-plugins/faiss-index"
    assert (manifest["format_version"], manifest["dimension"], manifest["count"]) == (1, DIM, 2)
    assert manifest["embedder"] == {"kind": "table", "name": "table", "dimension": DIM}
    lines = [json.loads(x) for x in (tmp_path / "documents.jsonl").read_text().splitlines()]
    assert lines == [
        {"id": "a", "faiss_id": 0, "text": "v1", "metadata": {}},
        {"id": "b", "faiss_id": 1, "text": "v2", "metadata": {}},
    ]
    assert sorted(p.name for p in tmp_path.iterdir()) == ["documents.jsonl", "index.faiss", "manifest.json"]


def test_load_rebuilds_the_embedder_from_the_manifest(tmp_path):
    FaissIndex.build(["red fox", "blue whale"], embedder=HashingEmbedder(32)).save(tmp_path)
    loaded = FaissIndex.load(tmp_path)
    assert loaded.embedder.spec() == {"kind": "hashing", "name": "hashing-32", "dimension": 32}
    assert loaded.search("whale", k=1)[0].text == "blue whale"


@pytest.fixture
def saved(tmp_path, table) -> Path:
    FaissIndex.build(texts(50), embedder=TableEmbedder(table)).save(tmp_path / "idx")
    return tmp_path / "idx"


def load(path: Path, table: np.ndarray, **kw: Any) -> FaissIndex:
    return FaissIndex.load(path, embedder=TableEmbedder(table), **kw)


def test_load_missing_folder_or_manifest(tmp_path, saved, table):
    with pytest.raises(IndexLoadError, match="is not a folder"):
        load(tmp_path / "nope", table)
    (saved / "manifest.json").unlink()
    with pytest.raises(IndexLoadError, match=r"manifest\.json is missing"):
        load(saved, table)


def test_load_corrupt_index_file(saved, table):
    data = bytearray((saved / "index.faiss").read_bytes())
    (saved / "index.faiss").write_bytes(bytes(data[: len(data) // 2]))
    with pytest.raises(IndexLoadError, match=r"index\.faiss is corrupt or was modified \(sha256 mismatch\)"):
        load(saved, table)
    with pytest.raises(IndexLoadError, match=r"cannot read .*index\.faiss"):
        load(saved, table, verify_checksums=False)


def test_load_documents_mismatch(saved, table):
    lines = (saved / "documents.jsonl").read_text().splitlines(keepends=True)
    (saved / "documents.jsonl").write_text("".join(lines[:-1]))
    with pytest.raises(IndexLoadError, match=r"documents\.jsonl is corrupt"):
        load(saved, table)
    with pytest.raises(IndexLoadError, match=r"documents\.jsonl has 49 documents, manifest says 50"):
        load(saved, table, verify_checksums=False)
    (saved / "documents.jsonl").write_text("".join(lines[:-1]) + "{not json\n")
    with pytest.raises(IndexLoadError, match=r"documents\.jsonl:50: bad document line"):
        load(saved, table, verify_checksums=False)


def test_load_bad_manifest(saved, table):
    mpath = saved / "manifest.json"
    good = json.loads(mpath.read_text())
    mpath.write_text("{oops")
    with pytest.raises(IndexLoadError, match=r"manifest\.json is not valid JSON"):
        load(saved, table)
    mpath.write_text(json.dumps({**good, "format_version": 99}))
    with pytest.raises(IndexLoadError, match=r"format_version 99; this rerank-plugins reads versions 1\.\.1"):
        load(saved, table)
    mpath.write_text(json.dumps({**good, "format": "something-else"}))
    with pytest.raises(IndexLoadError, match="is not a rerank-plugins/faiss-index manifest"):
        load(saved, table)
    mpath.write_text(json.dumps({**good, "count": 51}))
    with pytest.raises(IndexLoadError, match=r"index\.faiss holds 50 vectors, manifest says 51"):
        load(saved, table)
    mpath.write_text(json.dumps({**good, "dimension": 8}))
    with pytest.raises(IndexLoadError, match="has dimension 16, index expects 8"):
        load(saved, table)
    mpath.write_text(json.dumps({k: v for k, v in good.items() if k != "metric"}))
    with pytest.raises(IndexLoadError, match="field 'metric' is missing"):
        load(saved, table)


def test_load_embedder_mismatch(saved, table):
    with pytest.raises(IndexLoadError, match="has dimension 8, index expects 16"):
        FaissIndex.load(saved, embedder=TableEmbedder(table[:, :8]), check_embedder_name=False)
    with pytest.raises(IndexLoadError, match="built with embedder 'table', got 'other'"):
        FaissIndex.load(saved, embedder=TableEmbedder(table, name="other"))
    assert len(FaissIndex.load(saved, embedder=TableEmbedder(table, name="other"), check_embedder_name=False)) == 50
    with pytest.raises(IndexLoadError, match="cannot load the index's embedder 'table'"):
        FaissIndex.load(saved)  # a "table" embedder cannot be rebuilt from its spec


def test_load_missing_documents_file(saved, table):
    (saved / "documents.jsonl").unlink()
    with pytest.raises(IndexLoadError, match=r"incomplete: documents\.jsonl is missing"):
        load(saved, table)


def test_bad_options(table):
    emb = TableEmbedder(table)
    with pytest.raises(ValueError, match="kind must be one of auto, flat, hnsw, ivf, ivfpq"):
        FaissIndex(emb, kind="lsh")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="metric must be 'ip' or 'l2'"):
        FaissIndex(emb, metric="cos")  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="nlist must be a positive int"):
        FaissIndex(emb, nlist=0)
    with pytest.raises(ValueError, match="ivf index needs at least nlist=64 training vectors, got 10"):
        FaissIndex.build(texts(10), embedder=emb, kind="ivf", nlist=64)
    with pytest.raises(ValueError, match="pq_m=5 must divide the dimension 16"):
        FaissIndex.build(texts(300), embedder=emb, kind="ivfpq", nlist=2, pq_m=5, pq_nbits=4)
    with pytest.raises(ValueError, match=r"vectors must have shape \(2, 16\)"):
        FaissIndex(emb).add_embeddings(np.zeros((2, 8)), ["a", "b"])
    with pytest.raises(ValueError, match="NaN or infinite"):
        FaissIndex(emb).add_embeddings(np.full((1, DIM), np.nan), ["a"])


def test_cuda_device_without_gpu_fails_clearly(table):
    if import_faiss().get_num_gpus() > 0:
        pytest.skip("a GPU is visible to FAISS")
    with pytest.raises(RuntimeError, match="FAISS sees no GPU"):
        FaissIndex(TableEmbedder(table), device="cuda")
    assert FaissIndex(TableEmbedder(table), device="auto")._gpu_device() is None


def test_missing_faiss_gives_the_install_command(monkeypatch):
    monkeypatch.setitem(sys.modules, "faiss", None)
    with pytest.raises(ImportError, match=r'pip install "rerank-plugins\[faiss\]"'):
        import_faiss()
    assert FAISS_HINT == 'pip install "rerank-plugins[faiss]"'


# ---------------------------------------------------------------------- a tampered manifest


def _edit_manifest(folder: Path, **changes: Any) -> None:
    mpath = folder / "manifest.json"
    manifest = json.loads(mpath.read_text())
    for key, value in changes.items():
        if value is None:
            del manifest[key]
        else:
            manifest[key] = value
    mpath.write_text(json.dumps(manifest))


MANIFEST_EDITS = [
    # the next add would silently overwrite document d0
    ({"next_faiss_id": 0}, r"manifest\.json: next_faiss_id is 0, but index\.faiss already uses ids up to 49"),
    ({"next_faiss_id": 49}, r"next_faiss_id is 49.*overwrite"),
    ({"next_faiss_id": -1}, r"manifest\.json: next_faiss_id must be a non-negative int, got -1"),
    ({"next_faiss_id": True}, r"next_faiss_id must be a non-negative int, got True"),
    ({"kind": "hnsw"}, r"manifest\.json: kind is 'hnsw', but .*index\.faiss holds a 'flat' index"),
    ({"kind": "ivf"}, r"kind is 'ivf', but .*index\.faiss holds a 'flat' index"),
    ({"kind": "auto"}, r"kind must be one of flat, hnsw, ivf, ivfpq, got 'auto'"),
    ({"factory": "IDMap2,HNSW32"}, r"factory is 'IDMap2,HNSW32', but .*index\.faiss is 'IDMap2,Flat'"),
    ({"metric": "l2"}, r"manifest\.json: metric is 'l2', but .*index\.faiss uses 'ip'"),
    ({"metric": "cos"}, r"metric must be 'ip' or 'l2', got 'cos'"),
    ({"params": {"nprobe": "16"}}, r"params\['nprobe'\] must be"),
    ({"params": {"hnsw_m": 0}}, r"params\['hnsw_m'\] must be"),
    ({"params": {"unknown": 1}}, r"params\['unknown'\] must be"),
    ({"files": {"index.faiss": "x", "documents.jsonl": "y"}}, "each with its sha256"),
    ({"created_with": "x", "normalize": False}, r"manifest\.json was modified after saving"),
    ({"normalize": False}, r"manifest\.json was modified after saving \(its manifest_sha256"),
    ({"manifest_sha256": 5}, "manifest_sha256 must be a string"),
]


@pytest.mark.parametrize(("changes", "match"), MANIFEST_EDITS, ids=[repr(c) for c, _ in MANIFEST_EDITS])
def test_load_rejects_a_manifest_that_disagrees_with_the_index(saved, table, changes, match):
    _edit_manifest(saved, **changes)
    with pytest.raises(IndexLoadError, match=match):
        load(saved, table)


def test_cross_checks_do_not_depend_on_the_manifest_digest(saved, table):
    """Without its digest (indexes saved before it existed) the manifest is still cross-checked."""
    _edit_manifest(saved, manifest_sha256=None)
    assert len(load(saved, table)) == 50
    _edit_manifest(saved, next_faiss_id=0)
    with pytest.raises(IndexLoadError, match="next_faiss_id is 0"):
        load(saved, table, verify_checksums=False)
    _edit_manifest(saved, next_faiss_id=50, normalize=False)
    assert len(load(saved, table, verify_checksums=False)) == 50  # only the digest can see this edit


@pytest.mark.parametrize(
    ("kind", "options"), [("hnsw", {}), ("ivf", {"nlist": 4}), ("ivfpq", {"nlist": 2, "pq_m": 4, "pq_nbits": 4})]
)
def test_manifest_kind_of_every_saved_kind_is_checked(tmp_path, table, kind, options):
    index = FaissIndex.build(texts(300), embedder=TableEmbedder(table), kind=kind, **options)
    index.save(tmp_path / "idx")
    assert load(tmp_path / "idx", table).factory == index.factory
    _edit_manifest(tmp_path / "idx", kind="flat")
    with pytest.raises(IndexLoadError, match=rf"kind is 'flat', but .* holds a '{kind}' index"):
        load(tmp_path / "idx", table)


def test_a_higher_next_id_after_deletes_is_fine(tmp_path, table):
    index = FaissIndex.build(texts(10), ids=[f"d{i}" for i in range(10)], embedder=TableEmbedder(table))
    index.delete(["d9"])
    index.save(tmp_path / "idx")
    loaded = load(tmp_path / "idx", table)
    loaded.add(["v20"], ids=["new"])
    assert loaded.get("d0").text == "v0" and loaded.get("new").text == "v20"
    assert len(loaded) == 10


def test_load_documents_with_invalid_utf8(saved, table):
    docs = saved / "documents.jsonl"
    lines = docs.read_bytes().splitlines(keepends=True)
    lines[2] = lines[2].replace(b'"v2"', b'"v\xff2"')
    docs.write_bytes(b"".join(lines))
    with pytest.raises(IndexLoadError, match=r"documents\.jsonl is corrupt"):
        load(saved, table)
    with pytest.raises(IndexLoadError, match=r"documents\.jsonl:3: bad document line \('utf-8' codec can't decode"):
        load(saved, table, verify_checksums=False)


def test_load_documents_with_a_non_integer_faiss_id(saved, table):
    docs = saved / "documents.jsonl"
    lines = docs.read_text().splitlines(keepends=True)
    lines[0] = lines[0].replace('"faiss_id": 0', '"faiss_id": 0.5')
    docs.write_text("".join(lines))
    with pytest.raises(IndexLoadError, match=r"documents\.jsonl:1: bad document line \(faiss_id must be an int"):
        load(saved, table, verify_checksums=False)


# ---------------------------------------------------------------------- queries and text


@pytest.mark.parametrize("query", ["", " ", "\n\t "])
def test_blank_query_is_a_value_error(table, query):
    index = FaissIndex.build(texts(5), embedder=TableEmbedder(table))
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        index.search(query)
    with pytest.raises(ValueError, match=r"queries\[1\] must be a non-empty string"):
        index.search_batch(["v1", query])
    with pytest.raises(ValueError, match="query must be a non-empty string"):
        FaissIndex(TableEmbedder(table)).search(query)  # empty index: still a bad argument


def test_search_results_never_share_metadata_with_the_index(table):
    index = FaissIndex.build(
        ["v1"], ids=["a"], metadatas=[{"tags": ["x"], "src": {"page": 1}}], embedder=TableEmbedder(table)
    )
    for result in (index.search("v1")[0], index.get("a")):
        result.metadata["tags"].append("edited")
        result.metadata["src"]["page"] = -1
    assert index.get("a").metadata == {"tags": ["x"], "src": {"page": 1}}


def test_lone_surrogates_with_a_tokenizer_embedder(tmp_path, tiny_cross_encoder):
    """A transformers tokenizer raises TypeError on lone surrogates; the index embeds U+FFFD
    instead, keeps the stored text exactly, and saves and loads it."""
    from rerank_plugins.retrieval import SentenceTransformerEmbedder

    emb = SentenceTransformerEmbedder(str(tiny_cross_encoder))
    texts_ = ["Paris \ud800 is the capital", "quick brown fox", "lazy \udfff dog"]
    index = FaissIndex.build(texts_, embedder=emb, metadatas=[{"note": "\udc80"}, {}, {}])
    clean = FaissIndex.build([t.replace("\ud800", "\ufffd") for t in texts_[:1]], embedder=emb)
    assert np.allclose(index._index.index.reconstruct(0), clean._index.index.reconstruct(0))
    hits = index.search("capital \ud800 Paris", k=3)
    assert sorted(h.text for h in hits) == sorted(texts_)
    index.save(tmp_path / "idx")
    loaded = FaissIndex.load(tmp_path / "idx", embedder=emb, check_embedder_name=False)
    assert [loaded.get(i).text for i in ("0", "1", "2")] == texts_
    assert loaded.get("0").metadata == {"note": "\udc80"}
    # the weights are random, so no order is asserted; a lone surrogate searches as U+FFFD does
    assert loaded.search_batch(["fox \udfff"], k=3) == loaded.search_batch(["fox \ufffd"], k=3)
