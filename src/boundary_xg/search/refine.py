"""Boundary refinement: a bisection along the segment from ``x`` to a misclassified point.

Every candidate an attack returns lies somewhere past the decision boundary (up
to an overshoot, a PGD radius or an unfinished shrink). On the segment
``x + t (p - x)``, ``t`` in ``[0, 1]``, ``x`` is classified as its label
(``t = 0``) and ``p`` is not (``t = 1``); ``steps`` bisections keep a bracket
``[t_lo, t_hi]`` with a misclassified end ``t_hi`` and return ``x + t_hi (p -
x)``: a misclassified point at most ``2**-steps`` of the segment past a crossing
of the boundary, never farther from ``x`` than ``p``. Forward passes only (one
row per example and step), on the device, with no host read.
"""

from __future__ import annotations

from typing import Any, Callable

from ..backends import Backend
from ..ops import expand_rows, row_chunks
from ._ops import misclassified, model_logits
from .base import SearchContext

#: bisection steps of the default refinement: 2**-12 of the segment (0.02 % of the distance)
DEFAULT_REFINE_STEPS = 12


def _segment(B: Backend, x0: Any, p: Any, t: Any) -> Any:
    return x0 + (p - x0) * expand_rows(B, t, len(x0.shape))


def _bisect(B: Backend, f: Callable, steps: int, x0: Any, p: Any, y: Any, proto: Any) -> Any:
    zero = B.zeros_like(B.sum(x0, axis=tuple(range(1, len(x0.shape)))))
    t_lo, t_hi = zero, zero + 1.0
    for _ in range(steps):
        mid = (t_lo + t_hi) * 0.5
        mis = misclassified(B, model_logits(B, f, _segment(B, x0, p, mid), proto), y)
        t_hi = B.where(mis, mid, t_hi)
        t_lo = B.where(mis, t_lo, mid)
    return _segment(B, x0, p, t_hi)


def refine(ctx: SearchContext, x: Any, points: Any, labels: Any, steps: int = DEFAULT_REFINE_STEPS) -> Any:
    """Pull each misclassified ``points`` row back along ``x -> point`` to just past the boundary.

    Args:
        ctx: the search context (model, batch size, pass counter).
        x: ``(N, ...)`` inputs; points: ``(N, ...)`` candidates (rows equal to
            ``x`` where none was found: they stay ``x``); labels: ``(N,)``.
        steps: bisection steps, >= 0 (0: the points unchanged).

    Returns:
        The refined points, shaped like ``x``. A row whose point is
        misclassified stays misclassified (the returned end of the bracket
        was evaluated as such, in the model's dtype).
    """
    if steps <= 0:
        return points
    B = ctx.B
    n = B.shape(x)[0]
    fn = B.jit(_bisect, ctx.f, B, ctx.f, int(steps))
    parts = []
    for r0, r1 in row_chunks(n, ctx.batch_size):
        if r1 - r0 == n:
            parts.append(fn(x, points, labels, ctx.proto))
        else:
            parts.append(fn(x[r0:r1], points[r0:r1], labels[r0:r1], ctx.proto))
        ctx.cost.forwards += (r1 - r0) * int(steps)
    return parts[0] if len(parts) == 1 else B.concat(parts)
