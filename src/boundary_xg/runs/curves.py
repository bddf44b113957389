"""Mean curves of curve metrics (insertion, deletion, DiffID, ...) over a whole run.

A metric whose result has a ``.curve`` (``boundary_xg.metrics.insertion`` and
``deletion``, ``diffid``, the KPM family, ``sensitivity_n``, or any metric of the
same shape) gets its curve kept per shard: for every method the sum of the
shard's per-example curves and, per point, how many examples were summed. The
sums live in the shard's record (``examples/KKKKK.json``, key ``"curves"``),
which is written last and atomically, so a complete shard always has its curves,
a killed shard never leaves half of them, and a resumed or multi-process run
adds up exactly the same numbers (in shard order) as an uninterrupted one. The
mean curve over the dataset is the sum of the shards' sums over the sum of
their counts. Runs without curve metrics, and folders written before curves
were kept, have no ``"curves"`` key.

Record layout (plain JSON)::

    "curves": {"insertion": {"fractions": [0.0, 0.125, ...], "score": "probability",
                             "higher_is_better": true,
                             "methods": {"IG": {"sum": [...], "count": [...]}, ...}}}
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, List, Optional, Tuple

import numpy as np

from . import folder as fs


def shard_entry(result: Any, n: int) -> Optional[Dict[str, Any]]:
    """``{"fractions", "score", "higher_is_better", "sum", "count"}`` of one method's metric result
    on ``n`` examples, or None when the result has no curve.

    Uses ``result.per_example_curves`` ``(n, S)`` when there is one (NaN points are
    left out of the sum and the count), else ``result.curve`` ``(S,)`` as the mean
    of the ``n`` examples (sum ``n * curve``).
    """
    from .readers import to_numpy

    curve = getattr(result, "curve", None)
    if curve is None:
        return None
    curve = np.asarray(to_numpy(curve), np.float64).reshape(-1)
    per = getattr(result, "per_example_curves", None)
    if per is not None:
        per = np.asarray(to_numpy(per), np.float64)
        per = per.reshape(per.shape[0], -1) if per.ndim else per.reshape(1, -1)
    if per is not None and per.shape == (n, curve.size):
        finite = np.isfinite(per)
        total, count = np.where(finite, per, 0.0).sum(axis=0), finite.sum(axis=0)
    else:  # only the mean curve: it stands for its n examples
        finite = np.isfinite(curve)
        total, count = np.where(finite, curve * n, 0.0), np.where(finite, n, 0)
    frac = getattr(result, "fractions", None)
    frac = (np.arange(curve.size, dtype=np.float64) if frac is None
            else np.asarray(to_numpy(frac), np.float64).reshape(-1))
    details = getattr(result, "details", None)
    score = details.get("score") if hasattr(details, "get") else None
    better = getattr(result, "higher_is_better", None)
    return {"fractions": [float(v) for v in frac], "score": score if isinstance(score, str) else None,
            "higher_is_better": better if isinstance(better, bool) else None,
            "sum": [float(v) for v in total], "count": [int(c) for c in count]}


def record_curves(entries: Dict[str, Dict[str, Dict[str, Any]]]) -> Dict[str, Any]:
    """The record's ``"curves"`` value from ``{metric: {method: shard_entry}}``."""
    out: Dict[str, Any] = {}
    for metric, by_method in entries.items():
        if not by_method:
            continue
        first = next(iter(by_method.values()))
        out[metric] = {"fractions": first["fractions"], "score": first["score"],
                       "higher_is_better": first["higher_is_better"],
                       "methods": {m: {"sum": e["sum"], "count": e["count"]} for m, e in by_method.items()}}
    return out


class CurveSums:
    """The shards' curve sums added up in shard order; :meth:`means` gives the mean curves."""

    def __init__(self) -> None:
        self.metrics: Dict[str, Dict[str, Any]] = {}

    def add(self, record: Dict[str, Any]) -> None:
        """Add one shard record's ``"curves"`` (nothing when it has none)."""
        for metric, c in (record.get("curves") or {}).items():
            frac = np.asarray(c["fractions"], np.float64)
            acc = self.metrics.setdefault(metric, {"fractions": frac, "score": c.get("score"),
                                                   "higher_is_better": c.get("higher_is_better"), "methods": {}})
            if acc["fractions"].shape != frac.shape:  # e.g. an edited record: keep what matches
                continue
            for m, e in c["methods"].items():
                s, n = np.asarray(e["sum"], np.float64), np.asarray(e["count"], np.int64)
                if m in acc["methods"]:
                    acc["methods"][m][0] += s
                    acc["methods"][m][1] += n
                else:
                    acc["methods"][m] = [s.copy(), n.copy()]

    def names(self) -> List[str]:
        """The metrics that have curves, in the order the records name them."""
        return list(self.metrics)

    def means(self, metric: str) -> Dict[str, Tuple[np.ndarray, np.ndarray]]:
        """``{method: (fractions (S,), mean curve (S,))}``; NaN where no example had a value."""
        acc = self.metrics[metric]
        out = {}
        for m, (s, n) in acc["methods"].items():
            with np.errstate(invalid="ignore", divide="ignore"):
                out[m] = (acc["fractions"].copy(), np.where(n > 0, s / np.maximum(n, 1), np.nan))
        return out

    def counts(self, metric: str) -> Dict[str, int]:
        """``{method: examples summed}`` (the most at any point of the curve)."""
        return {m: int(n.max()) if n.size else 0 for m, (_, n) in self.metrics[metric]["methods"].items()}


def from_records(records: Iterable[Dict[str, Any]]) -> CurveSums:
    sums = CurveSums()
    for rec in records:
        sums.add(rec)
    return sums


def read_records(out: str) -> Iterable[Dict[str, Any]]:
    """The records ``examples/00000.json, 00001.json, ...`` of the complete shards, from the first
    up to the first missing one."""
    k = 0
    while True:
        path = os.path.join(fs.examples_dir(out), fs.shard_name(k, "json"))
        if not os.path.exists(path):
            return
        yield fs.load_json(path)
        k += 1


def trapezoid(y: np.ndarray, x: np.ndarray) -> float:
    """The area under ``y`` over ``x`` (trapezoid rule; NaN when a point is NaN)."""
    if y.size < 2:
        return float("nan")
    return float(((y[1:] + y[:-1]) * np.diff(x)).sum() / 2.0)
