"""The one front door: every check and conversion of what a caller passes in.

:func:`~boundary_xg.api.attribute`, :func:`~boundary_xg.search.find_boundary` and
:func:`~boundary_xg.xdnn.xgradient_for_training` (and the metrics and dataset runs
to come) go through these helpers and nothing else touches user arrays:

* :func:`resolve_backend`: the backend, with ``backend=`` checked against the model;
* :func:`entry`: the call's context: one lock per model (concurrent calls on one
  model run one after the other, so each sees and restores the caller's flags) and
  the backend's entry context (torch: leaves an enclosing ``inference_mode``);
* :func:`prepare_x`, :func:`prepare_labels`, :func:`prepare_baseline`: conversion
  once, with shape, dtype, device and finiteness checks that name the argument;
* :func:`probe`: the model's number of classes for inputs like ``x`` (one example
  through the model), with the output selection ``output=``;
* :func:`to_caller`: results back in the caller's type and dtype.

This module sits below the entry points and above the algorithms: it imports
``backends``, ``errors`` and ``ops`` only, never ``api``, ``methods`` or
``search``, so every entry point can import it without a circle.
"""

from __future__ import annotations

import contextlib
import re
import threading
import weakref
from typing import Any, Callable, Dict, Iterator, Optional, Tuple

import numpy as np

from .backends import Backend, backend_for
from .backends import foreign_tensor, framework_of, installed, lookup_identity
from .errors import InputError, LabelError, ProbabilityOutputWarning  # noqa: F401  (re-exported)
from .errors import one_call, warn
from .ops import predict

__all__ = [
    "ProbabilityOutputWarning", "framework_root", "resolve_backend", "entry", "model_lock",
    "prepare_x", "prepare_labels", "prepare_baseline", "one_row", "probe", "select_output",
    "to_caller", "layout_hint",
]





def framework_root(obj: Any) -> str:
    """The top-level package of ``obj``'s type ("torch", "tensorflow", "numpy", ...)."""
    return (type(obj).__module__ or "").split(".")[0]


# --- the backend ------------------------------------------------------------------------
def resolve_backend(model: Any, x: Any, backend: Optional[str]) -> Backend:
    """The backend for ``model``; an explicit ``backend=`` must fit the model's framework.

    Raises:
        InputError: ``backend`` names another framework than the model's.
        UnsupportedModelError, BackendNotAvailableError: see :func:`backend_for`.
    """
    if backend is not None:
        # checked before the named framework is imported (a needless import, and
        # TensorFlow imported after torch's lazy parts are due can crash)
        ident = lookup_identity(backend)
        own = framework_of(model)
        # another backend over the same framework fits; a framework that is not
        # installed is reported as such by backend_for
        if own is not None and ident is not None and lookup_identity(own).framework != ident.framework \
                and installed(ident.framework):
            raise InputError(
                f"backend={backend!r} does not fit the model, a {type(model).__module__}."
                f"{type(model).__qualname__} (a {own} model); drop backend= to detect it, or "
                f"pass backend={own!r}."
            )
    return backend_for(model, x, backend)


# --- the call's context: one lock per model -----------------------------------------------
_LOCKS: "weakref.WeakKeyDictionary[Any, threading.RLock]" = weakref.WeakKeyDictionary()
_LOCKS_GUARD = threading.Lock()
#: for models that cannot be weakly referenced or hashed: one lock for all of them
_SHARED_LOCK = threading.RLock()


def model_lock(model: Any) -> "threading.RLock":
    """The re-entrant lock of ``model``, created on first use (freed with the model)."""
    with _LOCKS_GUARD:
        try:
            lock = _LOCKS.get(model)
            if lock is None:
                lock = _LOCKS[model] = threading.RLock()
            return lock
        except TypeError:
            return _SHARED_LOCK


