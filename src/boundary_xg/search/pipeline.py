"""The boundary search: run the attacks, keep per example the closest misclassified point.

A *boundary point* of ``x`` (label ``y``) is a nearby point the model does not
classify as ``y``. The pipeline runs its attacks in order (by default box-aware
DeepFool, then box-aware FMN; the ``"reference"`` preset: PGD over the
reference's radii, then Carlini-Wagner), refines every attack's points along
``x -> point`` (:mod:`~boundary_xg.search.refine`) and for each example keeps the candidate that is
misclassified and closest to ``x`` in L2 (input space). Examples that
no attack could move across the boundary are reported (``found`` False, distance
``inf``, the point left at ``x``, and a warning with their count), never silently
replaced by a non-adversarial point as the reference does (a defect of its code; docs/boundary.md). An example
the model already misclassifies is its own boundary point (distance 0).
"""

from __future__ import annotations

import numbers
import sys
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .. import _entry
from ..backends import Backend
from ..errors import AlreadyMisclassifiedWarning, BoundaryNotFoundWarning, InputError  # noqa: F401
from ..errors import warn as _warn
from ..ops import default_batch_size, predict
from ._ops import NORMS, Cost, l2_distance, margin, misclassified, put_rows, where_rows, widened
from .base import FAR, SearchContext, is_attack, run_attack
from .presets import PRESETS
from .refine import DEFAULT_REFINE_STEPS
from .refine import refine as refine_points




@dataclass
class BoundaryResult:
    """The outcome of :func:`find_boundary`.

    Attributes:
        points: the closest misclassified point per example, shaped like ``x``
            (``x`` itself where none was found, or where ``x`` is already
            misclassified).
        distances: ``(N,)`` L2 distance from ``x`` to ``points`` in input space;
            0 for already misclassified examples, ``inf`` where none was found.
        found: ``(N,)`` bool, a boundary point was found.
        passes: forward+backward passes run per input (model rows / N).
        forwards: forward-only passes run per input.
        backwards: backward-only rows run per input: further backward passes through
            a forward already counted in ``passes`` (DeepFool's competing classes in
            PyTorch, which share one forward per row; 0 in TensorFlow, which runs a
            forward+backward row per class).
    """

    points: Any
    distances: Any
    found: Any
    passes: float = 0.0
    forwards: float = 0.0
    backwards: float = 0.0

    def __iter__(self):
        """Unpack as ``points, distances, found = result``."""
        return iter((self.points, self.distances, self.found))


def check_attacks(attacks: Any, refine: Optional[int] = None) -> Tuple[List[Any], int]:
    """``(attacks, refine_steps)`` from ``attacks`` and ``refine``; raise :class:`InputError` otherwise.

    ``attacks`` is None (the ``"default"`` preset), a preset name (``"default"``,
    ``"reference"``), one attack or a list of attacks (objects implementing
    :class:`~boundary_xg.search.base.Attack`). ``refine`` is the precision of
    the refinement in bits (None: the preset's, and
    :data:`~boundary_xg.search.refine.DEFAULT_REFINE_STEPS` for a list).
    """
    if refine is not None and (isinstance(refine, bool) or not isinstance(refine, numbers.Integral)
                               or refine < 0):
        raise InputError(f"refine={refine!r}: expected an integer >= 0 (refinement precision in bits, "
                         "0: none) or None.")
    steps = DEFAULT_REFINE_STEPS
    if attacks is None:
        attacks = "default"
    if isinstance(attacks, str):
        if attacks not in PRESETS:
            raise InputError(f"attacks={attacks!r}: expected a preset name in {sorted(PRESETS)} or a list of "
                             "attacks.")
        factory, steps = PRESETS[attacks]
        attacks = factory()
    elif is_attack(attacks):
        attacks = [attacks]
    try:
        attacks = list(attacks)
    except TypeError as err:
        raise InputError(f"attacks={attacks!r}: expected a preset name or a list of attacks "
                         "(objects implementing boundary_xg.search.Attack).") from err
    if not attacks:
        raise InputError("attacks=[]: expected at least one attack.")
    for i, a in enumerate(attacks):
        if not is_attack(a):
            raise InputError(f"attacks[{i}]={a!r}: not an attack; expected an object implementing "
                             "boundary_xg.search.Attack (steps, step, done, and start/finish or the job hooks).")
        steps_a = getattr(a, "steps", None)
        if steps_a is not None and (isinstance(steps_a, bool) or not isinstance(steps_a, numbers.Integral)
                                    or steps_a < 1):
            raise InputError(f"attacks[{i}] has steps={steps_a!r}: expected an integer >= 1.")
        norm = getattr(a, "norm", "l2")
        if norm not in NORMS:
            raise InputError(f"attacks[{i}] has norm={norm!r}: expected 'l2' or 'linf'.")
    return attacks, (steps if refine is None else int(refine))


