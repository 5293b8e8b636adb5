"""clean_text: lone surrogates become U+FFFD; everything else is left alone."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from rerank_plugins.text import clean_text


def test_lone_surrogates_become_replacement_characters():
    assert clean_text("Paris \ud800 x") == "Paris \ufffd x"
    assert clean_text("\udfff") == "\ufffd"
    assert clean_text("a\ud800\ud800b") == "a\ufffd\ufffdb"


def test_a_surrogate_pair_becomes_its_character():
    assert clean_text("\ud83d\ude00") == "\U0001f600"


@given(st.text(alphabet=st.characters(exclude_categories=["Cs"])))
def test_text_without_surrogates_is_unchanged(text):
    assert clean_text(text) is text


@given(st.text())
def test_result_is_always_utf8_encodable(text):
    clean_text(text).encode("utf-8")
