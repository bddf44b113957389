"""The result object every metric returns."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Mapping, Optional

import numpy as np


@dataclass(frozen=True, eq=False, repr=False)
class MetricResult:
    """What one metric computed, as plain NumPy numbers.

    Attributes:
        name: the metric's name (``"diffid"``, ``"insertion"``, ...).
        value: the one-number summary (``numpy.float64``): the area under the
            curve for curve metrics, the mean of ``per_example`` for per-example
            scores (see each metric for its exact definition).
        per_example: ``(N,)`` float64: each example's own summary (its area, its
            score); ``value`` summarises them.
        curve: ``(S,)`` the curve averaged over the examples, or None.
        fractions: ``(S,)`` the curve's abscissa (ratios, fractions of pixels,
            stage indices), or None.
        per_example_curves: ``(N, S)`` each example's curve, or None.
        higher_is_better: the direction in which the metric improves (None: neither).
        details: further arrays and settings of the metric (e.g. DiffID's
            insertion and deletion curves, the accuracy variant, the options used).
    """

    name: str
    value: np.float64
    per_example: np.ndarray
    curve: Optional[np.ndarray] = None
    fractions: Optional[np.ndarray] = None
    per_example_curves: Optional[np.ndarray] = None
    higher_is_better: Optional[bool] = None
    details: Mapping[str, Any] = field(default_factory=dict)

    def __float__(self) -> float:
        return float(self.value)

    def __repr__(self) -> str:
        curve = "" if self.curve is None else f", curve of {len(self.curve)} points"
        direction = {True: ", higher is better", False: ", lower is better"}.get(self.higher_is_better, "")
        return (f"MetricResult({self.name}: value={float(self.value):.6g}, "
                f"{len(self.per_example)} examples{curve}{direction})")
