"""Is a model nonnegatively homogeneous (an X-DNN)? A static scan plus a numerical check.

A network with ``F(a x) = a F(x)`` for all ``a > 0`` has Integrated Gradients from
the zero baseline equal to X-Gradient ``x * grad F(x)``, exactly (Hesse et al.,
"Fast Axiomatic Attribution for Neural Networks", NeurIPS 2021; docs/xdnn.md). The
static scan lists the layers that break this (biases, normalisation layers,
non-homogeneous activations, additive scalars); the numerical check measures
``F(a x) = a F(x)`` on given inputs, which also catches what no scan can see
(activations applied functionally inside ``forward``). The per-framework scans
are the backends' ``xdnn`` capability (``backends/<framework>/xdnn.py``), imported
only when a model of that framework is checked.
"""

from __future__ import annotations

import weakref
from typing import Any, List, Optional, Sequence, Tuple


from .. import _entry
from ..backends import Backend, backend_for, require
from ..errors import warn
from ..ops import predict
from .report import HomogeneityReport, NonHomogeneousWarning, Offender

#: scales a of the numerical check F(a x) = a F(x): below and above 1, not round
DEFAULT_SCALES: Tuple[float, ...] = (0.5, 2.0, 3.7)

# model -> (fingerprint, offenders): the static scan of XG's warning and IG's exact
# path, repeated on every call otherwise
_STATIC: "weakref.WeakKeyDictionary[Any, Tuple[Any, List[Offender]]]" = weakref.WeakKeyDictionary()
_WARNED: "weakref.WeakSet[Any]" = weakref.WeakSet()


def _impl(B: Backend):
    """The backend's X-DNN kernels (scan, bias stripping); a clear error when it has none."""
    require(B, ("xdnn",), "the X-DNN toolkit")
    return B.xdnn_kernels()


def scan_layers(model: Any, backend: Optional[str] = None) -> List[Offender]:
    """The static scan alone: every layer of ``model`` that breaks homogeneity.

    Args:
        model: a ``torch.nn.Module`` or a Keras model.
        backend: override the framework detection ("torch", "tensorflow").

    Returns:
        A list of :class:`Offender` (empty for an X-DNN, and for a plain callable,
        which has no layers to scan).
    """
    return _impl(backend_for(model, None, backend)).scan(model)


def static_report(B: Backend, model: Any) -> HomogeneityReport:
    """The static scan of ``model``, cached per model (recomputed when its weights change)."""
    key = B.fingerprint(model)
    try:
        hit = _STATIC.get(model)
    except TypeError:  # not weak-referenceable: scan every time
        return HomogeneityReport(offenders=_impl(B).scan(model), framework=B.name)
    if hit is None or hit[0] != key:
        hit = (key, _impl(B).scan(model))
        _STATIC[model] = hit
    return HomogeneityReport(offenders=list(hit[1]), framework=B.name)


def warn_once_if_not_homogeneous(B: Backend, model: Any) -> None:
    """Warn (:class:`NonHomogeneousWarning`) the first time a non-X-DNN is explained by XG."""
    report = static_report(B, model)
    if not report.offenders:
        return
    try:
        if model in _WARNED:
            return
        _WARNED.add(model)
    except TypeError:
        pass
    warn(
        "XG on a model that is not nonnegatively homogeneous: the result is Input x Gradient, "
        f"not Integrated Gradients. Offending layers: {report.offender_summary()}. See "
        "boundary_xg.xdnn.check_homogeneous(model) and boundary_xg.xdnn.strip_bias(model).",
        NonHomogeneousWarning
    )


def scaling_error(
    B: Backend, f: Any, x: Any, scales: Sequence[float] = DEFAULT_SCALES,
    batch_size: Optional[int] = None,
) -> float:
    """Worst relative error of ``F(a x) = a F(x)`` over ``scales``, as a Python float.

    All scaled copies run as one batch; one value is read back to the host.

    Args:
        B: the backend; f: the logits function; x: inputs ``(N, ...)``.
        scales: the factors ``a > 0``.

    Returns:
        ``max_a max|F(a x) - a F(x)| / (a max|F(x)|)`` (0 when both sides are 0).
    """
    n = B.shape(x)[0]
    out = predict(B, f, B.concat([x] + [x * float(a) for a in scales]), batch_size)
    base = out[:n]
    scale_ref = B.max(B.abs(base))
    errs = [B.reshape(B.max(B.abs(out[(k + 1) * n:(k + 2) * n] - base * float(a))) / float(a), (1,))
            for k, a in enumerate(scales)]
    worst = float(B.to_numpy(B.max(B.concat(errs))))
    ref = float(B.to_numpy(scale_ref))
    if worst == 0.0:
        return 0.0
    return worst / ref if ref > 0 else float("inf")


