"""Layers of PyTorch models: the ``layer=`` argument, layer capture and bias terms.

Behind :meth:`TorchBackend.resolve_layer`, :meth:`~TorchBackend.default_layer`,
:meth:`~TorchBackend.capture_layers` and :meth:`~TorchBackend.bias_terms`, used by
the layer methods (GradCAM, FullGrad) in ``methods/``. Forward hooks are
registered for one call only and removed in a ``finally`` block, so a model
keeps exactly the hooks it had, also when an error is raised.
"""

from __future__ import annotations

from typing import Any, Callable, List, NamedTuple, Optional, Sequence, Tuple

import torch
from torch import nn

from ...errors import InputError, UnsupportedModelError
from .._layers_common import check_ran, last_spatial_block, listed_names, per_layer_grads

_POOLING = (
    nn.MaxPool1d, nn.MaxPool2d, nn.MaxPool3d, nn.AvgPool1d, nn.AvgPool2d, nn.AvgPool3d,
    nn.AdaptiveAvgPool1d, nn.AdaptiveAvgPool2d, nn.AdaptiveAvgPool3d, nn.AdaptiveMaxPool1d,
    nn.AdaptiveMaxPool2d, nn.AdaptiveMaxPool3d, nn.LPPool1d, nn.LPPool2d,
)
_CONV = (nn.Conv1d, nn.Conv2d, nn.Conv3d, nn.ConvTranspose1d, nn.ConvTranspose2d, nn.ConvTranspose3d)

def _module(model: Any) -> nn.Module:
    if not isinstance(model, nn.Module):
        raise UnsupportedModelError(
            f"layer methods need a torch.nn.Module (its sub-modules are the layers); got "
            f"{type(model).__name__}."
        )
    if isinstance(model, torch.jit.ScriptModule):
        raise UnsupportedModelError(
            "layer methods capture a layer's output with forward hooks, which TorchScript modules "
            "do not run; pass the model as a torch.nn.Module (on the command line: module:callable)."
        )
    return model


def layer_names(model: Any) -> List[str]:
    """Dotted names of every sub-module, in registration order (``"layer4.1.conv2"``)."""
    return [name for name, _ in _module(model).named_modules() if name]


def resolve_layer(model: Any, layer: Any) -> nn.Module:
    """The sub-module of ``model`` that ``layer`` names: a module of the model or its dotted name.

    Raises:
        InputError: a name the model does not have, or a module that is not part
            of the model; the message lists the available names.
    """
    model = _module(model)
    if isinstance(layer, nn.Module):
        if any(m is layer for m in model.modules()):
            return layer
        raise InputError(
            f"layer={type(layer).__name__}(...) is not a sub-module of the model; pass one of "
            f"its modules or its dotted name: {listed_names(layer_names(model))}."
        )
    if isinstance(layer, str) and layer:
        try:
            return model.get_submodule(layer)
        except AttributeError:
            raise InputError(
                f"layer={layer!r} names no sub-module of the model; available names: "
                f"{listed_names(layer_names(model))}."
            ) from None
    raise InputError(
        f"layer={layer!r}: expected a sub-module of the model or its dotted name "
        f"(e.g. 'layer4' or 'features.28'); available names: {listed_names(layer_names(model))}."
    )


def layer_name(model: Any, module: nn.Module) -> str:
    """The dotted name of ``module`` in ``model`` (for messages)."""
    for name, m in _module(model).named_modules():
        if m is module:
            return name or "<the model>"
    return type(module).__name__


def _spatial(shape: Tuple[int, ...]) -> bool:
    return len(shape) == 4 and shape[2] * shape[3] > 1


def default_layer(model: Any, f: Callable, x: Any) -> nn.Module:
    """GradCAM's default layer: the output of the last block with spatial extent.

    One forward pass of ``x`` (one example is enough) records the output shape of
    every module. Starting at the model, among its direct children that ran the
    last one (in order of completion) whose output is 4-D with ``H * W > 1`` and
    that is not a pooling layer is taken; where no child qualifies, the search
    descends into the last child that ran. torchvision: ``layer4`` of ResNets,
    ``features`` of VGG, DenseNet, MobileNet, EfficientNet and ConvNeXt,
    ``Mixed_7c`` of Inception v3; a flat ``nn.Sequential`` CNN: the activation
    after its last convolution (before the pooling that ends the spatial part).

    Raises:
        InputError: no module with a spatial output ran (the message asks for ``layer=``).
    """
    model = _module(model)
    done: dict = {}
    handles = []

    def hook(module, inputs, output):
        shape = tuple(output.shape) if isinstance(output, torch.Tensor) else ()
        done[module] = (len(done), _spatial(shape))

    try:
        for m in model.modules():
            handles.append(m.register_forward_hook(hook))
        with torch.no_grad():
            f(x)
    finally:
        for h in handles:
            h.remove()

    chosen = last_spatial_block(
        model, lambda m: list(m.children()), lambda m: done[m][0] if m in done else None,
        lambda m: done[m][1], lambda m: isinstance(m, _POOLING))
    if chosen is None:
        raise InputError(
            "layer=None: no sub-module of the model has an output with spatial extent "
            "(N, C, H, W) with H * W > 1; pass layer= explicitly. Available names: "
            f"{listed_names(layer_names(model))}."
        )
    return chosen


