"""Boundary refinement: pull each candidate back along the segment from ``x`` to just past the boundary.

Every candidate an attack returns lies somewhere past the decision boundary (up
to an overshoot, a PGD radius or an unfinished shrink). On the segment
``x + t (p - x)``, ``t`` in ``[0, 1]``, ``x`` is classified as its label
(``t = 0``) and ``p`` is not (``t = 1``). The refinement keeps a bracket
``[t_lo, t_hi]`` per row (``t_hi`` misclassified, ``t_lo`` not) and returns
``x + t_hi (p - x)``: a misclassified point never farther from ``x`` than ``p``
(``p`` itself where the bracket never moved), within ``2**-bits`` of its
distance of a crossing of the boundary.

The margin ``m(t) = F_y - max_{j != y} F_j`` is close to linear along the
segment near the boundary (measured on the digits CNN and a CIFAR-sized CNN: the
secant through the two ends lands within 1.5e-5 of the crossing for 90 % of the
minimum-norm attack's candidates), so instead of a bisection (one forward row
per step, ``bits`` steps for every row):

* round 0 evaluates ``t = 1 - 2**-bits`` (one row): where it is still classified
  as the label the candidate is already that close to the boundary (most of
  FMN's: it shrinks its norm until the last step) and the row is done;
* each later round puts the secant root ``s`` of the bracket's margins (``m(0)``
  from the logits at ``x`` the search already computed) and evaluates
  ``s - h`` and ``s + h`` (``h`` half the tolerance) in one forward pass of two
  rows per candidate: when the root was right to within ``h`` the bracket is
  then tight; otherwise it shrinks to one side of ``s`` (an Illinois-style
  halving of the stale end's margin keeps the secant from stalling on one side);
* a row leaves as soon as ``t_hi - t_lo <= 2**-bits * t_hi`` (the host reads the
  per-row flags once per round, a handful of rounds), after at most ``bits``
  rounds.

Forward passes only, on the device; only the rows of found candidates run.
"""

from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np

from ..backends import Backend
from ..ops import expand_rows, row_chunks
from ._ops import forward_logits, margin, misclassified, put_rows, where_rows
from .base import SearchContext

#: precision of the default refinement: the crossing within 2**-12 (0.02 %) of the distance
DEFAULT_REFINE_STEPS = 12

_BITS: dict = {}


def _segment(B: Backend, x0: Any, p: Any, t: Any) -> Any:
    return x0 + (p - x0) * expand_rows(B, t, len(x0.shape))


def _evaluate(B: Backend, f: Callable, x0: Any, p: Any, oh: Any, y: Any, ts: Tuple[Any, ...], proto: Any):
    """Margins and misclassified flags at the points ``t`` in ``ts`` of every row, in one forward pass."""
    k = len(ts)
    z = _segment(B, B.concat([x0] * k) if k > 1 else x0, B.concat([p] * k) if k > 1 else p,
                 B.concat(list(ts)) if k > 1 else ts[0])
    logits = forward_logits(B, f, z, proto)
    ohk, yk = (B.concat([oh] * k), B.concat([y] * k)) if k > 1 else (oh, y)
    g, mis = margin(B, logits, ohk), misclassified(B, logits, yk)
    if k == 1:
        return (g,), (mis,)
    # class-major rows: reshape (not slice by a row count, unknown while tracing)
    g, mis = B.reshape(g, (k, -1)), B.reshape(mis, (k, -1))
    return tuple(g[i] for i in range(k)), tuple(mis[i] for i in range(k))


def _first_round(B: Backend, f: Callable, bits: int, x0: Any, p: Any, oh: Any, y: Any, g_lo: Any, proto: Any):
    """Round 0: one row per candidate at ``t = 1 - tol`` (``tol = 2**-bits``).

    Returns the bracket and the done flags."""
    tol = 2.0 ** -bits
    one = B.zeros_like(g_lo) + 1.0
    a = one - tol
    (g_a,), (mis_a,) = _evaluate(B, f, x0, p, oh, y, (a,), proto)
    t_hi = B.where(mis_a, a, one)
    g_hi = B.where(mis_a, g_a, B.zeros_like(g_a))
    t_lo = B.where(mis_a, B.zeros_like(a), a)
    g_lo = B.where(mis_a, g_lo, g_a)
    side = B.where(mis_a, one, B.zeros_like(one))  # +1: the last round moved t_hi only
    return t_lo, g_lo, t_hi, g_hi, side, B.logical_not(mis_a)