def check_homogeneous(
    model: Any,
    x: Any = None,
    *,
    scales: Sequence[float] = DEFAULT_SCALES,
    rtol: float = 1e-4,
    backend: Optional[str] = None,
    batch_size: Optional[int] = None,
) -> HomogeneityReport:
    """Check whether ``model`` is nonnegatively homogeneous, ``F(a x) = a F(x)`` for ``a > 0``.

    On such a model (an X-DNN) X-Gradient ``x * grad F(x)`` is Integrated
    Gradients from the zero baseline, in one pass. The static scan lists every
    layer that breaks homogeneity: biases (``bias`` parameters of any shape,
    Fixup's scalar biases), batch/layer/group normalisation (shift and running
    mean), input normalisation inside the model, non-homogeneous activations
    (GELU, SiLU, sigmoid, tanh, ELU, softplus, softmax, clipped ReLUs, ...) and
    non-zero additive buffers. A final softmax that the backends strip anyway is
    not counted. With ``x``, ``F(a x) = a F(x)`` is also measured over all logits
    of all examples, as ``max_a max|F(a x) - a F(x)| / (a max|F(x)|)`` (one batched
    forward of the scaled copies), which catches what a scan cannot see
    (activations applied functionally in ``forward``, a Keras ``Lambda``).

    Args:
        model: a ``torch.nn.Module`` or a Keras 3 model (TensorFlow backend).
        x: optional inputs ``(N, ...)`` in the model's layout (NumPy or tensor).
        scales: the factors ``a`` of the numerical check (default 0.5, 2, 3.7).
        rtol: tolerance of the numerical check (default 1e-4, float32 rounding).
        backend: override the framework detection.
        batch_size: model inputs per forward pass of the numerical check.

    Returns:
        A :class:`HomogeneityReport`: ``.homogeneous``, ``.offenders`` (layer,
        kind, reason), ``.max_rel_error`` (None without ``x``); ``print(report)``
        reads well. The model is left exactly as it was.

    Raises:
        UnsupportedModelError: the model belongs to no supported framework.

    Example:
        >>> report = check_homogeneous(model, x[:8])
        >>> print(report)
    """
    B = _entry.resolve_backend(model, x, backend)
    report = HomogeneityReport(
        offenders=_impl(B).scan(model), scales=tuple(float(a) for a in scales), rtol=float(rtol),
        framework=B.name,
    )
    if x is not None:
        with _entry.entry(B, model):
            xt, _, _ = _entry.prepare_x(B, model, x)
            with B.session(model) as f:
                report.max_rel_error = scaling_error(B, f, xt, scales, batch_size)
    return report


def strip_bias(model: Any, *, backend: Optional[str] = None) -> Any:
    """A copy of ``model`` with every bias removed, for fine-tuning into an X-DNN.

    PyTorch: a deep copy in which every ``bias`` of a linear/convolution layer is
    set to None and every other parameter named ``*bias*`` (e.g. Fixup's scalar
    biases) becomes a constant zero buffer. Keras: ``clone_model`` with
    ``use_bias=False`` wherever a layer has it, and the remaining weights copied.
    Layers that cannot be made homogeneous this way (batch/layer normalisation,
    non-homogeneous activations, input normalisation) are kept, listed in the
    copy's attribute ``xdnn_unfixable`` and reported by a warning. The original
    model is not changed.

    Args:
        model: a ``torch.nn.Module`` or a Keras Sequential/functional model.
        backend: override the framework detection.

    Returns:
        The bias-free copy; ``copy.xdnn_unfixable`` is a tuple of :class:`Offender`.

    Raises:
        UnsupportedModelError: a subclassed Keras model (``clone_model`` cannot
            rebuild it) or a model of no supported framework.

    Warns:
        NonHomogeneousWarning: some layers remain that break homogeneity.
    """
    B = backend_for(model, None, backend)
    copy, unfixable = _impl(B).strip_bias(model)
    if unfixable:
        warn(
            "strip_bias removed the biases, but these layers still break homogeneity: "
            + ", ".join(f"{o.layer} ({o.kind})" for o in unfixable)
            + ". Replace them (e.g. ReLU for smooth activations, no normalisation) to get an X-DNN.",
            NonHomogeneousWarning
        )
    return copy
