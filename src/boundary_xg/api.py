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

import warnings
import weakref
from typing import Any, Dict, Optional, Tuple

import numpy as np

from .backends import Backend, backend_for
from .errors import InputError, LabelError
from .methods.registry import COMMON_OPTIONS, MethodSpec, check_options, lookup
from .ops import default_batch_size, predict


class ProbabilityOutputWarning(UserWarning):
    """The model's outputs look like probabilities, which are explained as given."""


def _framework_root(obj: Any) -> str:
    return (type(obj).__module__ or "").split(".")[0]


def _prepare_x(B: Backend, model: Any, x: Any) -> Tuple[Any, str, Any]:
    """Convert ``x`` once; return ``(tensor, caller kind, NumPy dtype of the input)``."""
    if B.is_tensor(x):
        kind, np_dtype = "tensor", None
        xt = B.asarray(x)
        if not B.is_floating(xt):
            xt = B.asarray(xt, dtype=B.model_dtype(model))
    else:
        root = _framework_root(x)
        if root in ("torch", "tensorflow", "jax", "jaxlib"):
            raise InputError(
                f"x is a {root} tensor but the model runs on the {B.name} backend; pass NumPy "
                f"or a {B.name} tensor."
            )
        arr = np.asarray(x)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"x has dtype {arr.dtype}; expected a numeric array.")
        kind, np_dtype = "numpy", arr.dtype
        xt = B.asarray(arr, dtype=B.model_dtype(model), device=B.model_device(model))
    shape = B.shape(xt)
    if len(shape) < 2:
        raise InputError(
            f"x has shape {shape}; expected a batch-first array (N, ...) in the model's layout "
            f"({B.image_layout} for images). For one example, add a batch axis: x[None]."
        )
    if shape[0] == 0:
        raise InputError("x has no examples (its first axis has length 0).")
    if not B.all_finite(xt):
        raise InputError("x contains NaN or infinity; attributions need finite inputs.")
    return xt, kind, np_dtype


def _layout_hint(B: Backend, shape: Tuple[int, ...]) -> str:
    if len(shape) == 4:
        if B.image_layout == "NCHW" and shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4):
            return " x looks channels-last (NHWC); PyTorch models take NCHW: x.permute(0, 3, 1, 2)."
        if B.image_layout == "NHWC" and shape[1] in (1, 3, 4) and shape[-1] not in (1, 3, 4):
            return " x looks channels-first (NCHW); Keras models take NHWC: np.transpose(x, (0, 2, 3, 1))."
    if len(shape) == 3:
        return " x may lack its batch axis; for one example use x[None]."
    return ""


def _expected_input_shape(model: Any) -> Optional[Tuple]:
    try:
        ishape = model.input_shape  # Keras functional / Sequential models
    except Exception:
        return None
    if isinstance(ishape, tuple) and all(d is None or isinstance(d, int) for d in ishape):
        return ishape
    return None


# model -> {(weights fingerprint, example shape, dtype): number of classes}. A probe
# forward costs a third of a pass, which matters for one-pass methods on small
# batches; the fingerprint (identity and shape of every weight) makes a replaced
# classifier head miss the cache.
_PROBED: "weakref.WeakKeyDictionary[Any, Dict[Any, int]]" = weakref.WeakKeyDictionary()


def _probe(B: Backend, model: Any, f: Any, x: Any) -> int:
    """Number of classes of ``model`` for inputs like ``x``, checking that ``x`` fits.

    Runs one example through the model the first time a model sees inputs of this
    shape (cached per model and weights).
    """
    shape = B.shape(x)
    key = (B.fingerprint(model), shape[1:], B.dtype_name(x))
    try:
        cache = _PROBED.setdefault(model, {})
    except TypeError:  # not weak-referenceable: probe every time
        cache = {}
    if key not in cache:
        cache[key] = _probe_once(B, model, f, x)
    return cache[key]