@contextlib.contextmanager
def entry(B: Backend, model: Any) -> Iterator[None]:
    """Context of one API call on ``model``: the model's lock and the backend's entry context.

    Every call saves the model's train/eval flags, sets what it needs and restores
    them; two threads doing that at once on one model would save each other's
    state. Under the lock concurrent calls run one after the other and give the
    serial results. The lock is re-entrant: an entry point may call another.
    Warnings given through :func:`boundary_xg.errors.warn` inside it are given
    once per (outermost) call.
    """
    with one_call(), model_lock(model), B.entry_context():
        yield


# --- x ------------------------------------------------------------------------------------
def prepare_x(B: Backend, model: Any, x: Any) -> Tuple[Any, str, Any]:
    """Convert ``x`` once; return ``(tensor, caller kind, NumPy dtype of the input)``.

    NumPy input is copied (a model that writes into its input must not change the
    caller's array); a native tensor must be on the model's device.

    Raises:
        InputError: a tensor of another framework or device, a non-numeric array,
            fewer than 2 axes, no examples, NaN or infinity.
    """
    if B.is_tensor(x):
        kind, np_dtype = "tensor", None
        check_device(B, model, x, "x")
        xt = B.asarray(x)
        if not B.is_floating(xt):
            xt = B.asarray(xt, dtype=B.model_dtype(model))
    else:
        root = foreign_tensor(x, B)
        if root is not None:
            raise InputError(
                f"x is a {root} tensor but the model runs on the {B.name} backend; pass NumPy "
                f"or a {B.name} tensor."
            )
        arr = np.array(x)  # a copy (see the docstring)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"x has dtype {arr.dtype}; expected a numeric array.")
        kind, np_dtype = "numpy", arr.dtype
        _check_x_shape(B, arr.shape)
        xt = B.asarray(arr, dtype=B.model_dtype(model), device=B.model_device(model))
        if B.dtype_name(xt) == _np_name(arr.dtype):
            # checked on the host array: no tensor op and no read back from the device
            finite = arr.dtype.kind != "f" or bool(np.isfinite(arr).all())
        else:  # converted: a value may overflow the model's dtype (1e39 in float32)
            finite = B.all_finite(xt)
        if not finite:
            raise _not_finite()
        return xt, kind, np_dtype
    _check_x_shape(B, B.shape(xt))
    if not B.all_finite(xt):
        raise _not_finite()
    return xt, kind, np_dtype


_NP_NAMES: Dict[Any, str] = {}


def _np_name(dtype: Any) -> str:
    """``dtype.name``, cached (NumPy 2 computes it in Python, ~20 us)."""
    name = _NP_NAMES.get(dtype)
    if name is None:
        name = _NP_NAMES[dtype] = dtype.name
    return name


def _check_x_shape(B: Backend, shape: Tuple[int, ...]) -> None:
    shape = tuple(shape)
    if len(shape) < 2:
        raise InputError(
            f"x has shape {shape}; expected a batch-first array (N, ...) in the model's layout "
            f"({B.image_layout} for images). For one example, add a batch axis: x[None]."
        )
    if shape[0] == 0:
        raise InputError("x has no examples (its first axis has length 0).")


def _not_finite() -> InputError:
    return InputError("x contains NaN or infinity; attributions need finite inputs.")


def check_device(B: Backend, model: Any, t: Any, name: str) -> None:
    """Raise :class:`InputError` when tensor ``t`` (argument ``name``) is not on the model's device."""
    want, have = B.model_device(model), B.device_of(t)
    if want is not None and have is not None and want != have:
        raise InputError(
            f"{name} is on device {have} but the model is on {want}; move one of them, e.g. "
            f"{name}.to({str(want)!r}) (boundary_xg computes on the model's device and "
            "returns tensors there)."
        )


def layout_hint(B: Backend, shape: Tuple[int, ...]) -> str:
    """A sentence on the likely layout mistake for an input of ``shape``, or ""."""
    if len(shape) == 4:
        if B.image_layout == "NCHW" and shape[-1] in (1, 3, 4) and shape[1] not in (1, 3, 4):
            return (" x looks channels-last (NHWC); PyTorch models take NCHW: "
                    "np.transpose(x, (0, 3, 1, 2)) (x.permute(0, 3, 1, 2) for a tensor).")
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


