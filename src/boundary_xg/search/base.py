"""The attack protocol of the boundary search and the row-pool runner that drives it.

An attack is an object with a small interface, written once over the backend
primitives (:class:`Attack`):

* ``start(ctx, x, labels, prior, prior_d)``: the initial state of a batch of
  rows (one row per example, a dict of device tensors ``(R, ...)``), given the
  best point found so far by earlier attacks (``prior_d`` is ``FAR`` where
  none), which the attack may start from;
* ``step(B, f, state, lo, hi, proto)``: one step on every row of a batch (device
  only: no host read; compiled where the backend compiles);
* ``done(ctx, state)``: per-row bool tensor, the row's work is over (read by the
  runner every ``check`` steps, never per step);
* ``finish(ctx, state)``: the attack's own best point of each row and its L2
  distance (``FAR`` where none), when the row leaves the pool.

plus ``steps`` (the most steps of a row), ``check`` (steps between host reads of
``done``), ``row_passes(ctx)`` (optional: forward+backward model rows per row and step,
for the pass count; default 1) and ``jobs`` (units of work per example, for the progress bar).

:func:`run_attack` drives any such attack through one :class:`~boundary_xg.search._pool.Pool`:
rows enter as examples wait, leave when done or out of steps, and their places
are refilled at once, so the model sees full batches while work remains.

An attack that runs its own pool of jobs (several runs per example) may instead
implement ``run(ctx, x, labels, prior, prior_d) -> (points, found)``; the pipeline
calls ``run`` when it exists.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Dict, Optional, Protocol, Tuple, runtime_checkable

import numpy as np

from ..backends import Backend
from ..errors import InputError
from ._ops import Cost, l2_distance, misclassified_at, put_rows, where_rows
from ._pool import Pool

#: "no point yet" (a finite sentinel: infinities turn into NaN in ``0 * inf``)
FAR = 1e30


@dataclass
class SearchContext:
    """What every attack of one search shares.

    Attributes:
        B: the backend; f: the model's logits function (from ``B.session``).
        lo, hi: the bounds, broadcastable to the rows (``-inf``/``inf`` when
            unbounded), in the dtype the attacks compute in (float32 for a
            16-bit model).
        proto: one input row in the model's dtype (the model sees this dtype).
        num_classes: the model's number of classes.
        rng: the backend's random generator (seeded by ``find_boundary``).
        cost: the pass counter (host-side, from shapes).
        batch_size: the most rows per model call.
        tick: progress callback (number of jobs finished).
    """

    B: Backend
    f: Callable
    lo: Any
    hi: Any
    proto: Any
    num_classes: int
    rng: Any
    cost: Cost
    batch_size: int
    tick: Callable[[int], None] = lambda k: None


@runtime_checkable
class Attack(Protocol):
    """A boundary-search attack driven by :func:`run_attack` (see the module docstring)."""

    steps: int

    def start(self, ctx: SearchContext, x: Any, labels: Any, prior: Any, prior_d: Any) -> Dict[str, Any]:
        """Initial state of rows ``x`` ``(R, ...)`` (float32 for a 16-bit model)."""

    def step(self, B: Backend, f: Callable, state: Dict[str, Any], lo: Any, hi: Any, proto: Any) -> Dict[str, Any]:
        """One step of every row; returns the new state (same keys and shapes)."""

    def done(self, ctx: SearchContext, state: Dict[str, Any]) -> Any:
        """Bool ``(R,)``: the row may leave the pool."""

    def finish(self, ctx: SearchContext, state: Dict[str, Any]) -> Tuple[Any, Any]:
        """``(points (R, ...), distances (R,))`` of leaving rows, distance ``FAR`` where none."""


_ATTACK_METHODS = ("start", "step", "done", "finish")


def is_attack(obj: Any) -> bool:
    """``obj`` implements the attack interface (the stepwise one or ``run``)."""
    if isinstance(obj, type):
        return False
    if callable(getattr(obj, "run", None)):
        return True
    return all(callable(getattr(obj, m, None)) for m in _ATTACK_METHODS) and hasattr(obj, "steps")


def check_int(name: str, value: Any, minimum: int) -> None:
    """Raise :class:`InputError` unless ``value`` is an integer ``>= minimum``."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral) or value < minimum:
        raise InputError(f"{name}={value!r}: expected an integer >= {minimum}.")


