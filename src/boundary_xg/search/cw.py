"""Carlini-Wagner L2 attack (Carlini and Wagner, "Towards Evaluating the Robustness
of Neural Networks", IEEE S&P 2017), untargeted, with its binary search over the
constant.

Inside finite bounds ``[lo, hi]`` the candidate is ``x(d) = tanh(w + d) * b + a``
with ``w = atanh(0.999999 * (x - a) / b)``, ``a = (lo + hi) / 2``, ``b = (hi - lo)
/ 2``, so every candidate respects the bounds; without bounds ``x(d) = x + d``.
Adam minimises ``c * max(0, F_y - max_{j != y} F_j + confidence) + ||x(d) -
x(0)||^2`` per example. After each of ``binary_search_steps`` runs, ``c`` grows
tenfold until an adversarial is found, then is bisected. At every iteration the
candidate just evaluated is kept if it is misclassified and closer to ``x`` than
the best so far.

The first constant is derived per example from the margin and its gradient at
``x`` (``initial_const=None``), so one or two steps find the bracket instead of
the reference's tenfold growth from 1e-3; an example leaves the binary search
once its bracket is tight or a step no longer improves its distance, and within
a step once its run aborts early (compaction: passes are rows actually run). A
warm start (``init``, PGD's points) gives the distance to beat.

All state (constants, bounds of the search, Adam moments, best points) lives on
the device and is updated with ``where``; the host reads a flag vector only at the
early-abort checks (every ``ceil(steps / 10)`` iterations) and once per
binary-search step, never per iteration.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Tuple

import numpy as np

from ..backends import Backend
from ..errors import InputError
from ..ops import expand_rows
from ._ops import Cost, l2_distance, margin, misclassified, put_rows

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
_NO_UPPER = 1e10  # "upper bound of c not found yet"
_FAR = 1e30  # "no point yet": finite, so rows can be moved with index_add


@dataclass(frozen=True)
class CW:
    """Carlini-Wagner L2 (one attack of :func:`find_boundary`).

    Args:
        steps: Adam iterations per binary-search step, >= 1 (default 100).
        binary_search_steps: runs with different constants, >= 1 (default 9).
        step_size: Adam learning rate (default 0.01).
        initial_const: first constant ``c``; None (default) derives it per
            example from the margin ``m`` and its gradient ``g`` at ``x`` (one
            pass): ``m / ||g||^2``, half the smallest constant that reaches
            the boundary of a linear model (measured closer points than twice
            it: the search then approaches the threshold from below). The reference uses 1e-3 and spends
            several binary-search steps growing it tenfold.
        confidence: margin ``kappa`` required past the boundary (default 0).
        abort_early: stop an example's run when its loss has not fallen by
            0.01 % since the last check (checks every ``ceil(steps / 10)``
            iterations); stopped examples leave the batch (default True).
        const_rtol: an example leaves the binary search once its bracket of
            constants is tight: ``upper - lower <= const_rtol * upper``
            (default 0.3; 0 never).
        dist_rtol: an example leaves the binary search once a step that found
            an adversarial improved its best distance by less than this
            fraction (default 0.01; 0 never). With both at 0 every example runs
            all ``binary_search_steps``, as in the reference.
        warm_start: start Adam from the best point so far (the warm start's
            point, then CW's own best) instead of from ``x`` (default False, as
            in the reference; measured: slightly farther points on the small
            CNN of ``bench/boundary.py``, because Adam's first steps move every
            coordinate by about ``step_size`` and overshoot).

    Raises:
        InputError: a count below 1 or a non-positive step size or constant.
    """

    steps: int = 100
    binary_search_steps: int = 9
    step_size: float = 0.01
    initial_const: Optional[float] = None
    confidence: float = 0.0
    abort_early: bool = True
    const_rtol: float = 0.3
    dist_rtol: float = 0.01
    warm_start: bool = False

    def __post_init__(self) -> None:
        for name in ("steps", "binary_search_steps"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < 1:
                raise InputError(f"{name}={v!r}: expected an integer >= 1.")
        for name in ("step_size", "initial_const"):
            v = getattr(self, name)
            if v is None and name == "initial_const":
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
                raise InputError(f"{name}={v!r}: expected a finite number > 0.")
        for name in ("confidence", "const_rtol", "dist_rtol"):
            c = getattr(self, name)
            if isinstance(c, bool) or not isinstance(c, numbers.Real) or not math.isfinite(c) or c < 0:
                raise InputError(f"{name}={c!r}: expected a finite number >= 0.")


def _to_input(B: Backend, bounded: bool, w: Any, d: Any, a: Any, b: Any) -> Any:
    return B.tanh(w + d) * b + a if bounded else w + d


def _cw_step(B: Backend, f: Callable, bounded: bool,
             x: Any, w: Any, a: Any, b: Any, x_rec: Any, labels: Any, onehot: Any,
             const: Any, kappa: Any, lr: Any, bc1: Any, bc2: Any,
             d: Any, m: Any, v: Any, best: Any, best_d: Any, hit: Any):
    """One Adam iteration of CW for a batch, with the bookkeeping of the best point."""
    nd = len(x.shape)  # rank only: shapes may be unknown under tf.function
    axes = tuple(range(1, nd))

    def loss(dd):
        xa = _to_input(B, bounded, w, dd, a, b)
        logits = f(xa)
        hinge = B.maximum(margin(B, logits, onehot) + kappa, B.zeros_like(const))
        return const * hinge + B.sum((xa - x_rec) ** 2, axis=axes), logits

    value, logits, g = B.value_aux_and_grad(loss, d)
    xa = _to_input(B, bounded, w, d, a, b)  # cheaper than a tuple through the backend
    mis = misclassified(B, logits, labels)
    dist = l2_distance(B, xa, x)
    better = B.logical_and(mis, dist < best_d)
    best = B.where(expand_rows(B, better, nd), xa, best)
    best_d = B.where(better, dist, best_d)
    hit = B.logical_or(hit, mis)
    m = m * _BETA1 + g * (1 - _BETA1)
    v = v * _BETA2 + g * g * (1 - _BETA2)
    d = d - lr * (m / bc1) / (B.sqrt(v / bc2) + _ADAM_EPS)
    return d, m, v, value, best, best_d, hit


def _start(B: Backend, bounded: bool, warm: bool, best: Any, best_d: Any, w: Any, a: Any, b: Any) -> Any:
    """Adam's starting variable: the best point so far where there is one (``warm``), else ``x``."""
    if not warm:
        return B.zeros_like(w)
    if bounded:
        ratio = B.maximum(B.minimum((best - a) / b, B.zeros_like(w) + 1.0), B.zeros_like(w) - 1.0)
        d = B.atanh(ratio * 0.999999) - w
    else:
        d = best - w
    return B.where(expand_rows(B, best_d < _FAR, len(w.shape)), d, B.zeros_like(w))


