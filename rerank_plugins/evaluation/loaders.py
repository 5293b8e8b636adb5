"""Readers for the IR evaluation formats the benchmarks use.

Every reader checks what it reads and raises :class:`DataFormatError` naming the file, the
line and the reason on malformed input; none of them guesses its way past a bad line.

Formats:

- BEIR folders: ``corpus.jsonl`` (``_id``, ``title``, ``text``), ``queries.jsonl``
  (``_id``, ``text``), ``qrels/<split>.tsv`` (header line, then ``query-id<TAB>corpus-id<TAB>score``;
  CRLF or LF line endings);
- TREC run files (``qid Q0 docid rank score tag``) and TREC qrels (``qid iter docid grade``);
- RankGPT-style candidate files: one JSON object per line, ``{"query": ..., "hits": [{"content":
  ..., "docid": ..., "qid": ..., ...}, ...]}`` with hits in first-stage order;
- HotpotQA / IRCoT multi-hop JSONL: ``question_id``, ``question_text``, ``answers_objects``
  (``spans``), ``contexts`` (``title``, ``paragraph_text``, ``is_supporting``).

Example:
    >>> from rerank_plugins.evaluation.loaders import load_candidates
    >>> queries = load_candidates("bm25_dl19_top100.jsonl")  # doctest: +SKIP
    >>> queries[0].qid, len(queries[0].candidates)  # doctest: +SKIP
    ('264014', 100)
"""

from __future__ import annotations

import json
import logging
import math
import os
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "BeirDataset",
    "Candidate",
    "Context",
    "DataFormatError",
    "MultiHopExample",
    "Qrels",
    "RerankQuery",
    "Run",
    "beir_qrels_path",
    "default_data_dir",
    "load_beir",
    "load_beir_corpus",
    "load_beir_qrels",
    "load_beir_queries",
    "load_candidates",
    "load_multihop",
    "load_qrels",
    "load_trec_qrels",
    "load_trec_run",
    "multihop_to_rerank",
    "rerank_queries_from_run",
]

logger = logging.getLogger(__name__)

#: query id -> document id -> graded relevance
Qrels = dict[str, dict[str, int]]
#: query id -> [(document id, score)] in first-stage order (best first)
Run = dict[str, list[tuple[str, float]]]


class DataFormatError(ValueError):
    """Malformed input: carries the file, the 1-based line (0 when not line-bound) and the reason.

    Example:
        >>> str(DataFormatError("run.txt", 3, "expected 6 fields, got 4"))
        'run.txt:3: expected 6 fields, got 4'
    """

    def __init__(self, path: str | os.PathLike[str], line: int, reason: str) -> None:
        self.path = str(path)
        self.line = line
        self.reason = reason
        where = f"{self.path}:{line}" if line else self.path
        super().__init__(f"{where}: {reason}")


@dataclass(frozen=True, slots=True)
class Candidate:
    """One first-stage candidate: its id, its text and its first-stage score."""

    docid: str
    text: str
    score: float


@dataclass(frozen=True, slots=True)
class RerankQuery:
    """A query with its first-stage candidates, best first."""

    qid: str
    query: str
    candidates: tuple[Candidate, ...]


@dataclass(frozen=True, slots=True)
class BeirDataset:
    """A BEIR folder read into memory (the corpus possibly restricted to some ids)."""

    corpus: dict[str, str]
    queries: dict[str, str]
    qrels: Qrels


@dataclass(frozen=True, slots=True)
class Context:
    """One paragraph of a multi-hop question."""

    title: str
    text: str
    is_supporting: bool


@dataclass(frozen=True, slots=True)
class MultiHopExample:
    """A HotpotQA / IRCoT question: answers and candidate paragraphs (some supporting)."""

    qid: str
    question: str
    answers: tuple[str, ...]
    contexts: tuple[Context, ...] = field(default_factory=tuple)


def default_data_dir() -> Path:
    """The shared evaluation data: ``$RERANK_DATA_DIR``, else ``../shared/data`` beside the repo."""
    env = os.environ.get("RERANK_DATA_DIR")
    if env:
        return Path(env)
    return Path(__file__).resolve().parents[2].parent / "shared" / "data"


# --------------------------------------------------------------------------- line readers


def _lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, str]]:
    """(line number, line without its end) for non-blank lines; CRLF and LF alike."""
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"{p}: no such file")
    with p.open(encoding="utf-8", newline=None) as f:
        for n, raw in enumerate(f, start=1):
            line = raw.rstrip("\n").rstrip("\r")
            if line.strip():
                yield n, line