# --- the model's outputs --------------------------------------------------------------------
class _SelectOutput:
    """``f`` followed by picking the logits out of several outputs (``output=``)."""

    def __init__(self, f: Callable, output: Any):
        self.__wrapped__ = f
        self.output = output

    def __call__(self, x: Any) -> Any:
        out = self.__wrapped__(x)
        if callable(self.output):
            return self.output(out)
        try:
            return out[self.output]
        except (KeyError, IndexError, TypeError) as err:
            raise InputError(
                f"output={self.output!r} does not pick an output of the model, which returns "
                f"{_describe(out)}; pass an index, a key, or a callable on the outputs."
            ) from err


def select_output(f: Callable, output: Any) -> Callable:
    """``f`` itself when ``output`` is None, else ``f`` whose result is ``outputs[output]``
    (an index or a key) or ``output(outputs)`` (a callable)."""
    return f if output is None else _SelectOutput(f, output)


def check_output_option(output: Any) -> None:
    """Raise :class:`InputError` unless ``output`` is None, an int, a str or a callable."""
    if output is None or callable(output) or (isinstance(output, (int, str)) and not isinstance(output, bool)):
        return
    raise InputError(
        f"output={output!r}: expected None, an index (int), a key (str) or a callable that "
        "takes the model's outputs and returns the (N, C) logits."
    )


def _describe(out: Any) -> str:
    if isinstance(out, dict):
        return f"a dict with keys {list(out)}"
    if isinstance(out, (tuple, list)):
        return f"a {type(out).__name__} of {len(out)} outputs"
    return f"a {type(out).__name__}"


# model -> {(weights fingerprint, example shape, dtype, output): number of classes}. A
# probe forward costs a third of a pass, which matters for one-pass methods on small
# batches; the fingerprint (identity and shape of every weight) makes a replaced
# classifier head miss the cache.
_PROBED: "weakref.WeakKeyDictionary[Any, Dict[Any, int]]" = weakref.WeakKeyDictionary()


def probe(B: Backend, model: Any, f: Any, x: Any) -> int:
    """Number of classes of ``model`` for inputs like ``x``, checking that ``x`` fits.

    Runs one example through ``f`` the first time a model sees inputs of this
    shape (cached per model, weights and output selection).

    Raises:
        InputError: ``x`` does not fit the model (shape, layout or dtype), or the
            model's output is not ``(N, C)`` logits (several outputs: ``output=``).
        Exception: an error of the model itself that is not about ``x`` propagates
            unchanged.
    """
    shape = B.shape(x)
    key = (B.fingerprint(model), shape[1:], B.dtype_name(x), repr(getattr(f, "output", None)))
    try:
        cache = _PROBED.setdefault(model, {})
    except TypeError:  # not weak-referenceable: probe every time
        cache = {}
    if key not in cache:
        cache[key] = _probe_once(B, model, f, x)
    return cache[key]


def _looks_like_shape_error(err: Exception, first_line: str) -> bool:
    # the first line only: Keras appends the call's arguments ("shape=(1, 6)") to
    # every error raised inside a layer, shape-related or not
    text = f"{type(err).__name__} {first_line}".lower()
    return any(w in text for w in (
        "shape", "size", "dimension", "channels", "rank", "mat1 and mat2", "incompatible",
        "expected input", "expected 4d", "expected 3d", "expected 2d",
    ))