def _round(B: Backend, f: Callable, bits: int, x0: Any, p: Any, oh: Any, y: Any,
           t_lo: Any, g_lo: Any, t_hi: Any, g_hi: Any, side: Any, proto: Any):
    """A later round: two rows per candidate at ``s -/+ h`` around the secant root ``s``."""
    tol = 2.0 ** -bits
    zero = B.zeros_like(t_lo)
    w = t_hi - t_lo
    denom = g_lo - g_hi
    ok = denom > 0
    frac = B.where(ok, g_lo / B.where(ok, denom, zero + 1.0), zero + 0.5)
    s = t_lo + w * frac
    # b - a = 0.98 tol s < tol b: a bracket [a, b] passes the test below despite rounding
    h = t_lo * (0.49 * tol)
    s = B.minimum(B.maximum(s, t_lo + h), t_hi - h)
    h = s * (0.49 * tol)
    a, b = B.maximum(s - h, t_lo), B.minimum(s + h, t_hi)
    (g_a, g_b), (mis_a, mis_b) = _evaluate(B, f, x0, p, oh, y, (a, b), proto)
    not_a = B.logical_not(mis_a)
    hi_only = mis_a                               # both past the boundary: t_hi -> a
    lo_only = B.logical_and(not_a, B.logical_not(mis_b))  # neither: t_lo -> b
    new_hi = B.where(mis_a, a, B.where(mis_b, b, t_hi))
    new_gh = B.where(mis_a, g_a, B.where(mis_b, g_b, g_hi))
    new_lo = B.where(mis_a, t_lo, B.where(mis_b, a, b))
    new_gl = B.where(mis_a, g_lo, B.where(mis_b, g_a, g_b))
    # Illinois: an end kept twice in a row has its margin halved, so the next secant
    # root moves toward it instead of creeping along the other side
    new_gl = B.where(B.logical_and(hi_only, side > 0.5), new_gl * 0.5, new_gl)
    new_gh = B.where(B.logical_and(lo_only, side < -0.5), new_gh * 0.5, new_gh)
    side = B.where(hi_only, zero + 1.0, B.where(lo_only, zero - 1.0, zero))
    done = (new_hi - new_lo) <= new_hi * tol
    return new_lo, new_gl, new_hi, new_gh, side, done


def refine(ctx: SearchContext, x: Any, points: Any, labels: Any, steps: int = DEFAULT_REFINE_STEPS,
           found: Any = None, margins: Optional[Any] = None) -> Any:
    """Pull each found ``points`` row back along ``x -> point`` to just past the boundary.

    Args:
        ctx: the search context (model, batch size, pass counter).
        x: ``(N, ...)`` inputs; points: ``(N, ...)`` candidates; labels: ``(N,)``.
        steps: precision in bits, >= 0 (0: the points unchanged): a row stops
            once the crossing is bracketed within ``2**-steps`` of its distance,
            after at most ``steps`` rounds.
        found: ``(N,)`` bool, the rows with a misclassified candidate (None:
            every row); the other rows are returned unchanged and cost nothing.
        margins: ``(N,)`` the margins ``F_y - max_{j != y} F_j`` at ``x`` if
            already computed (None: one forward pass over the found rows).

    Returns:
        The refined points, shaped like ``x``. A row whose point is
        misclassified stays misclassified (the returned end of the bracket was
        evaluated as such, in the model's dtype, or is the point itself).
    """
    if steps <= 0:
        return points
    B = ctx.B
    n = B.shape(x)[0]
    rows = np.arange(n) if found is None else np.nonzero(B.to_numpy(found).astype(bool))[0]
    if not rows.size:
        return points
    # compiled steps are cached by the identity of their static arguments: the bits as a
    # small int (one object per value), not a float made here (a new trace every call)
    bits = _BITS.setdefault(int(steps), int(steps))
    first = B.jit(_first_round, ctx.f, B, ctx.f, bits)
    later = B.jit(_round, ctx.f, B, ctx.f, bits)
    out = points
    # two rows per candidate in the later rounds: keep each model call within batch_size
    for r0, r1 in row_chunks(rows.size, max(1, ctx.batch_size // 2)):
        idx = rows[r0:r1]
        whole = idx.size == n
        it = None if whole else B.asarray(idx, like=labels)
        take = (lambda t: t) if whole else (lambda t: B.gather(t, it))
        x0, p, y = take(x), take(points), take(labels)
        oh = B.one_hot(y, ctx.num_classes, like=x0)
        if margins is None:
            g0 = margin(B, forward_logits(B, ctx.f, x0, ctx.proto), oh)
            ctx.cost.forwards += idx.size
        else:
            g0 = take(margins)
        t_lo, g_lo, t_hi, g_hi, side, done = first(x0, p, oh, y, g0, ctx.proto)
        ctx.cost.forwards += idx.size
        pos = idx  # the examples of the rows still refined
        for _ in range(int(steps)):
            flags = B.to_numpy(done).astype(bool)  # one host read per round: rows leave as they converge
            if flags.any():
                fin = B.asarray(np.nonzero(flags)[0], like=labels)
                pf, tf_ = (B.gather(v, fin) for v in (p, t_hi))
                xf = B.gather(x0, fin)
                out = put_rows(B, out, B.asarray(pos[flags], like=labels), _finish(B, xf, pf, tf_))
                if flags.all():
                    pos = pos[:0]
                    break
                keep = B.asarray(np.nonzero(~flags)[0], like=labels)
                x0, p, y, oh, t_lo, g_lo, t_hi, g_hi, side = (
                    B.gather(v, keep) for v in (x0, p, y, oh, t_lo, g_lo, t_hi, g_hi, side))
                pos = pos[~flags]
            t_lo, g_lo, t_hi, g_hi, side, done = later(x0, p, oh, y, t_lo, g_lo, t_hi, g_hi, side, ctx.proto)
            ctx.cost.forwards += 2 * pos.size
        if pos.size:  # out of rounds: the bracket's misclassified end
            out = put_rows(B, out, B.asarray(pos, like=labels), _finish(B, x0, p, t_hi))
    return out


def _finish(B: Backend, x0: Any, p: Any, t_hi: Any) -> Any:
    """``x0 + t_hi (p - x0)``, and ``p`` itself (bit for bit) where the bracket's end never moved."""
    return where_rows(B, t_hi >= 1.0, p, _segment(B, x0, p, t_hi))
