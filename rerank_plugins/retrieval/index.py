"""An embedded FAISS vector index over texts: build, add, delete, search, save, load.

Index kinds (``kind=``):

============  =====================================  ==========  ======  =====================
kind          FAISS index                             exact       delete  GPU (faiss-gpu)
============  =====================================  ==========  ======  =====================
``flat``      ``IDMap2,Flat``                         yes         yes     yes
``hnsw``      ``IDMap2,HNSW{m}`` (flat storage)       no          rebuild no (stays on CPU)
``ivf``       ``IVF{nlist},Flat``                     no          yes     yes
``ivfpq``     ``IVF{nlist},PQ{m}x{nbits}``            no          yes     yes
``auto``      flat below 100k texts, ivf below 2M, ivfpq above
============  =====================================  ==========  ======  =====================

FAISS's HNSW cannot remove vectors, so :meth:`FaissIndex.delete` on an HNSW index rebuilds
the graph from the stored vectors (cost of a full build; logged). IVF kinds keep their own
ids (``IndexIDMap`` over IVF gives wrong ids after a removal) and are trained for the caller
on the first vectors added. Scores are "higher is better": inner product (cosine with the
default ``normalize=True``), or minus the squared L2 distance with ``metric="l2"``.

A saved index is a folder of plain files, never pickle: ``index.faiss``
(``faiss.write_index``), ``documents.jsonl`` (id, text, metadata per line) and
``manifest.json`` (format version, embedder name and dimension, counts, sha256 of the other
two files and of its own content). :meth:`FaissIndex.load` checks all of it, cross-checks the
manifest against the FAISS index it describes (kind, factory, metric, dimension, vector count,
next id above every stored id) and raises :class:`IndexLoadError` naming the file and the problem.

Queries must be non-blank strings (``ValueError`` otherwise, as for the rerankers). Lone UTF-16
surrogates in queries and texts are replaced by U+FFFD before embedding
(:func:`rerank_plugins.text.clean_text`); the stored text keeps them.

Example:
    >>> from rerank_plugins.retrieval import FaissIndex, HashingEmbedder
    >>> index = FaissIndex.build(["red fox", "blue whale", "green frog"], embedder=HashingEmbedder(64))
    >>> [r.text for r in index.search("a blue whale", k=1)]
    ['blue whale']
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import math
import os
import threading
from collections import Counter
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from importlib.metadata import PackageNotFoundError, version
from pathlib import Path
from typing import Any, Literal

import numpy as np

from rerank_plugins.retrieval._optional import import_faiss
from rerank_plugins.retrieval.embedder import Embedder, embedder_from_spec, get_embedder
from rerank_plugins.text import clean_text
from rerank_plugins.types import validate_query

__all__ = [
    "FORMAT_NAME",
    "FORMAT_VERSION",
    "FaissIndex",
    "IndexKind",
    "IndexLoadError",
    "Metric",
    "SearchResult",
]

logger = logging.getLogger(__name__)

IndexKind = Literal["auto", "flat", "hnsw", "ivf", "ivfpq"]
Metric = Literal["ip", "l2"]

FORMAT_NAME = "rerank-plugins/faiss-index"
FORMAT_VERSION = 1
MANIFEST = "manifest.json"
INDEX_FILE = "index.faiss"
DOCS_FILE = "documents.jsonl"
#: manifest key holding the sha256 of the manifest's other content (see :func:`_manifest_digest`)
MANIFEST_DIGEST = "manifest_sha256"
_PARAMS = ("nlist", "nprobe", "pq_m", "pq_nbits", "hnsw_m", "ef_construction", "ef_search")

_KINDS = ("auto", "flat", "hnsw", "ivf", "ivfpq")
#: ``auto`` thresholds (number of texts): exact search below the first, IVF below the second.
AUTO_FLAT_MAX = 100_000
AUTO_IVF_MAX = 2_000_000


class IndexLoadError(ValueError):
    """A saved index folder is missing, corrupt, or does not match the requested embedder."""


@dataclass(frozen=True, slots=True)
class SearchResult:
    """One retrieved document.

    Attributes:
        id: the document id given at indexing time (or the one assigned then).
        score: similarity, higher is better (inner product / cosine, or minus squared L2).
        text: the document text.
        metadata: the document's metadata (a copy; editing it does not change the index).
    """

    id: str
    score: float
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


@dataclass(slots=True)
class _Doc:
    id: str
    text: str
    metadata: dict[str, Any]


def _package_version(name: str) -> str:
    try:
        return version(name)
    except PackageNotFoundError:
        return "unknown"


def _positive_int(name: str, value: object, *, allow_none: bool = False) -> int | None:
    if value is None and allow_none:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"{name} must be a positive int, got {value!r}")
    return value


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with path.open("rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _auto_nlist(n: int) -> int:
    # ~4 sqrt(n) lists (FAISS guidelines), but at least 39 training points per list.
    return max(1, min(int(4 * math.sqrt(n)), n // 39))


def _auto_pq(d: int, n: int) -> tuple[int, int]:
    # m sub-quantizers of ~8 dims each (m must divide d); 2**nbits centroids per
    # sub-quantizer, with at least 39 training points each (8 bits from ~10k vectors).
    m = max(k for k in range(1, max(1, d // 8) + 1) if d % k == 0)
    nbits = max(1, min(8, int(math.log2(max(2, n // 39)))))
    return m, nbits


class FaissIndex:
    """A FAISS index over texts embedded by an :class:`~rerank_plugins.retrieval.Embedder`.

    Build with :meth:`build` (or construct empty and :meth:`add`), query with :meth:`search` /
    :meth:`search_batch`, persist with :meth:`save` / :meth:`load`. All methods are thread-safe.

    Args:
        embedder: a sentence-transformers hub id or folder (shared per process through
            :func:`~rerank_plugins.retrieval.get_embedder`) or an embedder object.
        kind: index kind (see the module docs); ``"auto"`` picks by corpus size at first add.
        metric: ``"ip"`` (inner product) or ``"l2"``.
        normalize: L2-normalise document and query vectors (inner product = cosine).
        device: ``"auto"`` (a GPU when faiss-gpu sees one, else CPU), ``"cpu"`` or ``"cuda[:N]"``.
        nlist: IVF lists (default ~4 sqrt(n), set when training).
        nprobe: IVF lists visited per query (default ``min(nlist, 16)``).
        pq_m: PQ sub-quantizers (must divide the dimension); pq_nbits: bits per code.
        hnsw_m: HNSW neighbours per node; ef_construction / ef_search: HNSW beam widths.
        batch_size: texts per embedding batch.

    Example:
        >>> from rerank_plugins.retrieval import FaissIndex, HashingEmbedder
        >>> index = FaissIndex(HashingEmbedder(32))
        >>> index.add(["alpha beta", "gamma delta"], ids=["a", "g"])
        >>> index.search("gamma", k=1)[0].id
        'g'
    """

    def __init__(
        self,
        embedder: str | Embedder,
        *,
        kind: IndexKind = "auto",
        metric: Metric = "ip",
        normalize: bool = True,
        device: str = "auto",
        nlist: int | None = None,
        nprobe: int | None = None,
        pq_m: int | None = None,
        pq_nbits: int | None = None,
        hnsw_m: int = 32,
        ef_construction: int = 200,
        ef_search: int = 128,
        batch_size: int = 64,
    ) -> None:
        if kind not in _KINDS:
            raise ValueError(f"kind must be one of {', '.join(_KINDS)}; got {kind!r}")
        if metric not in ("ip", "l2"):
            raise ValueError(f"metric must be 'ip' or 'l2', got {metric!r}")
        if not isinstance(device, str) or not (device in ("auto", "cpu", "cuda") or device.startswith("cuda:")):
            raise ValueError(f"device must be 'auto', 'cpu', 'cuda' or 'cuda:N', got {device!r}")
        self._faiss = import_faiss()
        if device.startswith("cuda") and not _faiss_has_gpu(self._faiss):
            raise RuntimeError(f"device={device!r} but FAISS sees no GPU (install faiss-gpu on a CUDA machine)")
        self.embedder: Embedder = get_embedder(embedder)
        self.dimension = int(self.embedder.dimension)
        self.kind: IndexKind = kind
        self.metric: Metric = metric
        self.normalize = bool(normalize)
        self.device = device
        self.params: dict[str, Any] = {
            "nlist": _positive_int("nlist", nlist, allow_none=True),
            "nprobe": _positive_int("nprobe", nprobe, allow_none=True),
            "pq_m": _positive_int("pq_m", pq_m, allow_none=True),
            "pq_nbits": _positive_int("pq_nbits", pq_nbits, allow_none=True),
            "hnsw_m": _positive_int("hnsw_m", hnsw_m),
            "ef_construction": _positive_int("ef_construction", ef_construction),
            "ef_search": _positive_int("ef_search", ef_search),
        }
        self.batch_size = int(_positive_int("batch_size", batch_size) or 64)
        self.factory: str | None = None
        self._index: Any = None  # the CPU index, source of truth (None until first add)
        self._gpu_index: Any = None  # lazily cloned mirror, dropped on every change
        self._docs: dict[int, _Doc] = {}
        self._fid_by_id: dict[str, int] = {}
        self._next_fid = 0
        self._lock = threading.RLock()

    # ------------------------------------------------------------------ building

    @classmethod
    def build(
        cls,
        texts: Sequence[str],
        *,
        embedder: str | Embedder,
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        show_progress: bool | None = None,
        **options: Any,
    ) -> FaissIndex:
        """Embed ``texts`` (batched, with a progress bar on a terminal) and index them.

        Args:
            texts: the documents.
            embedder: model name/folder or embedder object.
            ids: one unique id per text (default ``"0"``, ``"1"``, ...).
            metadatas: one JSON-serialisable mapping per text.
            show_progress: progress bar; ``None`` shows it only on a terminal.
            **options: :class:`FaissIndex` keyword arguments (``kind``, ``metric``, ...).

        Example:
            >>> from rerank_plugins.retrieval import FaissIndex, HashingEmbedder
            >>> FaissIndex.build(["a", "b"], embedder=HashingEmbedder(8), kind="flat").kind
            'flat'
        """
        index = cls(embedder, **options)
        index.add(texts, ids=ids, metadatas=metadatas, show_progress=show_progress)
        return index

    def add(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
        *,
        show_progress: bool | None = None,
    ) -> None:
        """Embed and add documents. Ids must be new (``ValueError`` names the duplicate).

        The first call on an empty ``auto`` index fixes its kind from the number of texts;
        IVF kinds are trained on the first vectors they receive.
        """
        texts, ids_list, metas = self._check_new_documents(texts, ids, metadatas)
        if not texts:
            return
        self._check_unused(ids_list)  # before the (costly) embedding
        vectors = self.embedder.embed_documents(
            [clean_text(t) for t in texts], batch_size=self.batch_size, show_progress=show_progress
        )
        self._add_checked(self._prepare(vectors, len(texts), "embeddings"), texts, ids_list, metas)

    def add_embeddings(
        self,
        vectors: np.ndarray,
        texts: Sequence[str],
        ids: Sequence[str] | None = None,
        metadatas: Sequence[Mapping[str, Any]] | None = None,
    ) -> None:
        """Add precomputed document vectors (``[n, dimension]``) with their texts."""
        texts, ids_list, metas = self._check_new_documents(texts, ids, metadatas)
        x = self._prepare(vectors, len(texts), "vectors")
        if texts:
            self._add_checked(x, texts, ids_list, metas)

    def _check_unused(self, ids: list[str] | None) -> None:
        if ids is None:
            return
        clash = [i for i in ids if i in self._fid_by_id]
        if clash:
            raise ValueError(f"ids already in the index: {clash[:5]!r}; delete them first")

    def _add_checked(self, x: np.ndarray, texts: list[str], ids: list[str] | None, metas: list[dict[str, Any]]) -> None:
        with self._lock:
            if ids is None:
                ids = [str(self._next_fid + i) for i in range(len(texts))]
            self._check_unused(ids)
            if self._index is None:
                self._create(x)
            fids = np.arange(self._next_fid, self._next_fid + len(texts), dtype=np.int64)
            self._index.add_with_ids(x, fids)
            for fid, doc_id, text, meta in zip(fids.tolist(), ids, texts, metas, strict=True):
                self._docs[fid] = _Doc(doc_id, text, meta)
                self._fid_by_id[doc_id] = fid
            self._next_fid += len(texts)
            self._gpu_index = None
        logger.debug("added %d documents (%d total)", len(texts), len(self))

    def _check_new_documents(
        self,
        texts: Sequence[str],
        ids: Sequence[str] | None,
        metadatas: Sequence[Mapping[str, Any]] | None,
    ) -> tuple[list[str], list[str] | None, list[dict[str, Any]]]:
        if isinstance(texts, str) or not isinstance(texts, Sequence):
            raise ValueError("texts must be a sequence of str, not a single string")
        text_list = list(texts)
        for i, t in enumerate(text_list):
            if not isinstance(t, str):
                raise ValueError(f"texts[{i}] must be a str, got {type(t).__name__}")
        ids_list: list[str] | None = None
        if ids is not None:
            if isinstance(ids, str) or len(ids) != len(text_list):
                raise ValueError(f"ids must be a sequence with one id per text ({len(text_list)})")
            ids_list = []
            for i, doc_id in enumerate(ids):
                if not isinstance(doc_id, str) or not doc_id:
                    raise ValueError(f"ids[{i}] must be a non-empty str, got {doc_id!r}")
                ids_list.append(doc_id)
            dups = [i for i, c in Counter(ids_list).items() if c > 1]
            if dups:
                raise ValueError(f"ids must be unique; {dups[0]!r} appears more than once")
        if metadatas is None:
            metas: list[dict[str, Any]] = [{} for _ in text_list]
        else:
            if len(metadatas) != len(text_list):
                raise ValueError(f"metadatas must have one mapping per text ({len(text_list)})")
            metas = []
            for i, m in enumerate(metadatas):
                if not isinstance(m, Mapping):
                    raise ValueError(f"metadatas[{i}] must be a mapping, got {type(m).__name__}")
                try:
                    metas.append(json.loads(json.dumps(dict(m))))
                except (TypeError, ValueError) as exc:
                    raise ValueError(f"metadatas[{i}] is not JSON-serialisable: {exc}") from exc
        return text_list, ids_list, metas

    def _prepare(self, vectors: np.ndarray, n: int, what: str) -> np.ndarray:
        x = np.ascontiguousarray(np.asarray(vectors, dtype=np.float32))
        if x.ndim != 2 or x.shape[0] != n or (n and x.shape[1] != self.dimension):
            raise ValueError(f"{what} must have shape ({n}, {self.dimension}), got {tuple(x.shape)}")
        if n and not np.isfinite(x).all():
            raise ValueError(f"{what} contain NaN or infinite values")
        if self.normalize and n:
            x = x.copy()
            self._faiss.normalize_L2(x)
        return x

    def _resolved_kind(self, n: int) -> IndexKind:
        if self.kind != "auto":
            return self.kind
        if n < AUTO_FLAT_MAX:
            return "flat"
        return "ivf" if n < AUTO_IVF_MAX else "ivfpq"

    def _factory_string(self, kind: IndexKind, n: int) -> str:
        p = self.params
        if kind == "flat":
            return "IDMap2,Flat"
        if kind == "hnsw":
            return f"IDMap2,HNSW{p['hnsw_m']}"
        nlist = p["nlist"] or _auto_nlist(n)
        if nlist > n:
            raise ValueError(f"{kind} index needs at least nlist={nlist} training vectors, got {n}")
        p["nlist"] = nlist
        if kind == "ivf":
            return f"IVF{nlist},Flat"
        m, nbits = _auto_pq(self.dimension, n)
        p["pq_m"] = p["pq_m"] or m
        p["pq_nbits"] = p["pq_nbits"] or nbits
        if self.dimension % p["pq_m"]:
            raise ValueError(f"pq_m={p['pq_m']} must divide the dimension {self.dimension}")
        if 2 ** p["pq_nbits"] > n:
            raise ValueError(f"pq_nbits={p['pq_nbits']} needs >= {2 ** p['pq_nbits']} training vectors, got {n}")
        return f"IVF{nlist},PQ{p['pq_m']}x{p['pq_nbits']}"

    def _create(self, x: np.ndarray) -> None:
        faiss = self._faiss
        kind = self._resolved_kind(x.shape[0])
        factory = self._factory_string(kind, x.shape[0])
        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
        index = faiss.index_factory(self.dimension, factory, metric)
        if kind == "hnsw":
            faiss.downcast_index(index.index).hnsw.efConstruction = self.params["ef_construction"]
        if not index.is_trained:
            nlist = self.params["nlist"]
            if x.shape[0] < 39 * nlist:
                logger.warning("training %s on %d vectors (< 39 per list): recall may suffer", factory, len(x))
            logger.info("training %s on %d vectors", factory, len(x))
            index.train(x)
        self.kind, self.factory, self._index = kind, factory, index
        self._apply_search_params(index)
        logger.info("created FAISS index %s (%s, dim %d)", factory, self.metric, self.dimension)

    def _apply_search_params(self, index: Any) -> None:
        faiss = self._faiss
        if self.kind in ("ivf", "ivfpq"):
            ivf = faiss.extract_index_ivf(index)
            self.params["nlist"] = int(ivf.nlist)
            self.params["nprobe"] = min(int(ivf.nlist), self.params["nprobe"] or 16)
            ivf.nprobe = self.params["nprobe"]
        elif self.kind == "hnsw":
            faiss.downcast_index(index.index).hnsw.efSearch = self.params["ef_search"]

    # ------------------------------------------------------------------ deleting

    def delete(self, ids: Sequence[str]) -> int:
        """Remove documents by id; returns how many were removed.

        Unknown ids raise ``ValueError`` (nothing is removed then). On HNSW indexes the graph
        is rebuilt from the remaining vectors, since FAISS's HNSW cannot remove.
        """
        if isinstance(ids, str):
            raise ValueError("ids must be a sequence of str, not a single string")
        with self._lock:
            wanted = list(dict.fromkeys(ids))
            unknown = [i for i in wanted if i not in self._fid_by_id]
            if unknown:
                raise ValueError(f"unknown ids: {unknown[:5]!r}")
            if not wanted:
                return 0
            fids = np.array([self._fid_by_id[i] for i in wanted], dtype=np.int64)
            if self.kind == "hnsw":
                self._rebuild_hnsw_without(fids)
            else:
                removed = self._index.remove_ids(fids)
                if removed != len(fids):
                    raise RuntimeError(f"FAISS removed {removed} of {len(fids)} vectors")
            for doc_id, fid in zip(wanted, fids.tolist(), strict=True):
                del self._fid_by_id[doc_id]
                del self._docs[fid]
            self._gpu_index = None
            return len(wanted)

    def _rebuild_hnsw_without(self, fids: np.ndarray) -> None:
        faiss = self._faiss
        old = self._index
        inner = faiss.downcast_index(old.index)
        stored = faiss.vector_to_array(old.id_map).astype(np.int64)
        keep = ~np.isin(stored, fids)
        logger.warning("FAISS HNSW cannot remove vectors: rebuilding the graph over %d vectors", int(keep.sum()))
        vectors = inner.reconstruct_n(0, old.ntotal)[keep]
        metric = faiss.METRIC_INNER_PRODUCT if self.metric == "ip" else faiss.METRIC_L2
        index = faiss.index_factory(self.dimension, self.factory, metric)
        faiss.downcast_index(index.index).hnsw.efConstruction = self.params["ef_construction"]
        if len(vectors):
            index.add_with_ids(np.ascontiguousarray(vectors), stored[keep])
        self._apply_search_params(index)
        self._index = index

    # ------------------------------------------------------------------ searching

    def __len__(self) -> int:
        return len(self._docs)

    def __contains__(self, doc_id: object) -> bool:
        return doc_id in self._fid_by_id

    @property
    def ids(self) -> list[str]:
        """Document ids in insertion order."""
        with self._lock:
            return [d.id for d in self._docs.values()]

    def get(self, doc_id: str) -> SearchResult:
        """The stored document ``doc_id`` (score ``nan``); ``KeyError`` if absent."""
        with self._lock:
            doc = self._docs[self._fid_by_id[doc_id]]
            return SearchResult(doc.id, math.nan, doc.text, copy.deepcopy(doc.metadata))

    def search(self, query: str, k: int = 10) -> list[SearchResult]:
        """The ``k`` documents most similar to ``query``, best first (fewer if the index is smaller).

        An empty or blank ``query`` is a ``ValueError`` (an empty embedding would rank documents
        by nothing), as it is for the rerankers.

        Example:
            >>> from rerank_plugins.retrieval import FaissIndex, HashingEmbedder
            >>> FaissIndex(HashingEmbedder(8)).search("anything")
            []
        """
        validate_query(query)
        return self.search_batch([query], k=k)[0]

    def search_batch(self, queries: Sequence[str], k: int = 10) -> list[list[SearchResult]]:
        """:meth:`search` for several queries at once (one embedding batch, one FAISS call)."""
        if isinstance(queries, str) or not isinstance(queries, Sequence):
            raise ValueError("queries must be a sequence of str, not a single string")
        for i, q in enumerate(queries):
            if not isinstance(q, str):
                raise ValueError(f"queries[{i}] must be a str, got {type(q).__name__}")
            if not q.strip():
                raise ValueError(f"queries[{i}] must be a non-empty string (got an empty or blank query)")
        _positive_int("k", k)
        if not queries:
            return []
        if not len(self):
            return [[] for _ in queries]
        vectors = self.embedder.embed_queries([clean_text(q) for q in queries], batch_size=self.batch_size)
        return self.search_vectors(vectors, k=k)

    def search_vectors(self, vectors: np.ndarray, k: int = 10) -> list[list[SearchResult]]:
        """Search with precomputed query vectors ``[n, dimension]``."""
        k = int(_positive_int("k", k) or 10)
        x = np.asarray(vectors, dtype=np.float32)
        x = self._prepare(x, x.shape[0] if x.ndim == 2 else -1, "query vectors")
        with self._lock:
            if not len(self) or not len(x):
                return [[] for _ in range(len(x))]
            D, I = self._searcher().search(x, min(k, len(self)))  # noqa: E741 - FAISS naming
            sign = 1.0 if self.metric == "ip" else -1.0
            out: list[list[SearchResult]] = []
            for drow, irow in zip(D.tolist(), I.tolist(), strict=True):
                row = []
                for dist, fid in zip(drow, irow, strict=True):
                    if fid < 0:  # FAISS pads with -1 when fewer than k candidates were found
                        continue
                    doc = self._docs[fid]
                    row.append(SearchResult(doc.id, sign * float(dist), doc.text, copy.deepcopy(doc.metadata)))
                out.append(row)
            return out

    def _searcher(self) -> Any:
        device = self._gpu_device()
        if device is None:
            return self._index
        if self._gpu_index is None:
            faiss = self._faiss
            if not hasattr(self, "_gpu_resources"):
                self._gpu_resources = faiss.StandardGpuResources()
            self._gpu_index = faiss.index_cpu_to_gpu(self._gpu_resources, device, self._index)
        return self._gpu_index

    def _gpu_device(self) -> int | None:
        if self.device == "cpu":
            return None
        if self.device == "auto":
            return 0 if _faiss_has_gpu(self._faiss) and self.kind != "hnsw" else None
        if self.kind == "hnsw":
            raise RuntimeError("FAISS HNSW has no GPU implementation; use device='cpu' or kind='flat'/'ivf'")
        return int(self.device.split(":")[1]) if ":" in self.device else 0

    # ------------------------------------------------------------------ persistence

    def save(self, folder: str | os.PathLike[str]) -> Path:
        """Write the index to ``folder`` (created if needed): plain files, never pickle.

        Files are written under temporary names and renamed, the manifest last, so a crash
        mid-save leaves a folder that :meth:`load` rejects instead of silently half-loading.

        Example:
            >>> import tempfile
            >>> from rerank_plugins.retrieval import FaissIndex, HashingEmbedder
            >>> index = FaissIndex.build(["a b", "c d"], embedder=HashingEmbedder(8))
            >>> with tempfile.TemporaryDirectory() as tmp:
            ...     _ = index.save(tmp)
            ...     len(FaissIndex.load(tmp))
            2
        """
        path = Path(folder)
        path.mkdir(parents=True, exist_ok=True)
        with self._lock:
            if self._index is None:
                if self._resolved_kind(0) in ("ivf", "ivfpq"):
                    raise ValueError(f"cannot save an empty {self.kind} index: IVF needs training vectors")
                self._create(np.zeros((0, self.dimension), dtype=np.float32))
            tmp_index, tmp_docs = path / f".{INDEX_FILE}.tmp", path / f".{DOCS_FILE}.tmp"
            self._faiss.write_index(self._index, str(tmp_index))
            with tmp_docs.open("w", encoding="utf-8") as f:
                for fid, doc in self._docs.items():
                    f.write(_document_line({"id": doc.id, "faiss_id": fid, "text": doc.text, "metadata": doc.metadata}))
            manifest = {
                "format": FORMAT_NAME,
                "format_version": FORMAT_VERSION,
                "created_with": {
                    "rerank_plugins": _package_version("rerank-plugins"),
                    "faiss": getattr(self._faiss, "__version__", "unknown"),
                },
                "embedder": self.embedder.spec(),
                "dimension": self.dimension,
                "metric": self.metric,
                "normalize": self.normalize,
                "kind": self.kind,
                "factory": self.factory,
                "params": self.params,
                "count": len(self._docs),
                "next_faiss_id": self._next_fid,
                "files": {
                    INDEX_FILE: {"sha256": _sha256(tmp_index), "bytes": tmp_index.stat().st_size},
                    DOCS_FILE: {"sha256": _sha256(tmp_docs), "bytes": tmp_docs.stat().st_size},
                },
            }
            manifest[MANIFEST_DIGEST] = _manifest_digest(manifest)
            tmp_manifest = path / f".{MANIFEST}.tmp"
            tmp_manifest.write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
            (path / MANIFEST).unlink(missing_ok=True)
            os.replace(tmp_index, path / INDEX_FILE)
            os.replace(tmp_docs, path / DOCS_FILE)
            os.replace(tmp_manifest, path / MANIFEST)
        logger.info("saved %d documents to %s", len(self), path)
        return path

    @classmethod
    def load(
        cls,
        folder: str | os.PathLike[str],
        *,
        embedder: str | Embedder | None = None,
        device: str = "auto",
        check_embedder_name: bool = True,
        verify_checksums: bool = True,
    ) -> FaissIndex:
        """Load an index written by :meth:`save`, checking format, checksums, dimension and counts.

        Args:
            folder: the saved folder.
            embedder: the query embedder; default: rebuilt from the manifest (the same
                sentence-transformers name, shared per process).
            device: as for :class:`FaissIndex`.
            check_embedder_name: refuse an ``embedder`` whose name differs from the saved one
                (turn off when the same model lives at another path).
            verify_checksums: compare the files' sha256 with the manifest.

        Raises:
            IndexLoadError: missing or corrupt files, unsupported format version, or an
                embedder/dimension/count mismatch; the message says which.

        Example:
            >>> FaissIndex.load("my-index")  # doctest: +SKIP
        """
        faiss = import_faiss()
        path = Path(folder)
        manifest = _read_manifest(path)
        mpath = path / MANIFEST
        if verify_checksums:
            for name, info in manifest["files"].items():
                actual = _sha256(path / name)
                if actual != info.get("sha256"):
                    raise IndexLoadError(f"{path / name} is corrupt or was modified (sha256 mismatch)")
        created_with = manifest.get("created_with")
        saved_faiss = str(created_with.get("faiss", "unknown")) if isinstance(created_with, dict) else "unknown"
        if saved_faiss.split(".")[:1] != str(faiss.__version__).split(".")[:1]:
            logger.warning("index saved with faiss %s, loading with faiss %s", saved_faiss, faiss.__version__)

        dim = manifest["dimension"]
        spec = manifest["embedder"]
        if embedder is None:
            try:
                emb = embedder_from_spec(spec, device=None if device in ("auto",) else device)
            except Exception as exc:
                raise IndexLoadError(
                    f"cannot load the index's embedder {spec.get('name')!r}: {exc}; pass embedder=..."
                ) from exc
        else:
            emb = get_embedder(embedder)
            if check_embedder_name and emb.name != spec.get("name"):
                raise IndexLoadError(
                    f"index was built with embedder {spec.get('name')!r}, got {emb.name!r}; "
                    "pass check_embedder_name=False if it is the same model at another path"
                )
        if int(emb.dimension) != dim:
            raise IndexLoadError(f"embedder {emb.name!r} has dimension {emb.dimension}, index expects {dim}")

        try:
            raw = faiss.read_index(str(path / INDEX_FILE))
        except Exception as exc:
            raise IndexLoadError(f"cannot read {path / INDEX_FILE}: {exc}") from exc
        if raw.d != dim:
            raise IndexLoadError(f"{INDEX_FILE} has dimension {raw.d}, manifest says {dim}")
        if raw.ntotal != manifest["count"]:
            raise IndexLoadError(f"{INDEX_FILE} holds {raw.ntotal} vectors, manifest says {manifest['count']}")
        _check_manifest_against_index(faiss, raw, manifest, mpath)

        docs = _read_documents(path / DOCS_FILE)
        if len(docs) != manifest["count"]:
            raise IndexLoadError(f"{DOCS_FILE} has {len(docs)} documents, manifest says {manifest['count']}")
        stored = _stored_faiss_ids(faiss, raw)
        if set(stored.tolist()) != set(docs):
            raise IndexLoadError(f"{INDEX_FILE} and {DOCS_FILE} disagree on which documents are indexed")
        # A next id at or below a stored one would make the next add() overwrite that document.
        lowest_free = int(stored.max()) + 1 if len(stored) else 0
        if manifest["next_faiss_id"] < lowest_free:
            raise IndexLoadError(
                f"{mpath}: next_faiss_id is {manifest['next_faiss_id']}, but {INDEX_FILE} already uses ids up to "
                f"{lowest_free - 1}; the next add would overwrite stored documents"
            )
        # Last, so that a specific mismatch above is reported first: the digest catches the rest
        # (e.g. a flipped "normalize", which no cross-check can see).
        if verify_checksums and MANIFEST_DIGEST in manifest and manifest[MANIFEST_DIGEST] != _manifest_digest(manifest):
            raise IndexLoadError(
                f"{mpath} was modified after saving (its {MANIFEST_DIGEST} does not match its content)"
            )

        self = cls(
            emb,
            kind=manifest["kind"],
            metric=manifest["metric"],
            normalize=manifest["normalize"],
            device=device,
            hnsw_m=manifest["params"].get("hnsw_m") or 32,
            ef_construction=manifest["params"].get("ef_construction") or 200,
            ef_search=manifest["params"].get("ef_search") or 128,
        )
        self.params.update(manifest["params"])
        self.factory = manifest["factory"]
        self._index = raw
        self._apply_search_params(raw)
        self._docs = docs
        self._fid_by_id = {d.id: fid for fid, d in docs.items()}
        if len(self._fid_by_id) != len(docs):
            raise IndexLoadError(f"{DOCS_FILE} has duplicate document ids")
        self._next_fid = manifest["next_faiss_id"]
        logger.info("loaded %d documents from %s (%s)", len(self), path, self.factory)
        return self

    def __repr__(self) -> str:
        return (
            f"FaissIndex(embedder={self.embedder.name!r}, kind={self.kind!r}, metric={self.metric!r}, "
            f"documents={len(self)})"
        )


def _faiss_has_gpu(faiss: Any) -> bool:
    return hasattr(faiss, "StandardGpuResources") and faiss.get_num_gpus() > 0


def _document_line(row: dict[str, Any]) -> str:
    """One ``documents.jsonl`` line: UTF-8 text, or ASCII escapes when the row holds lone surrogates."""
    line = json.dumps(row, ensure_ascii=False)
    try:
        line.encode("utf-8")
    except UnicodeEncodeError:
        # "\ud800" cannot be written as UTF-8; the JSON escape keeps it exactly (a split pair such
        # as "\ud83d\ude00" reads back as the one character it encodes, as JSON decoding does).
        line = json.dumps(row, ensure_ascii=True)
    return line + "\n"


def _manifest_digest(manifest: Mapping[str, Any]) -> str:
    """sha256 of the manifest's content other than the digest itself, in a canonical JSON form."""
    content = {k: v for k, v in manifest.items() if k != MANIFEST_DIGEST}
    canonical = json.dumps(content, sort_keys=True, ensure_ascii=True, separators=(",", ":"))
    return hashlib.sha256(canonical.encode("ascii")).hexdigest()