def prepare_bounds(B: Backend, bounds: Any, x: Any) -> Tuple[Any, Any]:
    """``(lo, hi)`` tensors broadcastable to ``x`` from ``bounds``; check they contain ``x``.

    ``bounds`` is None (unbounded) or ``(low, high)``, each a scalar or an array
    broadcastable to one example (per channel: ``(C, 1, 1)`` for NCHW, ``(C,)``
    for NHWC).

    Raises:
        InputError: malformed bounds, ``low >= high`` somewhere, or ``x`` outside.
    """
    shape = B.shape(x)
    if bounds is None:
        lo, hi = np.array(-np.inf), np.array(np.inf)
    else:
        try:
            lo, hi = bounds
            lo = np.asarray(B.to_numpy(lo) if B.is_tensor(lo) else lo, dtype=np.float64)
            hi = np.asarray(B.to_numpy(hi) if B.is_tensor(hi) else hi, dtype=np.float64)
        except (TypeError, ValueError) as err:
            raise InputError(f"bounds={bounds!r}: expected (low, high), scalars or per-channel arrays.") from err
        for name, v in (("low", lo), ("high", hi)):
            try:
                ok = np.broadcast_shapes(v.shape, shape[1:]) == tuple(shape[1:])
            except ValueError:
                ok = False
            if not ok:
                raise InputError(
                    f"bounds {name} has shape {v.shape}; expected a scalar or an array that "
                    f"broadcasts to one example's shape {tuple(shape[1:])} (e.g. (C, 1, 1) for NCHW)."
                )
            if np.any(np.isnan(v)):
                raise InputError(f"bounds {name} contains NaN.")
        if np.any(lo >= hi):
            raise InputError("bounds=(low, high) needs low < high everywhere.")
        xn = B.to_numpy(x).astype(np.float64)
        tol = 1e-5 * max(1.0, float(np.max(np.abs(np.where(np.isfinite(hi - lo), hi - lo, 1.0)))))
        below, above = float(np.max(lo - xn)), float(np.max(xn - hi))
        if below > tol or above > tol:
            raise InputError(
                f"bounds=(low, high) do not contain x: x goes {max(below, above):.4g} beyond them "
                f"(x in [{xn.min():.4g}, {xn.max():.4g}]). Pass the bounds of the space x lives in "
                "(e.g. the normalised range of valid pixels), or bounds=None for no bounds."
            )
    def as_tensor(v: np.ndarray) -> Any:
        v = v.reshape((1,) + v.shape) if v.ndim else v.reshape((1,) * len(shape))
        return B.cast(B.asarray(v, like=x), x)

    return as_tensor(lo), as_tensor(hi)


def _progress_bar(progress: Optional[bool], total: int):
    """A tqdm bar when ``progress`` is True, or None and stderr is a terminal; else None.

    It counts jobs: ``attack.jobs()`` per example (one for DeepFool and FMN, one per
    radius for PGD, one per binary-search step for CW).
    """
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional
        return None
    return tqdm(total=total, desc="boundary search", unit="job", leave=False)


def _jobs(attack: Any) -> int:
    jobs = getattr(attack, "jobs", None)
    return int(jobs()) if callable(jobs) else 1


