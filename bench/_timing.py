"""Timing helper shared by the benchmark scripts (run them as ``python bench/<name>.py``).

``BXG_BENCH_CLOCK=cpu`` times with the process's CPU time instead of the wall
clock: on a shared machine, with one thread per process (``OMP_NUM_THREADS=1``,
``TF_NUM_INTRAOP_THREADS=1``, ``TF_NUM_INTEROP_THREADS=1``), it leaves out the time
other processes hold the cores, which makes wall-clock ratios swing by 20-50 %.
``BXG_BENCH_REPEAT`` overrides the number of timed rounds (at least that many).
"""

from __future__ import annotations

import os
import time

_REPEAT = int(os.environ.get("BXG_BENCH_REPEAT", "0") or 0)


#: the clock of every timing; ``use_cpu_time()`` switches to the process's CPU time
CLOCK = [time.process_time if os.environ.get("BXG_BENCH_CLOCK") == "cpu" else time.perf_counter]


def use_cpu_time():
    """Time with the process's CPU time instead of wall time (a shared, loaded machine:
    with one thread per op, CPU time counts this process's work, not the others')."""
    CLOCK[0] = time.process_time


def best_times(*fns, repeat=5):
    """Best time of each ``fn()`` over ``repeat`` rounds, after one warm-up call each.

    The functions run in turn within each round, so that the compared timings
    see the same load of a shared machine. Wall time unless :func:`use_cpu_time`.
    """
    repeat = max(repeat, _REPEAT)
    for fn in fns:
        fn()
    best = [float("inf")] * len(fns)
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = CLOCK[0]()
            fn()
            best[i] = min(best[i], CLOCK[0]() - t0)
    return best


def best_time(fn, repeat=5):
    """Best time of ``fn()`` over ``repeat`` runs, after one warm-up run."""
    return best_times(fn, repeat=repeat)[0]


def round_times(*fns, repeat=5):
    """Every round's time of each ``fn()``: ``[[t_round0, t_round1, ...] per fn]``.

    As :func:`best_times` (one warm-up each, the functions in turn within each round), for
    estimators that pair the functions of one round: on a shared machine whose speed
    swings by 20-50 % between rounds, the median over rounds of ``t_a / t_b`` moves far
    less than the ratio of the two best times.
    """
    repeat = max(repeat, _REPEAT)
    for fn in fns:
        fn()
    times = [[] for _ in fns]
    for _ in range(repeat):
        for i, fn in enumerate(fns):
            t0 = CLOCK[0]()
            fn()
            times[i].append(CLOCK[0]() - t0)
    return times


def paired_median(a, b):
    """Median over rounds of ``a[i] / b[i]`` (two lists of :func:`round_times`)."""
    ratios = sorted(x / y for x, y in zip(a, b))
    m = len(ratios) // 2
    return ratios[m] if len(ratios) % 2 else 0.5 * (ratios[m - 1] + ratios[m])