def _describe_index(faiss: Any, index: Any) -> tuple[str, str] | None:
    """``(kind, factory string)`` of a FAISS index as this module builds them; ``None`` for others."""
    if isinstance(index, faiss.IndexIDMap2):
        inner = faiss.downcast_index(index.index)
        if isinstance(inner, faiss.IndexHNSWFlat):
            return "hnsw", f"IDMap2,HNSW{inner.hnsw.nb_neighbors(1)}"
        if isinstance(inner, faiss.IndexFlat):
            return "flat", "IDMap2,Flat"
        return None
    if isinstance(index, faiss.IndexIVFPQ):
        return "ivfpq", f"IVF{index.nlist},PQ{index.pq.M}x{index.pq.nbits}"
    if isinstance(index, faiss.IndexIVFFlat):
        return "ivf", f"IVF{index.nlist},Flat"
    return None


def _check_manifest_against_index(faiss: Any, raw: Any, manifest: Mapping[str, Any], mpath: Path) -> None:
    """The manifest's kind, factory and metric must describe the FAISS index actually saved."""
    ipath = mpath.parent / INDEX_FILE
    described = _describe_index(faiss, raw)
    if described is None:
        raise IndexLoadError(f"{ipath} holds a {type(raw).__name__}, not an index rerank-plugins writes")
    kind, factory = described
    if manifest["kind"] != kind:
        raise IndexLoadError(f"{mpath}: kind is {manifest['kind']!r}, but {ipath} holds a {kind!r} index")
    if manifest["factory"] != factory:
        raise IndexLoadError(f"{mpath}: factory is {manifest['factory']!r}, but {ipath} is {factory!r}")
    metric = {faiss.METRIC_INNER_PRODUCT: "ip", faiss.METRIC_L2: "l2"}.get(raw.metric_type, str(raw.metric_type))
    if manifest["metric"] != metric:
        raise IndexLoadError(f"{mpath}: metric is {manifest['metric']!r}, but {ipath} uses {metric!r}")


