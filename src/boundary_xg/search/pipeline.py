"""The boundary search: run the attacks, keep per example the closest misclassified point.

A *boundary point* of ``x`` (label ``y``) is a nearby point the model does not
classify as ``y``. The pipeline runs its attacks in order (by default PGD over
increasing radii, then Carlini-Wagner), and for each example keeps the candidate
that is misclassified and closest to ``x`` in L2 (input space). Examples that
no attack could move across the boundary are reported (``found`` False, distance
``inf``, the point left at ``x``, and a warning with their count), never silently
replaced by a non-adversarial point as the reference does (spec 2.9). An example
the model already misclassifies is its own boundary point (distance 0).
"""

from __future__ import annotations

import sys
import warnings
from dataclasses import dataclass
from typing import Any, Callable, List, Optional, Sequence, Tuple

import numpy as np

from .. import _entry
from ..backends import Backend
from ..errors import InputError
from ..ops import default_batch_size, predict
from ._ops import Cost, l2_distance, misclassified, put_rows, where_rows
from .cw import CW, cw_search
from .pgd import PGD, pgd_search


class BoundaryNotFoundWarning(UserWarning):
    """Some examples could not be moved across the decision boundary."""


class AlreadyMisclassifiedWarning(UserWarning):
    """Some examples are already classified differently from their labels."""


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
    """

    points: Any
    distances: Any
    found: Any
    passes: float = 0.0
    forwards: float = 0.0

    def __iter__(self):
        """Unpack as ``points, distances, found = result``."""
        return iter((self.points, self.distances, self.found))


def default_attacks() -> List[Any]:
    """The default pipeline: L2 PGD over the reference's radii (40 steps), then CW (100 steps)."""
    return [PGD(), CW()]


def check_attacks(attacks: Any) -> List[Any]:
    """``attacks`` as a list of :class:`PGD` / :class:`CW`; raise :class:`InputError` otherwise."""
    if attacks is None:
        return default_attacks()
    if isinstance(attacks, (PGD, CW)):
        attacks = [attacks]
    try:
        attacks = list(attacks)
    except TypeError as err:
        raise InputError(f"attacks={attacks!r}: expected a list of PGD(...) and CW(...).") from err
    if not attacks or not all(isinstance(a, (PGD, CW)) for a in attacks):
        raise InputError(f"attacks={attacks!r}: expected a non-empty list of PGD(...) and CW(...).")
    return attacks


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

    It counts jobs: one per example and radius (PGD) or binary-search step (CW).
    """
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional
        return None
    return tqdm(total=total, desc="boundary search", unit="job", leave=False)


def boundary_search(B: Backend, f: Callable, x: Any, labels: Any, *, attacks: Sequence[Any],
                    lo: Any, hi: Any, num_classes: int, seed: Optional[int] = 0,
                    batch_size: Optional[int] = None, progress: Optional[bool] = None,
                    compact: bool = True, warn: bool = True) -> BoundaryResult:
    """The search over backend tensors (``x`` ``(N, ...)``, ``labels`` ``(N,)``); see :func:`find_boundary`.

    Each attack runs over all examples at once through a pool of ``batch_size``
    rows (None: all of them) whose finished rows are refilled with waiting work,
    so model calls stay full while work remains; the loops run over steps,
    never over examples.
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
    stages = sum(len(a.eps) if isinstance(a, PGD) else a.binary_search_steps for a in attacks)
    bar = _progress_bar(progress, stages * n)
    tick = (lambda k: bar.update(k)) if bar is not None else (lambda k: None)
    try:
        already = misclassified(B, predict(B, f, x, bs), labels)
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
            sub, sub_d = xs, B.gather(best_d, it) + float("inf")
            for attack in attacks:
                if isinstance(attack, PGD):
                    cand, ok = pgd_search(B, f, attack, xs, ys, lo, hi, rng, cost, compact, tick, bs)
                else:
                    # warm start: the best point so far is the distance to beat
                    init = (sub, sub_d < float("inf"))
                    cand, ok = cw_search(B, f, attack, xs, ys, lo, hi, num_classes, cost, tick, init, bs)
                d = l2_distance(B, cand, xs)
                closer = B.logical_and(ok, d < sub_d)
                sub = where_rows(B, closer, cand, sub)
                sub_d = B.where(closer, d, sub_d)
            # verify once: every kept point must be misclassified (numerical ties)
            ok_final = misclassified(B, predict(B, f, sub, bs), ys)
            cost.forwards += int(todo.size)
            sub_d = B.where(ok_final, sub_d, B.zeros_like(sub_d) + float("inf"))
            sub = where_rows(B, ok_final, sub, xs)
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
            warnings.warn(
                f"{already_count} of {n} examples are already misclassified by the model (its "
                "prediction differs from labels); their boundary point is x itself (distance 0). "
                "Pass the model's predictions as labels to explain what it predicts.",
                AlreadyMisclassifiedWarning, stacklevel=3,
            )
        if missing:
            warnings.warn(
                f"no boundary point found for {missing} of {n} examples (found=False, distance "
                "inf, point left at x); try larger eps, more steps, or wider bounds.",
                BoundaryNotFoundWarning, stacklevel=3,
            )
    return BoundaryResult(points_t, dist_t, found, cost.passes / n, cost.forwards / n)


def find_boundary(model: Any, x: Any, labels: Any = None, attacks: Any = None, bounds: Any = None,
                  seed: Optional[int] = 0, batch_size: Optional[int] = None,
                  progress: Optional[bool] = None, backend: Optional[str] = None) -> BoundaryResult:
    """The closest misclassified point to each example that the attacks find.

    Args:
        model: a ``torch.nn.Module`` or a Keras 3 model (TensorFlow backend).
        x: inputs ``(N, ...)`` in the model's layout (NCHW torch, NHWC Keras),
            NumPy or a native tensor (searched detached: the search is not
            differentiable, and ``x`` is never written to).
        labels: classes to move away from: indices ``(N,)``, one-hot ``(N, C)``,
            or None for the model's predictions.
        attacks: list of :class:`PGD` / :class:`CW` run in order (default
            ``[PGD(eps=[36/255, 64/255, 0.3, 0.5, 0.7, 0.9, 1.1], steps=40,
            norm="l2"), CW(steps=100)]``).
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

    Returns:
        :class:`BoundaryResult` with ``points`` (caller's type, shaped like
        ``x``), ``distances`` ``(N,)`` and ``found`` ``(N,)`` (caller's type),
        and the passes run per input.

    Raises:
        InputError: bad ``x``, ``bounds`` not containing ``x``, or bad attacks
            (PGD/CW check their own settings when constructed).
        LabelError: labels that do not fit the model.

    Example:
        >>> res = find_boundary(model, x, labels, attacks=[PGD(eps=[0.25, 0.5], steps=20)], bounds=(0, 1))
        >>> res.points, res.distances, res.found
    """
    attacks = check_attacks(attacks)
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
                                  seed=seed, batch_size=batch_size, progress=progress)
        conv = lambda t: _entry.to_caller(B, t, kind, np_dtype)  # noqa: E731
        return BoundaryResult(conv(res.points), conv(res.distances), conv(res.found), res.passes, res.forwards)