def _json_lines(path: str | os.PathLike[str]) -> Iterator[tuple[int, dict[str, Any]]]:
    for n, line in _lines(path):
        try:
            obj = json.loads(line)
        except json.JSONDecodeError as e:
            raise DataFormatError(path, n, f"invalid JSON ({e.msg} at column {e.colno})") from None
        if not isinstance(obj, dict):
            raise DataFormatError(path, n, f"expected a JSON object, got {type(obj).__name__}")
        yield n, obj


def _id(value: Any, path: str | os.PathLike[str], n: int, what: str) -> str:
    """Ids may be written as strings or integers; anything else (or blank) is an error."""
    if isinstance(value, bool) or not isinstance(value, (str, int)):
        raise DataFormatError(path, n, f"{what} must be a string or an integer, got {value!r}")
    s = str(value).strip()
    if not s:
        raise DataFormatError(path, n, f"{what} is empty")
    return s


def _str(obj: dict[str, Any], key: str, path: str | os.PathLike[str], n: int, *, required: bool = True) -> str:
    if key not in obj:
        if required:
            raise DataFormatError(path, n, f"missing field {key!r}")
        return ""
    value = obj[key]
    if value is None and not required:
        return ""
    if not isinstance(value, str):
        raise DataFormatError(path, n, f"field {key!r} must be a string, got {type(value).__name__}")
    return value


def _int(token: str, path: str | os.PathLike[str], n: int, what: str) -> int:
    try:
        return int(token)
    except ValueError:
        raise DataFormatError(path, n, f"{what} must be an integer, got {token!r}") from None


def _float(token: Any, path: str | os.PathLike[str], n: int, what: str) -> float:
    if isinstance(token, bool):
        raise DataFormatError(path, n, f"{what} must be a number, got {token!r}")
    try:
        value = float(token)
    except (TypeError, ValueError):
        raise DataFormatError(path, n, f"{what} must be a number, got {token!r}") from None
    if math.isnan(value):
        raise DataFormatError(path, n, f"{what} is NaN")
    return value


# --------------------------------------------------------------------------- TREC


def load_trec_run(path: str | os.PathLike[str]) -> Run:
    """Read a TREC run file: ``qid Q0 docid rank score tag`` per line.

    Each query's documents come back best first: by descending score, ties kept in file
    order. A document listed twice for one query is an error.

    Example:
        >>> run = load_trec_run("run.bm25.scifact.txt")  # doctest: +SKIP
        >>> run["1"][0]  # doctest: +SKIP
        ('10608397', 6.5988)
    """
    run: dict[str, list[tuple[str, float]]] = {}
    seen: dict[str, set[str]] = {}
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 6:
            raise DataFormatError(
                path, n, f"expected 6 whitespace-separated fields (qid Q0 docid rank score tag), got {len(parts)}"
            )
        qid, _, docid, rank, score, _ = parts
        _int(rank, path, n, "rank (field 4)")
        value = _float(score, path, n, "score (field 5)")
        if docid in seen.setdefault(qid, set()):
            raise DataFormatError(path, n, f"document {docid!r} listed twice for query {qid!r}")
        seen[qid].add(docid)
        run.setdefault(qid, []).append((docid, value))
    if not run:
        raise DataFormatError(path, 0, "no run lines")
    # sorted() is stable: equal scores keep their file order.
    return {qid: sorted(docs, key=lambda d: -d[1]) for qid, docs in run.items()}