def _read_manifest(path: Path) -> dict[str, Any]:
    if not path.is_dir():
        raise IndexLoadError(f"{path} is not a folder")
    mpath = path / MANIFEST
    if not mpath.is_file():
        raise IndexLoadError(f"{path} is not a saved index: {MANIFEST} is missing")
    try:
        manifest = json.loads(mpath.read_text(encoding="utf-8"))
    except (ValueError, UnicodeDecodeError) as exc:
        raise IndexLoadError(f"{mpath} is not valid JSON: {exc}") from exc
    if not isinstance(manifest, dict) or manifest.get("format") != FORMAT_NAME:
        raise IndexLoadError(f"{mpath} is not a {FORMAT_NAME} manifest")
    fv = manifest.get("format_version")
    if not isinstance(fv, int) or fv > FORMAT_VERSION or fv < 1:
        raise IndexLoadError(
            f"{mpath} has format_version {fv!r}; this rerank-plugins reads versions 1..{FORMAT_VERSION} "
            "(upgrade rerank-plugins to read newer indexes)"
        )
    required = {
        "embedder": dict, "dimension": int, "metric": str, "normalize": bool, "kind": str,
        "factory": str, "params": dict, "count": int, "next_faiss_id": int, "files": dict,
    }  # fmt: skip
    for key, typ in required.items():
        if not isinstance(manifest.get(key), typ):
            raise IndexLoadError(f"{mpath}: field {key!r} is missing or not a {typ.__name__}")
    if set(manifest["files"]) != {INDEX_FILE, DOCS_FILE} or not all(
        isinstance(info, dict) for info in manifest["files"].values()
    ):
        raise IndexLoadError(f"{mpath}: 'files' must list {INDEX_FILE} and {DOCS_FILE}, each with its sha256")
    if manifest["kind"] not in _KINDS[1:]:
        raise IndexLoadError(f"{mpath}: kind must be one of {', '.join(_KINDS[1:])}, got {manifest['kind']!r}")
    if manifest["metric"] not in ("ip", "l2"):
        raise IndexLoadError(f"{mpath}: metric must be 'ip' or 'l2', got {manifest['metric']!r}")
    for key in ("dimension", "count", "next_faiss_id"):
        value = manifest[key]
        if isinstance(value, bool) or value < (1 if key == "dimension" else 0):
            raise IndexLoadError(
                f"{mpath}: {key} must be a {'positive' if key == 'dimension' else 'non-negative'} int, got {value!r}"
            )
    for key, value in manifest["params"].items():
        if key not in _PARAMS or (
            value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1)
        ):
            raise IndexLoadError(
                f"{mpath}: params[{key!r}] must be one of {', '.join(_PARAMS)} with a positive "
                f"int or null, got {value!r}"
            )
    if MANIFEST_DIGEST in manifest and not isinstance(manifest[MANIFEST_DIGEST], str):
        raise IndexLoadError(f"{mpath}: {MANIFEST_DIGEST} must be a string")
    for name in (INDEX_FILE, DOCS_FILE):
        if not (path / name).is_file():
            raise IndexLoadError(f"{path} is incomplete: {name} is missing")
    return manifest