def _margin_and_grad(B: Backend, bounded: bool, f: Callable, w: Any, a: Any, b: Any, onehot: Any):
    """Margin ``F_y - max_{j != y} F_j`` at ``d = 0`` and its gradient in the optimised variable."""
    def fn(dd):
        logits = f(_to_input(B, bounded, w, dd, a, b))
        return margin(B, logits, onehot), logits

    mrg, _, g = B.value_aux_and_grad(fn, B.zeros_like(w))
    return mrg, B.sum(g * g, axis=tuple(range(1, len(g.shape))))


def cw_search(B: Backend, f: Callable, attack: CW, x: Any, labels: Any, lo: Any, hi: Any,
              num_classes: int, cost: Cost, tick: Callable[[], None] = lambda: None,
              init: Optional[Tuple[Any, Any]] = None) -> Tuple[Any, Any]:
    """Run CW on every row of ``x``; return ``(points, found)`` (``x`` where not found).

    Args:
        init: optional warm start ``(points, found)`` (e.g. PGD's result): found
            points are the best so far, so CW keeps only closer ones and its
            returned points are never farther than these.

    Each binary-search step attacks the examples whose search goes on, in one
    batch; rows whose run aborted early leave it at the checks (compaction).
    """
    n = B.shape(x)[0]
    nd = len(B.shape(x))
    bounded = bool(np.all(np.isfinite(B.to_numpy(lo)))) and bool(np.all(np.isfinite(B.to_numpy(hi))))
    if bounded:
        a = (hi + lo) / 2.0
        b = (hi - lo) / 2.0
        ratio = B.maximum(B.minimum((x - a) / b, B.zeros_like(x) + 1.0), B.zeros_like(x) - 1.0)
        w = B.atanh(ratio * 0.999999)
        x_rec = B.tanh(w) * b + a
        a = a + B.zeros_like(x)  # per-row copies, so rows can be gathered
        b = b + B.zeros_like(x)
    else:
        a = b = B.zeros_like(x)
        w = x
        x_rec = x
    onehot = B.one_hot(labels, num_classes, like=x)
    zeros_n = B.zeros_like(B.sum(x, axis=tuple(range(1, nd))))
    if attack.initial_const is None:
        # informed start: on a linear margin m(d) = m0 + g.d the smallest constant
        # that reaches the boundary is 2 m0 / ||g||^2; start at half of it
        mrg, g2 = _margin_and_grad(B, bounded, f, w, a, b, onehot)
        cost.passes += n
        c0 = B.maximum(mrg, zeros_n + 1e-6) / B.maximum(g2, zeros_n + 1e-12)
        const = B.minimum(B.maximum(c0, zeros_n + 1e-6), zeros_n + 1e8)
    else:
        const = zeros_n + attack.initial_const
    lower = zeros_n
    upper = zeros_n + _NO_UPPER
    best, best_d = x, zeros_n + _FAR
    if init is not None:
        pts, ok = init
        d0 = l2_distance(B, pts, x)
        best_d = B.where(ok, d0, best_d)
        best = B.where(expand_rows(B, ok, nd), pts, x)
    kappa = B.constant([attack.confidence], like=x)
    lr = B.constant([attack.step_size], like=x)
    step = B.jit(_cw_step, f, B, f, bounded)
    check = max(1, math.ceil(attack.steps / 10))
    going = np.ones(n, dtype=bool)  # host: the example's binary search goes on
    steps_done = 0
    for _ in range(attack.binary_search_steps):
        idx = np.nonzero(going)[0]
        if idx.size == 0:
            break
        steps_done += 1
        it = B.asarray(idx, like=labels)
        full = idx.size == n
        rows = [v if full else B.gather(v, it) for v in (x, w, a, b, x_rec, labels, onehot, const, best, best_d)]
        xs, ws, as_, bs_, xr, ys, oh, cs, bst, bst_d = rows
        hit = B.not_equal(B.zeros_like(ys), B.zeros_like(ys))  # all False
        start_d = bst_d
        m = v = B.zeros_like(xs)
        d = _start(B, bounded, attack.warm_start, bst, bst_d, ws, as_, bs_)
        prev = None
        pos = np.arange(idx.size)  # rows of this step's batch still running, as positions in idx
        hits = B.zeros_like(cs)
        bests, bests_d = bst, bst_d
        for t in range(attack.steps):
            bc = B.constant([1 - _BETA1 ** (t + 1), 1 - _BETA2 ** (t + 1)], like=x)
            d, m, v, value, bst, bst_d, hit = step(
                xs, ws, as_, bs_, xr, ys, oh, cs, kappa, lr, bc[0:1], bc[1:2], d, m, v, bst, bst_d, hit)
            cost.passes += pos.size
            if not attack.abort_early or t % check:
                continue
            if prev is None:
                prev = value
                continue
            # per example: stop when the loss has not fallen by 0.01 % since the last check
            stop = B.to_numpy(value > prev * 0.9999).astype(bool)  # sync at checks only
            prev = value
            if stop.any():
                # rows leaving the batch hand their state back, the others go on
                out = B.asarray(pos[stop], like=labels)
                sel = B.asarray(np.nonzero(stop)[0], like=labels)
                bests = put_rows(B, bests, out, B.gather(bst, sel))
                bests_d = put_rows(B, bests_d, out, B.gather(bst_d, sel))
                hits = put_rows(B, hits, out, B.cast(B.gather(hit, sel), cs))
                keep = np.nonzero(~stop)[0]
                pos = pos[keep]
                if pos.size == 0:
                    break
                kt = B.asarray(keep, like=labels)
                xs, ws, as_, bs_, xr, ys, oh, cs, d, m, v, bst, bst_d, hit, prev = (
                    B.gather(u, kt) for u in (xs, ws, as_, bs_, xr, ys, oh, cs, d, m, v, bst, bst_d, hit, prev))
        if pos.size:
            out = B.asarray(pos, like=labels)
            bests = put_rows(B, bests, out, bst)
            bests_d = put_rows(B, bests_d, out, bst_d)
            hits = put_rows(B, hits, out, B.cast(hit, cs))
        # binary search on the device: found -> lower the ceiling, else raise the floor
        hit_b = hits > 0.5
        c_all = B.gather(const, it) if not full else const
        up = B.where(hit_b, B.minimum(B.gather(upper, it) if not full else upper, c_all),
                     B.gather(upper, it) if not full else upper)
        low = B.where(hit_b, B.gather(lower, it) if not full else lower,
                      B.maximum(B.gather(lower, it) if not full else lower, c_all))
        c_new = B.where(up < _NO_UPPER, (low + up) / 2.0, c_all * 10.0)
        if full:
            best, best_d, upper, lower, const = bests, bests_d, up, low, c_new
        else:
            best = put_rows(B, best, it, bests)
            best_d = put_rows(B, best_d, it, bests_d)
            upper = put_rows(B, upper, it, up)
            lower = put_rows(B, lower, it, low)
            const = put_rows(B, const, it, c_new)
        if attack.const_rtol > 0 or attack.dist_rtol > 0:
            # once per binary-search step: which examples have converged
            up_np, low_np, hit_np = (B.to_numpy(u) for u in (up, low, hit_b))
            gain = B.to_numpy(start_d - bests_d) / np.maximum(B.to_numpy(start_d), 1e-12)
            tight = (up_np < _NO_UPPER) & (up_np - low_np <= attack.const_rtol * up_np)
            stalled = hit_np.astype(bool) & (B.to_numpy(start_d) < _FAR) & (gain < attack.dist_rtol)
            going[idx[tight | stalled]] = False
        tick()
    for _ in range(attack.binary_search_steps - steps_done):
        tick()
    found = best_d < _FAR
    return best, found
