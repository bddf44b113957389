"""Insertion and deletion curves (Petsiuk, Das, Saenko, "RISE: Randomized Input Sampling
for Explanation of Black-box Models", BMVC 2018).

Pixels are ranked by the attribution (channel sum, most positive first by
default). **Deletion** starts from the image and replaces the top-ranked pixels
by a baseline, ``floor(P s / steps)`` of them at step ``s = 0..steps``; the
label's score should fall fast (lower area is better). **Insertion** starts
from the baseline and puts the top-ranked pixels of the image back; the score
should rise fast (higher area is better). The area is the trapezoid rule over
the fractions ``s / steps`` in [0, 1] (RISE's ``auc``). Cost: ``steps + 1``
forwards per example.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._inputs import check_blur, check_choice, check_int, check_progress, metric_call
from .perturbation import (
    SCORE_COLUMNS, check_baseline, curve_ranks, layout_key, masked_chunk, resolve_baseline, run_rows,
)
from .results import MetricResult

ORDERS = ("positive", "abs", "negative")
SCORES = ("probability", "logit", "accuracy")
#: RISE's blur: an 11-pixel kernel spanning +-5 sigma (sigma = 1.1 pixels)
DEFAULT_BLUR = (11, 1.1)


def _trapz(y: np.ndarray, x: np.ndarray) -> np.ndarray:
    """``np.trapz(y, x, axis=-1)`` (named ``trapezoid`` in NumPy >= 2)."""
    dx = np.diff(x)
    return ((y[..., 1:] + y[..., :-1]) * dx).sum(axis=-1) / 2.0


def _curve(kind: str, model: Any, x: Any, labels: Any, attributions: Any, steps: int, baseline: Any,
           score: str, order: str, blur: Any, batch_size: Optional[int], progress: Optional[bool],
           backend: Optional[str], output: Any) -> MetricResult:
    check_int("steps", steps, 1)
    check_choice("score", score, SCORES)
    check_choice("order", order, ORDERS)
    check_baseline(baseline)
    blur = check_blur(blur)
    check_progress(progress)
    with metric_call(model, x, labels, attributions, backend=backend, output=output,
                     batch_size=batch_size) as c:
        B, lay = c.B, c.layout
        n, p = lay.shape[0], lay.pixels
        rank = B.jit(curve_ranks, c.f, B, layout_key(lay), "abs_sum" if order == "abs" else "sum",
                     order == "negative")(c.attributions)  # 0: the most important pixel
        counts = (p * np.arange(steps + 1)) // steps
        ex = np.repeat(np.arange(n), steps + 1)
        idx = np.stack([ex, ex, np.tile(counts, n)])
        base = resolve_baseline(c, baseline, blur)
        # insertion: the top pixels come from x, the rest from the baseline; deletion the reverse
        a, b = (c.x, base) if kind == "insertion" else (base, c.x)
        out = run_rows(c, masked_chunk, (a, b, rank, None, c.labels), idx, False, score == "probability",
                       progress, kind)
    per_curves = out[:, SCORE_COLUMNS[score]].reshape(n, steps + 1)
    fractions = np.arange(steps + 1, dtype=np.float64) / steps
    per_example = _trapz(per_curves, fractions)
    curve = per_curves.mean(axis=0)
    return MetricResult(
        name=kind, value=np.float64(per_example.mean()), per_example=per_example, curve=curve,
        fractions=fractions, per_example_curves=per_curves, higher_is_better=(kind == "insertion"),
        details={"pixels": counts, "score": score, "order": order,
                 "baseline": baseline if isinstance(baseline, (str, int, float)) else "array"},
    )


def insertion(model: Any, x: Any, labels: Any = None, attributions: Any = None, *, steps: int = 32,
              baseline: Any = "blur", score: str = "probability", order: str = "positive",
              blur: Any = DEFAULT_BLUR, batch_size: Optional[int] = None, progress: Optional[bool] = None,
              backend: Optional[str] = None, output: Any = None) -> MetricResult:
    """Insertion curve and its area: the top-ranked pixels of ``x`` put back into a baseline.

    When to use: a method whose top pixels alone restore the model's confidence
    fast scores high (higher is better).

    Args:
        model, x, labels, attributions: as for :func:`~boundary_xg.metrics.diffid`.
        steps: the curve has ``steps + 1`` points; step ``s`` holds the top
            ``floor(P s / steps)`` of the ``P`` pixels (default 32).
        baseline: where the pixels are inserted: ``"blur"`` (default, RISE),
            ``"zero"``, ``"mean"`` (each image's mean), a number or an array
            broadcastable to ``x``.
        score: ``"probability"`` (softmax of the label, RISE), ``"logit"`` or ``"accuracy"``.
        order: ranking of pixels by the channel sum of the attributions:
            ``"positive"`` (most positive first), ``"abs"`` (sum of ``|A|``) or ``"negative"``.
        blur: ``(kernel_size, sigma)`` in pixels of the Gaussian blur (default RISE's (11, 1.1)).
        batch_size, progress, backend, output: as for :func:`~boundary_xg.metrics.diffid`.

    Returns:
        :class:`MetricResult`: ``value`` the mean area, ``per_example`` each
        example's area (trapezoid over the fractions in [0, 1]), ``curve`` the mean
        curve over ``fractions``, ``per_example_curves`` ``(N, steps + 1)``.

    Raises:
        InputError: as for :func:`~boundary_xg.metrics.diffid`.
    """
    return _curve("insertion", model, x, labels, attributions, steps, baseline, score, order, blur,
                  batch_size, progress, backend, output)


def deletion(model: Any, x: Any, labels: Any = None, attributions: Any = None, *, steps: int = 32,
             baseline: Any = "zero", score: str = "probability", order: str = "positive",
             blur: Any = DEFAULT_BLUR, batch_size: Optional[int] = None, progress: Optional[bool] = None,
             backend: Optional[str] = None, output: Any = None) -> MetricResult:
    """Deletion curve and its area: the top-ranked pixels of ``x`` replaced by a baseline.

    When to use: a method whose top pixels carry the evidence makes the score
    fall fast when they are removed (lower is better).

    Args:
        baseline: the replacement (default ``"zero"``, RISE's; ``"blur"``, ``"mean"``,
            a number or an array). Other arguments as for :func:`insertion`.

    Returns:
        :class:`MetricResult` as for :func:`insertion` (lower is better).
    """
    return _curve("deletion", model, x, labels, attributions, steps, baseline, score, order, blur,
                  batch_size, progress, backend, output)
