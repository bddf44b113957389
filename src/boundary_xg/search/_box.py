"""Geometry of the box-constrained minimum-norm attacks, written once over the backend primitives.

* :func:`halfspace_projection`: the smallest L2 perturbation that satisfies one
  linear constraint inside a box (the linearised boundary of one class);
* :func:`free_gradient`: the gradient with the coordinates the box blocks set to
  zero (a coordinate on a bound whose descent step would leave the box);
* :func:`top_other_classes`: the ``k`` classes with the largest logits other
  than the label.
"""

from __future__ import annotations

from typing import Any, Tuple

from ..backends import Backend

#: Newton steps of the projection (exact once the set of clipped coordinates is found;
#: measured on DeepFool's projections: lambda within float32 rounding (1.3e-7) of its
#: 12-step value after 3 steps and equal after 4 on the digits CNN (bounds (0, 1)), the
#: CIFAR-sized CNN and linear models in binding boxes; the default search's distances and
#: points are bit for bit those of 5 steps on the digits CNN and MLP, the linear cases of
#: bench/boundary_peers.py and the small CNN of bench/boundary.py; each step costs about
#: 0.02 of a plain forward+backward pass per row in PyTorch on a CPU)
_NEWTON = 4
#: relative push of the final lambda past the level (float rounding of a . d)
_SLACK = 1e-6
#: the largest float32: the breakpoint of a coordinate not bounded in its direction (infinite)
_BIG = 3.4028234663852886e38
#: the largest multiple of the unconstrained lambda used (a box that blocks all but a
#: 1e-8 share of the gradient's energy)
_LAMBDA_RANGE = 1e8
#: a bound at 0 moved off it (see :func:`halfspace_projection`): the smallest normal float32
#: is 1.18e-38 (a subnormal could be flushed to 0)
_OFF_ZERO = 1e-38


