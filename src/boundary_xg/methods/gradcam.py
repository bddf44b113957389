"""GradCAM and GradCAM++: class activation maps of a layer, weighted by its gradients.

GradCAM: Selvaraju et al., "Grad-CAM: Visual Explanations from Deep Networks via
Gradient-based Localization", ICCV 2017. GradCAM++: Chattopadhay et al.,
"Grad-CAM++: Generalized Gradient-Based Visual Explanations for Deep
Convolutional Networks", WACV 2018. One forward and one backward pass each.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..backends import Backend, as_written
from ..errors import InputError
from ._layers import as_map, by_chunks, channel_axis, prepare_layer, spatial_size
from .registry import MethodSpec, boolean_option, register

#: added to GradCAM++'s denominator, which vanishes with the gradient
_EPS = 1e-7


def _layer_output(B: Backend, f: Callable, layer: Any, x: Any, labels: Any, method: str):
    """The layer's output ``A`` and the gradient ``G`` of the label logits with respect to it.

    A layer that runs more than once contributes its last call (the one nearest
    the output).
    """
    _, outs, grads, _ = B.capture_layers(f, [layer], x, labels)
    A, G = outs[0][-1], grads[0][-1]
    shape = B.shape(A)
    hw = spatial_size(B, A) if len(shape) == 4 else (1, 1)
    if len(shape) != 4 or hw[0] * hw[1] <= 1:
        raise InputError(
            f"layer={B.layer_name(f, layer)!r} has output of shape {shape}, without spatial "
            f"extent; {method} needs a layer whose output is 4-D ({B.image_layout}) with "
            "H * W > 1: pick an earlier layer (or a larger input)."
        )
    return A, G


def _spatial_axes(B: Backend):
    return (2, 3) if B.image_layout == "NCHW" else (1, 2)


def _per_channel(B: Backend, w: Any) -> Any:
    """Channel weights ``(N, K)`` shaped to broadcast over a 4-D batch."""
    k = B.shape(w)[1]  # the batch may be unknown while a compiled step is traced
    return B.reshape(w, (-1, k, 1, 1) if B.image_layout == "NCHW" else (-1, 1, 1, k))


def _gradcam_weights(B: Backend, A: Any, G: Any) -> Any:
    h, w = spatial_size(B, G)
    return B.sum(G, axis=_spatial_axes(B)) / float(h * w)


def _gradcam_pp_weights(B: Backend, A: Any, G: Any) -> Any:
    # alpha = G^2 / (2 G^2 + sum_ij(A) G^3), the paper's closed form with an
    # exponential score (Eq. 19), and weights = sum_ij alpha * ReLU(G)
    g2 = G * G
    total = _per_channel(B, B.sum(A, axis=_spatial_axes(B)))
    zero = B.zeros_like(G)
    alpha = B.where(B.not_equal(G, zero), g2 / (2.0 * g2 + total * g2 * G + _EPS), zero)
    return B.sum(alpha * B.maximum(G, zero), axis=_spatial_axes(B))


@as_written
def _cam_step(B: Backend, f: Callable, layer: Any, relu: bool, upsample: bool, weights: Callable,
              method: str, x: Any, labels: Any) -> Any:
    """One chunk: capture the layer, weight its channels, ReLU, resize; ``(cam,)``."""
    A, G = _layer_output(B, f, layer, x, labels, method)
    cam = as_map(B, B.sum(_per_channel(B, weights(B, A, G)) * A, axis=channel_axis(B)))
    if relu:
        cam = B.maximum(cam, B.zeros_like(cam))
    if upsample:
        cam = B.resize(cam, spatial_size(B, x))
    return (cam,)


def _cam(B: Backend, f: Callable, x: Any, labels: Any, layer: Any, relu: bool, upsample: bool,
         batch_size: Optional[int], weights: Callable, method: str) -> Any:
    # one compiled step per model, layer and options (TensorFlow: capture and
    # post-processing in one graph, traced once)
    step = B.jit(_cam_step, f, B, f, layer, bool(relu), bool(upsample), weights, method)
    return by_chunks(B, x, labels, batch_size, step)[0]


def gradcam(B: Backend, f: Callable, x: Any, labels: Any, *, layer: Any, relu: bool = True,
            upsample: bool = True, batch_size: Optional[int] = None) -> Any:
    """GradCAM: ``ReLU(sum_k A_k * mean_ij dF_y/dA_k)`` of a layer's output ``A``.

    Args:
        x: images ``(N, C, H, W)`` (NCHW) or ``(N, H, W, C)`` (NHWC); labels ``(N,)``.
        layer: the layer handle (the front end resolves ``layer=``: a module or
            dotted name in PyTorch, a layer, name or index in Keras; None = the
            output of the last block with spatial extent, e.g. ``layer4`` of a
            torchvision ResNet).
        relu: apply the ReLU (default True); False keeps the sign.
        upsample: resize bilinearly to ``x``'s height and width (default True,
            ``align_corners=False``, as Captum's ``LayerAttribution.interpolate``);
            False returns the layer's resolution.
        batch_size: model inputs per pass.

    Returns:
        One map per example: ``(N, 1, H, W)`` (NCHW) or ``(N, H, W, 1)`` (NHWC),
        at the layer's ``h x w`` with ``upsample=False``.

    Raises:
        InputError: the layer's output has no spatial extent, the layer did not
            run or the logits do not depend on it.
    """
    return _cam(B, f, x, labels, layer, relu, upsample, batch_size, _gradcam_weights, "GradCAM")


def gradcam_plus_plus(B: Backend, f: Callable, x: Any, labels: Any, *, layer: Any, relu: bool = True,
                      upsample: bool = True, batch_size: Optional[int] = None) -> Any:
    """GradCAM++: GradCAM with channel weights ``sum_ij alpha_ij ReLU(dF_y/dA_ij)``.

    ``alpha = g^2 / (2 g^2 + sum_ab(A_ab) g^3)`` with ``g = dF_y/dA`` (the paper's
    closed form, Eq. 19), 0 where ``g = 0``. Arguments and result as :func:`gradcam`.
    """
    return _cam(B, f, x, labels, layer, relu, upsample, batch_size, _gradcam_pp_weights, "GradCAM++")


def _register(name: str, short: str, func: Callable, aliases: tuple, summary: str, paper: str,
              in_demo: bool = False) -> None:
    """Register a CAM method: the options, checks and needs GradCAM and GradCAM++ share."""
    register(MethodSpec(
        name=name, short=short, func=func, defaults={"layer": None, "relu": True, "upsample": True},
        aliases=aliases, prepare=prepare_layer, takes_layer=True, output="map",
        needs=("layers",),
        checks={"relu": boolean_option("relu"), "upsample": boolean_option("upsample")},
        summary=summary, cost="1", paper=paper, in_demo=in_demo,
    ))


_register("grad_cam", "GradCAM", gradcam, ("gradcam", "grad-cam", "layer_grad_cam"),
          "GradCAM of a layer: `layer=` (PyTorch: a module or its dotted name; Keras: a layer, its "
          "name or index; default: the output of the last block with spatial extent, e.g. `layer4` "
          "of a ResNet), `relu` (True), `upsample` (True: bilinear to the input size); one map per "
          "example, `(N, 1, H, W)` / `(N, H, W, 1)`",
          "Selvaraju et al., *Grad-CAM*, ICCV 2017", in_demo=True)
_register("grad_cam_plus_plus", "GradCAM++", gradcam_plus_plus, ("gradcampp", "gradcamplusplus"),
          "GradCAM++ (channel weights from positive gradients and the closed-form second-order "
          "terms); options as GradCAM",
          "Chattopadhay et al., *Grad-CAM++*, WACV 2018")