class _Like(NamedTuple):
    """What a capture without values keeps of a layer's output."""

    shape: Any
    dtype: Any
    device: Any


def capture_layers(f: Callable, layers: Sequence[nn.Module], x: Any, labels: Any,
                   wrt_input: bool = False, strict: bool = True, values: bool = True,
                   reduce: Optional[Callable[[int, Any], Any]] = None) -> Tuple[Any, list, list, Any]:
    """Run ``f`` on ``x`` capturing every output of ``layers``; gradients of the label logits.

    With ``values`` each hook keeps the module's output and hands a copy on to
    the rest of the network (as Captum does), so an in-place operation that
    follows (VGG's ``ReLU(inplace=True)``) changes the copy, not the captured
    output. Without, no copy is made: a tensor hook on each output receives its
    gradient during the one backward pass to ``x`` (a tensor hook registered
    before an in-place change gets the gradient of the value before it), and
    the outputs are returned as None. There ``reduce(i, grad)`` runs in the hook,
    while the gradient is in the cache, and only its result is kept: the
    gradients are freed as the backward pass goes on, as in a plain one (kept,
    they cost fresh memory pages, +10-15 % on a small CNN).

    Returns:
        ``(scores (N,), outputs, grads, grad_x)``: ``outputs[i]`` and ``grads[i]``
        are lists with one tensor per call of ``layers[i]`` (in call order);
        ``grad_x`` the input gradient or None (``wrt_input=False``).

    Raises:
        InputError: a layer returned no single tensor; with ``strict``, a layer
            did not run or does not lie on the path from the input to the output.
    """
    # an objective other than the logit (ops.with_objective) wraps the model and scores rows
    score = getattr(f, "score", None)
    # the model, or the Sequential without its softmax: same modules, same names
    model = getattr(f, "__wrapped__", f) if score is not None else f

    def name_of(i: int) -> str:
        return layer_name(model, layers[i])

    calls: List[list] = [[] for _ in layers]
    received: dict = {}  # (layer, call) -> gradient, from the tensor hooks (values=False)
    bad: list = []

    def keep(key: Tuple[int, int]) -> Callable:
        def grad_hook(g):
            received[key] = g if reduce is None else reduce(key[0], g)
        return grad_hook

    def make_hook(i: int):
        def hook(module, inputs, output):
            if not isinstance(output, torch.Tensor):
                bad.append(i)
                return None
            if values:
                calls[i].append(output)
                return output.clone()
            # only the output's shape: holding the tensor would keep it alive through the
            # forward pass (a plain pass frees a convolution's output after its ReLU),
            # and every later op would write to fresh memory pages (+20 % on a small CNN)
            calls[i].append(_Like(output.shape, output.dtype, output.device))
            if output.requires_grad:
                output.register_hook(keep((i, len(calls[i]) - 1)))
            return None
        return hook

    handles = []
    try:
        for i, m in enumerate(layers):
            handles.append(m.register_forward_hook(make_hook(i)))
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            logits = f(xg)
            if score is not None:
                scores = score(logits, labels)
            else:
                scores = logits.gather(1, labels.reshape(-1, 1).long()).reshape(-1)
    finally:
        for h in handles:
            h.remove()
    if bad:
        i = bad[0]
        raise InputError(
            f"layer={name_of(i)!r} returns {type(layers[i]).__name__} output "
            "that is not one tensor; pick a layer whose output is one tensor."
        )
    check_ran(calls, name_of, strict)
    if values:
        flat = [t for c in calls for t in c]
        with torch.enable_grad():
            grads = list(torch.autograd.grad(scores.sum(), flat + ([xg] if wrt_input else []),
                                             allow_unused=True))
    else:
        with torch.enable_grad():
            (g_x,) = torch.autograd.grad(scores.sum(), xg, allow_unused=True)
        grads = [received.get((i, k)) for i, c in enumerate(calls) for k in range(len(c))]
        grads += [g_x] if wrt_input else []
    gx = grads.pop() if wrt_input else None
    if gx is None and wrt_input:
        gx = torch.zeros_like(x)
    reduced_in_hooks = reduce is not None and not values

    def fill(i: int, o: Any) -> Any:
        zeros = torch.zeros(o.shape, dtype=o.dtype, device=o.device)
        return reduce(i, zeros) if reduced_in_hooks else zeros

    with torch.no_grad():
        out_grads = per_layer_grads(calls, grads, name_of, strict, fill)
        if reduce is not None and values:
            out_grads = [[reduce(i, g) for g in gl] for i, gl in enumerate(out_grads)]
    outputs = [[t.detach() if values else None for t in c] for c in calls]
    return scores.detach(), outputs, out_grads, gx


