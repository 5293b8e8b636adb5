"""The public test doubles in rerank_plugins.testing behave as documented."""

from __future__ import annotations

from pathlib import Path


def test_tiny_cross_encoder_tokenizer_knows_its_vocabulary(tmp_path: Path) -> None:
    from transformers import AutoTokenizer

    from rerank_plugins.testing import tiny_cross_encoder_dir

    tok = AutoTokenizer.from_pretrained(tiny_cross_encoder_dir(path=tmp_path / "ce"))
    # words of the training corpus are whole tokens; only unseen words become [UNK]
    assert tok.tokenize("Paris is the capital of France.") == ["paris", "is", "the", "capital", "of", "france", "."]
    assert tok.tokenize("zebra") == ["[UNK]"]
    assert len(tok) > 100
