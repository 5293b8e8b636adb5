"""Sliding windows over a ranked list, back to front, as RankGPT moves them.

Listwise and attention reranking both score lists longer than one prompt holds this way: the
first window covers the last ``window`` items, each next one moves ``stride`` towards the top,
and the last one is the full top window, so the best candidates from below can reach rank 1.
"""

from __future__ import annotations

__all__ = ["window_schedule"]


def window_schedule(n: int, window: int, stride: int, passes: int = 1) -> list[tuple[int, int]]:
    """Windows ``(start, end)`` over ``n`` ranked items, back to front, repeated ``passes`` times.

    With ``n <= window`` one window covers everything (repeating it would give the same result,
    so ``passes`` does not repeat it).

    Example:
        >>> window_schedule(100, 20, 10)[:3], len(window_schedule(100, 20, 10))
        ([(80, 100), (70, 90), (60, 80)], 9)
        >>> window_schedule(25, 20, 10)
        [(5, 25), (0, 20)]
        >>> window_schedule(7, 4, 2)
        [(3, 7), (1, 5), (0, 4)]
    """
    for name, value in (("n", n), ("window", window), ("stride", stride), ("passes", passes)):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"{name} must be an int, got {value!r}")
    if n < 0:
        raise ValueError(f"n must be >= 0, got {n}")
    if window < 1:
        raise ValueError(f"window must be >= 1, got {window}")
    if not 1 <= stride <= window:
        raise ValueError(f"stride must be in [1, window={window}], got {stride}")
    if passes < 1:
        raise ValueError(f"passes must be >= 1, got {passes}")
    if n == 0:
        return []
    if n <= window:
        return [(0, n)]
    starts = list(range(n - window, 0, -stride))
    if not starts or starts[-1] != 0:
        starts.append(0)
    return [(s, s + window) for s in starts] * passes
