"""Projected gradient descent over a list of radii (L2 or Linf), untargeted.

For each radius ``eps`` in increasing order: a random start in the ``eps`` ball,
then ``steps`` steps of gradient ascent on the cross-entropy of the label
(``x <- x + step_size * direction``, direction ``g/||g||_2`` or ``sign(g)``),
each followed by a projection onto the ball and a clip to the bounds. The step
is absolute (default ``2.5 * eps / steps``; the reference passes ``2 * eps /
steps`` as a *relative* step and so moves ``2 * eps**2 / steps``, spec 2.3.1).

The radii are probed by bisection (``radius_search="bisect"``, default: the
largest first, then halving the bracket between the largest radius known to
fail and the smallest known to succeed) or in increasing order
(``"increasing"``, the reference's order); an example stops being attacked once
its smallest successful radius is known. Each (example, radius) run is a job of
a :class:`~boundary_xg.search._pool.Pool` of ``batch_size`` rows: a job ends when
its example is frozen at its first misclassified iterate (``early_exit``, closer
to ``x`` than the last one) or after ``steps`` steps, and its rows are refilled
at once with waiting jobs (the example's next radius, or another example), so
the model sees full batches while work remains; passes are rows actually run.
The host reads one flag vector every ``ceil(steps / 10)`` steps, never per step.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence, Tuple, Union

import numpy as np

from ..backends import Backend
from ..errors import InputError
from ..ops import expand_rows
from ._ops import (_TINY, NORMS, Cost, ascent_direction, clip_to, cross_entropy, misclassified, misclassified_at,
                   model_logits, per_sample_norm, project, put_rows, random_start, where_rows, widened)
from ._pool import Pool

#: the reference's L2 radii in normalised ImageNet units (spec 2.2)
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

    def run(self, ctx: Any, x: Any, labels: Any, best: Any, best_d: Any) -> Tuple[Any, Any]:
        """The attack protocol's entry for an attack with its own job pool: ``(points, found)``.

        ``x`` is in the model's dtype (``ctx.proto``'s); ``best``/``best_d`` are unused
        (PGD starts from ``x``).
        """
        return pgd_search(ctx.B, ctx.f, self, x, labels, ctx.lo, ctx.hi, ctx.rng, ctx.cost,
                          True, ctx.tick, ctx.batch_size)

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


def pgd_radius(B: Backend, f: Callable, attack: PGD, x: Any, labels: Any, eps: Any,
               lo: Any, hi: Any, rng: Any, cost: Cost, compact: bool = True) -> Tuple[Any, np.ndarray]:
    """Attack every row of ``x`` at its radius; return ``(points, misclassified)``.

    Args:
        eps: one radius, or one per row (a host sequence of length ``N``).
        compact: with ``attack.early_exit``, rows frozen at a misclassified
            iterate leave the batch at the checks (every ``ceil(steps / 10)``
            steps, the only host reads); otherwise the batch keeps its shape and
            the radius ends once every row is frozen.

    Returns:
        ``points`` shaped like ``x`` and a host bool array ``(N,)``: the point is
        misclassified (checked by one forward pass).
    """
    n = B.shape(x)[0]
    proto, x, lo, hi = widened(B, x, lo, hi)
    eps_np = np.array(np.broadcast_to(np.asarray(eps, dtype=np.float64), (n,)))
    step_np = np.array([attack.absolute_step(float(e)) for e in eps_np])
    eps_t = B.cast(B.asarray(eps_np, like=x), x)
    step_t = B.cast(B.asarray(step_np, like=x), x)
    if attack.random_start:
        x_adv = clip_to(B, x + random_start(B, rng, x, eps_t, attack.norm), lo, hi)
    else:
        x_adv = x
    done = B.not_equal(B.zeros_like(labels), B.zeros_like(labels))  # all False
    step = B.jit(_pgd_step, f, B, f, attack.norm, attack.early_exit)
    check = max(1, math.ceil(attack.steps / 10))
    out, ok = x_adv, np.zeros(n, dtype=bool)
    idx = np.arange(n)
    xs, x0, ys = x_adv, x, labels
    for t in range(attack.steps):
        xs, done = step(xs, x0, ys, eps_t, step_t, lo, hi, done, proto)
        cost.passes += idx.size
        if not attack.early_exit or (t + 1) % check or t + 1 == attack.steps:
            continue
        frozen = B.to_numpy(done).astype(bool)  # a sync every `check` steps, never per step
        if not compact:
            if frozen.all():
                break
            continue
        if frozen.any():
            # frozen rows hold their misclassified point: write them out, drop them
            out = put_rows(B, out, B.asarray(idx[frozen], like=labels),
                           B.gather(xs, B.asarray(np.nonzero(frozen)[0], like=labels)))
            ok[idx[frozen]] = True
            keep = np.nonzero(~frozen)[0]
            idx = idx[keep]
            if idx.size == 0:
                break
            kt = B.asarray(keep, like=labels)
            xs, x0, ys, eps_t, step_t, done = (B.gather(v, kt) for v in (xs, x0, ys, eps_t, step_t, done))
    if idx.size:
        mis = B.to_numpy(misclassified_at(B, f, B.cast(xs, proto), ys)).astype(bool)
        cost.forwards += idx.size
        out = xs if idx.size == n else put_rows(B, out, B.asarray(idx, like=labels), xs)
        ok[idx] = mis
    return B.cast(out, proto), ok


def _next_probe(attack: PGD, probe: int, ok: bool, fail: int, succ: int) -> int:
    """The radius index an example probes next, or -1 when its search is over."""
    k = len(attack.eps)
    if attack.radius_search == "bisect":
        return (fail + succ) // 2 if succ - fail > 1 else -1
    return probe + 1 if not ok and probe + 1 < k else -1


def _pgd_pool(B: Backend, f: Callable, attack: PGD, x: Any, labels: Any, lo: Any, hi: Any,
              rng: Any, cost: Cost, capacity: int, tick: Callable[[int], None]) -> Tuple[Any, np.ndarray]:
    """Every example's radius jobs through one :class:`Pool`; returns ``(points, found)``.

    A job is one PGD run of an example at one radius. It ends when the example is
    frozen at a misclassified iterate (read at the checks) or after ``steps``
    steps (then one forward pass says whether the last iterate is
    misclassified); the example's next radius (bisection or the next larger one)
    goes back to the queue, and the freed rows take waiting jobs at once.
    """
    n, k = B.shape(x)[0], len(attack.eps)
    proto, x, lo, hi = widened(B, x, lo, hi)
    radii = np.asarray(attack.eps, dtype=np.float64)
    steps_np = np.array([attack.absolute_step(float(e)) for e in radii])
    fail = np.full(n, -1)   # largest radius index known to fail
    succ = np.full(n, k)    # smallest radius index known to succeed (k: none)
    nxt = np.full(n, k - 1 if attack.radius_search == "bisect" else 0)
    queue = list(range(n))  # examples whose next job waits, in order
    head = 0
    points = x
    step = B.jit(_pgd_step, f, B, f, attack.norm, attack.early_exit)
    pool = Pool(B, labels, capacity, max(1, math.ceil(attack.steps / 10)))
    jobs = 0
    while True:
        room = pool.free()
        if room and head < len(queue):
            ex = np.asarray(queue[head:head + room], dtype=np.int64)
            head += ex.size
            probe = nxt[ex]
            if ex.size == n:  # the first admission of a full batch: no gather
                x0, ys = x, labels
            else:
                it = pool.index(ex)
                x0, ys = B.gather(x, it), B.gather(labels, it)
            eps_t = B.cast(B.asarray(radii[probe], like=x), x)
            step_t = B.cast(B.asarray(steps_np[probe], like=x), x)
            xs = clip_to(B, x0 + random_start(B, rng, x0, eps_t, attack.norm), lo, hi) if attack.random_start else x0
            done = B.not_equal(B.zeros_like(ys), B.zeros_like(ys))  # all False
            pool.add(dict(xs=xs, x0=x0, ys=ys, eps=eps_t, step=step_t, done=done), dict(ex=ex, probe=probe))
        if not pool.size:
            break
        d = pool.dev
        d["xs"], d["done"] = step(d["xs"], d["x0"], d["ys"], d["eps"], d["step"], lo, hi, d["done"], proto)
        cost.passes += pool.size
        pool.tick()
        ended = pool.host["t"] >= attack.steps
        check = attack.early_exit and pool.at_boundary()
        if not (check or ended.any()):
            continue
        # the only host reads: the frozen flags, every `check` steps (and when runs end)
        frozen = B.to_numpy(d["done"]).astype(bool) if attack.early_exit else np.zeros(pool.size, bool)
        fin = frozen | ended
        if not fin.any():
            continue
        ok = frozen.copy()
        last = ended & ~frozen
        if last.any():
            xl, yl = pool.rows(("xs", "ys"), last)
            ok[last] = B.to_numpy(misclassified_at(B, f, B.cast(xl, proto), yl)).astype(bool)
            cost.forwards += int(last.sum())
        if ok.any():
            (good,) = pool.rows(("xs",), ok)
            points = put_rows(B, points, pool.index(pool.host["ex"][ok]), good)
        for e, p, o in zip(pool.host["ex"][fin], pool.host["probe"][fin], ok[fin]):
            if o:
                succ[e] = p
            else:
                fail[e] = p
            nxt[e] = _next_probe(attack, int(p), bool(o), int(fail[e]), int(succ[e]))
            if nxt[e] >= 0:
                queue.append(int(e))
        jobs += int(fin.sum())
        tick(int(fin.sum()))
        pool.keep(~fin)
    tick(max(0, n * k - jobs))  # the radii skipped count as done for the progress bar
    return B.cast(points, proto), succ < k


def pgd_search(B: Backend, f: Callable, attack: PGD, x: Any, labels: Any, lo: Any, hi: Any,
               rng: Any, cost: Cost, compact: bool = True, tick: Callable[[int], None] = lambda k: None,
               batch_size: Optional[int] = None) -> Tuple[Any, Any]:
    """Run ``attack`` over its radii; return ``(points, found)`` for every row of ``x``.

    Args:
        compact: True (default) runs the radius jobs of all examples through a
            pool of ``batch_size`` rows (None: all of ``x``) that refills the
            rows of finished jobs with waiting ones. False keeps the full batch
            and masks finished examples with ``where`` (``radius_search=
            "increasing"`` only; kept to measure).
        tick: called with the number of radius jobs finished (progress bar).

    Returns:
        ``points`` holds the point found at the smallest successful radius, or
        ``x`` where no radius succeeded; ``found`` is a bool tensor on the device.
    """
    n = B.shape(x)[0]
    nd = len(B.shape(x))
    points = x
    if compact:
        points, found = _pgd_pool(B, f, attack, x, labels, lo, hi, rng, cost,
                                  n if batch_size is None else batch_size, tick)
        return points, B.asarray(found, like=labels)  # bool tensor on the device
    found_t = B.not_equal(B.zeros_like(labels), B.zeros_like(labels))
    for eps in attack.eps:
        adv, ok = pgd_radius(B, f, attack, x, labels, eps, lo, hi, rng, cost, compact=False)
        ok_t = B.asarray(ok, like=labels)
        new = B.logical_and(ok_t, B.logical_not(found_t))
        points = where_rows(B, new, adv, points)
        found_t = B.logical_or(found_t, ok_t)
        tick(n)
        if bool(np.all(B.to_numpy(found_t))):  # once per radius: nothing left to attack
            tick(n * len(attack.eps[attack.eps.index(eps) + 1:]))
            break
    return points, found_t
