"""Attribution priors: differentiable penalties on attributions, for training (docs/xdnn.md, "Attribution priors").

Written once over the backend primitives, so each works on PyTorch and
TensorFlow tensors alike and keeps the graph: add ``lam * prior(attr)`` to the
loss, where ``attr`` comes from :func:`xgradient_for_training` (X-Gradient with
``create_graph=True`` in PyTorch, recorded by the caller's ``GradientTape`` in
TensorFlow), and the optimiser step back-propagates through the gradient
(double back-propagation). On an X-DNN that attribution is exactly IG from zero
at the cost of one pass (Hesse et al., NeurIPS 2021), where IG itself would cost
20-300 passes per training step.

Example (PyTorch)::

    attr = xgradient_for_training(model, xb, yb)
    loss = F.cross_entropy(model(xb), yb) + lam * gini_prior(attr)
    loss.backward()
"""

from __future__ import annotations

from typing import Any, Optional

from ..backends import Backend, backend_for, framework_of
from ..errors import InputError


def _backend(t: Any, name: str = "attr") -> Backend:
    """The backend of tensor ``t`` (its class names its framework).

    Raises:
        InputError: ``t`` is not a torch or TensorFlow tensor (NumPy cannot carry
            the graph the training step differentiates through).
    """
    if framework_of(t) is None:
        raise InputError(
            f"{name} is a {type(t).__module__}.{type(t).__qualname__}; attribution priors need a "
            "torch or TensorFlow tensor that keeps its graph, such as the output of "
            "xdnn.xgradient_for_training(model, x, labels) (which returns one for NumPy x too)."
        )
    return backend_for(t)


def gini(values: Any) -> Any:
    """Gini coefficient of non-negative ``values`` (any shape, flattened), a scalar tensor.

    ``Gini(v) = (1/2) mean_{f,f'} |v_f - v_f'| / mean_f v_f``, computed in
    ``O(F log F)`` from the sorted values: ``sum_i (2 i - F - 1) v_(i) / (F sum v)``.
    0 for equal values, ``1 - 1/F`` when one value holds everything.
    """
    B = _backend(values, "values")
    v = B.sort(B.reshape(values, (-1,)))
    n = B.shape(v)[0]
    # the ranks are made on the device: no host list of F floats uploaded per training step
    coef = B.cast(B.arange(1, n + 1, like=v), like=v) * 2.0 - float(n + 1)
    # a tiny floor keeps an all-zero attribution (e.g. an untrained Fixup net) finite
    return B.sum(coef * v) / (n * B.sum(v) + 1e-12)


def mean_abs_gini(attr: Any) -> Any:
    """Gini of the mean absolute attribution per feature, ``Gini(mean_n |attr_n|)`` (the X-DNN paper's sparsity prior).

    Args:
        attr: attributions ``(N, ...)``.

    Returns:
        A scalar tensor in ``[0, 1)``; higher means sparser attributions.
    """
    B = _backend(attr)
    n = B.shape(attr)[0]
    return gini(B.sum(B.abs(attr), axis=0) / n)


def gini_prior(attr: Any) -> Any:
    """The sparsity prior of Erion et al. as used by FAA: ``-Gini(mean_n |attr_n|)``.

    Minimising it (``loss + lam * gini_prior(attr)``) makes attributions sparser.
    """
    return -1.0 * mean_abs_gini(attr)


def total_variation(attr: Any, layout: Optional[str] = None) -> Any:
    """Mean anisotropic total variation of image attributions, a scalar tensor.

    ``mean_n sum_{c,h,w} |A[n,c,h+1,w] - A[n,c,h,w]| + |A[n,c,h,w+1] - A[n,c,h,w]|``.
    Minimising it makes attributions spatially smooth.

    Args:
        attr: attributions ``(N, C, H, W)`` or ``(N, H, W, C)``.
        layout: "NCHW" or "NHWC" (default: the framework's usual layout,
            NCHW for PyTorch, NHWC for TensorFlow).

    Raises:
        InputError: ``attr`` is not 4-D, or an unknown layout.
    """
    B = _backend(attr)
    layout = layout or B.image_layout
    if len(B.shape(attr)) != 4 or layout not in ("NCHW", "NHWC"):
        raise InputError(
            f"total_variation needs 4-D attributions and layout 'NCHW' or 'NHWC'; got shape "
            f"{B.shape(attr)} and layout {layout!r}.")
    n = B.shape(attr)[0]
    if layout == "NCHW":
        dh = attr[:, :, 1:, :] - attr[:, :, :-1, :]
        dw = attr[:, :, :, 1:] - attr[:, :, :, :-1]
    else:
        dh = attr[:, 1:, :, :] - attr[:, :-1, :, :]
        dw = attr[:, :, 1:, :] - attr[:, :, :-1, :]
    return (B.sum(B.abs(dh)) + B.sum(B.abs(dw))) / n


def xgradient_for_training(model: Any, x: Any, labels: Any, *, batch_size: Optional[int] = None,
                           output: Any = None) -> Any:
    """Differentiable X-Gradient ``x * grad F_y(x)`` of a model being trained.

    The model runs as it is (``model_mode="as_is"``: dropout stays on in training
    mode; batch-norm running statistics are put back afterwards) and the result
    keeps its graph: PyTorch builds it with ``create_graph=True``; in TensorFlow
    call this inside the ``GradientTape`` that computes the loss's weight
    gradients (a persistent tape works too). It goes through the same entry
    checks as :func:`boundary_xg.attribute` (``boundary_xg._entry``).

    Args:
        model: the model being trained (an X-DNN, for the attribution to be IG).
        x: a batch ``(N, ...)``, a native tensor or NumPy; labels: class indices
            ``(N,)`` (or one-hot ``(N, C)``).
        batch_size: model inputs per pass (default: all of ``x`` at once up to
            :func:`~boundary_xg.ops.default_batch_size`).
        output: for a model with several outputs, the index, key or callable that
            picks the ``(N, C)`` logits.

    Returns:
        Attributions shaped like ``x``, differentiable with respect to the weights:
        a tensor of the model's framework, on the model's device, also for NumPy
        ``x`` (a NumPy array cannot carry the graph; the loss needs it).
    """
    from .. import _entry
    from ..methods.xgradient import warn_if_not_homogeneous, xgradient
    from ..ops import default_batch_size

    _entry.check_output_option(output)
    B = _entry.resolve_backend(model, x, None)
    with _entry.entry(B, model):
        xt, kind, np_dtype = _entry.prepare_x(B, model, x)
        batch_size = batch_size or default_batch_size(B, xt)
        warn_if_not_homogeneous(B, model, xt, {})
        with B.session(model, mode="eval") as f_eval:
            f_eval = _entry.select_output(f_eval, output)
            num_classes = _entry.probe(B, model, f_eval, xt)
            y = _entry.prepare_labels(B, f_eval, labels, xt, num_classes, batch_size)
        with B.session(model, mode="as_is") as f:
            out = xgradient(B, _entry.select_output(f, output), xt, y, create_graph=True,
                            batch_size=batch_size)
        # NumPy in still gives a tensor: the result exists to be differentiated
        return _entry.to_caller(B, out, "tensor", np_dtype, keep_graph=True)