def _probe_once(B: Backend, model: Any, f: Any, x: Any) -> int:
    shape = B.shape(x)
    expected = _expected_input_shape(model)
    if expected is not None and (
        len(expected) != len(shape)
        or any(e is not None and e != s for e, s in zip(expected[1:], shape[1:]))
    ):
        raise InputError(
            f"x has shape {shape} but the model expects inputs of shape {expected} "
            f"(batch first, {B.image_layout} for images).{layout_hint(B, shape)}"
        )
    try:
        out = B.forward(f, x[:1])
    except InputError:
        raise
    except Exception as err:
        _explain_first_forward(B, model, x, err)
        raise  # an error of the model itself: the caller sees it as raised
    if getattr(f, "output", None) is None and isinstance(out, (tuple, list, dict)):
        raise InputError(
            f"the model returns {_describe(out)}; pass output= to say which holds the logits: "
            "an index (output=0), a key (output='logits') or a callable on the outputs."
        )
    if not B.is_tensor(out):
        raise InputError(
            f"the model's output is {_describe(out)}, not a tensor; pass output= (an index, a "
            "key or a callable) to pick the (N, C) logits."
        )
    oshape = B.shape(out)
    if len(oshape) != 2:
        raise InputError(
            f"the model's output has shape {oshape}; boundary_xg explains classifiers whose "
            "output is (N, C) logits."
        )
    row = B.to_numpy(out)[0].astype(np.float64)
    if oshape[1] > 1 and np.all(row >= 0) and np.all(row <= 1) and abs(row.sum() - 1) < 1e-4:
        warn(
            "the model's outputs look like probabilities (non-negative, summing to 1) and no "
            "final softmax layer could be separated; they are explained as given. For logits, "
            "pass the model without its softmax.",
            ProbabilityOutputWarning
        )
    return int(oshape[1])


def _dtype_label(dtype: Any) -> str:
    """"float32" for torch.float32, tf.float32, "float32" or np.float32."""
    name = getattr(dtype, "name", None)
    if isinstance(name, str):
        return name
    return str(dtype).replace("torch.", "")


def _error_line(err: Exception) -> str:
    """The line of ``err``'s message that says what went wrong.

    Usually the first line; a TorchScript model's error starts with "The
    following operation failed in the TorchScript interpreter." and ends with the
    real one ("RuntimeError: Given groups=1, weight of size ..."), which is taken.
    """
    lines = [ln.strip() for ln in str(err).strip().splitlines() if ln.strip()]
    if not lines:
        return type(err).__name__
    if "TorchScript interpreter" in lines[0]:
        for ln in reversed(lines):
            m = re.match(r"^[A-Za-z_.]*(Error|Exception): (.+)$", ln)
            if m:
                return m.group(2)
    return lines[0]


#: "expected input[1, 1, 8, 8] to have 3 channels, but got 1 channels" (torch's convolutions),
#: "expected axis -1 of input shape to have value 3" (Keras' input checks)
_CHANNELS_TORCH = re.compile(r"expected input\[[0-9, ]+\] to have (\d+) channels, but got (\d+) channels")
_CHANNELS_KERAS = re.compile(r"expected axis -?\d+ of input shape to have value (\d+)")


def channel_mismatch(B: Backend, x_shape: Tuple[int, ...], message: str) -> Optional[Tuple[int, int]]:
    """``(channels the model takes, channels x has)`` when ``message`` says they differ, else None."""
    m = _CHANNELS_TORCH.search(message)
    if m:
        return int(m.group(1)), int(m.group(2))
    m = _CHANNELS_KERAS.search(message)
    if m and len(x_shape) == 4:
        have = x_shape[1] if B.image_layout == "NCHW" else x_shape[-1]
        return int(m.group(1)), int(have)
    return None