def halfspace_projection(B: Backend, a: Any, b: Any, lo: Any, hi: Any, lead: int = 1) -> Tuple[Any, Any]:
    """The smallest ``d`` (L2) with ``a . d >= b`` and ``lo <= d <= hi``, per row.

    Args:
        a: ``(R, ...)`` the constraint's normal (a gradient); b: ``(R,)`` its level.
        lo, hi: ``(R, ...)`` or broadcastable bounds of ``d``, ``lo <= 0 <= hi``
            (``-inf``/``inf`` allowed).
        lead: leading axes that index rows (default 1). DeepFool passes ``a``
            as ``(k, R, ...)`` (its ``k`` competing classes of ``R`` rows), ``b``
            as ``(k, R)`` and the bounds as ``(R, ...)``: they broadcast over the
            classes instead of being copied ``k`` times.

    Returns:
        ``(d, feasible)``: ``d`` shaped like ``a``; ``feasible`` shaped like ``b``,
        bool: the box allows ``a . d >= b`` (where it does not, ``d`` is
        ``clip(lambda a)`` at the largest ``lambda`` used: the box corner that
        gets ``a . d`` largest, up to coordinates whose gradient is below
        ``1e-8`` of the unconstrained step).

    The minimiser is ``d(lambda) = clip(lambda a, lo, hi)`` (the KKT conditions),
    ``lambda`` the smallest with ``a . d(lambda) >= b``: ``a . d(lambda)`` is
    increasing and concave in ``lambda``, so Newton's method from the
    unconstrained value ``b / ||a||^2`` climbs to it from below, exactly once the
    set of clipped coordinates is right (element-wise work and per-row sums only,
    no model pass). ``b <= 0`` gives ``d = 0``.

    Each coordinate is clipped from its breakpoint ``beta_i = max(hi_i / a_i,
    lo_i / a_i) >= 0`` on, so ``h(lambda) = a . d(lambda) = sum_i a_i**2
    min(beta_i, lambda)`` and ``h'(lambda) = sum_{beta_i > lambda} a_i**2``: with
    ``beta`` and ``a**2`` computed once, a Newton step is five element-wise
    operations and two row sums, and no selection (``where`` runs about 8x
    slower than a product in PyTorch on a CPU; the previous form, clipping and
    comparing ``clip(lambda a)`` in every step, cost 0.84 of a plain
    forward+backward pass per row on 162 rows of 3x32x32, this one about 0.2).
    """
    nd = len(a.shape)
    axes = tuple(range(lead, nd))  # rank only: shapes may be unknown under tf.function

    def expand(v):  # per row (the lead axes) to (lead axes..., 1, ..., 1); the last lead axis may be unknown
        return B.reshape(v, tuple(int(n) for n in v.shape[:lead - 1]) + (-1,) + (1,) * (nd - lead))

    sq = a * a
    a2 = B.sum(sq, axis=axes)
    tiny = B.zeros_like(a2) + 1e-30
    need = B.maximum(b, B.zeros_like(b))
    lam0 = need / B.maximum(a2, tiny)
    lam_cap = lam0 * _LAMBDA_RANGE
    # breakpoints: a coordinate with a = 0 never moves; its weight a**2 is 0, but its
    # breakpoint must be a number (0 * nan is nan). The bounds, not a, are kept off 0:
    # a bound at 0 (a coordinate on the box) becomes +-1e-38, so that x / 0 is +-inf and
    # never 0 / 0. That moves a breakpoint that was 0 to 1e-38 / |a_i|, whose term
    # a_i**2 min(beta_i, lambda) = 1e-38 |a_i| is below the float32 rounding of h; d
    # itself is clipped to the true bounds. (The bounds are one row per example, not one
    # per competing class: 1/k of the work of guarding a, 5 element-wise operations on
    # every class's gradient.) sign() gives the indicator of a bound at 0 as a product
    # (a comparison and its cast to float cost 5x a product each in PyTorch on a CPU).
    # Finite: an infinite breakpoint (no bound that way) becomes the largest float32,
    # so the indicator below stays a number.
    hi_s = hi + (1.0 - B.sign(hi)) * _OFF_ZERO
    lo_s = lo - (1.0 + B.sign(lo)) * _OFF_ZERO
    beta = B.minimum(B.maximum(hi_s / a, lo_s / a), expand(B.zeros_like(a2) + _BIG))

    def h_of(lam_e):
        return B.sum(sq * B.minimum(beta, lam_e), axis=axes)

    def h_and_slope(lam):
        u = B.minimum(beta, expand(lam))
        # beta_i > lambda exactly where beta_i - min(beta_i, lambda) > 0, and sign() of that
        # difference is the indicator as a float: no comparison, no cast
        return B.sum(sq * u, axis=axes), B.sum(sq * B.sign(beta - u), axis=axes)

    # (h at the largest lambda used: the box's best, capped as below)
    feasible = h_of(expand(lam_cap)) >= need
    # Newton's method on h(lambda) from below: h is concave (each term grows as lambda a_i^2,
    # then stays flat once clipped), so each tangent step stays at or below the solution
    # and reaches it once the clipped set is right
    lam = lam0
    for _ in range(_NEWTON):
        h, slope = h_and_slope(lam)
        short = need - h
        lam = lam + B.where(short > 0, short / B.maximum(slope, tiny), B.zeros_like(short))
    # a row the box cannot satisfy gets its corner (the cap keeps 0 * inf out); b <= 0 gets 0
    lam = B.where(feasible, B.minimum(lam * (1.0 + _SLACK), lam_cap), lam_cap)
    lam = B.where(need > 0, lam, B.zeros_like(lam))
    d = B.minimum(B.maximum(a * expand(lam), lo), hi)
    return d, feasible


def free_gradient(B: Backend, g: Any, z: Any, lo: Any, hi: Any) -> Any:
    """``g`` with the coordinates blocked by the box set to 0; ``z`` inside the box (``lo <= z <= hi``).

    A descent step moves along ``-g``: a coordinate on its lower bound with
    ``g > 0``, or on its upper bound with ``g < 0``, cannot move that way.

    As ``max(min(g, c_lo), c_hi)`` with ``c_lo`` 0 on the lower bound and the
    largest float32 elsewhere (``c_hi`` likewise, negative): ``sign(z - lo)`` is
    that indicator as a float (``z - lo >= 0`` exactly for ``z >= lo`` in floating
    point, so no ``max(., 0)`` is needed: the attacks keep their iterates clipped).
    Element-wise arithmetic only: in PyTorch on a CPU a comparison costs about 5x a
    product and a ``where`` 15-20x (the comparisons, their combination and the
    ``where`` took about 2 ms per 64 rows of 3x32x32, 4 % of a plain forward+backward
    pass of the small CNN of ``bench/boundary.py``).
    """
    free_lo = B.sign(z - lo)  # 1 above the lower bound, 0 on it
    free_hi = B.sign(hi - z)
    return B.maximum(B.minimum(g, free_lo * _BIG), free_hi * -_BIG)


def top_other_classes(B: Backend, logits: Any, onehot: Any, k: int) -> list:
    """The ``k`` classes with the largest logits other than the label's, as ``k`` tensors ``(R,)``."""
    masked = logits - onehot * 1e9
    out = []
    for _ in range(k):
        j = B.argmax(masked, axis=1)
        out.append(j)
        masked = masked - B.one_hot(j, int(logits.shape[1]), like=logits) * 1e9
    return out
