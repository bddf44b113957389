"""The front end: ``BA(method).attribute(model, x, labels)`` and ``attribute(...)``.

It picks the backend from the model, checks every argument once at the entry
(shapes, labels, baseline, NaN/inf, options), converts the input once, runs the
method (written once over the backend interface) inside a model session that
puts the model back exactly as it was, and returns the result in the caller's
type: NumPy in, NumPy out; a tensor in, a tensor of the same framework on the
same device out.
"""

from __future__ import annotations

import inspect
from typing import Any, Dict, Optional

from ._entry import (
    ProbabilityOutputWarning,
    check_output_option,
    entry,
    one_row,
    prepare_baseline,
    prepare_labels,
    prepare_x,
    probe,
    resolve_backend,
    select_output,
    to_caller,
)
from .methods.registry import COMMON_OPTIONS, MethodSpec, check_options, lookup
from .backends import require
from .backends import to_numpy as _backend_to_numpy
from .ops import default_batch_size
from .ops import predict as _predict

__all__ = ["BA", "attribute", "predict", "run_method", "ProbabilityOutputWarning"]


def run_method(spec: MethodSpec, model: Any, x: Any, labels: Any, options: Dict[str, Any]) -> Any:
    """Check, convert, run ``spec`` on the model and convert back (see :func:`attribute`)."""
    check_options(spec, options)
    opts = dict(COMMON_OPTIONS)
    opts.update(spec.defaults)
    opts.update(options)
    output = opts.pop("output", None)
    check_output_option(output)
    B = resolve_backend(model, x, opts.pop("backend"))
    require(B, spec.needs, spec.short)  # before any work: names the backends that can run it
    mode = opts.pop("model_mode")
    return_gap = bool(opts.pop("return_gap", False))
    with entry(B, model):
        xt, kind, np_dtype = prepare_x(B, model, x)
        if opts.get("batch_size") is None:
            opts["batch_size"] = default_batch_size(B, xt)
        if spec.prepare is not None:  # checks that need the model; converts method options
            spec.prepare(B, model, xt, opts)
        if mode != "eval":
            # the probe and the predicted labels always use inference semantics: a
            # forward in training mode would update batch-norm running statistics
            with B.session(model, mode="eval") as f_eval:
                f_eval = select_output(f_eval, output)
                num_classes = probe(B, model, f_eval, xt)
                y = prepare_labels(B, f_eval, labels, xt, num_classes, opts.get("batch_size"))
        with B.session(model, mode=mode) as f:
            f = select_output(f, output)
            if mode == "eval":
                num_classes = probe(B, model, f, xt)
                y = prepare_labels(B, f, labels, xt, num_classes, opts.get("batch_size"))
            if spec.uses_baseline:
                given = opts.get("baseline")
                opts["baseline"] = prepare_baseline(B, given, xt)
                if "shared_baseline" in inspect.signature(spec.func).parameters:
                    opts["shared_baseline"] = one_row(B, given, xt)
            if spec.supports_gap:
                opts["return_gap"] = return_gap
            out = spec.func(B, f, xt, y, **opts)
        keep = bool(opts.get("create_graph", False))
        if isinstance(out, tuple):  # (attr, gap) or, for boundary variants, (attr[, gap][, distances])
            return tuple(to_caller(B, t, kind, np_dtype, keep) for t in out)
        return to_caller(B, out, kind, np_dtype, keep)


class BA:
    """An attribution method, ready to explain models of either framework.

    ``BA("IG", steps=64).attribute(model, x, labels)``. Method names are the papers'
    short names (``SM``, ``IxG``, ``IG``, ``SG``, ``XG``) or readable ones
    (``"integrated_gradients"``), case-insensitive. Options given here are checked
    at once and are the defaults of every :meth:`attribute` call, which may
    override them.

    Args:
        method: the method's name; an unknown name raises :class:`MethodError`
            listing the valid ones.
        use_boundary: True gives the boundary variant of a base method (``SM`` ->
            ``BSM``, ``SG`` -> ``BSG``, ``IG`` -> ``BIG``, ``DeepLIFT`` -> ``BDT``),
            False the plain method of a boundary name; None (default) uses the
            method as named.
        **options: the method's options (see :func:`attribute`).
    """

    def __init__(self, method: str, use_boundary: Optional[bool] = None, **options: Any):
        self.spec = lookup(method)
        if use_boundary is not None:
            from .methods.boundary import with_boundary

            self.spec = with_boundary(self.spec, bool(use_boundary))
        check_options(self.spec, options)
        self.options = dict(options)

    @property
    def name(self) -> str:
        """The method's short name ("IG")."""
        return self.spec.short

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"BA({self.spec.short!r}{', ' + opts if opts else ''})"

    def attribute(self, model: Any, x: Any, labels: Any = None, **options: Any) -> Any:
        """Explain ``model``'s logit of ``labels`` at ``x``; see :func:`attribute`."""
        merged = dict(self.options)
        merged.update(options)
        return run_method(self.spec, model, x, labels, merged)