def load_trec_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read TREC qrels: ``qid iteration docid grade`` per line (grades are integers).

    Example:
        >>> qrels = load_trec_qrels("qrels.dl19-passage.txt")  # doctest: +SKIP
        >>> len(qrels)  # doctest: +SKIP
        43
    """
    qrels: Qrels = {}
    for n, line in _lines(path):
        parts = line.split()
        if len(parts) != 4:
            raise DataFormatError(
                path, n, f"expected 4 whitespace-separated fields (qid iteration docid grade), got {len(parts)}"
            )
        qid, _, docid, grade = parts
        _add_judgment(qrels, qid, docid, _int(grade, path, n, "grade (field 4)"), path, n)
    if not qrels:
        raise DataFormatError(path, 0, "no judgments")
    return qrels


def _add_judgment(qrels: Qrels, qid: str, docid: str, grade: int, path: str | os.PathLike[str], n: int) -> None:
    judged = qrels.setdefault(qid, {})
    if docid in judged and judged[docid] != grade:
        raise DataFormatError(
            path, n, f"query {qid!r} document {docid!r} judged twice with different grades "
            f"({judged[docid]} and {grade})"
        )
    judged[docid] = grade


# --------------------------------------------------------------------------- BEIR


def load_beir_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read BEIR qrels TSV: a header line, then ``query-id<TAB>corpus-id<TAB>score``.

    Example:
        >>> qrels = load_beir_qrels("scifact/qrels/test.tsv")  # doctest: +SKIP
        >>> sum(len(v) for v in qrels.values())  # doctest: +SKIP
        339
    """
    qrels: Qrels = {}
    lines = _lines(path)
    first = next(lines, None)
    if first is None:
        raise DataFormatError(path, 0, "empty file (expected a header line query-id, corpus-id, score)")
    n, header = first
    cols = [c.strip().lower() for c in header.split("\t")]
    if len(cols) != 3 or cols[0] not in ("query-id", "query_id", "qid"):
        raise DataFormatError(path, n, f"expected the header 'query-id<TAB>corpus-id<TAB>score', got {header!r}")
    for n, line in lines:
        parts = line.split("\t")
        if len(parts) != 3:
            raise DataFormatError(path, n, f"expected 3 tab-separated fields, got {len(parts)}")
        qid, docid, grade = (p.strip() for p in parts)
        if not qid or not docid:
            raise DataFormatError(path, n, "empty query-id or corpus-id")
        _add_judgment(qrels, qid, docid, _int(grade, path, n, "score (field 3)"), path, n)
    if not qrels:
        raise DataFormatError(path, 0, "no judgments after the header")
    return qrels


def load_qrels(path: str | os.PathLike[str]) -> Qrels:
    """Read qrels in either format: BEIR TSV (with its header) or TREC (4 fields).

    The format is decided from the first non-blank line: a ``query-id`` header means BEIR.
    """
    first = next(_lines(path), None)
    if first is None:
        raise DataFormatError(path, 0, "empty qrels file")
    if first[1].split("\t")[0].strip().lower() in ("query-id", "query_id", "qid"):
        return load_beir_qrels(path)
    return load_trec_qrels(path)


def load_beir_queries(path: str | os.PathLike[str]) -> dict[str, str]:
    """Read BEIR ``queries.jsonl``: ``{"_id": ..., "text": ...}`` per line."""
    queries: dict[str, str] = {}
    for n, obj in _json_lines(path):
        if "_id" not in obj:
            raise DataFormatError(path, n, "missing field '_id'")
        qid = _id(obj["_id"], path, n, "'_id'")
        if qid in queries:
            raise DataFormatError(path, n, f"duplicate query id {qid!r}")
        text = _str(obj, "text", path, n)
        if not text.strip():
            raise DataFormatError(path, n, f"query {qid!r} has an empty 'text'")
        queries[qid] = text
    if not queries:
        raise DataFormatError(path, 0, "no queries")
    return queries


def load_beir_corpus(path: str | os.PathLike[str], ids: Collection[str] | None = None) -> dict[str, str]:
    """Read BEIR ``corpus.jsonl`` into ``docid -> text``; the text is ``title`` and ``text``
    joined by a newline when the title is non-empty.

    Args:
        path: the corpus file.
        ids: keep only these document ids (every line is still checked).
    """
    corpus: dict[str, str] = {}
    seen: set[str] = set()
    wanted = set(ids) if ids is not None else None
    for n, obj in _json_lines(path):
        if "_id" not in obj:
            raise DataFormatError(path, n, "missing field '_id'")
        docid = _id(obj["_id"], path, n, "'_id'")
        if docid in seen:
            raise DataFormatError(path, n, f"duplicate document id {docid!r}")
        seen.add(docid)
        text = _str(obj, "text", path, n)
        title = _str(obj, "title", path, n, required=False).strip()
        if wanted is None or docid in wanted:
            corpus[docid] = f"{title}\n{text}" if title else text
    if not seen:
        raise DataFormatError(path, 0, "no documents")
    return corpus


def beir_qrels_path(folder: str | os.PathLike[str], split: str = "test") -> Path:
    """Where a BEIR folder keeps the judgments of ``split``: ``qrels/<split>.tsv``."""
    return Path(folder) / "qrels" / f"{split}.tsv"


