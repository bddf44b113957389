"""Timing helper shared by the benchmark scripts (run them as ``python bench/<name>.py``)."""

from __future__ import annotations

import time


def best_times(*fns, repeat=5):
    """Best wall time of each ``fn()`` over ``repeat`` rounds, after one warm-up call each.

    The functions run in turn within each round, so that the compared timings
    see the same load of a shared machine.
    """
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = time.perf_counter()
            fn()
            best[i] = min(best[i], time.perf_counter() - t0)
    return best


def best_time(fn, repeat=5):
    """Best wall time of ``fn()`` over ``repeat`` runs, after one warm-up run."""
    return best_times(fn, repeat=repeat)[0]
