"""Loaders on small fixture files written here, well-formed and malformed."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest

from rerank_plugins.evaluation.loaders import (
    Candidate,
    DataFormatError,
    load_beir,
    load_beir_corpus,
    load_beir_qrels,
    load_beir_queries,
    load_candidates,
    load_multihop,
    load_qrels,
    load_trec_qrels,
    load_trec_run,
    multihop_to_rerank,
    rerank_queries_from_run,
)


def write(path: Path, text: str, newline: str = "\n") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(text.replace("\n", newline).encode("utf-8"))
    return path


def jsonl(path: Path, rows: list[object]) -> Path:
    return write(path, "".join(json.dumps(r) + "\n" for r in rows))


def raises_at(path: Path, line: int, reason: str):
    """pytest.raises for a DataFormatError at ``path:line`` whose reason matches ``reason``."""
    return pytest.raises(DataFormatError, match=re.escape(f"{path}:{line}: ") + reason)


# --------------------------------------------------------------------------- BEIR


def make_beir(root: Path, newline: str = "\r\n") -> Path:
    jsonl(root / "corpus.jsonl", [
        {"_id": "d1", "title": "Fleas", "text": "A flea lives a year."},
        {"_id": "d2", "title": "", "text": "Goldfish grow."},
        {"_id": 3, "text": "Integer id, no title."},
    ])
    jsonl(root / "queries.jsonl", [
        {"_id": "q1", "text": "flea life", "metadata": {}},
        {"_id": "q2", "text": "goldfish"},
        {"_id": "q9", "text": "not judged in test"},
    ])
    write(root / "qrels" / "test.tsv", "query-id\tcorpus-id\tscore\nq1\td1\t1\nq2\td2\t2\nq2\t3\t0\n", newline)
    return root


@pytest.mark.parametrize("newline", ["\n", "\r\n"])
def test_beir_folder_crlf_and_lf(tmp_path: Path, newline: str) -> None:
    ds = load_beir(make_beir(tmp_path, newline), split="test")
    assert ds.qrels == {"q1": {"d1": 1}, "q2": {"d2": 2, "3": 0}}
    assert ds.queries == {"q1": "flea life", "q2": "goldfish"}  # only the judged ones
    assert ds.corpus == {"d1": "Fleas\nA flea lives a year.", "d2": "Goldfish grow.", "3": "Integer id, no title."}


def test_beir_corpus_restricted_to_ids(tmp_path: Path) -> None:
    make_beir(tmp_path)
    assert load_beir_corpus(tmp_path / "corpus.jsonl", ids={"d2"}) == {"d2": "Goldfish grow."}


def test_beir_qrels_header_required(tmp_path: Path) -> None:
    p = write(tmp_path / "q.tsv", "q1\td1\t1\n")
    with raises_at(p, 1, "expected the header"):
        load_beir_qrels(p)


@pytest.mark.parametrize(
    ("body", "line", "reason"),
    [
        ("q1\td1\n", 2, "expected 3 tab-separated fields, got 2"),
        ("q1\td1\t1\nq1\td2\thigh\n", 3, r"score \(field 3\) must be an integer, got 'high'"),
        ("q1\td1\t1\nq1\td1\t2\n", 3, r"query 'q1' document 'd1' judged twice with different grades \(1 and 2\)"),
        ("\td1\t1\n", 2, "empty query-id or corpus-id"),
    ],
)
def test_beir_qrels_malformed(tmp_path: Path, body: str, line: int, reason: str) -> None:
    p = write(tmp_path / "q.tsv", "query-id\tcorpus-id\tscore\n" + body, "\r\n")
    with raises_at(p, line, reason):
        load_beir_qrels(p)


def test_beir_corpus_malformed(tmp_path: Path) -> None:
    p = write(tmp_path / "c.jsonl", '{"_id": "a", "text": "x"}\n{"_id": "b", "text": \n')
    with raises_at(p, 2, "invalid JSON"):
        load_beir_corpus(p)
    p = jsonl(tmp_path / "c2.jsonl", [{"_id": "a", "text": "x"}, {"_id": "a", "text": "y"}])
    with raises_at(p, 2, "duplicate document id 'a'"):
        load_beir_corpus(p)
    p = jsonl(tmp_path / "c3.jsonl", [{"_id": "a", "text": 5}])
    with raises_at(p, 1, "field 'text' must be a string, got int"):
        load_beir_corpus(p)
    p = jsonl(tmp_path / "c4.jsonl", [{"text": "no id"}])
    with raises_at(p, 1, "missing field '_id'"):
        load_beir_corpus(p)
    p = jsonl(tmp_path / "c5.jsonl", [["not", "an", "object"]])
    with raises_at(p, 1, "expected a JSON object, got list"):
        load_beir_corpus(p)


def test_beir_queries_malformed(tmp_path: Path) -> None:
    p = jsonl(tmp_path / "q.jsonl", [{"_id": "1", "text": "ok"}, {"_id": "2", "text": "  "}])
    with raises_at(p, 2, "query '2' has an empty 'text'"):
        load_beir_queries(p)
    p = jsonl(tmp_path / "q2.jsonl", [{"_id": True, "text": "x"}])
    with raises_at(p, 1, "'_id' must be a string or an integer"):
        load_beir_queries(p)


def test_beir_judged_query_missing_from_queries(tmp_path: Path) -> None:
    root = make_beir(tmp_path)
    write(root / "qrels" / "dev.tsv", "query-id\tcorpus-id\tscore\nq7\td1\t1\n")
    with pytest.raises(DataFormatError, match=r"dev\.tsv: 1 judged query ids are not in queries\.jsonl"):
        load_beir(root, split="dev")


def test_missing_file_is_file_not_found(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError, match="no such file"):
        load_trec_run(tmp_path / "nope.txt")


# --------------------------------------------------------------------------- TREC


def test_trec_run_orders_by_score_ties_in_file_order(tmp_path: Path) -> None:
    p = write(tmp_path / "run.txt", "q1 Q0 a 1 1.5 t\nq1 Q0 b 2 2.5 t\nq1 Q0 c 3 1.5 t\nq2 Q0 z 1 -3 t\n")
    assert load_trec_run(p) == {"q1": [("b", 2.5), ("a", 1.5), ("c", 1.5)], "q2": [("z", -3.0)]}


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("q1 Q0 a 1 1.0 t\nq1 Q0 b 2 1.0\n", 2, "expected 6 whitespace-separated fields"),
        ("q1 Q0 a one 1.0 t\n", 1, r"rank \(field 4\) must be an integer, got 'one'"),
        ("q1 Q0 a 1 high t\n", 1, r"score \(field 5\) must be a number, got 'high'"),
        ("q1 Q0 a 1 nan t\n", 1, r"score \(field 5\) is NaN"),
        ("q1 Q0 a 1 2 t\n\nq1 Q0 a 2 1 t\n", 3, "document 'a' listed twice for query 'q1'"),
    ],
)
def test_trec_run_malformed(tmp_path: Path, text: str, line: int, reason: str) -> None:
    p = write(tmp_path / "run.txt", text)
    with raises_at(p, line, reason):
        load_trec_run(p)


def test_trec_run_empty(tmp_path: Path) -> None:
    p = write(tmp_path / "run.txt", "\n\n")
    with pytest.raises(DataFormatError, match=r"run\.txt: no run lines"):
        load_trec_run(p)


def test_trec_qrels(tmp_path: Path) -> None:
    p = write(tmp_path / "qrels.txt", "1 0 a 3\n1 0 b 0\n2 Q0 c 1\n", "\r\n")
    assert load_trec_qrels(p) == {"1": {"a": 3, "b": 0}, "2": {"c": 1}}
    assert load_qrels(p) == load_trec_qrels(p)


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("1 0 a 3\n1 0 b\n", 2, "expected 4 whitespace-separated fields"),
        ("1 0 a 2.5\n", 1, r"grade \(field 4\) must be an integer, got '2.5'"),
    ],
)
def test_trec_qrels_malformed(tmp_path: Path, text: str, line: int, reason: str) -> None:
    p = write(tmp_path / "qrels.txt", text)
    with raises_at(p, line, reason):
        load_trec_qrels(p)


def test_load_qrels_detects_beir(tmp_path: Path) -> None:
    p = write(tmp_path / "t.tsv", "query-id\tcorpus-id\tscore\n1\ta\t2\n", "\r\n")
    assert load_qrels(p) == {"1": {"a": 2}}


def test_run_joined_with_texts(tmp_path: Path) -> None:
    run = {"q1": [("d2", 2.0), ("d1", 1.0)], "qX": [("d1", 1.0)]}
    out = rerank_queries_from_run(run, {"q1": "goldfish"}, {"d1": "one", "d2": "two"})
    assert [(q.qid, q.query) for q in out] == [("q1", "goldfish")]  # qX has no text in this split
    assert out[0].candidates == (Candidate("d2", "two", 2.0), Candidate("d1", "one", 1.0))
    with pytest.raises(DataFormatError, match=r"run\.txt: query 'q1': document 'd2' is not in the corpus"):
        rerank_queries_from_run(run, {"q1": "goldfish"}, {"d1": "one"}, run_path="run.txt")


# --------------------------------------------------------------------------- RankGPT candidates


def test_candidates(tmp_path: Path) -> None:
    p = jsonl(tmp_path / "c.jsonl", [
        {"query": "how long is life cycle of flea", "hits": [
            {"content": "A flea lives a year.", "qid": 264014, "docid": "5611210", "rank": 1, "score": 15.78},
            {"content": "Fleas.", "qid": 264014, "docid": 42, "rank": 2, "score": 15.09},
        ]},
        {"query": "no scores", "qid": "7", "hits": [{"content": "x", "docid": "a"}, {"content": "y", "docid": "b"}]},
    ])
    qs = load_candidates(p)
    assert [(q.qid, q.query) for q in qs] == [("264014", "how long is life cycle of flea"), ("7", "no scores")]
    assert qs[0].candidates == (Candidate("5611210", "A flea lives a year.", 15.78), Candidate("42", "Fleas.", 15.09))
    assert [c.score for c in qs[1].candidates] == [0.0, -1.0]


@pytest.mark.parametrize(
    ("row", "reason"),
    [
        ({"hits": []}, "missing field 'query'"),
        ({"query": "q", "qid": "1", "hits": {}}, "field 'hits' must be a list"),
        ({"query": "q", "qid": "1", "hits": [{"docid": "a"}]}, r"hits\[0\] is missing 'content'"),
        ({"query": "q", "qid": "1", "hits": [{"content": "x"}]}, r"hits\[0\] is missing 'docid'"),
        ({"query": "q", "hits": [{"content": "x", "docid": "a"}]}, "no query id"),
        ({"query": "q", "hits": [{"content": "x", "docid": "a", "qid": 1}, {"content": "y", "docid": "b", "qid": 2}]},
         r"hits\[1\]\.qid is '2' but the query id is '1'"),
        ({"query": "q", "qid": "1", "hits": [{"content": "x", "docid": "a"}, {"content": "y", "docid": "a"}]},
         r"hits\[1\]: document 'a' listed twice"),
        ({"query": "q", "qid": "1", "hits": [{"content": "x", "docid": "a", "score": "high"}]},
         r"hits\[0\]\.score must be a number"),
        ({"query": "q", "qid": "1", "hits": [{"content": None, "docid": "a"}]}, r"hits\[0\]\.content must be a string"),
    ],
)
def test_candidates_malformed(tmp_path: Path, row: dict, reason: str) -> None:
    p = jsonl(tmp_path / "c.jsonl", [{"query": "fine", "qid": "0", "hits": []}, row])
    with raises_at(p, 2, reason):
        load_candidates(p)


def test_candidates_duplicate_query(tmp_path: Path) -> None:
    p = jsonl(tmp_path / "c.jsonl", [{"query": "a", "qid": 1, "hits": []}, {"query": "b", "qid": "1", "hits": []}])
    with raises_at(p, 2, "query id '1' appears on an earlier line"):
        load_candidates(p)


# --------------------------------------------------------------------------- multi-hop


def hotpot_row(qid: str, supporting: list[bool]) -> dict:
    return {
        "question_id": qid,
        "question_text": f"question {qid}?",
        "answers_objects": [{"number": "", "date": {"day": "", "month": "", "year": ""}, "spans": ["Paris"]}],
        "contexts": [
            {"id": str(i), "title": f"T{i}", "paragraph_text": f"paragraph {i}", "is_supporting": s}
            for i, s in enumerate(supporting)
        ],
    }


def test_multihop(tmp_path: Path) -> None:
    p = jsonl(tmp_path / "h.jsonl", [hotpot_row("a", [False, True, True]), hotpot_row("b", [True, False])])
    ex = load_multihop(p)
    assert [(e.qid, e.question, e.answers) for e in ex] == [
        ("a", "question a?", ("Paris",)),
        ("b", "question b?", ("Paris",)),
    ]
    assert [c.is_supporting for c in ex[0].contexts] == [False, True, True]
    assert ex[0].contexts[1].title == "T1" and ex[0].contexts[1].text == "paragraph 1"
    queries, qrels = multihop_to_rerank(ex)
    assert [c.docid for c in queries[0].candidates] == ["a/0", "a/1", "a/2"]
    assert queries[0].candidates[1].text == "T1\nparagraph 1"
    assert qrels == {"a": {"a/0": 0, "a/1": 1, "a/2": 1}, "b": {"b/0": 1, "b/1": 0}}


def test_multihop_plain_field_names(tmp_path: Path) -> None:
    p = jsonl(tmp_path / "h.jsonl", [{"question": "q?", "answers": ["x", "y"],
                                       "contexts": [{"title": "t", "text": "p", "is_supporting": True}]}])
    (ex,) = load_multihop(p)
    assert (ex.qid, ex.question, ex.answers, ex.contexts[0].text) == ("1", "q?", ("x", "y"), "p")


@pytest.mark.parametrize(
    ("mutate", "reason"),
    [
        (lambda r: r.pop("question_text"), "missing field 'question'"),
        (lambda r: r.pop("answers_objects"), r"missing field 'answers_objects' \(or 'answers'\)"),
        (lambda r: r.update(answers_objects=[{"spans": "Paris"}]), r"answers_objects\[0\]\.spans must be a list"),
        (lambda r: r.update(contexts=[]), "field 'contexts' must be a non-empty list"),
        (lambda r: r["contexts"][1].pop("is_supporting"), r"contexts\[1\]\.is_supporting must be true or false"),
        (lambda r: r["contexts"][0].update(is_supporting="yes"), r"contexts\[0\]\.is_supporting must be true or false"),
        (lambda r: r["contexts"][0].pop("paragraph_text"), r"contexts\[0\] needs a string 'paragraph_text'"),
    ],
)
def test_multihop_malformed(tmp_path: Path, mutate, reason: str) -> None:
    bad = hotpot_row("b", [True, False])
    mutate(bad)
    p = jsonl(tmp_path / "h.jsonl", [hotpot_row("a", [True, True]), bad])
    with raises_at(p, 2, reason):
        load_multihop(p)