def _explain_first_forward(B: Backend, model: Any, x: Any, err: Exception) -> None:
    """Raise :class:`InputError` (from ``err``) where the first forward failed because of ``x``.

    Only where ``x`` is the likely cause: a dtype other than the model's, or a
    shape, layout or number of channels the model cannot take. Anything else is
    the model's own error and is left to propagate unchanged (its type intact).
    """
    shape = B.shape(x)
    first = _error_line(err)
    have, want = B.dtype_name(x), _dtype_label(B.model_dtype(model))
    if have != want:
        raise InputError(
            f"x has dtype {have} but the model computes in {want} ({type(err).__name__}: {first}). "
            f"Cast x to {want} (NumPy input is converted to the model's dtype)."
        ) from err
    hint = layout_hint(B, shape)
    channels = channel_mismatch(B, shape, first)
    if channels is not None and not hint:
        axis = 1 if B.image_layout == "NCHW" else -1
        raise InputError(
            f"x of shape {shape} has {channels[1]} channel(s) on axis {axis} but the model takes "
            f"{channels[0]} ({type(err).__name__}: {first}). Pass images with {channels[0]} "
            f"channel(s), batch-first in the model's layout ({B.image_layout})."
        ) from err
    if hint or channels is not None or _looks_like_shape_error(err, first):
        raise InputError(
            f"x of shape {shape} does not fit the model ({type(err).__name__}: {first}). "
            f"x must be batch-first in the model's layout ({B.image_layout} for images).{hint}"
        ) from err


# --- labels and baselines ---------------------------------------------------------------------
def prepare_labels(B: Backend, f: Any, labels: Any, x: Any, num_classes: int, batch_size: Any) -> Any:
    """Class indices ``(N,)`` on ``x``'s device from indices, one-hot, a scalar or None.

    Raises:
        LabelError: wrong length, out of range, not integers, a bad one-hot array.
    """
    n = B.shape(x)[0]
    if labels is None:
        return B.argmax(predict(B, f, x, batch_size), axis=1)
    given = labels if B.is_tensor(labels) else None
    if given is not None:
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
    if (given is not None and len(B.shape(given)) == 1 and B.dtype_name(given) == "int64"
            and B.device_of(given) == B.device_of(x)):
        return given  # already int64 indices (N,) where x is: no new tensor (no host-to-device copy)
    return B.asarray(arr, like=x)


def prepare_baseline(B: Backend, baseline: Any, x: Any) -> Any:
    """A tensor of ``x``'s shape from None (zeros), a scalar, or a broadcastable array.

    Raises:
        InputError: a tensor of another framework, a shape that does not broadcast
            to ``x``'s, NaN or infinity.
    """
    if baseline is None:
        return B.zeros_like(x)
    shape = B.shape(x)
    if isinstance(baseline, (int, float, np.number)) and not isinstance(baseline, bool):
        if not np.isfinite(baseline):
            raise InputError("baseline is NaN or infinite; expected finite values.")
        return B.zeros_like(x) + float(baseline)
    root = foreign_tensor(baseline, B)
    if root is not None:
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


def one_row(B: Backend, baseline: Any, x: Any) -> Optional[bool]:
    """True where ``baseline`` is the same for every example by construction (None, a
    scalar, one example's shape, or one row); None where only its values can tell."""
    if baseline is None or (isinstance(baseline, (int, float, np.number)) and not isinstance(baseline, bool)):
        return True
    shape = tuple(B.shape(baseline)) if B.is_tensor(baseline) else np.shape(baseline)
    full = tuple(B.shape(x))
    return True if len(shape) < len(full) or shape[0] == 1 else None


# --- back to the caller -----------------------------------------------------------------------
def to_caller(B: Backend, t: Any, kind: str, np_dtype: Any, keep_graph: bool = False) -> Any:
    """``t`` in the caller's type: a tensor (detached unless ``keep_graph``) for tensor
    input; for NumPy input a NumPy array in the input's float dtype (float32 for
    integer input where the model computes in a dtype NumPy lacks, e.g. bfloat16)."""
    if kind == "tensor":
        return t if keep_graph else B.stop_gradient(t)
    arr = B.to_numpy(t)
    if arr.dtype.kind in "biu":  # labels, masks, counts: as they are
        return arr
    if np_dtype is not None and np.dtype(np_dtype).kind == "f":
        return arr.astype(np_dtype, copy=False)
    if arr.dtype.kind != "f":  # e.g. ml_dtypes.bfloat16 from a Keras bfloat16 model
        return arr.astype(np.float32)
    return arr