def _read_documents(path: Path) -> dict[int, _Doc]:
    docs: dict[int, _Doc] = {}
    # Bytes, decoded per line: invalid UTF-8 is reported with its line number like any bad line.
    with path.open("rb") as f:
        for lineno, raw in enumerate(f, 1):
            try:
                row = json.loads(raw.decode("utf-8"))
                fid = row["faiss_id"]
                if isinstance(fid, bool) or not isinstance(fid, int):
                    raise TypeError(f"faiss_id must be an int, got {fid!r}")
                doc = _Doc(str(row["id"]), row["text"], row["metadata"])
                if not isinstance(doc.text, str) or not isinstance(doc.metadata, dict):
                    raise TypeError("text must be a string and metadata an object")
            except (ValueError, KeyError, TypeError) as exc:  # UnicodeDecodeError is a ValueError
                raise IndexLoadError(f"{path}:{lineno}: bad document line ({exc})") from exc
            if fid in docs:
                raise IndexLoadError(f"{path}:{lineno}: duplicate faiss_id {fid}")
            docs[fid] = doc
    return docs


def _stored_faiss_ids(faiss: Any, index: Any) -> np.ndarray:
    if hasattr(index, "id_map"):
        return faiss.vector_to_array(index.id_map).astype(np.int64)
    ivf = faiss.extract_index_ivf(index)
    invlists = ivf.invlists
    parts = []
    for list_no in range(ivf.nlist):
        size = invlists.list_size(list_no)
        if size:
            parts.append(faiss.rev_swig_ptr(invlists.get_ids(list_no), size).copy())
    return np.concatenate(parts).astype(np.int64) if parts else np.zeros(0, dtype=np.int64)