def attribute(model: Any, x: Any, labels: Any = None, method: str = "IG", **options: Any) -> Any:
    """Attributions of ``model``'s prediction for ``labels`` at ``x``.

    Args:
        model: a ``torch.nn.Module`` or a Keras 3 model on the TensorFlow backend
            (Sequential, functional or subclassed). The backend is chosen from the
            model; ``backend="torch"``/``"tensorflow"`` overrides.
        x: inputs, batch first, in the model's own layout (``(N, C, H, W)`` for
            PyTorch images, ``(N, H, W, C)`` for Keras). NumPy or a native tensor.
        labels: class indices ``(N,)``, one-hot ``(N, C)``, one int for all
            examples, or None for the predicted class.
        method: ``"SM"`` saliency, ``"IxG"`` input x gradient, ``"IG"`` Integrated
            Gradients, ``"SG"`` SmoothGrad, ``"XG"`` X-Gradient (or readable names).
        **options: method options: IG ``baseline`` (None = zeros, a scalar or an
            array broadcastable to ``x``), ``steps`` (50), ``rule``
            ("gausslegendre"), ``return_gap``; SG ``num_samples`` (50), ``sigma``
            (0.15 of each input's range), ``sigma_abs``, ``variant``, ``seed``; SM
            ``abs`` (False); XG ``create_graph`` (False). Every method takes
            ``batch_size`` (model inputs per pass; default :func:`~boundary_xg.ops.default_batch_size`), ``backend``,
            ``model_mode`` ("eval" or "as_is": train-mode modules run as they
            are; batch-norm statistics are put back afterwards) and ``output``
            (for models with several outputs: an index, a key or a callable
            that picks the ``(N, C)`` logits from them).

    Returns:
        Attributions shaped like ``x``, in the caller's type (NumPy in, NumPy out;
        a tensor in, a tensor on the same device out). With ``return_gap=True``:
        ``(attributions, gap)``, gap ``(N,)`` = ``sum(attr) - (F(x) - F(baseline))``.

    Raises:
        InputError, LabelError, MethodError, UnsupportedModelError,
        BackendNotAvailableError: with a message naming the argument and the fix.

    Example:
        >>> attr = attribute(model, x, labels, method="SG", num_samples=50, sigma=0.15, seed=0)
    """
    return run_method(lookup(method), model, x, labels, dict(options))


def predict(model: Any, x: Any, *, batch_size: Optional[int] = None, backend: Optional[str] = None,
            output: Any = None) -> Any:
    """The model's logits ``(N, C)`` at ``x``, in inference mode, in the caller's type.

    The same entry checks as :func:`attribute` (layout, dtype, device, several
    outputs), for callers that only need predictions (``viz``, the command line).

    Args:
        model, x, backend, output: as for :func:`attribute`.
        batch_size: model inputs per pass (default: :func:`~boundary_xg.ops.default_batch_size`).

    Returns:
        Logits ``(N, C)``: NumPy for NumPy input, a tensor on the model's device for a tensor.

    Example:
        >>> labels = predict(model, x).argmax(axis=1)
    """
    check_output_option(output)
    B = resolve_backend(model, x, backend)
    with entry(B, model):
        xt, kind, np_dtype = prepare_x(B, model, x)
        with B.session(model, mode="eval") as f:
            f = select_output(f, output)
            probe(B, model, f, xt)
            out = _predict(B, f, xt, batch_size or default_batch_size(B, xt))
        return to_caller(B, out, kind, np_dtype)


def to_numpy(a: Any) -> Any:
    """``a`` as a NumPy array: a tensor of any supported framework (on any device) or array-like.

    Imports no framework: a tensor exists only once its framework is imported.

    Example:
        >>> heat = to_numpy(bxg.attribute(model, x_tensor, labels)).sum(axis=1)
    """
    return _backend_to_numpy(a)