def load_beir(folder: str | os.PathLike[str], split: str = "test", ids: Collection[str] | None = None) -> BeirDataset:
    """Read a BEIR folder: corpus, the queries judged in ``qrels/<split>.tsv``, and those qrels.

    Example:
        >>> ds = load_beir("shared/data/scifact", split="test")  # doctest: +SKIP
        >>> len(ds.queries), len(ds.corpus)  # doctest: +SKIP
        (300, 5183)
    """
    root = Path(folder)
    if not root.is_dir():
        raise FileNotFoundError(f"{root}: not a directory")
    qrels_path = beir_qrels_path(root, split)
    qrels = load_beir_qrels(qrels_path)
    all_queries = load_beir_queries(root / "queries.jsonl")
    missing = [q for q in qrels if q not in all_queries]
    if missing:
        raise DataFormatError(
            qrels_path, 0,
            f"{len(missing)} judged query ids are not in queries.jsonl (first: {missing[0]!r})",
        )
    queries = {q: all_queries[q] for q in qrels}
    corpus = load_beir_corpus(root / "corpus.jsonl", ids=ids)
    return BeirDataset(corpus=corpus, queries=queries, qrels=qrels)


def rerank_queries_from_run(
    run: Run, queries: dict[str, str], corpus: dict[str, str], *, run_path: str | os.PathLike[str] = "run"
) -> list[RerankQuery]:
    """Join a first-stage run with query and document texts, in run order.

    Queries of the run without a text are skipped (a run may cover more queries than a
    split); a run document missing from the corpus is an error.
    """
    out: list[RerankQuery] = []
    skipped = 0
    for qid, docs in run.items():
        if qid not in queries:
            skipped += 1
            continue
        cands = []
        for docid, score in docs:
            if docid not in corpus:
                raise DataFormatError(run_path, 0, f"query {qid!r}: document {docid!r} is not in the corpus")
            cands.append(Candidate(docid=docid, text=corpus[docid], score=score))
        out.append(RerankQuery(qid=qid, query=queries[qid], candidates=tuple(cands)))
    if skipped:
        logger.info("%s: skipped %d run queries with no query text in this split", run_path, skipped)
    return out


# --------------------------------------------------------------------------- RankGPT candidates


def load_candidates(path: str | os.PathLike[str]) -> list[RerankQuery]:
    """Read a RankGPT-style candidates file (one JSON line per query).

    Each line is ``{"query": str, "hits": [{"content": str, "docid": str|int, "qid": ...,
    "score": float, ...}]}``; hits are in first-stage order. The query id is the line's
    ``qid`` field when present, else the ``qid`` shared by all its hits. A missing score is
    replaced by ``-rank`` so that first-stage order is kept.

    Example:
        >>> queries = load_candidates("bm25_dl19_top100.jsonl")  # doctest: +SKIP
        >>> queries[0].query  # doctest: +SKIP
        'how long is life cycle of flea'
    """
    out: list[RerankQuery] = []
    seen_q: set[str] = set()
    for n, obj in _json_lines(path):
        query = _str(obj, "query", path, n)
        if not query.strip():
            raise DataFormatError(path, n, "field 'query' is empty")
        hits = obj.get("hits")
        if not isinstance(hits, list):
            raise DataFormatError(path, n, "field 'hits' must be a list")
        qid = _id(obj["qid"], path, n, "'qid'") if "qid" in obj else None
        cands: list[Candidate] = []
        seen_d: set[str] = set()
        for i, hit in enumerate(hits):
            where = f"hits[{i}]"
            if not isinstance(hit, dict):
                raise DataFormatError(path, n, f"{where} must be an object")
            for key in ("content", "docid"):
                if key not in hit:
                    raise DataFormatError(path, n, f"{where} is missing {key!r}")
            if not isinstance(hit["content"], str):
                raise DataFormatError(path, n, f"{where}.content must be a string")
            docid = _id(hit["docid"], path, n, f"{where}.docid")
            if docid in seen_d:
                raise DataFormatError(path, n, f"{where}: document {docid!r} listed twice")
            seen_d.add(docid)
            if "qid" in hit:
                hqid = _id(hit["qid"], path, n, f"{where}.qid")
                if qid is None:
                    qid = hqid
                elif hqid != qid:
                    raise DataFormatError(path, n, f"{where}.qid is {hqid!r} but the query id is {qid!r}")
            score = _float(hit["score"], path, n, f"{where}.score") if "score" in hit else -float(i)
            cands.append(Candidate(docid=docid, text=hit["content"], score=score))
        if qid is None:
            raise DataFormatError(path, n, "no query id: neither a 'qid' field nor hits carrying 'qid'")
        if qid in seen_q:
            raise DataFormatError(path, n, f"query id {qid!r} appears on an earlier line")
        seen_q.add(qid)
        out.append(RerankQuery(qid=qid, query=query, candidates=tuple(cands)))
    if not out:
        raise DataFormatError(path, 0, "no queries")
    return out


