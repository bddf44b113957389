"""A multi-class DeepFool-style attack with box-aware projections (L2, untargeted).

DeepFool (Moosavi-Dezfooli, Fawzi, Frossard, "DeepFool: a simple and accurate
method to fool deep neural networks", CVPR 2016) linearises, at the current
point ``z``, the logit difference ``v_j = F_j - F_y`` of each competing class
``j`` and moves to the nearest linearised boundary. Here, as in FAB (Croce and
Hein, "Minimally distorted adversarial examples with a fast adaptive boundary
attack", ICML 2020), the step projects the **original** ``x`` (not ``z``) onto
the linearised boundary of each class, inside the box: the smallest ``d`` with
``a_j . d >= a_j . (z - x) - v_j`` (``a_j`` the gradient of ``v_j`` at ``z``) and
``lo <= x + d <= hi``, and keeps the class with the smallest ``||d||``. On a
linear model one step lands on the exact minimum-norm boundary point (with or
without a box).

The competing classes are the ``candidates`` largest logits other than the
label's at ``x`` (fixed per example, as foolbox's ``candidates``); each costs one
backward row per step: the backend's :meth:`~boundary_xg.backends.Backend.value_and_vjps`
runs the row's forward once and one backward per class (PyTorch, one vmapped
backward), or a forward+backward row per class as one batch (TensorFlow). The
target is raised by ``overshoot`` (relative) so the point lands just past the
linearised boundary; the pipeline's refinement (along ``x ->
point``) then pulls every candidate back to the boundary, so no fixed overshoot
stays in the result. Each evaluated point that is misclassified and closer than
the row's best is kept; a row is done once it has a point and its next
projection is no closer than its best by ``rtol``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

from ..backends import Backend
from ..errors import InputError
from ._box import halfspace_projection, top_other_classes
from ._ops import clip_to, forward_logits, l2_distance, misclassified, model_logits
from .base import FAR, SearchContext, check_int, check_real, finish_last_iterate, keep_closer


@dataclass(frozen=True)
class DeepFool:
    """Multi-class DeepFool with projections of ``x`` inside the box (one attack of :func:`find_boundary`).

    Args:
        steps: linearisation steps per example, >= 1 (default 3).
        candidates: competing classes linearised per step (the largest logits at
            ``x`` other than the label's), >= 1 (default 9; capped at the number
            of classes - 1). Each costs one forward+backward row per step.
        overshoot: relative increase of the linearised target, >= 0 (default
            0.01); the refinement of the pipeline removes it.
        rtol: a row with a point stops when its next projection is not closer
            than ``(1 - rtol)`` times its best (default 1e-3).

    Raises:
        InputError: ``steps`` or ``candidates`` below 1, a negative ``overshoot``
            or ``rtol``.
    """

    steps: int = 3
    candidates: int = 9
    overshoot: float = 0.01
    rtol: float = 1e-3
    norm: str = "l2"

    @property
    def check(self) -> int:
        """Steps between the runner's reads of the stop flags (``ceil(steps / 10)``, as PGD's checks)."""
        return max(1, math.ceil(self.steps / 10))

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 1)
        check_int("candidates", self.candidates, 1)
        check_real("overshoot", self.overshoot, strict=False)
        check_real("rtol", self.rtol, strict=False, high=1.0)
        if self.norm != "l2":
            raise InputError(f"norm={self.norm!r}: DeepFool here is L2 only; expected 'l2'.")

    def jobs(self) -> int:
        """Units of work per example (for the progress bar)."""
        return 1

    def classes(self, num_classes: int) -> int:
        """Competing classes actually linearised."""
        return max(1, min(self.candidates, num_classes - 1))

    def row_passes(self, ctx: SearchContext) -> int:
        """Forward+backward model rows per row and step: one per competing class (the runner
        then holds ``batch_size // row_passes`` rows, so a model call stays within ``batch_size``)."""
        return self.classes(ctx.num_classes)

    def row_backwards(self, ctx: SearchContext) -> int:
        """Of those, backward-only rows: all classes but one where the backend shares the forward."""
        return self.classes(ctx.num_classes) - 1 if ctx.B.vjps_share_forward else 0

    def start(self, ctx: SearchContext, x: Any, labels: Any, prior: Any, prior_d: Any) -> Dict[str, Any]:
        """Rows start at ``x``; the competing classes are the ``candidates`` largest logits at ``x``
        (one forward pass), or every other class when there are no more than that (no pass: their
        order only breaks exact ties between their projections)."""
        B = ctx.B
        k = self.classes(ctx.num_classes)
        if k >= ctx.num_classes - 1:
            cls = [(labels + (1 + j)) % ctx.num_classes for j in range(k)]
        else:
            logits = forward_logits(B, ctx.f, x, ctx.proto)
            ctx.cost.forwards += B.shape(x)[0]
            onehot = B.one_hot(labels, ctx.num_classes, like=x)
            cls = top_other_classes(B, logits, onehot, k)
        state = dict(z=x + B.zeros_like(x), x0=x, y=labels, oh=B.one_hot(labels, ctx.num_classes, like=x), best=x,
                     best_d=B.zeros_like(prior_d) + FAR, stop=B.not_equal(B.zeros_like(labels), B.zeros_like(labels)))
        for j, c in enumerate(cls):
            state[f"cls{j}"] = c
        return state

    def step(self, B: Backend, f: Callable, state: Dict[str, Any], lo: Any, hi: Any, proto: Any) -> Dict[str, Any]:
        """One linearisation of every row at ``z`` over its competing classes; the projection of ``x``."""
        z, x0, y = state["z"], state["x0"], state["y"]
        k = sum(1 for key in state if key.startswith("cls"))
        inner = tuple(int(d) for d in z.shape[1:])
        axes = tuple(range(2, len(inner) + 2))  # the example axes of (k, R, ...)
        # the gradients of the k gaps F_c - F_y of every row, class-major (k, R, ...): one
        # forward and k backwards (the cotangent e_c - e_y per class), as one call
        oh = state["oh"]
        classes = int(oh.shape[1])
        cot = B.concat([B.reshape(B.one_hot(state[f"cls{j}"], classes, like=oh) - oh, (1, -1, classes))
                        for j in range(k)])
        logits, a = B.value_and_vjps(lambda u: model_logits(B, f, u, proto), z, cot)
        tile = (lambda t: B.concat([t] * k)) if k > 1 else (lambda t: t)
        cls = B.concat([state[f"cls{j}"] for j in range(k)]) if k > 1 else state["cls0"]
        ll = tile(logits)
        v = B.take_along_axis(ll, cls) - B.take_along_axis(ll, tile(y))
        mis = misclassified(B, logits, y)
        # per class and row, (k, R, ...): the row's own z - x and box broadcast over its
        # k classes (one row each, not k copies: 1/k of the element-wise work)
        level = B.sum(a * (z - x0), axis=axes) - B.reshape(v, (k, -1))
        level = level + B.abs(level) * self.overshoot
        d, feasible = halfspace_projection(B, a, level, lo - x0, hi - x0, lead=2)
        score = B.sqrt(B.sum(d * d, axis=axes))
        score = B.where(feasible, score, score + FAR)
        # the class whose boundary is nearest, per row: the first smallest score (as a loop
        # keeping the earlier class on ties), then its projection taken from the row's k
        # (an index, not k - 1 selections over whole rows: a where costs 15-20x a product
        # in PyTorch on a CPU); (k, R, n) to (R, k, n) with a spelled-out einsum: TensorFlow's
        # with "..." costs 10x a transpose (11 against 1.2 ms for 9 x 28 rows of 32x32x3)
        nearest = B.argmax(-B.einsum("kr->rk", score), axis=1)
        size = 1
        for n in inner:
            size *= n
        pick = B.take_along_axis(B.einsum("krn->rkn", B.reshape(d, (k, -1, size))), nearest)
        pick = B.reshape(pick, (-1,) + inner)
        # the point just evaluated: keep it if misclassified and closer
        best, best_d = keep_closer(B, z, x0, mis, state["best"], state["best_d"])
        new = clip_to(B, x0 + pick, lo, hi)
        stop = B.logical_and(best_d < FAR, l2_distance(B, new, x0) >= best_d * (1.0 - self.rtol))
        out = dict(state, z=new, best=best, best_d=best_d, stop=stop)
        return out

    def done(self, ctx: SearchContext, state: Dict[str, Any]) -> Any:
        """Rows whose next projection is no closer than their best point."""
        return state["stop"]

    def finish(self, ctx: SearchContext, state: Dict[str, Any]) -> Tuple[Any, Any]:
        """The best point, after one forward pass at the last (not yet evaluated) iterate."""
        return finish_last_iterate(ctx, state)
