"""Text hygiene shared by every place that hands user or document text to a tokenizer."""

from __future__ import annotations

import re

__all__ = ["clean_text"]

_SURROGATE = re.compile("[\ud800-\udfff]")


def clean_text(text: str) -> str:
    """``text`` with every lone UTF-16 surrogate replaced by U+FFFD.

    Tokenizers (Rust ``tokenizers``, sentence-transformers) reject strings that cannot be
    encoded as UTF-8 with a ``TypeError`` from deep inside; a surrogate *pair* written as two
    code points becomes the character it encodes.

    Example:
        >>> clean_text("Paris \\ud800 x")
        'Paris \\ufffd x'
        >>> clean_text("\\ud83d\\ude00")
        '😀'
    """
    if not _SURROGATE.search(text):
        return text
    return text.encode("utf-16", "surrogatepass").decode("utf-16", "replace")
