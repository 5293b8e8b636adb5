"""Broken local model files raise ModelLoadError naming the file and the cause.

The corrupt files are made from the test suite's tiny models (and, for GGUF, from the
provisioned SmolLM2 .gguf): a truncated safetensors file, a config.json without ``model_type``,
unreadable JSON, missing weights, and empty, foreign, 100-byte and truncated .gguf files. The
"hub unreachable" hint belongs to hub ids only.
"""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest

from rerank_plugins.retrieval import SentenceTransformerEmbedder
from rerank_plugins.scoring import ModelLoadError, load_model
from rerank_plugins.scoring.model import load_cross_encoder

HUB_HINT = "hub is unreachable"


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _truncate(path: Path, keep: int | None = None) -> None:
    data = path.read_bytes()
    path.write_bytes(data[: len(data) // 2 if keep is None else keep])


def _drop_model_type(folder: Path) -> None:
    cfg = json.loads((folder / "config.json").read_text())
    del cfg["model_type"]
    (folder / "config.json").write_text(json.dumps(cfg))


def _raises(load, *fragments: str) -> ModelLoadError:
    with pytest.raises(ModelLoadError) as info:
        load()
    message = str(info.value)
    for fragment in fragments:
        assert fragment in message, (fragment, message)
    assert HUB_HINT not in message
    # one error type for both kinds of handlers: bad input, and an unreadable file
    assert isinstance(info.value, ValueError) and isinstance(info.value, OSError)
    assert info.value.__cause__ is not None
    return info.value


def test_truncated_safetensors(tmp_path, tiny_model) -> None:
    folder = _copy(tiny_model, tmp_path / "llm")
    _truncate(folder / "model.safetensors")
    _raises(lambda: load_model(folder), str(folder / "model.safetensors"), "truncated or corrupt")


def test_config_without_model_type(tmp_path, tiny_model) -> None:
    folder = _copy(tiny_model, tmp_path / "llm")
    _drop_model_type(folder)
    _raises(lambda: load_model(folder), str(folder / "config.json"), "model_type")


def test_config_that_is_not_json(tmp_path, tiny_model) -> None:
    folder = _copy(tiny_model, tmp_path / "llm")
    (folder / "config.json").write_text("{not json")
    _raises(lambda: load_model(folder), str(folder / "config.json"), "JSON")


def test_missing_weights(tmp_path, tiny_model) -> None:
    folder = _copy(tiny_model, tmp_path / "llm")
    (folder / "model.safetensors").unlink()
    _raises(lambda: load_model(folder), str(folder), "model.safetensors")


def test_a_failed_load_is_not_cached(tmp_path, tiny_model) -> None:
    folder = _copy(tiny_model, tmp_path / "llm")
    good = (folder / "model.safetensors").read_bytes()
    _truncate(folder / "model.safetensors")
    _raises(lambda: load_model(folder, dtype="float32"))
    (folder / "model.safetensors").write_bytes(good)
    assert load_model(folder, dtype="float32").model is not None


@pytest.mark.parametrize(
    ("content", "fragment"),
    [(b"", "is empty"), (b"not a gguf file" * 10, "not a GGUF file")],
    ids=["empty", "foreign"],
)
def test_gguf_that_is_not_gguf(tmp_path, content, fragment) -> None:
    path = tmp_path / "model.gguf"
    path.write_bytes(content)
    _raises(lambda: load_model(path), str(path), fragment)


@pytest.mark.parametrize("keep", [100, None], ids=["100-bytes", "half"])
def test_truncated_gguf(tmp_path, smollm2_gguf, keep) -> None:
    path = tmp_path / "model.gguf"
    shutil.copyfile(smollm2_gguf, path)
    _truncate(path, keep)
    _raises(lambda: load_model(path), str(path), "truncated or corrupt")


def test_cross_encoder_truncated_and_without_model_type(tmp_path, tiny_cross_encoder) -> None:
    folder = _copy(tiny_cross_encoder, tmp_path / "ce")
    _truncate(folder / "model.safetensors")
    _raises(lambda: load_cross_encoder(folder), str(folder / "model.safetensors"), "truncated or corrupt")
    other = _copy(tiny_cross_encoder, tmp_path / "ce2")
    _drop_model_type(other)
    _raises(lambda: load_cross_encoder(other), str(other / "config.json"), "model_type")


def test_embedder_truncated(tmp_path, tiny_cross_encoder) -> None:
    folder = _copy(tiny_cross_encoder, tmp_path / "emb")
    _truncate(folder / "model.safetensors")
    _raises(lambda: SentenceTransformerEmbedder(str(folder)), str(folder / "model.safetensors"))


def test_hub_ids_keep_the_hub_hint() -> None:
    with pytest.raises(OSError, match=HUB_HINT) as info:
        load_model("rerank-plugins-test/no-such-model")
    assert not isinstance(info.value, ModelLoadError)


def test_out_of_memory_is_not_reported_as_a_corrupt_file(tmp_path, tiny_model, monkeypatch) -> None:
    import torch
    import transformers

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory")

    monkeypatch.setattr(transformers.AutoModelForCausalLM, "from_pretrained", oom)
    with pytest.raises(torch.OutOfMemoryError):
        load_model(_copy(tiny_model, tmp_path / "m"))
