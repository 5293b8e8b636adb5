"""Retrieval heads: the ``heads`` option of ``attention``, head profiles and their automatic choice,
per-head metrics and :func:`select_heads`, on the tiny random model (2 layers x 4 heads)."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import torch

from rerank_plugins.options import OptionsError
from rerank_plugins.rerankers import heads as heads_module
from rerank_plugins.rerankers.attention import AttentionOptions, AttentionReranker
from rerank_plugins.rerankers.head_selection import JudgedQuery, mean_relevant_rank, ndcg_at_k, select_heads
from rerank_plugins.rerankers.heads import (
    PROFILE_FORMAT,
    HeadProfile,
    HeadScore,
    backend_identity,
    find_profile,
    identity_matches,
)
from rerank_plugins.scoring import get_core

QUERY = "what is the capital of France?"
DOCS = ["Paris is the capital of France.", "The quick brown fox jumps.", "Berlin is in Germany.", "the a an of in on"]


@pytest.fixture
def profiles(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """An empty folder standing in for the shipped profiles."""
    folder = tmp_path / "profiles"
    folder.mkdir()
    monkeypatch.setattr(heads_module, "profile_paths", lambda: sorted(folder.glob("*.json")))
    return folder


def _profile(identity: dict[str, Any], pairs: list[tuple[int, int]], **selection: Any) -> HeadProfile:
    return HeadProfile(model=identity, heads=[HeadScore(la, h, 0.5) for la, h in pairs], selection=selection)


# ---------------------------------------------------------------------------- the option


def test_heads_option_values() -> None:
    assert AttentionOptions().heads == "auto"
    assert AttentionOptions.build({"heads": [[1, 0], (0, 3)]}).heads == [(1, 0), (0, 3)]
    assert AttentionOptions.build({"heads": None}).heads is None
    assert AttentionOptions.build({"heads": Path("p.json")}).heads == "p.json"
    assert AttentionOptions.build({"heads": [[1, 0]]}).settings()["heads"] == [[1, 0]]
    for bad, message in [
        ([[1, True]], "pairs of ints"),
        ([[1, -1]], "pairs of ints"),
        ([[1, 0, 2]], "pairs of ints"),
        ([], "at least one"),
        ([[0, 1], [0, 1]], "twice"),
        (3, "heads must be"),
        ("  ", "heads must be"),
    ]:
        with pytest.raises(OptionsError, match=message):
            AttentionOptions.build({"heads": bad})
    with pytest.raises(OptionsError, match="heads and layers exclude each other"):
        AttentionOptions.build({"heads": [[0, 1]], "layers": "0:1"})
    # "auto" and None go with layers
    assert AttentionOptions.build({"layers": "0:1"}).heads == "auto"


def test_explicit_heads_sum_only_those_heads(tiny_core: Any, profiles: Path) -> None:
    n_layers, n_heads = tiny_core.attention_layout()
    every = AttentionReranker(tiny_core, heads=None).score(QUERY, DOCS)
    all_pairs = [(la, h) for la in range(n_layers) for h in range(n_heads)]
    assert AttentionReranker(tiny_core, heads=all_pairs).score(QUERY, DOCS) == pytest.approx(every, abs=1e-5)
    last_layer = AttentionReranker(tiny_core, layers=[n_layers - 1], heads=None).score(QUERY, DOCS)
    pairs = [(n_layers - 1, h) for h in range(n_heads)]
    assert AttentionReranker(tiny_core, heads=pairs).score(QUERY, DOCS) == pytest.approx(last_layer, abs=1e-5)
    two = AttentionReranker(tiny_core, heads=[(1, 2), (0, 1)])
    assert two.describe()["head_count"] == 2 and two.describe()["head_profile"] is None
    assert two.score(QUERY, DOCS) != pytest.approx(every, abs=1e-3)
    with pytest.raises(ValueError, match="out of range"):
        AttentionReranker(tiny_core, heads=[(n_layers, 0)])


def test_sliding_windows_with_heads_keep_the_window_order(tiny_core: Any, profiles: Path) -> None:
    r = AttentionReranker(tiny_core, heads=[(1, 2), (0, 1)], window=2, stride=1)
    hits, stats = r.rerank_with_stats(QUERY, DOCS)
    assert sorted(h.index for h in hits) == [0, 1, 2, 3] and stats["windows"] == 3
    # tiers are separated by more than two heads' worth of attention
    assert [h.score for h in hits] == sorted((h.score for h in hits), reverse=True)


# ---------------------------------------------------------------------------- profiles


def test_profile_round_trip_and_errors(tmp_path: Path) -> None:
    p = _profile({"name": "m", "layers": 2}, [(1, 2), (0, 0)], metric="ndcg@10")
    path = p.save(tmp_path / "sub" / "m.json")
    back = HeadProfile.load(path)
    assert back.pairs() == [(1, 2), (0, 0)] and back.pairs(1) == [(1, 2)]
    assert back.selection == {"metric": "ndcg@10"} and back.label == "m.json"
    assert json.loads(path.read_text())["format"] == PROFILE_FORMAT
    for data, message in [
        ({"format": "other"}, "not a head profile"),
        ({**back.to_json(), "version": 9}, "version 9"),
        ({**back.to_json(), "heads": []}, "non-empty 'heads'"),
        ({**back.to_json(), "heads": [{"layer": -1, "head": 0}]}, r"heads\[0\]"),
        ({**back.to_json(), "heads": [{"layer": 0, "head": 0}, {"layer": 0, "head": 0}]}, "listed twice"),
    ]:
        bad = tmp_path / "bad.json"
        bad.write_text(json.dumps(data))
        with pytest.raises(ValueError, match=message):
            HeadProfile.load(bad)
    with pytest.raises(ValueError, match="no such file"):
        HeadProfile.load(tmp_path / "none.json")


def test_model_identity_is_stable_across_dtypes_and_tells_weights_apart(tiny_model: Path, tiny_core: Any) -> None:
    from rerank_plugins.testing import tiny_model_dir

    ident = tiny_core.model_identity()
    assert set(ident) == {"name", "model_type", "layers", "heads", "config_sha256", "fingerprint"}
    assert (ident["layers"], ident["heads"], len(ident["fingerprint"])) == (2, 4, 16)
    json.dumps(ident)
    bf16 = get_core(tiny_model, dtype="bfloat16")
    assert bf16.model_identity() != ident and identity_matches(ident, bf16.model_identity())
    other = get_core(tiny_model_dir(seed=1)).model_identity()
    assert other["config_sha256"] == ident["config_sha256"]
    assert not identity_matches(ident, other)
    assert not identity_matches(ident, None) and not identity_matches({**ident, "fingerprint": None}, ident)


def test_auto_picks_a_matching_profile_and_none_opts_out(tiny_core: Any, profiles: Path) -> None:
    ident = tiny_core.model_identity()
    every = AttentionReranker(tiny_core).score(QUERY, DOCS)  # no profile: every head
    assert AttentionReranker(tiny_core).describe()["head_profile"] is None
    _profile(ident, [(1, 2), (0, 1)], prompt="qa").save(profiles / "a-tiny-qa.json")
    _profile(ident, [(1, 3)], prompt="retrieval").save(profiles / "b-tiny.json")
    _profile({**ident, "fingerprint": [9.0] * 16}, [(0, 0)]).save(profiles / "0-other.json")
    (profiles / "0-broken.json").write_text("{")
    auto = AttentionReranker(tiny_core)
    assert auto.describe()["head_profile"] == "b-tiny.json"  # same prompt wins
    assert auto.score(QUERY, DOCS) == AttentionReranker(tiny_core, heads=[(1, 3)]).score(QUERY, DOCS)
    assert AttentionReranker(tiny_core, prompt="qa").describe()["head_profile"] == "a-tiny-qa.json"
    assert AttentionReranker(tiny_core, heads=None).score(QUERY, DOCS) == every
    # explicit layers switch auto off
    assert AttentionReranker(tiny_core, layers="0:").describe()["head_profile"] is None
    # a backend without model_identity() gets no profile
    assert backend_identity(object()) is None
    assert find_profile(None) is None


def test_a_profile_file_is_read_and_checked(tiny_core: Any, tmp_path: Path, caplog) -> None:
    ident = tiny_core.model_identity()
    path = _profile(ident, [(0, 3), (1, 0)]).save(tmp_path / "mine.json")
    r = AttentionReranker(tiny_core, heads=str(path))
    assert r.describe()["head_profile"] == "mine.json" and r.describe()["head_count"] == 2
    assert r.score(QUERY, DOCS) == AttentionReranker(tiny_core, heads=[(0, 3), (1, 0)]).score(QUERY, DOCS)
    elsewhere = _profile({**ident, "name": "another", "fingerprint": [1.0] * 16}, [(0, 3)]).save(tmp_path / "x.json")
    with caplog.at_level("WARNING"):
        AttentionReranker(tiny_core, heads=str(elsewhere))
    assert "was chosen on 'another'" in caplog.text
    too_big = _profile(ident, [(5, 0)]).save(tmp_path / "big.json")
    with pytest.raises(ValueError, match="head profile big.json: head \\(5, 0\\) is out of range"):
        AttentionReranker(tiny_core, heads=str(too_big))


# ---------------------------------------------------------------------------- metrics


def test_ndcg_matches_ir_measures() -> None:
    from rerank_plugins.evaluation.metrics import evaluate

    rng = random.Random(7)
    for _ in range(20):
        n = rng.randint(1, 15)
        grades = [rng.choice([0, 0, 1, 2, 3]) for _ in range(n)]
        if not any(grades):
            grades[0] = 1
        scores = torch.tensor([[rng.choice([0.1, 0.2, 0.3, rng.random()]) for _ in range(n)] for _ in range(3)])
        got = ndcg_at_k(scores, grades, k=10)
        for row, value in zip(scores, got, strict=True):
            order = sorted(range(n), key=lambda i: (-float(row[i]), i))
            qrels = {"q": {f"d{i}": g for i, g in enumerate(grades)}}
            want = evaluate(qrels, {"q": [f"d{i}" for i in order]}, ["nDCG@10"]).aggregate["nDCG@10"]
            assert float(value) == pytest.approx(want, abs=1e-9)


def test_mean_relevant_rank() -> None:
    got = mean_relevant_rank(torch.tensor([[3.0, 2.0, 1.0, 0.0], [0.0, 1.0, 2.0, 3.0]]), [1, 0, 2, 0], rel_level=1)
    # relevant documents 0 and 2: ranks (1, 3) -> 1 - 1/4; ranks (4, 2) -> 1 - 2/4
    assert got.tolist() == [0.75, 0.5]
    assert mean_relevant_rank(torch.tensor([[1.0, 0.0]]), [1, 2], rel_level=2).tolist() == [0.5]  # rank 2 of 2
    assert mean_relevant_rank(torch.tensor([[1.0, 0.0]]), [0, 0]).tolist() == [0.0]


# ---------------------------------------------------------------------------- selection


JUDGED = [
    JudgedQuery("q1", QUERY, tuple(DOCS), (1, 0, 0, 0)),
    JudgedQuery("q2", "where is Berlin?", tuple(DOCS), (0, 0, 2, 0)),
    JudgedQuery("q3", "the fox", tuple(DOCS), (0, 1, 0, 1)),
    JudgedQuery("q4", "nothing relevant", tuple(DOCS[:2]), (0, 0)),
]


def test_per_head_document_scores_are_each_head_alone(tiny_core: Any, profiles: Path) -> None:
    r = AttentionReranker(tiny_core, heads=None)
    per_head, summed, tokens = r.head_document_scores(QUERY, DOCS)
    n_layers, n_heads = tiny_core.attention_layout()
    assert per_head.shape == (n_layers * n_heads, len(DOCS)) and tokens > 0
    for j in (0, 5, n_layers * n_heads - 1):
        alone = AttentionReranker(tiny_core, heads=[(j // n_heads, j % n_heads)]).score(QUERY, DOCS)
        assert per_head[j].tolist() == pytest.approx(alone, abs=1e-5)
    assert summed.tolist() == pytest.approx(r.score(QUERY, DOCS), abs=1e-5)
    with pytest.raises(ValueError, match="do not fit one prompt"):
        AttentionReranker(tiny_core, heads=None, doc_max_tokens=4000).head_document_scores(QUERY, ["word " * 3000] * 3)


def test_select_heads_keeps_the_best_heads(tiny_core: Any, profiles: Path, tmp_path: Path) -> None:
    profile = select_heads(tiny_core, JUDGED, n_heads=3, metric="ndcg@10", data={"source": "test"})
    n_layers, n_heads = tiny_core.attention_layout()
    grid = torch.tensor(profile.all_scores)
    assert grid.shape == (n_layers, n_heads)
    # the chosen heads are the best of the grid, best first (ties: lower layer, then head)
    order = sorted(range(n_layers * n_heads), key=lambda j: (-round(float(grid.flatten()[j]), 4), j))
    assert profile.pairs() == [(j // n_heads, j % n_heads) for j in order[:3]]
    assert [h.score for h in profile.heads] == sorted((h.score for h in profile.heads), reverse=True)
    # a head's score is its mean nDCG@10 over the usable queries, reranking alone
    best = profile.heads[0]
    alone = AttentionReranker(tiny_core, heads=[(best.layer, best.head)])
    mean = sum(
        float(ndcg_at_k(torch.tensor([alone.score(q.query, list(q.documents))]), q.grades)[0]) for q in JUDGED[:3]
    ) / 3
    assert best.score == pytest.approx(mean, abs=1e-3)
    sel = profile.selection
    assert (sel["queries"], sel["queries_without_relevant"], sel["n_heads"]) == (3, 1, 3)
    assert sel["qids"] == ["q1", "q2", "q3"]
    assert sel["data"] == {"source": "test"} and sel["prompt"] == "retrieval" and sel["metric"] == "ndcg@10"
    assert profile.model == tiny_core.model_identity()
    # the profile written and read back is what `auto` picks for this model
    profile.save(profiles / "tiny.json")
    auto = AttentionReranker(tiny_core)
    assert auto.describe()["head_profile"] == "tiny.json" and auto.describe()["head_count"] == 3
    json.dumps(profile.to_json())


def test_select_heads_arguments(tiny_core: Any) -> None:
    with pytest.raises(ValueError, match="n_heads"):
        select_heads(tiny_core, JUDGED, n_heads=0)
    with pytest.raises(ValueError, match="metric"):
        select_heads(tiny_core, JUDGED, metric="map")
    with pytest.raises(ValueError, match="heads or layers"):
        select_heads(tiny_core, JUDGED, layers="0:1")
    with pytest.raises(ValueError, match="no query has a relevant candidate"):
        select_heads(tiny_core, JUDGED[3:])
    with pytest.raises(ValueError, match="grades"):
        JudgedQuery("x", "q", ("a",), (1, 0))
    profile = select_heads(tiny_core, JUDGED[:1], n_heads=2, metric="rank")
    assert len(profile.heads) == 2 and profile.selection["metric"] == "rank"


def test_every_shipped_profile_is_a_valid_profile_with_an_identity() -> None:
    """The profiles shipped in rerank_plugins/rerankers/profiles/ load and carry an identity to match."""
    folder = Path(heads_module.__file__).parent / "profiles"
    assert (folder / "README.md").is_file()
    assert heads_module.profile_paths() == sorted(folder.glob("*.json"))
    for path in heads_module.profile_paths():
        profile = HeadProfile.load(path)
        assert profile.model.get("fingerprint") and profile.model.get("config_sha256"), path.name
        # a pooled profile (pool_profiles) records each selection it pooled as a source
        sources = profile.selection.get("sources") or [profile.selection]
        assert sum(s["queries"] for s in sources) == profile.selection["queries"], path.name
        for source in sources:
            assert source.get("qids") and source.get("data"), path.name
            # chosen on training data, never on a reported test set: DL19 is only ever reported,
            # and HotpotQA's first 50 questions are bench-decomposition's reported ones
            data = source["data"]
            assert "trec-dl" not in str(data.get("source")).lower() and data.get("split") != "test", path.name
            if "hotpotqa" in str(data.get("source")).lower():
                assert data.get("skip", 0) >= 50, path.name
    names = {p.name for p in heads_module.profile_paths()}
    assert {"qwen2.5-coder-0.5b-instruct.json", "qwen2.5-coder-1.5b-instruct.json"} <= names