# --------------------------------------------------------------------------- multi-hop


def load_multihop(path: str | os.PathLike[str]) -> list[MultiHopExample]:
    """Read HotpotQA / IRCoT multi-hop JSONL.

    Fields per line: ``question_id``, ``question_text``, ``answers_objects`` (objects with
    ``spans``), ``contexts`` (objects with ``title``, ``paragraph_text``, ``is_supporting``).
    The plain names ``question`` / ``answers`` (list of str) / ``paragraph_text`` are
    accepted too.

    Example:
        >>> examples = load_multihop("hotpotqa/dev_250.jsonl")  # doctest: +SKIP
        >>> sum(c.is_supporting for c in examples[0].contexts)  # doctest: +SKIP
        2
    """
    out: list[MultiHopExample] = []
    seen: set[str] = set()
    for n, obj in _json_lines(path):
        qkey = "question_text" if "question_text" in obj else "question"
        question = _str(obj, qkey, path, n)
        if not question.strip():
            raise DataFormatError(path, n, f"field {qkey!r} is empty")
        raw_id = obj.get("question_id", obj.get("id", obj.get("_id")))
        qid = _id(raw_id, path, n, "'question_id'") if raw_id is not None else str(n)
        if qid in seen:
            raise DataFormatError(path, n, f"duplicate question id {qid!r}")
        seen.add(qid)
        answers = _answers(obj, path, n)
        contexts_raw = obj.get("contexts")
        if not isinstance(contexts_raw, list) or not contexts_raw:
            raise DataFormatError(path, n, "field 'contexts' must be a non-empty list")
        contexts = []
        for i, c in enumerate(contexts_raw):
            where = f"contexts[{i}]"
            if not isinstance(c, dict):
                raise DataFormatError(path, n, f"{where} must be an object")
            tkey = "paragraph_text" if "paragraph_text" in c else "text"
            if tkey not in c or not isinstance(c[tkey], str):
                raise DataFormatError(path, n, f"{where} needs a string 'paragraph_text'")
            title = c.get("title", "")
            if not isinstance(title, str):
                raise DataFormatError(path, n, f"{where}.title must be a string")
            sup = c.get("is_supporting")
            if not isinstance(sup, bool):
                raise DataFormatError(path, n, f"{where}.is_supporting must be true or false, got {sup!r}")
            contexts.append(Context(title=title, text=c[tkey], is_supporting=sup))
        out.append(MultiHopExample(qid=qid, question=question, answers=answers, contexts=tuple(contexts)))
    if not out:
        raise DataFormatError(path, 0, "no questions")
    return out


def _answers(obj: dict[str, Any], path: str | os.PathLike[str], n: int) -> tuple[str, ...]:
    if "answers_objects" in obj:
        objs = obj["answers_objects"]
        if not isinstance(objs, list):
            raise DataFormatError(path, n, "field 'answers_objects' must be a list")
        answers: list[str] = []
        for i, a in enumerate(objs):
            spans = a.get("spans") if isinstance(a, dict) else None
            if not isinstance(spans, list) or not all(isinstance(s, str) for s in spans):
                raise DataFormatError(path, n, f"answers_objects[{i}].spans must be a list of strings")
            answers.extend(spans)
        return tuple(answers)
    if "answers" in obj:
        a = obj["answers"]
        if isinstance(a, str):
            return (a,)
        if isinstance(a, list) and all(isinstance(s, str) for s in a):
            return tuple(a)
        raise DataFormatError(path, n, "field 'answers' must be a string or a list of strings")
    raise DataFormatError(path, n, "missing field 'answers_objects' (or 'answers')")


def multihop_to_rerank(examples: list[MultiHopExample]) -> tuple[list[RerankQuery], Qrels]:
    """Turn multi-hop questions into rerank queries (contexts in file order) and binary qrels.

    Document ids are ``"<qid>/<position>"``; supporting paragraphs get grade 1. The text
    of each candidate is the title and the paragraph joined by a newline.
    """
    queries: list[RerankQuery] = []
    qrels: Qrels = {}
    for ex in examples:
        cands = []
        for i, c in enumerate(ex.contexts):
            docid = f"{ex.qid}/{i}"
            text = f"{c.title}\n{c.text}" if c.title else c.text
            cands.append(Candidate(docid=docid, text=text, score=-float(i)))
            qrels.setdefault(ex.qid, {})[docid] = int(c.is_supporting)
        queries.append(RerankQuery(qid=ex.qid, query=ex.question, candidates=tuple(cands)))
    return queries, qrels