def boundary_search(B: Backend, f: Callable, x: Any, labels: Any, *, attacks: Sequence[Any],
                    lo: Any, hi: Any, num_classes: int, seed: Optional[int] = 0,
                    batch_size: Optional[int] = None, progress: Optional[bool] = None,
                    refine: int = DEFAULT_REFINE_STEPS, warn: bool = True) -> BoundaryResult:
    """The search over backend tensors (``x`` ``(N, ...)``, ``labels`` ``(N,)``); see :func:`find_boundary`.

    Each attack runs over all examples at once through a pool of ``batch_size``
    rows (None: all of them) whose finished rows are refilled with waiting work
    (:func:`~boundary_xg.search.base.run_attack`, the one runner of every attack),
    so model calls stay full while work remains; the loops run over steps,
    never over examples. Each attack's points are refined along ``x -> point``
    (to ``2**-refine`` of their distance) and the closest misclassified point
    per example is kept.
    """
    # the search is not differentiable: an input that records gradients (a torch
    # tensor with requires_grad) would make every step record a graph, and CW's
    # in-place Adam refuses tensors that record
    x = B.stop_gradient(x)
    n = B.shape(x)[0]
    nd = len(B.shape(x))
    bs = n if batch_size is None else int(batch_size)
    rng = B.rng(seed, like=x)
    cost = Cost()
    bar = _progress_bar(progress, sum(_jobs(a) for a in attacks) * n)
    tick = (lambda k: bar.update(k)) if bar is not None else (lambda k: None)
    try:
        logits_x = predict(B, f, x, bs)
        already = misclassified(B, logits_x, labels)
        cost.forwards += n
        already_np = B.to_numpy(already).astype(bool)
        already_count = int(already_np.sum())
        # rows not attacked are already misclassified: distance 0, point x
        best, best_d = x, B.zeros_like(B.sum(x, axis=tuple(range(1, nd))))
        todo = np.nonzero(~already_np)[0]
        if todo.size:
            it = B.asarray(todo, like=labels)
            xs = x if todo.size == n else B.gather(x, it)
            ys = labels if todo.size == n else B.gather(labels, it)
            # the attacks compute in float32 for a 16-bit model; the model sees its own dtype
            proto, xw, lo_w, hi_w = widened(B, xs, lo, hi)
            ctx = SearchContext(B, f, lo_w, hi_w, proto, num_classes, rng, cost, bs, tick)
            # the margins at x, for the refinement's first secant (the logits are already here)
            lx = logits_x if todo.size == n else B.gather(logits_x, it)
            m0 = margin(B, B.cast(lx, xw), B.one_hot(ys, num_classes, like=xw))
            sub, sub_d = xw, B.zeros_like(B.sum(xw, axis=tuple(range(1, nd)))) + FAR
            raw = None  # the unrefined point behind each kept one
            for attack in attacks:
                cand, cand_d = run_attack(ctx, attack, xw, ys, sub, sub_d)
                ok = cand_d < FAR
                refined = refine_points(ctx, xw, cand, ys, refine, found=ok, margins=m0)
                d = B.where(ok, l2_distance(B, refined, xw), B.zeros_like(sub_d) + FAR)
                closer = d < sub_d
                sub = where_rows(B, closer, refined, sub)
                raw = cand if raw is None else where_rows(B, closer, cand, raw)
                sub_d = B.where(closer, d, sub_d)
            # verify once: every kept point must be misclassified (numerical ties)
            sub = B.cast(sub, proto)
            ok_final = B.logical_and(misclassified(B, predict(B, f, sub, bs), ys), sub_d < FAR)
            cost.forwards += int(todo.size)
            if refine and not bool(np.all(B.to_numpy(B.logical_or(ok_final, sub_d >= FAR)))):
                # a refined point within rounding of the boundary can flip in another batch
                # (16-bit models): fall back to the attack's own point there
                raw = B.cast(raw, proto)
                ok_raw = B.logical_and(misclassified(B, predict(B, f, raw, bs), ys), sub_d < FAR)
                cost.forwards += int(todo.size)
                use_raw = B.logical_and(ok_raw, B.logical_not(ok_final))
                sub = where_rows(B, use_raw, raw, sub)
                ok_final = B.logical_or(ok_final, use_raw)
            sub_d = B.where(ok_final, B.cast(l2_distance(B, B.cast(sub, xw), xw), sub_d),
                            B.zeros_like(sub_d) + float("inf"))
            sub = where_rows(B, ok_final, sub, xs)
            sub_d = B.cast(sub_d, best_d)
            if todo.size == n:
                best, best_d = sub, sub_d
            else:
                best = put_rows(B, best, it, sub)
                best_d = put_rows(B, best_d, it, sub_d)
    finally:
        if bar is not None:
            bar.close()
    points_t, dist_t = best, best_d
    found = dist_t < float("inf")
    if warn:
        missing = int(np.sum(~B.to_numpy(found).astype(bool)))
        if already_count:
            _warn(
                f"{already_count} of {n} examples are already misclassified by the model (its "
                "prediction differs from labels); their boundary point is x itself (distance 0). "
                "Pass the model's predictions as labels to explain what it predicts.",
                AlreadyMisclassifiedWarning
            )
        if missing:
            _warn(
                f"no boundary point found for {missing} of {n} examples (found=False, distance "
                "inf, point left at x); try more steps, other attacks, or wider bounds.",
                BoundaryNotFoundWarning
            )
    return BoundaryResult(points_t, dist_t, found, cost.passes / n, cost.forwards / n, cost.backwards / n)