def _probe_once(B: Backend, model: Any, f: Any, x: Any) -> int:
    shape = B.shape(x)
    expected = _expected_input_shape(model)
    if expected is not None and (
        len(expected) != len(shape)
        or any(e is not None and e != s for e, s in zip(expected[1:], shape[1:]))
    ):
        raise InputError(
            f"x has shape {shape} but the model expects inputs of shape {expected} "
            f"(batch first, {B.image_layout} for images).{_layout_hint(B, shape)}"
        )
    try:
        out = B.forward(f, x[:1])
    except Exception as err:  # the framework's own message, wrapped with the fix
        first = str(err).strip().splitlines()[0] if str(err).strip() else type(err).__name__
        raise InputError(
            f"x of shape {shape} does not fit the model ({type(err).__name__}: {first}). "
            f"x must be batch-first in the model's layout ({B.image_layout} for images)."
            f"{_layout_hint(B, shape)}"
        ) from err
    oshape = B.shape(out)
    if len(oshape) != 2:
        raise InputError(
            f"the model's output has shape {oshape}; boundary_xg explains classifiers whose "
            "output is (N, C) logits."
        )
    row = B.to_numpy(out)[0].astype(np.float64)
    if oshape[1] > 1 and np.all(row >= 0) and np.all(row <= 1) and abs(row.sum() - 1) < 1e-4:
        warnings.warn(
            "the model's outputs look like probabilities (non-negative, summing to 1) and no "
            "final softmax layer could be separated; they are explained as given. For logits, "
            "pass the model without its softmax.",
            ProbabilityOutputWarning,
            stacklevel=4,
        )
    return int(oshape[1])


def _prepare_labels(B: Backend, f: Any, labels: Any, x: Any, num_classes: int, batch_size) -> Any:
    """Class indices ``(N,)`` on ``x``'s device from indices, one-hot, a scalar or None."""
    n = B.shape(x)[0]
    if labels is None:
        return B.argmax(predict(B, f, x, batch_size), axis=1)
    if B.is_tensor(labels):
        arr = B.to_numpy(labels)
    else:
        try:
            arr = np.asarray(labels)
        except Exception as err:
            raise LabelError(f"labels could not be read as an array ({err}).") from err
    if arr.ndim == 0:
        arr = np.full((n,), arr)
    if arr.ndim == 2 and arr.shape[1] == 1 and num_classes != 1:
        arr = arr[:, 0]
    elif arr.ndim == 2:
        if arr.shape != (n, num_classes):
            raise LabelError(
                f"labels is a one-hot array of shape {arr.shape}; expected ({n}, {num_classes}): "
                f"one row per example of x and one column per class of the model."
            )
        if not (np.all((arr == 0) | (arr == 1)) and np.all(arr.sum(axis=1) == 1)):
            raise LabelError(
                "labels is 2-D but not one-hot: each row must hold a single 1 and zeros. "
                "Pass class indices of shape (N,) instead."
            )
        arr = arr.argmax(axis=1)
    if arr.ndim != 1:
        raise LabelError(f"labels has shape {arr.shape}; expected class indices (N,) or one-hot (N, C).")
    if arr.shape[0] != n:
        raise LabelError(f"labels has {arr.shape[0]} entries but x has {n} examples.")
    if arr.dtype.kind == "f":
        if not np.all(np.isfinite(arr)) or not np.all(arr == np.round(arr)):
            raise LabelError("labels holds non-integer values; expected integer class indices.")
    elif arr.dtype.kind not in "iu":
        raise LabelError(f"labels has dtype {arr.dtype}; expected integer class indices.")
    arr = arr.astype(np.int64)
    bad = arr[(arr < 0) | (arr >= num_classes)]
    if bad.size:
        raise LabelError(
            f"labels {sorted(set(bad.tolist()))[:5]} out of range: the model has {num_classes} "
            f"classes, so labels must lie in [0, {num_classes - 1}]."
        )
    return B.asarray(arr, like=x)


