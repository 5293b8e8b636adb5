"""Base models without a chat template: prompts are plain text with a simple answer cue, and
every strategy runs on them."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from rerank_plugins import registry
from rerank_plugins.scoring import Document, get_core

DOCS = ["Paris is the capital of France.", "The quick brown fox jumps over the lazy dog.", "Berlin is in Germany."]


@pytest.fixture(scope="module")
def base_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    from rerank_plugins.testing import tiny_model_dir

    folder = tiny_model_dir(path=tmp_path_factory.mktemp("base") / "m")
    (folder / "chat_template.jinja").unlink(missing_ok=True)
    config_path = folder / "tokenizer_config.json"
    config = json.loads(config_path.read_text())
    config.pop("chat_template", None)
    config_path.write_text(json.dumps(config))
    return folder


@pytest.fixture(scope="module")
def core(base_model: Path):
    core = get_core(base_model)
    assert not getattr(core.tokenizer, "chat_template", None)
    return core


@pytest.mark.parametrize(
    ("system", "expected"),
    [
        (None, "Rank: Paris is the capital end.\nAnswer:"),
        ("Be brief.", "Be brief.\n\nRank: Paris is the capital end.\nAnswer:"),
    ],
)
def test_prompt_is_plain_text_with_an_answer_cue(core, system, expected):
    enc = core.encode_chat(
        ["Rank: ", Document("Paris is the capital"), " end."], system=system, assistant_prefix="Answer:"
    )
    assert core.tokenizer.decode(enc.input_ids) == expected
    ((start, end),) = enc.spans
    assert core.tokenizer.decode(enc.input_ids[start:end]) == "Paris is the capital"


def test_pointwise_scores_the_plain_text_prompt(core, monkeypatch):
    from rerank_plugins.rerankers.pointwise import DEFAULT_INSTRUCTION

    seen: list[list[int]] = []
    real = core.next_token_logits

    def spy(rows, wanted, prefix=None):
        seen.extend([*(prefix or []), *row] for row in rows)
        return real(rows, wanted, prefix=prefix)

    monkeypatch.setattr(core, "next_token_logits", spy)
    r = registry.create("pointwise", model=core, calibrate=False)
    scores = r.score("capital of France", DOCS)
    encodings = {w: core.tokenizer.encode(w, add_special_tokens=False) for w in ("Yes", " Yes", "No", " No")}
    yes = sorted({e[0] for w, e in encodings.items() if "Yes" in w and len(e) == 1})
    no = sorted({e[0] for w, e in encodings.items() if "No" in w and len(e) == 1})
    for doc, ids, score in zip(DOCS, seen, scores, strict=True):
        assert core.tokenizer.decode(ids) == (
            f"{DEFAULT_INSTRUCTION}\n\nQuery: capital of France\n\nDocument: {doc}"
            "\n\nIs the document relevant to the query? Answer Yes or No.\n"
        )
        with torch.no_grad():
            logits = core.model(input_ids=torch.tensor([ids])).logits[0, -1].float()
        expected = torch.logsumexp(logits[yes], 0) - torch.logsumexp(logits[no], 0)
        assert score == pytest.approx(float(expected), abs=1e-4)


@pytest.mark.parametrize("name", ["pointwise", "listwise", "pairwise", "attention"])
def test_every_llm_strategy_ranks_on_a_base_model(core, name):
    r = registry.create(name, model=core)
    hits = r.rerank("What is the capital of France?", DOCS)
    assert sorted(h.index for h in hits) == [0, 1, 2]
    assert hits == r.rerank("What is the capital of France?", DOCS)
