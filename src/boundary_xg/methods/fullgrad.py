"""FullGrad: the input gradient plus the bias gradients of every layer.

Srinivas & Fleuret, "Full-Gradient Representation for Neural Network
Visualization", NeurIPS 2019. For a piecewise-linear network with biases (ReLU,
max pooling, batch norm in eval mode) the label logit splits exactly into

    F_y(x) = sum(x * grad_x F_y) + sum_l sum(b_l * grad_{z_l} F_y),

``z_l`` the output of layer ``l`` and ``b_l`` its bias broadcast over it (batch
norm's effective bias from its running statistics). The saliency map sums the
post-processed terms. One forward and one backward pass.

Cost. The capture, the per-layer post-processing and the resizing run as one
step through :meth:`~boundary_xg.backends.Backend.jit` (one compiled call in
TensorFlow, traced once per model). Each layer's gradient is reduced as it
arrives (the capture's ``reduce``; in PyTorch inside the backward pass, while it
is in the cache) to what its map needs, and not kept: the channel sum of ``|g|``
weighted by ``|b|`` and the example's extremes of ``|g| |b_c|``
(:meth:`~boundary_xg.backends.Backend.abs_channel_stats`: one XLA pass over ``g``
in TensorFlow; elsewhere ``|g|``, its per-channel extremes and one matrix product);
the bias term ``g * b`` itself is never formed. The maps' arithmetic (scaling,
resizing, sums) runs on these one-channel maps at the end, as one fused kernel
where the backend has one (``B.jit(..., fuse=True)``).
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Optional, Sequence, Tuple

from ..backends import Backend, as_written
from ._layers import as_map, by_chunks, channel_axis, check_image_batch, spatial_size
from .registry import MethodSpec, register

#: the paper's post-processing divides by ``max + 1e-6``
_EPS = 1e-6


def _rank(B: Backend, t: Any) -> int:
    return len(B.shape(t))


def _total(B: Backend, t: Any) -> Any:
    """Sum over all but the batch axis, ``(N,)``."""
    return B.sum(t, axis=tuple(range(1, _rank(B, t))))


def _psi_stats(B: Backend, t: Any, times: Any = None) -> Tuple[Any, Any, Any, Any]:
    """What ``sum_c psi(t)`` needs: ``(sum_c |t|, min |t|, max |t|, C)`` (``|t * times|`` with ``times``).

    ``sum_c (|t| - m) / (M - m + eps) = (sum_c |t| - C m) / (M - m + eps)`` with ``m, M``
    the example's extremes of ``|t|`` over all its axes (:func:`_scaled` forms the map).
    ``C`` as a one-element tensor, so that the maps' arithmetic compiles for any ``C``.
    """
    s, lo, hi = B.abs_channel_stats(t, None, channel_axis(B), times=times)
    return s, lo, hi, B.constant([float(B.shape(t)[channel_axis(B)])], like=s)


def _bias_stats(B: Backend, g: Any, bias: Any) -> Tuple[Any, Any, Any, Any]:
    """What ``sum_c psi(g * b)`` of a 4-D layer needs, without forming ``g * b``.

    ``|g b| = |g| |b_c|`` with ``|b_c| >= 0``: the channel sum of ``|g|`` weighted by
    ``|b|`` and the example's extremes of ``|g| |b_c|``
    (:meth:`~boundary_xg.backends.Backend.abs_channel_stats`; in TensorFlow one fused
    pass over ``g``, otherwise ``|g|``, its per-channel extremes scaled by ``|b_c|``
    and one matrix product).
    """
    s, lo, hi = B.abs_channel_stats(g, B.abs(B.cast(bias, g)), channel_axis(B))
    return s, lo, hi, B.constant([float(B.shape(g)[channel_axis(B)])], like=s)


def _scaled(B: Backend, stats: Tuple[Any, Any, Any, Any]) -> Any:
    """``sum_c psi`` as one map per example: ``(s - C m) / (M - m + eps)``."""
    s, lo, hi, channels = stats
    keep = (-1, 1, 1)
    lo, hi = B.reshape(lo, keep), B.reshape(hi, keep)
    return as_map(B, (s - channels * lo) / (hi - lo + _EPS))


@as_written
def _maps(B: Backend, x_stats: Tuple, layer_stats: Sequence[Tuple]) -> Any:
    """The saliency map from the terms' statistics: scaling, resizing, sums.

    The statistics are ``(N, h, w)`` maps and per-example scalars; TensorFlow runs
    this as one XLA kernel (``B.jit(..., fuse=True)``: one pass over each map
    instead of a broadcasting op per step).
    """
    saliency = _scaled(B, x_stats)
    size = spatial_size(B, saliency)
    by_size: Dict[Tuple[int, int], Any] = {}  # resizing is linear: one resize per resolution
    for stats in layer_stats:
        m = _scaled(B, stats)
        hw = spatial_size(B, m)
        by_size[hw] = m if hw not in by_size else by_size[hw] + m
    for hw, m in by_size.items():
        # align_corners=True to the same size is the identity: skip it
        saliency = saliency + (m if hw == size else B.resize(m, size, align_corners=True))
    return saliency


def _bias_total(B: Backend, g: Any, bias: Any, axis: int) -> Any:
    """``sum(g * b)`` per example ``(N,)``, ``b`` along ``axis``: reductions, no product of ``g``'s size."""
    rank = _rank(B, g)
    axis %= rank
    rest = tuple(a for a in range(1, rank) if a != axis)
    per_channel = B.sum(g, axis=rest) if rest else g  # (N, C)
    return B.weighted_sum(per_channel, B.cast(bias, g), 1)


