"""The attack protocol of the boundary search and the row-pool runner that drives every attack.

An attack is an object with a small interface, written once over the backend
primitives (:class:`Attack`):

* ``start(ctx, x, labels, prior, prior_d)``: the initial state of a batch of
  rows (one row per example, a dict of device tensors ``(R, ...)``), given the
  best point found so far by earlier attacks (``prior_d`` is ``FAR`` where
  none), which the attack may start from;
* ``step(B, f, state, lo, hi, proto)``: one step on every row of a batch (device
  only: no host read; compiled where the backend compiles);
* ``done(ctx, state)``: per-row bool tensor, the row's work is over (read by the
  runner every ``check`` steps and when rows run out of steps, never per step);
  None when rows never stop early (no read at all);
* ``finish(ctx, state)``: the attack's own best point of each row and its L2
  distance (``FAR`` where none), when the row leaves the pool.

plus ``steps`` (the most steps of a row), ``check`` (steps between host reads of
``done``, default 1), ``row_passes(ctx)`` (optional: forward+backward model rows
per row and step, for the pass count and the pool's size; default 1),
``row_backwards(ctx)`` (optional: how many of those rows are backward only,
through a forward shared with another; default 0), ``jobs()`` (units of work per
example, for the progress bar; default 1) and ``finish_keys`` (optional: the
state keys ``finish``/``end_job`` read, so that only those rows are gathered when
rows leave; default all).

**Several jobs per example.** An attack that runs an example more than once (PGD
at several radii, CW at several constants) implements, instead of ``start`` and
``finish``, the job hooks over a per-example *carry* (device tensors ``(N, ...)``
and host arrays ``(N,)``, the attack's state between the jobs of an example):

* ``begin(ctx, x, labels, prior, prior_d) -> carry``;
* ``start_job(ctx, carry, ex, it) -> state``: the rows of the next job of the
  examples ``ex`` (host int array; ``it`` their device index, None when ``ex``
  is every example in order: no gather needed);
* ``end_job(ctx, carry, ex, it, state, stopped) -> (carry, again)``: rows leave
  (``stopped``: host bool, the row's ``done`` flag; False for a row out of
  steps); ``again`` (host bool per row): the example has another job, queued
  behind the waiting ones;
* ``result(ctx, carry) -> (points, distances)``.

An attack with ``start``/``finish`` is run through the same hooks (one job per
example). An attack may also implement ``bind(ctx) -> attack``: the attack
specialised to one search (a setting its compiled step needs as a constant,
such as whether the bounds are finite); the runner drives what it returns.

:func:`run_attack` drives every attack through one :class:`~boundary_xg.search._pool.Pool`:
jobs enter as rows free up, leave when done or out of steps, and their places
are refilled at once, so the model sees full batches while work remains.
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
_JOB_METHODS = ("begin", "start_job", "step", "done", "end_job", "result")


def has_jobs(obj: Any) -> bool:
    """``obj`` implements the job hooks (several jobs per example) itself."""
    return all(callable(getattr(obj, m, None)) for m in _JOB_METHODS)


def is_attack(obj: Any) -> bool:
    """``obj`` implements the attack interface (``start``/``finish``, the job hooks, or ``bind``)."""
    if isinstance(obj, type):
        return False
    if callable(getattr(obj, "bind", None)):
        return hasattr(obj, "steps")
    stepwise = all(callable(getattr(obj, m, None)) for m in _ATTACK_METHODS)
    return (stepwise or has_jobs(obj)) and hasattr(obj, "steps")


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


def rows_of(B: Backend, t: Any, it: Any) -> Any:
    """The rows ``it`` (a device index) of ``t``, or ``t`` itself when ``it`` is None (every row, in order)."""
    return t if it is None else B.gather(t, it)


class _OneJob:
    """An attack with ``start``/``finish`` (one job per example) seen through the job hooks.

    ``finish`` runs on batches of leaving rows of about ``ctx.batch_size`` (the
    states of the rows that left since the last call, concatenated), not each
    time rows leave: an attack whose rows leave a few at a time (DeepFool stops
    rows after 1-3 steps, and with k classes its pool holds ``batch_size // k``
    rows) would otherwise run ``finish``'s forward pass on batches of 1-7 rows,
    measured at 6x the cost per row of a full batch in PyTorch on a CPU. The
    results are written into the per-example outputs once, in :meth:`result`
    (one scatter, not a copy of the ``(N, ...)`` outputs per leaving batch).
    ``finish`` works row by row, so the rows it sees together change nothing.
    """

    def __init__(self, attack: Any) -> None:
        self.attack = attack

    def begin(self, ctx: SearchContext, x: Any, labels: Any, prior: Any, prior_d: Any) -> Dict[str, Any]:
        return dict(x=x, labels=labels, prior=prior, prior_d=prior_d, pending=[], pending_rows=0, out=[])

    def start_job(self, ctx: SearchContext, carry: Dict[str, Any], ex: np.ndarray, it: Any) -> Dict[str, Any]:
        return self.attack.start(ctx, *(rows_of(ctx.B, carry[k], it) for k in ("x", "labels", "prior", "prior_d")))

    def end_job(self, ctx: SearchContext, carry: Dict[str, Any], ex: np.ndarray, it: Any, state: Dict[str, Any],
                stopped: np.ndarray) -> Tuple[Dict[str, Any], np.ndarray]:
        cap = max(1, int(ctx.batch_size))
        if carry["pending_rows"] and carry["pending_rows"] + ex.size > cap:
            self._flush(ctx, carry)  # keep finish's model call within batch_size rows
        carry["pending"].append((it, state))
        carry["pending_rows"] += int(ex.size)
        if carry["pending_rows"] >= cap:
            self._flush(ctx, carry)
        return carry, np.zeros(ex.size, dtype=bool)

    def _flush(self, ctx: SearchContext, carry: Dict[str, Any]) -> None:
        """``finish`` on the rows left since the last flush, as one batch."""
        B, parts = ctx.B, carry["pending"]
        if not parts:
            return
        if len(parts) == 1:
            it, state = parts[0]
        else:
            it = B.concat([p[0] for p in parts])
            state = {k: B.concat([p[1][k] for p in parts]) for k in parts[0][1]}
        carry["out"].append((it, *self.attack.finish(ctx, state)))
        carry["pending"], carry["pending_rows"] = [], 0

    def result(self, ctx: SearchContext, carry: Dict[str, Any]) -> Tuple[Any, Any]:
        B = ctx.B
        self._flush(ctx, carry)
        best, best_d = carry["x"], B.zeros_like(carry["prior_d"]) + FAR
        out = carry["out"]
        if not out:
            return best, best_d
        it, pts, d = out[0] if len(out) == 1 else (B.concat([o[i] for o in out]) for i in range(3))
        return put_rows(B, best, it, pts), put_rows(B, best_d, it, d)


def bound(ctx: SearchContext, attack: Any) -> Any:
    """The attack the runner drives: ``attack.bind(ctx)`` where it exists, one instance per configuration."""
    bind = getattr(attack, "bind", None)
    return canonical(bind(ctx) if callable(bind) else attack)


def run_attack(ctx: SearchContext, attack: Any, x: Any, labels: Any, prior: Any, prior_d: Any) -> Tuple[Any, Any]:
    """Run ``attack`` on every row of ``x`` through one row pool (the only runner of the search).

    Args:
        ctx: the search's shared context.
        x: ``(N, ...)`` inputs (float32 for a 16-bit model); labels ``(N,)``.
        prior, prior_d: the best point of the earlier attacks per example and
            its distance (``FAR`` where none), which an attack may start from.

    Returns:
        ``(points, distances)``: the attack's own best point per example
        (``x`` and ``FAR`` where it found none).

    Jobs wait in one queue (every example's first job in order, then each next
    job behind the waiting ones as its example's previous job ends). The host
    reads the ``done`` flags every ``attack.check`` steps and when rows run out
    of steps; finished rows leave, waiting jobs take their places (rows enter
    only on those boundaries: a row's step count stays a multiple of ``check``
    there, which an attack may rely on).
    """
    B = ctx.B
    n = B.shape(x)[0]
    attack = bound(ctx, attack)
    hooks = attack if has_jobs(attack) else _OneJob(attack)
    step = B.jit(type(attack).step, ctx.f, attack, B, ctx.f)
    rp = getattr(attack, "row_passes", None)
    row_passes = int(rp(ctx)) if callable(rp) else 1
    # of those, rows that are backward only (through a forward shared with another row)
    rb = getattr(attack, "row_backwards", None)
    row_backwards = int(rb(ctx)) if callable(rb) else 0
    jobs = getattr(attack, "jobs", None)
    total_jobs = n * (int(jobs()) if callable(jobs) else 1)
    keys = getattr(attack, "finish_keys", None)
    # a step runs row_passes model rows per pool row: keep each model call within batch_size
    pool = Pool(B, labels, max(1, ctx.batch_size // row_passes), max(1, int(getattr(attack, "check", 1))))
    carry = hooks.begin(ctx, x, labels, prior, prior_d)
    queue, head, finished = list(range(n)), 0, 0
    while True:
        room = pool.free()
        if room and head < len(queue):
            ex = np.asarray(queue[head:head + room], dtype=np.int64)
            head += ex.size
            in_order = ex.size == n and bool(np.all(ex == np.arange(n)))
            pool.add(hooks.start_job(ctx, carry, ex, None if in_order else pool.index(ex)), dict(ex=ex))
        if not pool.size:
            break
        pool.dev = step(pool.dev, ctx.lo, ctx.hi, ctx.proto)
        ctx.cost.passes += pool.size * (row_passes - row_backwards)
        ctx.cost.backwards += pool.size * row_backwards
        pool.tick()
        ended = pool.host["t"] >= attack.steps
        if not (pool.at_boundary() or ended.any()):
            continue
        flags = attack.done(ctx, pool.dev)
        # the only host read of the loop: every `check` steps, or when rows run out of steps
        stopped = np.zeros(pool.size, dtype=bool) if flags is None else B.to_numpy(flags).astype(bool)
        fin = stopped | ended
        if not fin.any():
            continue
        names = list(pool.dev) if keys is None else list(keys)
        state = dict(zip(names, pool.rows(names, fin)))
        ex = pool.host["ex"][fin]
        carry, again = hooks.end_job(ctx, carry, ex, pool.index(ex), state, stopped[fin])
        queue.extend(int(e) for e in ex[np.asarray(again, dtype=bool)])
        finished += int(fin.sum())
        ctx.tick(int(fin.sum()))
        pool.keep(~fin)
    ctx.tick(max(0, total_jobs - finished))  # jobs skipped (an example's search over early)
    return hooks.result(ctx, carry)


def keep_closer(B: Backend, z: Any, x0: Any, mis: Any, best: Any, best_d: Any, dz: Any = None) -> Tuple[Any, Any]:
    """``(best, best_d)`` with ``z`` where it is misclassified (``mis``) and closer to ``x0``.

    ``dz``: ``||z - x0||`` when the caller has it already (else computed here).
    """
    dz = l2_distance(B, z, x0) if dz is None else dz
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