def find_boundary(model: Any, x: Any, labels: Any = None, attacks: Any = None, bounds: Any = None,
                  seed: Optional[int] = 0, batch_size: Optional[int] = None,
                  progress: Optional[bool] = None, backend: Optional[str] = None,
                  refine: Optional[int] = None) -> BoundaryResult:
    """The closest misclassified point to each example that the attacks find.

    Args:
        model: a ``torch.nn.Module`` or a Keras 3 model (TensorFlow backend).
        x: inputs ``(N, ...)`` in the model's layout (NCHW torch, NHWC Keras),
            NumPy or a native tensor (searched detached: the search is not
            differentiable, and ``x`` is never written to).
        labels: classes to move away from: indices ``(N,)``, one-hot ``(N, C)``,
            or None for the model's predictions.
        attacks: a preset name, ``"default"`` (None: box-aware multi-class
            ``DeepFool(steps=3, candidates=6)`` then box-aware ``FMN(steps=70,
            init="best", alpha=(0.3, 0.01))``, at most 88 model gradient
            rows per input) or ``"reference"`` (the
            reference's ``[PGD(), CW()]``: L2 PGD over 7 radii x 40 steps, then
            Carlini-Wagner 9 x 100, without refinement); or a list of attacks
            run in order (:class:`DeepFool`, :class:`FMN`, :class:`PGD`,
            :class:`CW`, or any object implementing
            :class:`~boundary_xg.search.base.Attack`).
        bounds: ``(low, high)`` of the input space, scalars or per-channel arrays
            broadcastable to one example; None (default) for no bounds.
        seed: seed of the random starts (default 0; None: fresh randomness).
        batch_size: rows per model call: at most this many examples are attacked
            at once, and the rows of finished work are refilled with waiting
            work, so calls stay full (default: 256 rows on a GPU; on a CPU
            2**19 (torch) or 2**20 (TensorFlow) input elements, see :func:`boundary_xg.ops.default_batch_size`).
        progress: tqdm bar over batches and stages; None (default) shows it when
            stderr is a terminal, False never.
        backend: "torch" or "tensorflow" to override the detection.
        refine: precision in bits of the refinement (forward passes only) that
            pulls every attack's points back along ``x -> point`` to just past
            the boundary, within ``2**-refine`` of their distance (None: the
            preset's: 12, and 0 (none) for ``"reference"``; 12 for a list).
            Rows leave as soon as they are that close: a few forward rows per
            found candidate (see :mod:`boundary_xg.search.refine`).

    Returns:
        :class:`BoundaryResult` with ``points`` (caller's type, shaped like
        ``x``), ``distances`` ``(N,)`` and ``found`` ``(N,)`` (caller's type),
        and the passes run per input.

    Raises:
        InputError: bad ``x``, ``bounds`` not containing ``x``, an unknown
            preset or an object that is not an attack, a negative ``refine``
            (the attacks check their own settings when constructed).
        LabelError: labels that do not fit the model.

    Example:
        >>> res = find_boundary(model, x, labels, attacks=[PGD(eps=[0.25, 0.5], steps=20)], bounds=(0, 1))
        >>> res.points, res.distances, res.found
    """
    attacks, refine = check_attacks(attacks, refine)
    if batch_size is not None and (isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1):
        raise InputError(f"batch_size={batch_size!r}: expected an integer >= 1 or None.")
    B = _entry.resolve_backend(model, x, backend)
    with _entry.entry(B, model):
        xt, kind, np_dtype = _entry.prepare_x(B, model, x)
        lo, hi = prepare_bounds(B, bounds, xt)
        if batch_size is None:
            batch_size = default_batch_size(B, xt)
        with B.session(model, mode="eval") as f:
            num_classes = _entry.probe(B, model, f, xt)
            y = _entry.prepare_labels(B, f, labels, xt, num_classes, batch_size)
            res = boundary_search(B, f, xt, y, attacks=attacks, lo=lo, hi=hi, num_classes=num_classes,
                                  seed=seed, batch_size=batch_size, progress=progress, refine=refine)
        conv = lambda t: _entry.to_caller(B, t, kind, np_dtype)  # noqa: E731
        return BoundaryResult(conv(res.points), conv(res.distances), conv(res.found), res.passes, res.forwards,
                              res.backwards)
