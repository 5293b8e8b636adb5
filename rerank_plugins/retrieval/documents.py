"""Getting documents into an index: a folder of text files, a JSONL file, or plain objects.

Documents are ``TextDocument(id, text, metadata)``. :func:`index_documents` is the one-call
helper: documents in, searchable :class:`~rerank_plugins.retrieval.FaissIndex` out.

Example:
    >>> from rerank_plugins.retrieval import HashingEmbedder, index_documents
    >>> index = index_documents(["the cat sat", "dogs bark"], embedder=HashingEmbedder(32))
    >>> index.search("cat", k=1)[0].text
    'the cat sat'
"""

from __future__ import annotations

import json
import logging
import os
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rerank_plugins.retrieval.embedder import Embedder
from rerank_plugins.retrieval.index import FaissIndex

__all__ = ["DEFAULT_PATTERNS", "TextDocument", "index_documents", "index_folder", "load_folder", "load_jsonl"]

logger = logging.getLogger(__name__)

DEFAULT_PATTERNS: tuple[str, ...] = ("*.txt", "*.md")


@dataclass(frozen=True, slots=True)
class TextDocument:
    """A document to index: a unique id, its text and JSON-serialisable metadata."""

    id: str
    text: str
    metadata: dict[str, Any] = field(default_factory=dict)


def load_folder(
    folder: str | os.PathLike[str],
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    *,
    encoding: str = "utf-8",
) -> list[TextDocument]:
    """Every file under ``folder`` (recursively) matching ``patterns``, id = relative path.

    Paths use ``/`` on every OS and are sorted, so ids are stable. Hidden files and folders
    (``.git``, ``.pytest_cache``...) and empty files are skipped. Metadata holds ``path`` (the
    relative path).

    Raises:
        ValueError: ``folder`` is not a directory, or a file is not valid ``encoding``.

    Example:
        >>> docs = load_folder("notes/")  # doctest: +SKIP
        >>> docs[0].id  # doctest: +SKIP
        'guide/intro.md'
    """
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"folder {str(root)!r} is not a directory")
    files = sorted(
        {
            p
            for pattern in patterns
            for p in root.rglob(pattern)
            if p.is_file() and not any(part.startswith(".") for part in p.relative_to(root).parts)
        }
    )
    docs: list[TextDocument] = []
    skipped = 0
    for p in files:
        rel = p.relative_to(root).as_posix()
        try:
            text = p.read_text(encoding=encoding)
        except UnicodeDecodeError as exc:
            raise ValueError(f"{p} is not valid {encoding} text ({exc}); pass encoding=...") from exc
        if not text.strip():
            skipped += 1
            continue
        docs.append(TextDocument(rel, text, {"path": rel}))
    if skipped:
        logger.info("skipped %d empty files under %s", skipped, root)
    logger.info("read %d documents from %s", len(docs), root)
    return docs


def load_jsonl(
    path: str | os.PathLike[str],
    *,
    id_field: str = "_id",
    text_field: str = "text",
    title_field: str | None = "title",
) -> list[TextDocument]:
    """Documents from a JSON-lines file (BEIR ``corpus.jsonl`` layout by default).

    The text is ``title + "\\n" + text`` when a non-empty title is present (as BEIR
    evaluations embed it); other fields go to metadata. A missing ``id_field`` falls back to
    ``"id"``.

    Example:
        >>> docs = load_jsonl("corpus.jsonl")  # doctest: +SKIP
    """
    docs: list[TextDocument] = []
    with Path(path).open(encoding="utf-8") as f:
        for lineno, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
                doc_id = row.get(id_field, row.get("id"))
                text = row[text_field]
            except (ValueError, KeyError, AttributeError) as exc:
                raise ValueError(f"{path}:{lineno}: expected a JSON object with {text_field!r} ({exc})") from exc
            if doc_id is None:
                raise ValueError(f"{path}:{lineno}: no {id_field!r} (or 'id') field")
            title = row.get(title_field) if title_field else None
            if title:
                text = f"{title}\n{text}"
            meta = {k: v for k, v in row.items() if k not in (id_field, "id", text_field)}
            docs.append(TextDocument(str(doc_id), str(text), meta))
    return docs


def _as_documents(documents: Iterable[str | TextDocument | Mapping[str, Any]]) -> list[TextDocument]:
    out: list[TextDocument] = []
    for i, d in enumerate(documents):
        if isinstance(d, TextDocument):
            out.append(d)
        elif isinstance(d, str):
            out.append(TextDocument(str(i), d))
        elif isinstance(d, Mapping) and isinstance(d.get("text"), str):
            out.append(TextDocument(str(d.get("id", i)), d["text"], dict(d.get("metadata") or {})))
        else:
            raise ValueError(
                f"documents[{i}] must be a str, a TextDocument or a mapping with a 'text' str, got {type(d).__name__}"
            )
    return out


def index_documents(
    documents: Iterable[str | TextDocument | Mapping[str, Any]],
    *,
    embedder: str | Embedder,
    show_progress: bool | None = None,
    **options: Any,
) -> FaissIndex:
    """Documents in, searchable index out: embed, pick the index kind, train, add.

    Args:
        documents: strings (ids ``"0"``, ``"1"``, ...), :class:`TextDocument` objects, or
            mappings with ``text`` and optional ``id`` / ``metadata``.
        embedder: sentence-transformers hub id or folder, or an embedder object.
        show_progress: embedding progress bar (default: only on a terminal).
        **options: :class:`FaissIndex` options (``kind``, ``metric``, ``device``, ...).

    Example:
        >>> from rerank_plugins.retrieval import index_documents
        >>> docs = load_folder("docs/")  # doctest: +SKIP
        >>> index = index_documents(docs, embedder="sentence-transformers/all-MiniLM-L6-v2")  # doctest: +SKIP
        >>> index.save("docs-index")  # doctest: +SKIP
    """
    docs = _as_documents(documents)
    return FaissIndex.build(
        [d.text for d in docs],
        ids=[d.id for d in docs],
        metadatas=[d.metadata for d in docs],
        embedder=embedder,
        show_progress=show_progress,
        **options,
    )


def index_folder(
    folder: str | os.PathLike[str],
    *,
    embedder: str | Embedder,
    patterns: Sequence[str] = DEFAULT_PATTERNS,
    **options: Any,
) -> FaissIndex:
    """Index every ``.txt`` / ``.md`` file under ``folder`` (id = relative path).

    Example:
        >>> from rerank_plugins.retrieval import index_folder
        >>> index_folder("notes/", embedder="~/models/minilm").save("notes-index")  # doctest: +SKIP
    """
    return index_documents(load_folder(folder, patterns), embedder=embedder, **options)
