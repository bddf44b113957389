"""Saliency (the input gradient) and Input x Gradient: one pass each.

Saliency: Simonyan, Vedaldi, Zisserman, "Deep Inside Convolutional Networks"
(ICLR workshop 2014). Input x Gradient: Shrikumar et al., "Not Just a Black Box"
(2016).
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..backends import Backend
from ..ops import gradients_at
from .registry import MethodSpec, register


def saliency(
    B: Backend, f: Callable, x: Any, labels: Any, *, abs: bool = False, batch_size: Optional[int] = None
) -> Any:
    """Gradient of each example's label logit with respect to its input.

    Args:
        B: the backend; f: the inference-mode logits function ``(N, ...) -> (N, C)``.
        x: inputs ``(N, ...)`` in the model's layout (e.g. ``(N, C, H, W)`` for torch).
        labels: integer class per example, ``(N,)``.
        abs: return ``|grad|`` (Captum's default) instead of the signed gradient
            (default False, as in the boundary-attribution paper).
        batch_size: model inputs per forward/backward (default: :func:`~boundary_xg.ops.default_batch_size`).

    Returns:
        Tensor shaped like ``x``.
    """
    _, g = gradients_at(B, f, x, labels, batch_size)
    return B.abs(g) if abs else g


def input_x_gradient(
    B: Backend, f: Callable, x: Any, labels: Any, *, batch_size: Optional[int] = None
) -> Any:
    """``x * grad F_y(x)``, signed, shaped like ``x`` (one pass)."""
    _, g = gradients_at(B, f, x, labels, batch_size)
    return x * g


register(MethodSpec(
    name="saliency", short="SM", func=saliency, defaults={"abs": False},
    aliases=("saliency_map", "gradient", "grad", "vanilla_gradient"),
    summary="gradient of the label's logit (signed; `abs=True` for Captum's default)", cost="1",
    in_demo=True,
    paper="Simonyan et al., *Deep Inside Convolutional Networks*, 2014",
))
register(MethodSpec(
    name="input_x_gradient", short="IxG", func=input_x_gradient, defaults={},
    aliases=("inputxgradient", "input_times_gradient", "gradient_x_input", "inputgrad"),
    summary="`x * grad`", cost="1",
    paper="Shrikumar et al., *Not Just a Black Box*, 2016",
))
