"""Carlini-Wagner L2 attack (Carlini and Wagner, "Towards Evaluating the Robustness
of Neural Networks", IEEE S&P 2017), untargeted, with its binary search over the
constant.

Inside finite bounds ``[lo, hi]`` the candidate is ``x(d) = tanh(w + d) * b + a``
with ``w = atanh(0.999999 * (x - a) / b)``, ``a = (lo + hi) / 2``, ``b = (hi - lo)
/ 2``, so every candidate respects the bounds; without bounds ``x(d) = x + d``.
Adam minimises ``c * max(0, F_y - max_{j != y} F_j + confidence) + ||x(d) -
x||^2`` per example (the distance it reports; foolbox measures from ``x(0)``,
which the clip inside ``atanh`` moves by at most ``1e-6 b``); the code keeps
``u = w + d``, the same optimisation. After each of ``binary_search_steps``
runs, ``c`` grows tenfold until an adversarial is found, then is bisected. At
every iteration the candidate just evaluated is kept if it is misclassified and
closer to ``x`` than the best so far.

The first constant is derived per example from the margin and its gradient at
``x`` (``initial_const=None``), so one or two steps find the bracket instead of
the reference's tenfold growth from 1e-3; an example leaves the binary search
once its bracket is tight or a step no longer improves its distance, and within
a step once its run aborts early. Every binary-search step of every example is a
job of the shared row pool (:func:`~boundary_xg.search.base.run_attack`, through
the job hooks of :class:`CWRun`), refilled with waiting jobs as rows finish
(passes are rows actually run; each row has its own Adam clock). The earlier
attacks' best point (``prior``, e.g. PGD's) gives the distance to beat.

All state (constants, bounds of the search, Adam moments, best points) lives on
the device, in float32 for a float16 or bfloat16 model, and is updated with
``where``; the host reads a flag vector only at the early-abort checks (every
``ceil(steps / 10)`` iterations) and once per binary-search step, never per
iteration.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..backends import Backend
from ..errors import InputError
from ..ops import expand_rows, row_chunks
from ._ops import l2_distance, margin, misclassified, model_logits, put_rows, where_rows
from .base import FAR, rows_of

_BETA1, _BETA2, _ADAM_EPS = 0.9, 0.999, 1e-8
_NO_UPPER = 1e10  # "upper bound of c not found yet"
_FAR = 1e30  # "no point yet"


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


    def jobs(self) -> int:
        """Units of work per example (one per binary-search step, for the progress bar)."""
        return self.binary_search_steps

    def bind(self, ctx: Any) -> "CWRun":
        """CW for one search: whether the bounds are finite (tanh space or not) is a constant of its
        compiled step (one host read of the bounds per search)."""
        B = ctx.B
        bounded = bool(np.all(np.isfinite(B.to_numpy(ctx.lo)))) and bool(np.all(np.isfinite(B.to_numpy(ctx.hi))))
        return CWRun(self, bounded)


@dataclass(frozen=True)
class CWRun:
    """:class:`CW` bound to one search (``bounded``: finite bounds), driven by the shared runner.

    Each (example, binary-search step) run is a job of the row pool: the carry
    holds per example the constant, its bracket, the best point and the number
    of steps run; a job ends after ``steps`` Adam iterations or when its run
    aborts early (read at the runner's checks); the example's next constant is
    then set on the device and its next job queued, unless its search is over.
    """

    cw: CW
    bounded: bool

    #: what a leaving job's bookkeeping reads (the runner gathers only these rows)
    finish_keys = ("bst", "bst_d", "hit", "start_d")

    @property
    def steps(self) -> int:
        """Adam iterations of one job."""
        return self.cw.steps

    @property
    def check(self) -> int:
        """Iterations between the early-abort checks: ``ceil(steps / 10)``."""
        return max(1, math.ceil(self.cw.steps / 10))

    def jobs(self) -> int:
        """Units of work per example (one per binary-search step, for the progress bar)."""
        return self.cw.binary_search_steps

    def _center(self, lo: Any, hi: Any) -> Tuple[Any, Any]:
        """``(a, b)``: the bounds' center and half-width (the bounds themselves without bounds: unused)."""
        return ((hi + lo) / 2.0, (hi - lo) / 2.0) if self.bounded else (lo, hi)

    def begin(self, ctx: Any, x: Any, labels: Any, prior: Any, prior_d: Any) -> Dict[str, Any]:
        """The first constants (informed: one forward+backward row per example), no bracket yet, and
        the best point so far (``prior`` where ``prior_d < FAR``: CW keeps only closer points)."""
        B, attack, bounded = ctx.B, self.cw, self.bounded
        n = B.shape(x)[0]
        a, b = self._center(ctx.lo, ctx.hi)
        zeros_n = B.zeros_like(B.sum(x, axis=tuple(range(1, len(B.shape(x))))))
        if attack.initial_const is None:
            # informed start: on a linear margin m(d) = m0 + g.d the smallest constant
            # that reaches the boundary is 2 m0 / ||g||^2; start at half of it
            parts = []
            for r0, r1 in row_chunks(n, ctx.batch_size):
                wc = _tanh_space(B, bounded, x[r0:r1], a, b)
                mrg, g2 = _margin_and_grad(B, bounded, ctx.f, wc, a, b, ctx.proto,
                                           B.one_hot(labels[r0:r1], ctx.num_classes, like=x))
                ctx.cost.passes += r1 - r0
                parts.append(B.maximum(mrg, B.zeros_like(mrg) + 1e-6) / B.maximum(g2, B.zeros_like(g2) + 1e-12))
            c0 = parts[0] if len(parts) == 1 else B.concat(parts)
            const = B.minimum(B.maximum(c0, zeros_n + 1e-6), zeros_n + 1e8)
        else:
            const = zeros_n + attack.initial_const
        ok = prior_d < FAR
        best_d = B.where(ok, l2_distance(B, prior, x), zeros_n + _FAR)
        best = where_rows(B, ok, prior, x)
        return dict(x=x, labels=labels, a=a, b=b, const=const, lower=zeros_n, upper=zeros_n + _NO_UPPER,
                    best=best, best_d=best_d, rounds=np.zeros(n, dtype=np.int64))

    def start_job(self, ctx: Any, carry: Dict[str, Any], ex: np.ndarray, it: Any) -> Dict[str, Any]:
        """A run of each example at its current constant: Adam from ``x`` (or the best point, ``warm_start``)."""
        B, attack = ctx.B, self.cw
        a, b = carry["a"], carry["b"]
        xs, ys = rows_of(B, carry["x"], it), rows_of(B, carry["labels"], it)
        ws = _tanh_space(B, self.bounded, xs, a, b)
        cs, bst, bst_d = (rows_of(B, carry[k], it) for k in ("const", "best", "best_d"))
        zeros = B.zeros_like(cs)
        ones = zeros + 1.0
        no = B.not_equal(B.zeros_like(ys), B.zeros_like(ys))
        return dict(xs=xs, ys=ys, oh=B.one_hot(ys, ctx.num_classes, like=xs), cs=cs,
                    u=_start(B, self.bounded, attack.warm_start, bst, bst_d, ws, a, b),
                    m=B.zeros_like(xs), v=B.zeros_like(xs), bst=bst, bst_d=bst_d, start_d=bst_d,
                    hit=no, prev=-ones, p1=ones, p2=ones, kappa=zeros + attack.confidence,
                    lr=zeros + attack.step_size, t=zeros, since=zeros, stop=no)

    def step(self, B: Backend, f: Callable, state: Dict[str, Any], lo: Any, hi: Any, proto: Any) -> Dict[str, Any]:
        """One Adam iteration of every row; at a row's checks (every ``check`` iterations) its abort flag."""
        a, b = self._center(lo, hi)
        out = _cw_step(B, f, self.bounded, state["xs"], a, b, proto, state["ys"], state["oh"], state["cs"],
                       state["kappa"], state["lr"], state["p1"], state["p2"],
                       *(state[k] for k in ("u", "m", "v", "bst", "bst_d", "hit", "prev")))
        u, m, v, value, bst, bst_d, hit, prev, p1, p2 = out
        new = dict(state, u=u, m=m, v=v, bst=bst, bst_d=bst_d, hit=hit, prev=prev, p1=p1, p2=p2)
        if self.cw.abort_early:
            # the runner reads the flags when a row's iterations reach a multiple of `check`
            # (rows enter on its boundaries): stop when the loss has not fallen by 0.01 %
            # since the last check (a row's first check compares with its first iterate)
            t = state["t"] + 1.0
            since = state["since"] + 1.0
            at = since >= float(self.check)
            new["stop"] = B.logical_and(B.logical_and(at, value > prev * 0.9999), t >= 2.0)
            new["prev"] = B.where(at, value, prev)
            new["since"] = B.where(at, B.zeros_like(since), since)
            new["t"] = t
        return new

    def done(self, ctx: Any, state: Dict[str, Any]) -> Any:
        """Rows whose run aborted early at their last check (None without ``abort_early``)."""
        return state["stop"] if self.cw.abort_early else None

    def end_job(self, ctx: Any, carry: Dict[str, Any], ex: np.ndarray, it: Any, state: Dict[str, Any],
                stopped: np.ndarray) -> Tuple[Dict[str, Any], np.ndarray]:
        """Keep each run's best point; the binary search over the constant, on the device."""
        B, attack = ctx.B, self.cw
        bst, bst_d, hit, start_d = (state[k] for k in ("bst", "bst_d", "hit", "start_d"))
        carry["best"] = put_rows(B, carry["best"], it, bst)
        carry["best_d"] = put_rows(B, carry["best_d"], it, bst_d)
        # found -> lower the ceiling, else raise the floor; x10 until a ceiling is known
        c, up, low = (B.gather(carry[k], it) for k in ("const", "upper", "lower"))
        up = B.where(hit, B.minimum(up, c), up)
        low = B.where(hit, low, B.maximum(low, c))
        carry["const"] = put_rows(B, carry["const"], it, B.where(up < _NO_UPPER, (low + up) / 2.0, c * 10.0))
        carry["upper"] = put_rows(B, carry["upper"], it, up)
        carry["lower"] = put_rows(B, carry["lower"], it, low)
        rounds = carry["rounds"]
        rounds[ex] += 1
        going = rounds[ex] < attack.binary_search_steps
        if attack.const_rtol > 0 or attack.dist_rtol > 0:
            # once per finished run: which examples have converged
            up_np, low_np, hit_np, s_np, b_np = (B.to_numpy(u) for u in (up, low, hit, start_d, bst_d))
            gain = (s_np - b_np) / np.maximum(s_np, 1e-12)
            tight = (up_np < _NO_UPPER) & (up_np - low_np <= attack.const_rtol * up_np)
            stalled = hit_np.astype(bool) & (s_np < _FAR) & (gain < attack.dist_rtol)
            going &= ~(tight | stalled)
        return carry, going

    def result(self, ctx: Any, carry: Dict[str, Any]) -> Tuple[Any, Any]:
        """The closest misclassified point seen (or the prior's), rounded to the model's dtype; ``FAR`` where none."""
        B = ctx.B
        x = carry["x"]
        points = B.cast(B.cast(carry["best"], ctx.proto), x)
        d = l2_distance(B, points, x)
        return points, B.where(carry["best_d"] < _FAR, d, B.zeros_like(d) + FAR)


def _to_input(B: Backend, bounded: bool, u: Any, a: Any, b: Any) -> Any:
    return B.tanh(u) * b + a if bounded else u


def _cw_step(B: Backend, f: Callable, bounded: bool,
             x: Any, a: Any, b: Any, proto: Any, labels: Any, onehot: Any,
             const: Any, kappa: Any, lr: Any, p1: Any, p2: Any,
             u: Any, m: Any, v: Any, best: Any, best_d: Any, hit: Any, prev: Any):
    """One Adam iteration of CW for a batch, with the bookkeeping of the best point.

    ``u`` is Adam's variable itself (``w + d``: the gradient in ``d`` is the
    gradient in ``u``, and the sum would cost a pass over the batch per
    iteration). The moments are kept unnormalised (``m / (1 - beta1)``, ``v /
    (1 - beta2)``) and are those of the gradient divided by a constant per
    coordinate (2, times ``b`` with bounds); those factors and the bias
    corrections are folded into a per-row step size and epsilon. The iterates are
    Adam's textbook ones (tests compare them in float64) with 18 element-wise
    passes over the batch per iteration in TensorFlow's graph instead of 22, and
    one input fewer to read: 5 % of a plain pass of the small CNN of
    ``bench/boundary.py`` at 256 rows.
    Each row has its own Adam clock: ``p1 = beta1**t``, ``p2 = beta2**t`` before
    the step (1 for a row that just entered), so rows that entered the pool at
    different times share a batch. ``prev`` (the loss at the last abort check)
    is negative for a fresh row and takes the loss of its first iterate. The
    state is float32 for a 16-bit model: the model sees its input cast to the
    dtype of ``proto`` (one of its input rows) and its logits are cast back.
    """
    nd = len(x.shape)  # rank only: shapes may be unknown under tf.function
    axes = tuple(range(1, nd))

    # the gradient is taken at the input only (the model's part); the distance
    # term and the tanh map are differentiated by hand, so they run once, outside
    # the recorded graph
    if bounded:
        th = B.tanh(u)
        xa = th * b + a
    else:
        xa = u

    def loss(z):
        # half the hinge: its gradient plus (x - x0) is half the loss's gradient in x,
        # one pass fewer than adding 2 (x - x0) to the whole one
        logits = model_logits(B, f, z, proto)
        return (const * 0.5) * B.maximum(margin(B, logits, onehot) + kappa, B.zeros_like(const)), logits

    half_hinge, logits, g = B.value_aux_and_grad(loss, xa)
    diff = xa - x
    dist2 = B.sum(diff * diff, axis=axes)
    value = half_hinge * 2.0 + dist2
    g = g + diff  # the gradient in x over 2
    if bounded:
        g = B.tanh_backward(th, g)  # dx/du = b (1 - tanh^2): now the gradient in u over 2b
        unit = b * 2.0
    else:
        unit = 2.0
    mis = misclassified(B, logits, labels)
    dist = B.sqrt(dist2)
    better = B.logical_and(mis, dist < best_d)
    best = where_rows(B, better, xa, best)
    best_d = B.where(better, dist, best_d)
    hit = B.logical_or(hit, mis)
    prev = B.where(prev < 0, value, prev)
    p1 = p1 * _BETA1
    p2 = p2 * _BETA2
    # Adam's step lr * mhat / (sqrt(vhat) + eps) with mhat = (1 - beta1) m / (1 - p1),
    # vhat = (1 - beta2) v / (1 - p2) for the unnormalised moments, as one per-row
    # scale and epsilon: r = sqrt((1 - p2) / (1 - beta2)). The moments are those of
    # g = gradient / unit: Adam's step does not change when a coordinate's gradient
    # is scaled by a constant, once its epsilon is divided by the same constant
    r = B.sqrt((1.0 - p2) / (1.0 - _BETA2))
    scale = expand_rows(B, lr * (1.0 - _BETA1) * r / (1.0 - p1), nd)
    eps_row = expand_rows(B, r * _ADAM_EPS, nd) / unit
    u, m, v = B.adam_update(u, m, v, g, scale, eps_row, _BETA1, _BETA2)
    return u, m, v, value, best, best_d, hit, prev, p1, p2


def _start(B: Backend, bounded: bool, warm: bool, best: Any, best_d: Any, w: Any, a: Any, b: Any) -> Any:
    """Adam's starting variable ``u``: the best point so far where there is one (``warm``), else ``x``'s ``w``.

    Always a new tensor: Adam may update it in place, and without bounds ``w`` is the rows of ``x``.
    """
    if not warm:
        return w if bounded else w + B.zeros_like(w)
    if bounded:
        ratio = B.maximum(B.minimum((best - a) / b, B.zeros_like(w) + 1.0), B.zeros_like(w) - 1.0)
        u = B.atanh(ratio * 0.999999)
    else:
        u = best
    return where_rows(B, best_d < _FAR, u, w)


def _margin_and_grad(B: Backend, bounded: bool, f: Callable, w: Any, a: Any, b: Any, proto: Any, onehot: Any):
    """Margin ``F_y - max_{j != y} F_j`` at ``u = w`` (``d = 0``) and its gradient in the optimised variable."""
    def fn(u):
        logits = model_logits(B, f, _to_input(B, bounded, u, a, b), proto)
        return margin(B, logits, onehot), logits

    mrg, _, g = B.value_aux_and_grad(fn, w)
    return mrg, B.sum(g * g, axis=tuple(range(1, len(g.shape))))


def _tanh_space(B: Backend, bounded: bool, x: Any, a: Any, b: Any) -> Any:
    """``w``: the optimised variable's origin for rows ``x`` (``x(w)`` is ``x`` up to ``1e-6 b``)."""
    if not bounded:
        return x
    ratio = B.maximum(B.minimum((x - a) / b, B.zeros_like(x) + 1.0), B.zeros_like(x) - 1.0)
    return B.atanh(ratio * 0.999999)
