"""Benchmark of query decomposition on HotpotQA: does pooled retrieval find both supporting paragraphs?

One FAISS index over every paragraph of the questions (the distractor setting's 10 paragraphs
per question, deduplicated by title and text: 2,495 for the shared 250 questions). For each
question, four pipelines:

- ``dense``: the question's top-k from the index;
- ``dense+rerank``: the question's top ``--rerank-depth`` reranked against the question;
- ``decomp+pooled``: the question and its sub-questions (``--llm`` writes them), top ``--k`` each,
  fused with reciprocal rank fusion;
- ``decomp+pooled+rerank``: the first ``--rerank-depth`` of that pool reranked against the
  original question.

Measures per question: ``both@5`` / ``both@10`` (both supporting paragraphs in the top 5 / 10),
``R@10`` (fraction of the supporting paragraphs in the top 10), ``both@depth`` of the list handed
to the reranker (its ceiling), and wall-clock seconds. Decomposition generates for one question
at a time by default (``--gen-batch N`` batches N questions; the per-question time is then the
batch time divided by N). A pointwise reranker's score of a paragraph depends only on (question, paragraph),
so the two rerank rows share one scoring pass over the union of their lists (same scores as two
separate calls); each row's rerank time is that pass's time per paragraph times the row's
paragraph count, and is reported as such. List-wise rerankers (``attention``, ``listwise``,
``pairwise``) rerank each row's list in its own call, timed on its own. ``--reranker`` takes a
registry name with options, as ``rerank-plugins bench --method`` does, e.g.
``attention:layers=4:20``.

Usage:
    rerank-plugins bench-decomposition --embedder $RERANK_EMBED_MODEL \\
        --llm $RERANK_QUALITY_LLM --reranker pointwise --rerank-limit 40 --out bench-out/hotpotqa-decomposition

Results are checkpointed to ``<out>/results.json`` after every stage and batch; a rerun with the
same ``--out`` resumes. The table goes to ``<out>/results.md``.
"""

from __future__ import annotations

import logging
import statistics
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from rerank_plugins.decomposition import Decomposer, Decomposition, DecompositionRetriever
from rerank_plugins.evaluation.loaders import MultiHopExample
from rerank_plugins.evaluation.measure import (
    load_1min,
    load_json,
    machine_footer,
    markdown_table,
    percentile,
    resume_machine,
    save_json,
)

__all__ = ["both_recall", "build_corpus", "paragraph_recall", "render_markdown", "report", "run", "summarize"]

logger = logging.getLogger(__name__)

ROWS = ("dense", "dense+rerank", "decomp+pooled", "decomp+pooled+rerank")


