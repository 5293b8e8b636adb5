"""Micro-batching in the scoring core: concurrent requests with different prefixes, several rows
each and different candidate counts merge into the fewest forward passes, each gets exactly its
own plain-forward logits, and a request that fails never takes its neighbours down with it."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import pytest
import torch


def plain_logits(core: Any, ids: list[int], wanted: list[int]) -> torch.Tensor:
    with torch.no_grad():
        return core.model(input_ids=torch.tensor([ids])).logits[0, -1, wanted].float()


def run_as_one_batch(core: Any, calls: list[Callable[[], Any]]) -> list[Any]:
    """Start every call while the model is held, so all of them queue for one serving pass;
    each outcome is a result or the exception it raised."""
    out: list[Any] = [None] * len(calls)

    def run(i: int) -> None:
        try:
            out[i] = calls[i]()
        except Exception as exc:
            out[i] = exc

    lock = core.loaded.lock
    lock.acquire()
    try:
        threads = [threading.Thread(target=run, args=(i,)) for i in range(len(calls))]
        for t in threads:
            t.start()
        deadline = time.time() + 10
        while len(core._pending) < len(calls) and time.time() < deadline:
            time.sleep(0.01)
        assert len(core._pending) == len(calls)
    finally:
        lock.release()
    for t in threads:
        t.join()
    return out


def test_mixed_prefixes_and_multi_row_requests_share_one_serving_pass(tiny_core):
    tok = tiny_core.tokenize
    p1, p2 = tok("Query: what is the capital of France?"), tok("The quick brown fox")
    requests = [  # (prefix, rows, candidate tokens)
        (p1, [tok(" Paris"), tok(" Berlin is a city")], [5, 6, 7]),
        (p1, [tok(" Rome")], [5, 6, 7]),
        (p2, [tok(" jumps"), tok(" sleeps all day"), tok(" runs")], [8, 9, 10]),
        (None, [tok("one two three")], [1, 2, 3]),
        (None, [tok("four"), tok("five six")], [1, 2, 3]),
        (p1, [tok(" Madrid")], [11, 12]),  # same prefix, other candidate count: its own group
    ]
    before = tiny_core.stats.forward_passes
    got = run_as_one_batch(
        tiny_core,
        [lambda p=p, r=r, w=w: tiny_core.next_token_logits(r, w, prefix=p) for p, r, w in requests],
    )
    # four groups: (p1, 3 candidates), (p2, 3), (no prefix, 3), (p1, 2); each prefix once, then
    # all of a group's rows in one pass (they fit max_batch_tokens)
    assert tiny_core.stats.forward_passes - before == (1 + 1) + (1 + 1) + 1 + (1 + 1)
    for (p, rows, wanted), result in zip(requests, got, strict=True):
        assert isinstance(result, torch.Tensor) and result.shape == (len(rows), len(wanted))
        for row, logits in zip(rows, result, strict=True):
            expected = plain_logits(tiny_core, [*(p or []), *row], wanted)
            torch.testing.assert_close(logits, expected, rtol=1e-4, atol=1e-4)


def test_a_failing_request_fails_alone(tiny_core, monkeypatch):
    """A forward pass that raises for one request's rows must not hand that error to the other
    requests merged with it: each of those gets its own logits."""
    tok = tiny_core.tokenize
    prefix = tok("Query: capital of France?")
    good_rows = [[tok(" Paris")], [tok(" Berlin"), tok(" Rome")]]
    used = set(prefix) | {t for rows in good_rows for row in rows for t in row}
    poison = [next(t for t in range(len(tiny_core.tokenizer) - 1, 0, -1) if t not in used)]  # an id no one else uses
    base = tiny_core.model.get_decoder()
    real_forward = base.forward

    def forward(*args, **kwargs):  # type: ignore[no-untyped-def]
        ids = kwargs["input_ids"].tolist()
        if any(t in row for row in ids for t in poison):
            raise RuntimeError("poisoned row")
        return real_forward(*args, **kwargs)

    monkeypatch.setattr(base, "forward", forward)
    calls = [
        lambda: tiny_core.next_token_logits(good_rows[0], [5, 6], prefix=prefix),
        lambda: tiny_core.next_token_logits([poison], [5, 6], prefix=prefix),
        lambda: tiny_core.next_token_logits(good_rows[1], [5, 6], prefix=prefix),
    ]
    got = run_as_one_batch(tiny_core, calls)
    assert isinstance(got[1], RuntimeError) and "poisoned row" in str(got[1])
    monkeypatch.undo()
    for rows, result in zip(good_rows, [got[0], got[2]], strict=True):
        assert isinstance(result, torch.Tensor), f"an innocent request failed: {result!r}"
        for row, logits in zip(rows, result, strict=True):
            torch.testing.assert_close(logits, plain_logits(tiny_core, [*prefix, *row], [5, 6]), rtol=1e-4, atol=1e-4)


def test_an_empty_row_after_a_prefix_is_refused_up_front(tiny_core):
    """An empty continuation has no last token of its own; next to non-empty rows it would read a
    padding position. It is a ValueError before anything is queued, alone or among other rows."""
    prefix = tiny_core.tokenize("Query: capital of France?")
    for rows in ([[]], [tiny_core.tokenize(" Paris"), []]):
        with pytest.raises(ValueError, match="at least one token"):
            tiny_core.next_token_logits(rows, [5, 6], prefix=prefix)
    assert tiny_core._pending == []