def _prepare_baseline(B: Backend, baseline: Any, x: Any) -> Any:
    """A tensor of ``x``'s shape from None (zeros), a scalar, or a broadcastable array."""
    if baseline is None:
        return B.zeros_like(x)
    shape = B.shape(x)
    if isinstance(baseline, (int, float, np.number)) and not isinstance(baseline, bool):
        if not np.isfinite(baseline):
            raise InputError("baseline is NaN or infinite; expected finite values.")
        return B.zeros_like(x) + float(baseline)
    root = _framework_root(baseline)
    if not B.is_tensor(baseline) and root in ("torch", "tensorflow"):
        raise InputError(f"baseline is a {root} tensor but the model runs on the {B.name} backend.")
    bt = B.asarray(baseline if B.is_tensor(baseline) else np.asarray(baseline), like=x)
    bt = B.cast(bt, x)
    try:
        ok = tuple(np.broadcast_shapes(B.shape(bt), shape)) == tuple(shape)
    except ValueError:
        ok = False
    if not ok:
        raise InputError(
            f"baseline of shape {B.shape(bt)} does not broadcast to x's shape {shape}; pass a "
            "scalar, an array of x's shape, or one that broadcasts to it (e.g. one example's shape)."
        )
    if not B.all_finite(bt):
        raise InputError("baseline contains NaN or infinity; expected finite values.")
    if tuple(B.shape(bt)) == tuple(shape):
        return bt  # methods never write into a baseline, so the caller's own tensor will do
    return B.broadcast_to(bt, shape) * 1  # materialise: an expanded view would share memory


def _one_row(B: Backend, baseline: Any, x: Any) -> Optional[bool]:
    """True where ``baseline`` is the same for every example by construction (None, a
    scalar, one example's shape, or one row); None where only its values can tell."""
    if baseline is None or (isinstance(baseline, (int, float, np.number)) and not isinstance(baseline, bool)):
        return True
    shape = tuple(B.shape(baseline)) if B.is_tensor(baseline) else np.shape(baseline)
    full = tuple(B.shape(x))
    return True if len(shape) < len(full) or shape[0] == 1 else None


def _to_caller(B: Backend, t: Any, kind: str, np_dtype: Any, keep_graph: bool = False) -> Any:
    if kind == "tensor":
        return t if keep_graph else B.stop_gradient(t)
    arr = B.to_numpy(t)
    if np_dtype is not None and np.dtype(np_dtype).kind == "f" and arr.dtype.kind == "f":
        arr = arr.astype(np_dtype, copy=False)
    return arr


def run_method(spec: MethodSpec, model: Any, x: Any, labels: Any, options: Dict[str, Any]) -> Any:
    """Check, convert, run ``spec`` on the model and convert back (see :func:`attribute`)."""
    check_options(spec, options)
    opts = dict(COMMON_OPTIONS)
    opts.update(spec.defaults)
    opts.update(options)
    B = backend_for(model, x, opts.pop("backend"))
    mode = opts.pop("model_mode")
    return_gap = bool(opts.pop("return_gap", False))
    xt, kind, np_dtype = _prepare_x(B, model, x)
    if opts.get("batch_size") is None:
        opts["batch_size"] = default_batch_size(B, xt)
    if spec.prepare is not None:  # checks that need the model; converts method options
        spec.prepare(B, model, xt, opts)
    if mode != "eval":
        # the probe and the predicted labels always use inference semantics: a
        # forward in training mode would update batch-norm running statistics
        with B.session(model, mode="eval") as f_eval:
            num_classes = _probe(B, model, f_eval, xt)
            y = _prepare_labels(B, f_eval, labels, xt, num_classes, opts.get("batch_size"))
    with B.session(model, mode=mode) as f:
        if mode == "eval":
            num_classes = _probe(B, model, f, xt)
            y = _prepare_labels(B, f, labels, xt, num_classes, opts.get("batch_size"))
        if spec.uses_baseline:
            given = opts.get("baseline")
            opts["baseline"] = _prepare_baseline(B, given, xt)
            if "shared_baseline" in inspect.signature(spec.func).parameters:
                opts["shared_baseline"] = _one_row(B, given, xt)
        if spec.supports_gap:
            opts["return_gap"] = return_gap
        out = spec.func(B, f, xt, y, **opts)
    keep = bool(opts.get("create_graph", False))
    if isinstance(out, tuple):  # (attr, gap) or, for boundary variants, (attr[, gap][, distances])
        return tuple(_to_caller(B, t, kind, np_dtype, keep) for t in out)
    return _to_caller(B, out, kind, np_dtype, keep)


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
            ``batch_size`` (model inputs per pass; default :func:`~boundary_xg.ops.default_batch_size`), ``backend`` and
            ``model_mode`` ("eval" or "as_is").

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
