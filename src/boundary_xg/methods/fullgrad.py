"""FullGrad: the input gradient plus the bias gradients of every layer.

Srinivas & Fleuret, "Full-Gradient Representation for Neural Network
Visualization", NeurIPS 2019. For a piecewise-linear network with biases (ReLU,
max pooling, batch norm in eval mode) the label logit splits exactly into

    F_y(x) = sum(x * grad_x F_y) + sum_l sum(b_l * grad_{z_l} F_y),

``z_l`` the output of layer ``l`` and ``b_l`` its bias broadcast over it (batch
norm's effective bias from its running statistics). The saliency map sums the
post-processed terms. One forward and one backward pass.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..backends import Backend
from ._layers import by_chunks, channel_axis, channel_sum, check_image_batch, spatial_size
from .registry import MethodSpec, register

#: the paper's post-processing divides by ``max + 1e-6``
_EPS = 1e-6


def _total(B: Backend, t: Any) -> Any:
    """Sum over all but the batch axis, ``(N,)``."""
    return B.sum(t, axis=tuple(range(1, len(B.shape(t)))))


def _psi_map(B: Backend, t: Any) -> Any:
    """``sum_c psi(t)``: ``|t|`` min-max scaled per example over all its axes, summed over channels.

    ``sum_c (|t| - m) / (M - m + eps) = (sum_c |t| - C m) / (M - m + eps)`` with
    ``m, M`` the example's min and max of ``|t|``: three reductions of the layer's
    output and arithmetic on the one-channel map, instead of two more passes over
    the whole output.
    """
    a = B.abs(t)
    shape = B.shape(a)
    axes = tuple(range(1, len(shape)))
    keep = (-1,) + (1,) * len(axes)
    lo = B.reshape(B.min(a, axis=axes), keep)
    hi = B.reshape(B.max(a, axis=axes), keep)
    return (channel_sum(B, a) - float(shape[channel_axis(B)]) * lo) / (hi - lo + _EPS)


def _broadcast(B: Backend, bias: Any, axis: int, ndim: int) -> Any:
    """``bias (C,)`` shaped to broadcast over a layer output of ``ndim`` axes along ``axis``."""
    shape = [1] * ndim
    shape[axis] = -1
    return B.reshape(bias, tuple(shape))


def fullgrad(B: Backend, f: Callable, x: Any, labels: Any, *, bias_terms: Sequence = (),
             return_gap: bool = False, batch_size: Optional[int] = None) -> Any:
    """FullGrad saliency: ``sum_c psi(x * grad_x) + sum_l sum_c Up(psi(b_l * grad_{z_l}))``.

    ``psi`` is ``|.|`` then per-example min-max scaling, ``Up`` bilinear resizing
    to ``x``'s height and width (``align_corners=True``, as the paper's code);
    the sum runs over the layers whose output is 4-D (convolutions, batch norm).
    Dense layers' bias terms enter the decomposition, not the map.

    Args:
        x: images ``(N, C, H, W)`` (NCHW) or ``(N, H, W, C)`` (NHWC); labels ``(N,)``.
        bias_terms: ``(layer, bias, channel axis)`` per biased layer; the front
            end fills it from the model (:meth:`~boundary_xg.backends.Backend.bias_terms`).
        return_gap: also return the residual of the decomposition before
            post-processing, ``sum(x * grad_x) + sum_l sum(b_l * grad_{z_l}) - F_y(x)``
            per example ``(N,)``: zero up to rounding for piecewise-linear networks.
        batch_size: model inputs per pass.

    Returns:
        One non-negative map per example, ``(N, 1, H, W)`` (NCHW) or
        ``(N, H, W, 1)`` (NHWC); with ``return_gap`` the tuple ``(map, gap)``.
    """
    terms = list(bias_terms)
    layers = [t[0] for t in terms]
    size = spatial_size(B, x)

    def run(xc, yc):
        scores, _, grads, gx = B.capture_layers(f, layers, xc, yc, wrt_input=True,
                                                pre_activation=True, strict=False, values=False)
        ix = xc * gx
        saliency = _psi_map(B, ix)
        gap = _total(B, ix) - scores if return_gap else scores
        # resizing is linear: maps of one resolution are summed and resized once
        by_size: Dict[Tuple[int, int], Any] = {}
        for (_, bias, axis), per_call in zip(terms, grads):
            for g in per_call:
                term = g * _broadcast(B, B.cast(bias, g), axis, len(B.shape(g)))
                if return_gap:
                    gap = gap + _total(B, term)
                if len(B.shape(term)) == 4:
                    hw = spatial_size(B, term)
                    m = _psi_map(B, term)
                    by_size[hw] = m if hw not in by_size else by_size[hw] + m
        for m in by_size.values():
            saliency = saliency + B.resize(m, size, align_corners=True)
        return saliency, gap

    saliency, gap = by_chunks(B, x, labels, batch_size, run)
    return (saliency, gap) if return_gap else saliency


def prepare_fullgrad(B: Backend, model: Any, x: Any, options: Dict[str, Any]) -> None:
    """The front end's hook: the model's bias terms into ``options["bias_terms"]``."""
    check_image_batch(B, x, "FullGrad")
    options["bias_terms"] = B.bias_terms(model)


register(MethodSpec(
    name="full_grad", short="FullGrad", func=fullgrad, defaults={},
    aliases=("fullgrad", "full_gradient", "fullgradient"), supports_gap=True,
    prepare=prepare_fullgrad, output="map", needs=("layers",),
    summary="input gradient plus every layer's bias gradient, |.|, min-max, upsampled, summed",
    paper="Srinivas & Fleuret, Full-Gradient Representation for Neural Network Visualization, "
          "NeurIPS 2019",
))
