"""The one place where a run calls evaluation metrics.

A metric is ``boundary_xg.metrics.NAME(model, x, labels, attributions, **options)``
returning an object with ``.value`` (one number) and ``.per_example`` (one value
per example) and, for curve metrics, ``.curve`` (see :mod:`.curves`); a run
stores the per-example values, summarises a dataset by their mean and keeps
the sums of the curves. Names are looked up case-insensitively among the module's public
callables.
"""

from __future__ import annotations

import importlib
from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from ._lib import InputError


def _module() -> Any:
    try:
        return importlib.import_module("boundary_xg.metrics")
    except ModuleNotFoundError as err:
        if err.name not in ("boundary_xg.metrics",):
            raise
        return None


def available() -> List[str]:
    """The names of the metrics this installation provides (empty without ``boundary_xg.metrics``)."""
    mod = _module()
    if mod is None:
        return []
    names = getattr(mod, "__all__", None) or [n for n in dir(mod) if not n.startswith("_")]
    return sorted(n for n in names if callable(getattr(mod, n, None)) and not isinstance(getattr(mod, n), type))


def resolve(name: str) -> Callable:
    """The metric function called ``name`` (case-insensitive).

    Raises:
        InputError: metrics are unavailable in this installation, or no metric has that name.
    """
    mod = _module()
    if mod is None:
        raise InputError(
            f"metrics=[{name!r}]: evaluation metrics are unavailable in this installation of "
            "boundary_xg (no boundary_xg.metrics module); run without metrics to get attributions only."
        )
    key = str(name).lower().replace("-", "_")
    for cand in available():
        if cand.lower() == key:
            return getattr(mod, cand)
    raise InputError(f"metrics: unknown metric {name!r}; available: {available()}.")


def evaluate(func: Callable, name: str, model: Any, x: np.ndarray, labels: np.ndarray,
             attributions: np.ndarray, options: Dict[str, Any]) -> Tuple[np.ndarray, Optional[Dict[str, Any]]]:
    """``func``'s per-example values ``(n,)`` as float64, checked, and its curve's shard entry
    (:func:`.curves.shard_entry`: sum and count of the examples' curves) or None."""
    res = func(model, x, labels, attributions, **options)
    vals = getattr(res, "per_example", None)
    if vals is None:
        raise InputError(f"metric {name!r} returned {type(res).__name__} without .per_example.")
    from .curves import shard_entry
    from .readers import to_numpy

    arr = np.asarray(to_numpy(vals), dtype=np.float64)
    if arr.ndim > 1 and arr.shape[0] == len(x):
        arr = arr.reshape(len(x), -1).mean(axis=1)
    arr = arr.reshape(-1)
    if arr.shape[0] != len(x):
        raise InputError(f"metric {name!r} gave {arr.shape[0]} per-example values for {len(x)} examples.")
    return arr, shard_entry(res, len(x))


def per_example(func: Callable, name: str, model: Any, x: np.ndarray, labels: np.ndarray,
                attributions: np.ndarray, options: Dict[str, Any]) -> np.ndarray:
    """``func``'s per-example values ``(n,)`` as float64, checked (:func:`evaluate` without the curve)."""
    return evaluate(func, name, model, x, labels, attributions, options)[0]
