"""Integrated Gradients (Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep
Networks", ICML 2017).

``IG_i = (x_i - x'_i) * sum_s w_s * d F_y / d x_i (x' + alpha_s (x - x'))``, with
nodes and weights from :mod:`boundary_xg.methods.quadrature` (weights sum to one).
All ``N * steps`` path points are batched into the batch dimension, in chunks of
``batch_size`` model inputs.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..backends import Backend
from ..ops import path_gradients, predict
from .quadrature import quadrature


def integrated_gradients(
    B: Backend,
    f: Callable,
    x: Any,
    labels: Any,
    *,
    baseline: Any,
    steps: int = 50,
    rule: str = "gausslegendre",
    batch_size: Optional[int] = None,
    return_gap: bool = False,
) -> Any:
    """Integrated Gradients from ``baseline`` to ``x``.

    Args:
        x: inputs ``(N, ...)``; labels: ``(N,)`` class indices.
        baseline: tensor shaped like ``x`` (the API broadcasts scalars and arrays).
        steps: number of quadrature nodes (default 50).
        rule: quadrature rule (default ``"gausslegendre"``), see
            :func:`~boundary_xg.methods.quadrature.quadrature`.
        batch_size: model inputs per forward/backward (default 256).
        return_gap: also return the completeness gap per example,
            ``sum(attr) - (F_y(x) - F_y(baseline))``, shape ``(N,)``.

    Returns:
        Attributions shaped like ``x``, or ``(attributions, gap)``.
    """
    alphas, weights = quadrature(rule, steps)
    delta = x - baseline
    attr = delta * path_gradients(B, f, baseline, delta, labels, alphas, weights, batch_size)
    if not return_gap:
        return attr
    return attr, completeness_gap(B, f, attr, x, baseline, labels, batch_size)


def completeness_gap(
    B: Backend, f: Callable, attr: Any, x: Any, baseline: Any, labels: Any,
    batch_size: Optional[int] = None,
) -> Any:
    """``sum(attr_n) - (F_y(x_n) - F_y(baseline_n))`` per example, shape ``(N,)``."""
    n = B.shape(x)[0]
    both = predict(B, f, B.concat([x, baseline]), batch_size)
    ends = B.take_along_axis(both, B.concat([labels, labels]))
    axes = tuple(range(1, len(B.shape(x))))
    return B.sum(attr, axis=axes) - (ends[:n] - ends[n:])

