"""Projected gradient descent over a list of radii (L2 or Linf), untargeted.

For each radius ``eps`` probed: a random start in the ``eps`` ball, then
``steps`` steps of gradient ascent on the cross-entropy of the label
(``x <- x + step_size * direction``, direction ``g/||g||_2`` or ``sign(g)``),
each followed by a projection onto the ball and a clip to the bounds. The step
is absolute (default ``2.5 * eps / steps``; the reference passes ``2 * eps /
steps`` as a *relative* step and so moves ``2 * eps**2 / steps``; see docs/boundary.md).

The radii are probed by bisection (``radius_search="bisect"``, default: the
largest first, then halving the bracket between the largest radius known to
fail and the smallest known to succeed) or in increasing order
(``"increasing"``, the reference's order); an example stops being attacked once
its smallest successful radius is known. PGD implements the job hooks of the
attack protocol (:mod:`~boundary_xg.search.base`): each (example, radius) run is
a job of the shared row pool (:func:`~boundary_xg.search.base.run_attack`). A
job ends when its example is frozen at its first misclassified iterate
(``early_exit``, closer to ``x`` than the last one; read at the runner's checks,
every ``ceil(steps / 10)`` steps, never per step) or after ``steps`` steps (then
one forward pass says whether the last iterate is misclassified); the example's
next radius goes back to the queue, and the freed rows take waiting jobs at
once, so the model sees full batches while work remains.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Sequence, Tuple, Union

import numpy as np

from ..backends import Backend
from ..errors import InputError
from ..ops import expand_rows
from ._ops import (_TINY, ascent_direction, clip_to, cross_entropy, l2_distance, misclassified, misclassified_at,
                   model_logits, per_sample_norm, project, put_rows, random_start, where_rows)
from .base import FAR, rows_of

#: the reference's L2 radii in normalised ImageNet units (the boundary paper's code's defaults)
DEFAULT_EPS = (36 / 255, 64 / 255, 0.3, 0.5, 0.7, 0.9, 1.1)


def _norm_name(norm: Any) -> str:
    key = str(norm).lower().replace("_", "").replace(" ", "")
    aliases = {"l2": "l2", "2": "l2", "linf": "linf", "inf": "linf", "li": "linf"}
    if key not in aliases:
        raise InputError(f"norm={norm!r}: expected 'l2' or 'linf'.")
    return aliases[key]


@dataclass(frozen=True)
class PGD:
    """Projected gradient descent over increasing radii (one attack of :func:`find_boundary`).

    Args:
        eps: radius or increasing sequence of radii, each > 0, in input units
            (default: the reference's ``[36/255, 64/255, 0.3, 0.5, 0.7, 0.9, 1.1]``).
        steps: gradient steps per radius, >= 1 (default 40).
        norm: ``"l2"`` (default) or ``"linf"``.
        step_size: absolute step; None means ``rel_step_size * eps / steps``.
        rel_step_size: the step as a multiple of ``eps / steps`` (default 2.5).
        random_start: start uniformly in the ball (default True).
        early_exit: freeze an example at its first misclassified iterate; frozen
            examples leave the batch (default True). False returns the last
            iterate, as the reference does.
        radius_search: ``"bisect"`` (default) probes the radii by bisection, the
            largest first: an example that fails at the largest radius costs one
            radius instead of all of them, one found there about ``log2(len(eps))``
            more. ``"increasing"`` tries every radius in increasing order, as the
            reference does. Both return the point at the smallest successful
            radius probed; they agree whenever success is monotone in the radius.

    Raises:
        InputError: a radius not > 0, radii not increasing, ``steps < 1``, an
            unknown ``norm`` or a step size not > 0.
    """

    eps: Union[float, Sequence[float]] = DEFAULT_EPS
    steps: int = 40
    norm: str = "l2"
    step_size: Optional[float] = None
    rel_step_size: float = 2.5
    random_start: bool = True
    early_exit: bool = True
    radius_search: str = "bisect"

    def __post_init__(self) -> None:
        eps = self.eps
        if isinstance(eps, numbers.Real) and not isinstance(eps, bool):
            eps = (eps,)
        try:
            eps = tuple(float(e) for e in eps)
        except (TypeError, ValueError) as err:
            raise InputError(f"eps={self.eps!r}: expected a number or a sequence of numbers.") from err
        if not eps:
            raise InputError("eps is empty: expected at least one radius > 0.")
        if not all(math.isfinite(e) and e > 0 for e in eps):
            raise InputError(f"eps={list(eps)}: every radius must be a finite number > 0.")
        if any(b <= a for a, b in zip(eps, eps[1:])):
            raise InputError(f"eps={list(eps)}: radii must be strictly increasing (smallest first).")
        object.__setattr__(self, "eps", eps)
        object.__setattr__(self, "norm", _norm_name(self.norm))
        if self.radius_search not in ("bisect", "increasing"):
            raise InputError(f"radius_search={self.radius_search!r}: expected 'bisect' or 'increasing'.")
        if isinstance(self.steps, bool) or not isinstance(self.steps, numbers.Integral) or self.steps < 1:
            raise InputError(f"steps={self.steps!r}: expected an integer >= 1.")
        for name in ("step_size", "rel_step_size"):
            v = getattr(self, name)
            if v is None and name == "step_size":
                continue
            if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
                raise InputError(f"{name}={v!r}: expected a finite number > 0.")

    def jobs(self) -> int:
        """Units of work per example (one per radius, for the progress bar)."""
        return len(self.eps)

    @property
    def check(self) -> int:
        """Steps between the runner's reads of the frozen flags: ``ceil(steps / 10)``."""
        return max(1, math.ceil(self.steps / 10))

    #: what a leaving job's bookkeeping reads (the runner gathers only these rows)
    finish_keys = ("xs", "ys")

    def begin(self, ctx: Any, x: Any, labels: Any, prior: Any, prior_d: Any) -> Dict[str, Any]:
        """Per example: the point at the smallest successful radius so far and the bracket of radii.

        ``prior`` is unused (PGD starts from ``x``).
        """
        n, k = ctx.B.shape(x)[0], len(self.eps)
        return dict(x=x, labels=labels, points=x,
                    fail=np.full(n, -1),  # largest radius index known to fail
                    succ=np.full(n, k),   # smallest radius index known to succeed (k: none)
                    nxt=np.full(n, k - 1 if self.radius_search == "bisect" else 0))  # radius of the next job

    def start_job(self, ctx: Any, carry: Dict[str, Any], ex: np.ndarray, it: Any) -> Dict[str, Any]:
        """A run at each example's next radius, from a random start in its ball."""
        B = ctx.B
        probe = carry["nxt"][ex]
        x0, ys = rows_of(B, carry["x"], it), rows_of(B, carry["labels"], it)
        radii = np.asarray(self.eps, dtype=np.float64)[probe]
        eps_t = B.cast(B.asarray(radii, like=x0), x0)
        step_t = B.cast(B.asarray(np.array([self.absolute_step(float(e)) for e in radii]), like=x0), x0)
        xs = clip_to(B, x0 + random_start(B, ctx.rng, x0, eps_t, self.norm), ctx.lo, ctx.hi) if self.random_start \
            else x0
        return dict(xs=xs, x0=x0, ys=ys, eps=eps_t, step=step_t, done=B.not_equal(B.zeros_like(ys), B.zeros_like(ys)))

    def step(self, B: Backend, f: Callable, state: Dict[str, Any], lo: Any, hi: Any, proto: Any) -> Dict[str, Any]:
        """One PGD step of every row at its own radius."""
        xs, done = _pgd_step(B, f, self.norm, self.early_exit, state["xs"], state["x0"], state["ys"],
                             state["eps"], state["step"], lo, hi, state["done"], proto)
        return dict(state, xs=xs, done=done)

    def done(self, ctx: Any, state: Dict[str, Any]) -> Any:
        """Rows frozen at a misclassified iterate (None without ``early_exit``: runs end after ``steps``)."""
        return state["done"] if self.early_exit else None

    def end_job(self, ctx: Any, carry: Dict[str, Any], ex: np.ndarray, it: Any, state: Dict[str, Any],
                stopped: np.ndarray) -> Tuple[Dict[str, Any], np.ndarray]:
        """Record each run's outcome at its radius; the examples whose search goes on probe their next radius."""
        B = ctx.B
        ok = stopped.copy()
        last = ~stopped
        if last.any():  # out of steps: is the last iterate misclassified? (one forward pass)
            pos = None if last.all() else B.asarray(np.nonzero(last)[0], like=state["ys"])
            xl, yl = rows_of(B, state["xs"], pos), rows_of(B, state["ys"], pos)
            ok[last] = B.to_numpy(misclassified_at(B, ctx.f, B.cast(xl, ctx.proto), yl)).astype(bool)
            ctx.cost.forwards += int(last.sum())
        if ok.any():
            pos = None if ok.all() else B.asarray(np.nonzero(ok)[0], like=state["ys"])
            rows = it if pos is None else B.gather(it, pos)
            carry["points"] = put_rows(B, carry["points"], rows, rows_of(B, state["xs"], pos))
        fail, succ, nxt = carry["fail"], carry["succ"], carry["nxt"]
        for e, o in zip(ex, ok):
            p = int(nxt[e])
            if o:
                succ[e] = p
            else:
                fail[e] = p
            nxt[e] = _next_probe(self, p, bool(o), int(fail[e]), int(succ[e]))
        return carry, nxt[ex] >= 0

    def result(self, ctx: Any, carry: Dict[str, Any]) -> Tuple[Any, Any]:
        """The point at the smallest successful radius (``x`` and ``FAR`` where none succeeded).

        The points are rounded to the model's dtype (what the model classified).
        """
        B = ctx.B
        x = carry["x"]
        found = B.asarray(carry["succ"] < len(self.eps), like=carry["labels"])
        points = B.cast(B.cast(carry["points"], ctx.proto), x)
        d = l2_distance(B, points, x)
        return points, B.where(found, d, B.zeros_like(d) + FAR)

    def absolute_step(self, eps: float) -> float:
        """The absolute step used at radius ``eps``."""
        if self.step_size is not None:
            return float(self.step_size)
        return self.rel_step_size * eps / self.steps


def _pgd_step(B: Backend, f: Callable, norm: str, early_exit: bool,
              x_adv: Any, x0: Any, labels: Any, eps: Any, step: Any, lo: Any, hi: Any, done: Any, proto: Any):
    """One PGD step for a batch (``eps``, ``step`` per row ``(N,)``); returns the iterates and frozen flags.

    The model sees its input in ``proto``'s dtype (the iterates are float32 for a 16-bit model).
    """

    def loss(z):
        logits = model_logits(B, f, z, proto)
        return cross_entropy(B, logits, labels), logits

    _, logits, g = B.value_aux_and_grad(loss, x_adv)
    nd = len(x_adv.shape)
    if norm == "l2":
        # step * g / ||g||: the per-row scale first, one pass over g
        gn = per_sample_norm(B, g, "l2")
        move = g * expand_rows(B, step / B.maximum(gn, B.zeros_like(gn) + _TINY), nd)
    else:
        move = ascent_direction(B, g, norm) * expand_rows(B, step, nd)
    new = clip_to(B, x0 + project(B, (x_adv - x0) + move, eps, norm), lo, hi)
    if early_exit:
        # the iterate just evaluated is misclassified: keep it, stop moving it
        done = B.logical_or(done, misclassified(B, logits, labels))
        new = where_rows(B, done, x_adv, new)
    return new, done


def _next_probe(attack: PGD, probe: int, ok: bool, fail: int, succ: int) -> int:
    """The radius index an example probes next, or -1 when its search is over."""
    k = len(attack.eps)
    if attack.radius_search == "bisect":
        return (fail + succ) // 2 if succ - fail > 1 else -1
    return probe + 1 if not ok and probe + 1 < k else -1
