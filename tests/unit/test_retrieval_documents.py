"""Folder / JSONL loading, the one-call helper and the hashing embedder (no model weights).

Only the tests that build an index need faiss; the loaders and the embedder run without it."""

from __future__ import annotations

import json

import numpy as np
import pytest

from rerank_plugins.retrieval import (
    HashingEmbedder,
    TextDocument,
    get_embedder,
    index_documents,
    index_folder,
    load_folder,
    load_jsonl,
)


@pytest.fixture
def notes(tmp_path):
    (tmp_path / "sub").mkdir()
    (tmp_path / "a.txt").write_text("Whales are large marine mammals.", encoding="utf-8")
    (tmp_path / "sub" / "b.md").write_text("# Foxes\nThe red fox is a small canid.", encoding="utf-8")
    (tmp_path / "code.py").write_text("print('not indexed')", encoding="utf-8")
    (tmp_path / "empty.txt").write_text("  \n", encoding="utf-8")
    (tmp_path / ".cache").mkdir()
    (tmp_path / ".cache" / "README.md").write_text("hidden folder", encoding="utf-8")
    (tmp_path / ".hidden.txt").write_text("hidden file", encoding="utf-8")
    return tmp_path


def test_load_folder_ids_are_relative_paths(notes):
    docs = load_folder(notes)
    assert docs == [
        TextDocument("a.txt", "Whales are large marine mammals.", {"path": "a.txt"}),
        TextDocument("sub/b.md", "# Foxes\nThe red fox is a small canid.", {"path": "sub/b.md"}),
    ]
    assert [d.id for d in load_folder(notes, patterns=["*.py"])] == ["code.py"]


def test_load_folder_errors(tmp_path, notes):
    with pytest.raises(ValueError, match="is not a directory"):
        load_folder(tmp_path / "missing")
    (notes / "latin.txt").write_bytes("caf\xe9".encode("latin-1"))
    with pytest.raises(ValueError, match=r"latin.txt is not valid utf-8 text"):
        load_folder(notes)
    assert load_folder(notes, encoding="latin-1")[1].text == "café"


@pytest.mark.usefixtures("requires_faiss")
def test_index_folder_and_search(notes, tmp_path):
    index = index_folder(notes, embedder=HashingEmbedder(64))
    hit = index.search("red fox", k=1)[0]
    assert (hit.id, hit.metadata) == ("sub/b.md", {"path": "sub/b.md"})


@pytest.mark.usefixtures("requires_faiss")
def test_index_documents_accepts_strings_mappings_and_documents():
    index = index_documents(
        ["plain text one", {"id": "m", "text": "mapping text", "metadata": {"k": 1}}, TextDocument("t", "doc text")],
        embedder=HashingEmbedder(64),
    )
    assert index.ids == ["0", "m", "t"]
    assert index.get("m").metadata == {"k": 1}
    with pytest.raises(ValueError, match=r"documents\[0\] must be a str, a TextDocument or a mapping"):
        index_documents([42], embedder=HashingEmbedder(8))  # type: ignore[list-item]


def test_load_jsonl_beir_layout(tmp_path):
    path = tmp_path / "corpus.jsonl"
    rows = [
        {"_id": "d1", "title": "Foxes", "text": "Red foxes.", "metadata": {}},
        {"_id": "d2", "title": "", "text": "No title."},
    ]
    path.write_text("\n".join(json.dumps(r) for r in rows) + "\n\n", encoding="utf-8")
    docs = load_jsonl(path)
    assert docs == [TextDocument("d1", "Foxes\nRed foxes.", {"title": "Foxes", "metadata": {}}),
                    TextDocument("d2", "No title.", {"title": ""})]  # fmt: skip
    path.write_text('{"title": "x"}\n', encoding="utf-8")
    with pytest.raises(ValueError, match=r"corpus.jsonl:1: expected a JSON object with 'text'"):
        load_jsonl(path)


def test_hashing_embedder_is_deterministic_and_lexical():
    emb = HashingEmbedder(32)
    v = emb.embed_documents(["Red fox", "red FOX!", "blue whale", ""])
    assert v.dtype == np.float32 and v.shape == (4, 32)
    assert (v[0] == v[1]).all() and not (v[0] == v[2]).all()
    assert not v[3].any()
    assert np.abs(v[0]).sum() == 2.0  # two tokens, one +-1 each (distinct buckets here)
    with pytest.raises(ValueError, match="dimension must be a positive int"):
        HashingEmbedder(0)


def test_get_embedder_validates():
    emb = HashingEmbedder(8)
    assert get_embedder(emb) is emb
    with pytest.raises(ValueError, match="embedder must be a model name or an Embedder"):
        get_embedder(3)  # type: ignore[arg-type]
    with pytest.raises(ValueError, match="non-empty string"):
        get_embedder("")