def check_real(name: str, value: Any, *, low: float = 0.0, strict: bool = True,
               high: Optional[float] = None) -> None:
    """Raise :class:`InputError` unless ``value`` is a finite number ``> low`` (``>=`` when not ``strict``)."""
    ok = not isinstance(value, bool) and isinstance(value, numbers.Real) and math.isfinite(value)
    ok = ok and (value > low if strict else value >= low) and (high is None or value <= high)
    if not ok:
        rel = ">" if strict else ">="
        rng = f" and <= {high}" if high is not None else ""
        raise InputError(f"{name}={value!r}: expected a finite number {rel} {low}{rng}.")


_CANONICAL: Dict[Any, Any] = {}


def canonical(attack: Any) -> Any:
    """One instance per distinct (hashable) attack configuration.

    Compiled steps are cached per static argument identity: a fresh but equal
    attack object (a default list built per call) reuses the first one's
    compiled step instead of tracing again.
    """
    try:
        return _CANONICAL.setdefault(attack, attack)
    except TypeError:  # unhashable: no sharing
        return attack


def run_attack(ctx: SearchContext, attack: Any, x: Any, labels: Any, prior: Any, prior_d: Any) -> Tuple[Any, Any]:
    """Run a stepwise ``attack`` on every row of ``x`` through one row pool.

    Args:
        ctx: the search's shared context.
        x: ``(N, ...)`` inputs (float32 for a 16-bit model); labels ``(N,)``.
        prior, prior_d: the best point of the earlier attacks per example and
            its distance (``FAR`` where none), which an attack may start from.

    Returns:
        ``(points, distances)``: the attack's own best point per example
        (``x`` and ``FAR`` where it found none).

    The host reads the ``done`` flags every ``attack.check`` steps (and when rows
    run out of steps); finished rows leave, waiting examples take their places.
    """
    B = ctx.B
    n = B.shape(x)[0]
    attack = canonical(attack)
    step = B.jit(type(attack).step, ctx.f, attack, B, ctx.f)
    rp = getattr(attack, "row_passes", None)
    row_passes = int(rp(ctx)) if callable(rp) else 1
    # a step runs row_passes model rows per pool row: keep each model call within batch_size
    pool = Pool(B, labels, max(1, ctx.batch_size // row_passes), max(1, int(getattr(attack, "check", 1))))
    best, best_d = x, B.zeros_like(prior_d) + FAR
    queue_head = 0
    while True:
        room = pool.free()
        if room and queue_head < n:
            ex = np.arange(queue_head, min(n, queue_head + room), dtype=np.int64)
            queue_head += ex.size
            if ex.size == n:
                rows = (x, labels, prior, prior_d)
            else:
                it = pool.index(ex)
                rows = tuple(B.gather(t, it) for t in (x, labels, prior, prior_d))
            pool.add(attack.start(ctx, *rows), dict(ex=ex))
        if not pool.size:
            break
        pool.dev = step(pool.dev, ctx.lo, ctx.hi, ctx.proto)
        ctx.cost.passes += pool.size * row_passes
        pool.tick()
        ended = pool.host["t"] >= attack.steps
        check = pool.at_boundary()
        if not (check or ended.any()):
            continue
        fin = ended.copy()
        if check:
            fin |= B.to_numpy(attack.done(ctx, pool.dev)).astype(bool)  # the only per-step host read
        if not fin.any():
            continue
        keys = list(pool.dev)
        state = dict(zip(keys, pool.rows(keys, fin)))
        pts, d = attack.finish(ctx, state)
        it = pool.index(pool.host["ex"][fin])
        best = put_rows(B, best, it, pts)
        best_d = put_rows(B, best_d, it, d)
        ctx.tick(int(fin.sum()))
        pool.keep(~fin)
    return best, best_d


def keep_closer(B: Backend, z: Any, x0: Any, mis: Any, best: Any, best_d: Any) -> Tuple[Any, Any]:
    """``(best, best_d)`` with ``z`` where it is misclassified (``mis``) and closer to ``x0``."""
    dz = l2_distance(B, z, x0)
    better = B.logical_and(mis, dz < best_d)
    return where_rows(B, better, z, best), B.where(better, dz, best_d)


def finish_last_iterate(ctx: SearchContext, state: Dict[str, Any]) -> Tuple[Any, Any]:
    """The rows' best point after one forward pass at their last iterate ``state["z"]``.

    For attacks whose step evaluates the model at the iterate it starts from:
    the iterate the last step moved to is not evaluated yet.
    """
    B = ctx.B
    z = state["z"]
    mis = misclassified_at(B, ctx.f, B.cast(z, ctx.proto), state["y"])
    ctx.cost.forwards += B.shape(z)[0]
    return keep_closer(B, z, state["x0"], mis, state["best"], state["best_d"])
