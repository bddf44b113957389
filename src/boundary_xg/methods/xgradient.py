"""X-Gradient: ``x * grad F_y(x)``, which equals Integrated Gradients with the zero
baseline, exactly, when the network is nonnegatively homogeneous (no bias anywhere,
ReLU-type activations, linear/conv layers, max/average pooling).

Hesse, Schaub-Meyer, Roth, "Fast Axiomatic Attribution for Neural Networks",
NeurIPS 2021. Cost: one forward and one backward pass.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from ..backends import Backend
from ..ops import gradients_at
from .registry import MethodSpec, register


def xgradient(
    B: Backend,
    f: Callable,
    x: Any,
    labels: Any,
    *,
    create_graph: bool = False,
    batch_size: Optional[int] = None,
) -> Any:
    """X-Gradient attributions ``x * grad F_y(x)``, shaped like ``x``.

    Args:
        x: inputs ``(N, ...)``; labels: ``(N,)`` class indices.
        create_graph: keep the result differentiable with respect to the model's
            weights (and ``x`` if it requires grad), for training with attribution
            priors (double back-propagation). Default False.
        batch_size: model inputs per pass (default: :func:`~boundary_xg.ops.default_batch_size`).

    Returns:
        Tensor shaped like ``x``. On a model that is not homogeneous this is
        Input x Gradient, not Integrated Gradients.
    """
    _, g = gradients_at(B, f, x, labels, batch_size, create_graph=create_graph)
    return x * g


def warn_if_not_homogeneous(B: Backend, model: Any, x: Any, options: Dict[str, Any]) -> None:
    """The front end's pre-check of XG: warn once per model that is not an X-DNN.

    Uses the static layer scan of :func:`boundary_xg.xdnn.check_homogeneous`
    (cached per model), so the check costs nothing on repeated calls.

    Warns:
        NonHomogeneousWarning: the model has biases, normalisation layers or
            non-homogeneous activations; XG is then Input x Gradient, not IG.
    """
    from ..xdnn.homogeneity import warn_once_if_not_homogeneous

    warn_once_if_not_homogeneous(B, model)


register(MethodSpec(
    name="x_gradient", short="XG", func=xgradient, defaults={"create_graph": False},
    aliases=("xgradient", "x-gradient"), prepare=warn_if_not_homogeneous,
    summary="X-Gradient `x * grad`; equals IG from zero on bias-free homogeneous networks (warns "
            "once when the model is not one); `create_graph=True` keeps it differentiable",
    cost="1", in_demo=True,
    paper="Hesse et al., *Fast Axiomatic Attribution for Neural Networks*, NeurIPS 2021",
))
