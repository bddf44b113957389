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
forward+backward row per step (the rows of all classes run as one batch). The
target is raised by ``overshoot`` (relative) so the point lands just past the
linearised boundary; the pipeline's refinement (a bisection along ``x ->
point``) then pulls every candidate back to the boundary, so no fixed overshoot
stays in the result. Each evaluated point that is misclassified and closer than
the row's best is kept; a row is done once it has a point and its next
projection is no closer than its best by ``rtol``.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, Tuple

from ..backends import Backend
from ._box import halfspace_projection, top_other_classes
from ._ops import clip_to, l2_distance, misclassified, model_logits, per_sample_norm, where_rows
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

    check = 1

    def __post_init__(self) -> None:
        check_int("steps", self.steps, 1)
        check_int("candidates", self.candidates, 1)
        check_real("overshoot", self.overshoot, strict=False)
        check_real("rtol", self.rtol, strict=False, high=1.0)
        if self.norm != "l2":
            from ..errors import InputError
            raise InputError(f"norm={self.norm!r}: DeepFool here is L2 only; expected 'l2'.")

    def jobs(self) -> int:
        """Units of work per example (for the progress bar)."""
        return 1

    def classes(self, num_classes: int) -> int:
        """Competing classes actually linearised."""
        return max(1, min(self.candidates, num_classes - 1))

    def row_passes(self, ctx: SearchContext) -> int:
        """Forward+backward model rows per row and step: one per competing class."""
        return self.classes(ctx.num_classes)

    def start(self, ctx: SearchContext, x: Any, labels: Any, prior: Any, prior_d: Any) -> Dict[str, Any]:
        """Rows start at ``x``; the competing classes come from one forward pass at ``x``."""
        B = ctx.B
        k = self.classes(ctx.num_classes)
        logits = model_logits(B, ctx.f, x, ctx.proto)
        ctx.cost.forwards += B.shape(x)[0]
        onehot = B.one_hot(labels, ctx.num_classes, like=x)
        cls = top_other_classes(B, logits, onehot, k)
        state = dict(z=x + B.zeros_like(x), x0=x, y=labels, best=x, best_d=B.zeros_like(prior_d) + FAR,
                     stop=B.not_equal(B.zeros_like(labels), B.zeros_like(labels)))
        for j, c in enumerate(cls):
            state[f"cls{j}"] = c
        return state

    def step(self, B: Backend, f: Callable, state: Dict[str, Any], lo: Any, hi: Any, proto: Any) -> Dict[str, Any]:
        """One linearisation of every row at ``z`` over its competing classes; the projection of ``x``."""
        z, x0, y = state["z"], state["x0"], state["y"]
        k = sum(1 for key in state if key.startswith("cls"))
        pick = pick_s = mis = None
        # one model call of R rows per competing class (a loop over the k classes, not over rows)
        for j in range(k):
            cls = state[f"cls{j}"]

            def gap(u):
                logits = model_logits(B, f, u, proto)
                return B.take_along_axis(logits, cls) - B.take_along_axis(logits, y), logits

            v, logits, a = B.value_aux_and_grad(gap, z)
            if mis is None:
                mis = misclassified(B, logits, y)
            level = B.sum(a * (z - x0), axis=tuple(range(1, len(a.shape)))) - v
            level = level + B.abs(level) * self.overshoot
            d, feasible = halfspace_projection(B, a, level, lo - x0, hi - x0)
            score = per_sample_norm(B, d, "l2")
            score = B.where(feasible, score, score + FAR)
            if pick is None:
                pick, pick_s = d, score
            else:
                closer = score < pick_s
                pick = where_rows(B, closer, d, pick)
                pick_s = B.where(closer, score, pick_s)
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