def bias_terms(model: Any) -> List[Tuple[nn.Module, Any, int]]:
    """``(module, bias (C,), channel axis of its output)`` for every layer that adds a bias.

    Convolutions and linear layers with a bias, and batch norm with its effective
    bias ``beta - running_mean * gamma / sqrt(running_var + eps)`` (its output is
    ``gamma / sqrt(var + eps) * z + effective bias`` in eval mode). Batch norm
    without running statistics is skipped (it has no fixed bias).
    """
    out = []
    for m in _module(model).modules():
        if isinstance(m, nn.modules.batchnorm._BatchNorm):
            if m.running_mean is None or m.running_var is None:
                continue
            mean, var = m.running_mean.detach(), m.running_var.detach()
            gamma = m.weight.detach() if m.weight is not None else torch.ones_like(mean)
            beta = m.bias.detach() if m.bias is not None else torch.zeros_like(mean)
            out.append((m, beta - mean * gamma / torch.sqrt(var + m.eps), 1))
        elif isinstance(m, _CONV) and m.bias is not None:
            out.append((m, m.bias.detach(), 1))
        elif isinstance(m, nn.Linear) and m.bias is not None:
            out.append((m, m.bias.detach(), -1))
    return out


def _bilinear_matrix(n_in: int, n_out: int, align_corners: bool) -> torch.Tensor:
    """``(n_out, n_in)`` weights of 1-D linear interpolation, as ``F.interpolate`` computes them.

    ``align_corners=True``: source ``i (n_in - 1) / (n_out - 1)``; False: half-pixel
    centres ``(i + 0.5) n_in / n_out - 0.5`` clamped at 0; two taps, the upper
    one clamped to the last row. Built in float64.
    """
    i = torch.arange(n_out, dtype=torch.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else torch.zeros_like(i)
    else:
        src = ((i + 0.5) * (n_in / n_out) - 0.5).clamp(min=0.0)
    lo = src.floor().long().clamp(max=n_in - 1)
    hi = (lo + 1).clamp(max=n_in - 1)
    frac = src - lo
    rows = torch.arange(n_out)
    m = torch.zeros(n_out, n_in, dtype=torch.float64)
    m.index_put_((rows, lo), 1.0 - frac, accumulate=True)
    m.index_put_((rows, hi), frac, accumulate=True)
    return m


_RESIZE: dict = {}  # (h, w, H, W, align_corners, dtype, device) -> (R_h, R_w^T)


def resize(t: Any, size: Tuple[int, int], align_corners: bool = False) -> Any:
    """Bilinear resize of ``(N, C, h, w)`` to ``(N, C, *size)``, as ``F.interpolate(mode="bilinear")``.

    On a CPU, float32/float64 maps are resized as ``R_h @ t @ R_w^T`` with the
    interpolation weights as matrices (cached per size): 4-6x faster than
    ``F.interpolate`` for the one-channel maps of the layer methods (its kernel
    does not vectorise over a single channel), equal to it up to rounding (1e-6
    relative).
    """
    n, c, h, w = t.shape
    size = (int(size[0]), int(size[1]))
    if t.device.type != "cpu" or t.dtype not in (torch.float32, torch.float64):
        return torch.nn.functional.interpolate(t, size=size, mode="bilinear", align_corners=align_corners)
    key = (h, w) + size + (bool(align_corners), t.dtype, t.device)
    if key not in _RESIZE:
        _RESIZE[key] = (_bilinear_matrix(h, size[0], align_corners).to(t.dtype),
                        _bilinear_matrix(w, size[1], align_corners).t().contiguous().to(t.dtype))
    r_h, r_wt = _RESIZE[key]
    return torch.matmul(torch.matmul(r_h, t.reshape(n * c, h, w)), r_wt).reshape(n, c, *size)