def both_recall(ranked: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """1.0 when every relevant id is in the top ``k`` of ``ranked``, else 0.0.

    Example:
        >>> both_recall(["a", "x", "b"], ["a", "b"], 2), both_recall(["a", "x", "b"], ["a", "b"], 3)
        (0.0, 1.0)
    """
    top = set(ranked[:k])
    return 1.0 if all(r in top for r in relevant) else 0.0


def paragraph_recall(ranked: Sequence[str], relevant: Sequence[str], k: int) -> float:
    """Fraction of the relevant ids found in the top ``k``.

    Example:
        >>> paragraph_recall(["a", "x", "b"], ["a", "b"], 2)
        0.5
    """
    if not relevant:
        return 0.0
    top = set(ranked[:k])
    return sum(r in top for r in relevant) / len(relevant)


def build_corpus(examples: Sequence[MultiHopExample]) -> tuple[dict[str, str], dict[str, list[str]]]:
    """Paragraphs deduplicated by (title, text) -> ids ``p0``, ``p1``, ...; and each question's supporting ids.

    The text is ``"title\\ntext"`` (the title names the entity, which multi-hop questions need).
    """
    ids: dict[tuple[str, str], str] = {}
    corpus: dict[str, str] = {}
    supporting: dict[str, list[str]] = {}
    for ex in examples:
        sup = []
        for c in ex.contexts:
            key = (c.title, c.text)
            if key not in ids:
                ids[key] = f"p{len(ids)}"
                corpus[ids[key]] = f"{c.title}\n{c.text}" if c.title else c.text
            if c.is_supporting and ids[key] not in sup:
                sup.append(ids[key])
        supporting[ex.qid] = sup
    return corpus, supporting


def _measures(ranked: Sequence[str], relevant: Sequence[str], depth: int) -> dict[str, float]:
    return {
        "both@5": both_recall(ranked, relevant, 5),
        "both@10": both_recall(ranked, relevant, 10),
        "R@10": paragraph_recall(ranked, relevant, 10),
        f"both@{depth}": both_recall(ranked, relevant, depth),
    }


def run(
    examples: Sequence[MultiHopExample],
    *,
    embedder: Any,
    llm: Any,
    reranker: Any,
    out: Path,
    k: int = 10,
    rerank_depth: int = 20,
    limit: int | None = None,
    rerank_limit: int = 40,
    gen_batch: int = 1,
    max_subquestions: int = 3,
    max_new_tokens: int = 64,
    time_budget: float | None = None,
    command: str | None = None,
) -> dict[str, Any]:
    """Run the benchmark, checkpointing to ``out/results.json``; returns the results dict.

    Writes the report (:func:`report`) to ``out/results.md`` at the end.

    Args:
        examples: the questions (in order; subsets are prefixes).
        embedder: an embedder object or a sentence-transformers name/folder for the FAISS index.
        llm: the decomposer's LLM (see :class:`Decomposer`), or a ready Decomposer.
        reranker: a Reranker. Per-document scorers (``reranker.per_document``: pointwise,
            cross-encoder) score the union of the two rerank rows' lists in one pass; any other
            (attention, listwise, pairwise) reranks each list in its own call.
        k: documents per query (and the dense list length).
        rerank_depth: documents handed to the reranker (dense top-n / first n of the pool).
        limit: decompose at most this many questions (``None``: all, within ``time_budget``).
        rerank_limit: rerank rows on the first this many questions.
        gen_batch: questions per batched generation.
        time_budget: start no new question batch after this many seconds (every finished
            question has all the rows it is due; the subsets are prefixes of ``examples``).
        command: the command line, recorded in the results.
    """
    from rerank_plugins.retrieval import FaissIndex

    t_start = time.perf_counter()
    out.mkdir(parents=True, exist_ok=True)
    path = out / "results.json"
    data: dict[str, Any] = load_json(path) or {}
    data["machine"] = resume_machine(data, data.get("machine"), path)
    data["command"] = command
    data.setdefault("questions", {})
    per_q: dict[str, dict[str, Any]] = data["questions"]
    corpus, supporting = build_corpus(examples)
    ids = list(corpus)
    t0 = time.perf_counter()
    saved = out / "index"
    if saved.exists():  # a resumed run reuses the index (checked: same embedder, same paragraph ids)
        index = FaissIndex.load(saved, embedder=embedder)
        if list(index.ids) != ids:
            raise ValueError(f"{saved} holds other paragraphs; delete it or use another --out")
    else:
        index = FaissIndex.build([corpus[i] for i in ids], ids=ids, embedder=embedder, kind="flat", show_progress=False)
        data["index"] = {"paragraphs": len(ids), "build_s": time.perf_counter() - t0, "embedder": index.embedder.name}
        index.save(saved)
    depth = max(k, rerank_depth)
    index.search("warm-up", k=1)

    # 1. dense, every question (one query at a time: per-question latency)
    for ex in examples:
        rec = per_q.setdefault(ex.qid, {"question": ex.question, "supporting": supporting[ex.qid]})
        if "dense" in rec:
            continue
        t0 = time.perf_counter()
        hits = index.search(ex.question, k=depth)
        rec["dense_s"] = time.perf_counter() - t0
        rec["dense_list"] = [h.id for h in hits]
        rec["dense"] = {**_measures(rec["dense_list"][:k], supporting[ex.qid], depth), "s": rec["dense_s"]}
        rec["dense"][f"both@{depth}"] = both_recall(rec["dense_list"], supporting[ex.qid], depth)
    save_json(path, data)
    logger.info("dense done for %d questions", len(examples))

    decomposer = (
        llm
        if isinstance(llm, Decomposer)
        else Decomposer(llm, max_subquestions=max_subquestions, max_new_tokens=max_new_tokens)
    )
    data["decomposer"] = decomposer.describe()
    todo = list(examples if limit is None else examples[:limit])
    # the library's pipeline without a reranker: the rerank rows below score the pooled list themselves
    pipeline = DecompositionRetriever(index, k=k)

    def decompose(batch: list[MultiHopExample]) -> None:
        t0 = time.perf_counter()
        decs = decomposer.decompose_batch([e.question for e in batch])
        per = (time.perf_counter() - t0) / len(batch)
        for ex, dec in zip(batch, decs, strict=True):
            rec = per_q[ex.qid]
            rec["decomposition"] = {
                "sub_questions": list(dec.sub_questions),
                "fallback": dec.fallback,
                "reason": dec.reason,
                "raw": dec.raw,
                "s": per,
            }
            pooled(ex, dec, rec)
            rec["load"] = load_1min()
        save_json(path, data)

    def pooled(ex: MultiHopExample, dec: Decomposition, rec: dict[str, Any]) -> None:
        t0 = time.perf_counter()
        result = pipeline.retrieve(ex.question, decomposition=dec)
        queries, pool = result.queries, result.pool
        s = time.perf_counter() - t0
        rec["pool_list"] = [d.id for d in pool]
        rec["pool_found_by"] = {d.id: [p.query_index for p in d.found_by] for d in pool}
        rec["decomp+pooled"] = {
            **_measures(rec["pool_list"], supporting[ex.qid], depth),
            "s": rec["decomposition"]["s"] + s,
            "retrieve_s": s,
            "queries": len(queries),
            "pool": len(pool),
        }

    per_document = getattr(reranker, "per_document", False)

    def rerank(ex: MultiHopExample) -> None:
        rec = per_q[ex.qid]
        dense_list = rec["dense_list"][:rerank_depth]
        pool_list = rec["pool_list"][:rerank_depth]
        if per_document:
            # scores depend only on (question, paragraph): one scoring pass over the union of the
            # two lists gives the same scores as two calls; each row is charged its share of it
            union = list(dict.fromkeys(dense_list + pool_list))
            t0 = time.perf_counter()
            hits = reranker.rerank(ex.question, [corpus[i] for i in union])
            s = time.perf_counter() - t0
            scores = {union[h.index]: h.score for h in hits}
            rec["rerank_union"] = len(union)
            rec["rerank_pass_s"] = s

            def order(lst: list[str]) -> tuple[list[str], float]:
                # sorted() is stable: equal scores keep the list's order
                return sorted(lst, key=lambda d: -scores[d]), s / len(union) * len(lst)

        else:
            # list-wise scores (attention, listwise, pairwise): each list is its own call
            def order(lst: list[str]) -> tuple[list[str], float]:
                t0 = time.perf_counter()
                hits = reranker.rerank(ex.question, [corpus[i] for i in lst])
                return [lst[h.index] for h in hits], time.perf_counter() - t0

        for row, lst, base in (
            ("dense+rerank", dense_list, rec["dense_s"]),
            ("decomp+pooled+rerank", pool_list, rec["decomp+pooled"]["s"]),
        ):
            ranked, rerank_s = order(lst)
            rec[f"{row}_list"] = ranked
            rec[row] = {**_measures(ranked, supporting[ex.qid], depth), "s": base + rerank_s, "rerank_s": rerank_s}
            rec[row][f"both@{depth}"] = both_recall(lst, supporting[ex.qid], depth)
        rec["load"] = load_1min()
        save_json(path, data)

    # 2. question by question (in generation batches): decompose + pooled retrieval, then the two
    # rerank rows for the first ``rerank_limit`` questions; stop starting new batches past the budget.
    for i in range(0, len(todo), gen_batch):
        if time_budget is not None and time.perf_counter() - t_start > time_budget:
            logger.info("time budget reached after %d questions", i)
            break
        chunk = todo[i : i + gen_batch]
        pending = [e for e in chunk if "decomp+pooled" not in per_q[e.qid]]
        if pending:
            decompose(pending)
        for j, ex in enumerate(chunk, start=i):
            if j < rerank_limit and "dense+rerank" not in per_q[ex.qid]:
                rerank(ex)
        logger.info("%d/%d questions done (%.0f s)", i + len(chunk), len(todo), time.perf_counter() - t_start)

    data["settings"] = {
        "k": k,
        "rerank_depth": rerank_depth,
        "rerank_limit": rerank_limit,
        "gen_batch": gen_batch,
        "reranker": reranker.describe() if hasattr(reranker, "describe") else type(reranker).__name__,
        "fusion": "rrf (k=60), original question + sub-questions",
    }
    data["wall_s"] = data.get("wall_s", 0.0) + time.perf_counter() - t_start
    data["summary"] = summarize(data, [e.qid for e in examples], rerank_depth=depth)
    save_json(path, data)
    (out / "results.md").write_text(report(data), encoding="utf-8")
    return data


def summarize(data: dict[str, Any], qids: Sequence[str], *, rerank_depth: int = 20) -> list[dict[str, Any]]:
    """One summary line per (subset, row): means of the measures, median and p90 seconds per question."""
    per_q = data["questions"]
    decomposed = [q for q in qids if "decomp+pooled" in per_q.get(q, {})]
    reranked = [q for q in qids if "dense+rerank" in per_q.get(q, {})]
    subsets = [
        ("all", [q for q in qids if "dense" in per_q.get(q, {})]),
        ("decomposed", decomposed),
        ("reranked", reranked),
    ]
    lines = []
    for name, subset in subsets:
        if not subset:
            continue
        for row in ROWS:
            recs = [per_q[q][row] for q in subset if row in per_q[q]]
            if len(recs) != len(subset):
                continue
            secs = sorted(r["s"] for r in recs)
            line = {"subset": name, "questions": len(subset), "row": row}
            for m in ("both@5", "both@10", "R@10", f"both@{rerank_depth}"):
                line[m] = statistics.fmean(r[m] for r in recs)
            loads = [per_q[q]["load"] for q in subset if per_q[q].get("load") is not None]
            line["load"] = statistics.fmean(loads) if loads else None
            line["median_s"] = statistics.median(secs)
            line["p90_s"] = percentile(secs, 90)
            lines.append(line)
    fallbacks = [per_q[q]["decomposition"]["fallback"] for q in decomposed]
    if fallbacks:
        lines.append(
            {
                "subset": "decomposed",
                "questions": len(decomposed),
                "row": "fallback_rate",
                "value": sum(fallbacks) / len(fallbacks),
                "mean_subquestions": statistics.fmean(
                    0 if per_q[q]["decomposition"]["fallback"] else len(per_q[q]["decomposition"]["sub_questions"])
                    for q in decomposed
                ),
            }
        )
    return lines


def render_markdown(summary: Sequence[dict[str, Any]], rerank_depth: int = 20) -> str:
    """The summary as a Markdown table."""
    header = ["subset", "questions", "pipeline", "both@5", "both@10", "R@10", f"list both@{rerank_depth}",
              "median s/q", "p90 s/q", "load"]
    rows = [
        [line["subset"], line["questions"], line["row"], f"{line['both@5']:.3f}", f"{line['both@10']:.3f}",
         f"{line['R@10']:.3f}", f"{line[f'both@{rerank_depth}']:.3f}", f"{line['median_s']:.2f}",
         f"{line['p90_s']:.2f}", "" if line.get("load") is None else f"{line['load']:.1f}"]
        for line in summary
        if "both@10" in line
    ]  # fmt: skip
    return markdown_table(header, rows, align="lrlrrrrrrr") + "\n"


def report(data: dict[str, Any]) -> str:
    """The whole report of a results dict: the table, the decomposer's fallback rate, the machine."""
    s = data.get("settings") or {}
    depth = max(s.get("k", 10), s.get("rerank_depth", 20))
    lines = [render_markdown(data["summary"], depth)]
    for line in data["summary"]:
        if line["row"] == "fallback_rate":
            lines.append(
                f"Fallback rate {line['value']:.3f}, mean sub-questions {line['mean_subquestions']:.2f} "
                f"over {line['questions']} decomposed questions.\n"
            )
    lines.append(machine_footer(data.get("machine"), data.get("machine_notes") or []) + "\n")
    return "\n".join(lines)