def _broadcast(B: Backend, bias: Any, axis: int, ndim: int) -> Any:
    """``bias (C,)`` shaped to broadcast over a layer output of ``ndim`` axes along ``axis``."""
    shape = [1] * ndim
    shape[axis] = -1
    return B.reshape(bias, tuple(shape))


class _Plan:
    """The fixed part of one model's FullGrad step: its biased layers and their bias axes.

    One object per model (while its layers stay the same), so that the compiled
    step, cached per logits function and static arguments, is traced once.
    """

    __slots__ = ("layers", "axes", "__weakref__")

    def __init__(self, layers: Tuple[Any, ...], axes: Tuple[int, ...]) -> None:
        self.layers, self.axes = layers, axes

    def same(self, layers: Tuple[Any, ...], axes: Tuple[int, ...]) -> bool:
        return self.axes == axes and len(self.layers) == len(layers) and all(
            a is b for a, b in zip(self.layers, layers))


_PLANS: "weakref.WeakKeyDictionary[Any, _Plan]" = weakref.WeakKeyDictionary()


def _plan(f: Callable, terms: Sequence) -> _Plan:
    layers = tuple(t[0] for t in terms)
    axes = tuple(int(t[2]) for t in terms)
    try:
        plan = _PLANS.get(f)
    except TypeError:  # f not weak-referenceable
        return _Plan(layers, axes)
    if plan is None or not plan.same(layers, axes):
        plan = _PLANS[f] = _Plan(layers, axes)
    return plan


@as_written
def _step(B: Backend, f: Callable, plan: _Plan, return_gap: bool, x: Any, labels: Any,
          biases: Sequence[Any]) -> Tuple[Any, Any]:
    """One chunk: capture, post-process, resize; ``(map, gap or scores)``."""

    def reduce(i: int, g: Any) -> Tuple[Any, Any]:
        # one layer's (statistics of its map or None, sum(b * g) per example or None),
        # computed as the gradient arrives (PyTorch: in the backward pass, while g is in the cache;
        # g is not kept)
        bias, axis, rank = biases[i], plan.axes[i], _rank(B, g)
        total = _bias_total(B, g, bias, axis) if return_gap else None
        if rank != 4:
            return None, total  # dense layers: in the decomposition, not in the map
        if axis % rank == channel_axis(B):
            return _bias_stats(B, g, bias), total
        # a bias along another axis (a channels_first layer in NHWC): form the term
        return _psi_stats(B, g * _broadcast(B, B.cast(bias, g), axis, rank)), total

    scores, _, per_layer, gx = B.capture_layers(
        f, list(plan.layers), x, labels, wrt_input=True, pre_activation=True, strict=False,
        values=False, reduce=reduce)
    gap = scores
    if return_gap:
        ix = x * gx
        x_stats = _psi_stats(B, ix)
        gap = _total(B, ix) - scores
    else:  # x * grad_x is not formed where the backend fuses
        x_stats = _psi_stats(B, x, gx)
    layer_stats = []
    for results in per_layer:
        for stats, total in results:
            if total is not None:
                gap = gap + total
            if stats is not None:
                layer_stats.append(stats)
    saliency = B.jit(_maps, f, B, fuse=True)(x_stats, layer_stats)
    return saliency, gap


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
    biases = [t[1] for t in terms]
    step = B.jit(_step, f, B, f, _plan(f, terms), bool(return_gap))
    saliency, gap = by_chunks(B, x, labels, batch_size, lambda xc, yc: step(xc, yc, biases))
    return (saliency, gap) if return_gap else saliency


def prepare_fullgrad(B: Backend, model: Any, x: Any, options: Dict[str, Any]) -> None:
    """The front end's hook: the model's bias terms into ``options["bias_terms"]``."""
    check_image_batch(B, x, "FullGrad")
    options["bias_terms"] = B.bias_terms(model)


register(MethodSpec(
    name="full_grad", short="FullGrad", func=fullgrad, defaults={},
    aliases=("fullgrad", "full_gradient", "fullgradient"), supports_gap=True,
    prepare=prepare_fullgrad, output="map", needs=("layers",),
    summary="FullGrad: input gradient plus every layer's bias gradient (batch norm's effective bias), "
            "post-processed as in the paper; one map per example; `return_gap=True` gives the "
            "residual of the full-gradient decomposition",
    cost="1", in_demo=True,
    paper="Srinivas & Fleuret, *Full-Gradient Representation for Neural Network Visualization*, "
          "NeurIPS 2019",
))
