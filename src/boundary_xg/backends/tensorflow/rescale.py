"""DeepLIFT's Rescale rule for Keras 3 / TensorFlow: swap nonlinearities for one call.

Why patching and not graph rewriting
------------------------------------
A Keras model applies its nonlinearities in three ways: as a function stored on
a layer (``Dense(..., activation="relu")``, ``Conv2D``, ``Activation``), through
``keras.activations`` called by a layer's ``call`` (``ReLU``, ``LeakyReLU``,
``PReLU``, ``ELU``) and through ``keras.ops`` / ``tf.nn`` inside a subclassed
model's ``call``. While DeepLIFT's forward passes are traced (or run), this module

* replaces each layer's ``activation`` attribute by a Rescale version of itself;
* replaces the element-wise activation functions and ``max_pool`` in the modules
  ``keras.activations``, ``keras.ops`` (and their ``keras.src`` twins) and the
  ReLU family in ``tf.nn`` by Rescale versions;

and puts every original object back in ``finally`` (also after an error). A
reentrancy guard makes sure one nonlinearity is rescaled once even when the
patched function calls another patched one internally. The patches are global
to the process while the forward pass runs: one thread patches at a time (a
lock), and the patched functions pass calls from other threads through
unchanged, so other threads can run Keras models meanwhile.

The baseline and the input run as **two passes** of ``n`` rows: in the baseline
pass each patched call records its input ``u'`` and output ``g(u')``; in the
input pass the ``k``-th call computes the ordinary output and carries a
``tf.custom_gradient`` whose gradient is the multiplier
``(g(u) - g(u')) / (u - u')`` against the ``k``-th record (where that ratio is 0/0
or loses its digits, the fallbacks of ``backends/torch/rescale._multiplier``: no absolute
threshold). One backward pass over ``n`` rows follows. That is
cheaper than one doubled batch ``cat([x, x'])``, whose backward pass, the dearer
half, runs over ``2n`` rows, and a baseline shared by all rows runs as one row.
The pairing of calls is fixed when the graph is traced; should the two passes
not make the same calls (control flow that depends on the data), the doubled
batch is used instead (row ``i`` and row ``n + i`` a pair), which needs no
pairing. Max pooling routes each window's ``grad * delta_out`` to
the window's maximum for x when ``delta_out >= 0`` and to the baseline's maximum
when ``delta_out < 0``, divided there by ``delta_in`` (never smaller than
``|delta_out|``, so multipliers lie in [0, 1]); where that divisor is exactly 0,
the plain gradient is used. These are the rules of
``backends/torch/rescale.py``, so both backends give the same attributions.

Batch norm and dropout in inference mode are linear and need nothing. A
``Softmax`` layer or a softmax activation inside the network is rejected with an
error that names the layer (the model's final softmax is switched off by the
backend's session before this runs).
"""

from __future__ import annotations

import inspect
import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from ...errors import ModelError

try:
    import keras
    import keras.src.activations as _k_src_activations
    import keras.src.ops as _k_src_ops
except ImportError:  # pragma: no cover - TF without Keras 3
    keras = tf.keras
    _k_src_activations = _k_src_ops = None

#: names of the library's piecewise-linear activations: their ratio is exact wherever u != u'
_PIECEWISE_LINEAR_NAMES = ("relu", "relu6", "leaky_relu", "hard_tanh", "hard_sigmoid")

_ELEMENTWISE = (
    "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "swish", "mish",
    "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh", "sigmoid", "tanh", "softplus",
    "softsign", "log_sigmoid", "squareplus", "sparse_plus", "sparse_sigmoid", "exponential",
)
_REJECTED = ("softmax", "log_softmax", "glu", "sparsemax")
_TF_NN = ("relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "softplus", "sigmoid")

_guard = threading.local()
#: held while the module functions are patched (see :class:`RescalePatches`)
_PATCH_LOCK = threading.RLock()


def _depth() -> int:
    return getattr(_guard, "depth", 0)


class _Inside:
    """Marks "inside a Rescale op": nested patched functions run as the originals."""

    def __enter__(self):
        _guard.depth = _depth() + 1

    def __exit__(self, *exc):
        _guard.depth = _depth() - 1


def _pairs(t: Any) -> Any:
    """``t`` of shape ``(2n, ...)`` viewed as ``(2, n, ...)``: ``[0]`` is x's half, ``[1]`` the baseline's.

    A reshape (no copy) where the example shape is static, as it is when tracing with
    an unknown batch size; slicing or concatenating halves would copy.
    """
    inner = t.shape[1:]
    if inner.is_fully_defined():
        return tf.reshape(t, [2, -1] + inner.as_list())
    return tf.reshape(t, tf.concat([[2, -1], tf.shape(t)[1:]], 0))


def _relu_derivative(v: Any) -> Any:
    return tf.cast(v > 0, v.dtype)


#: the arguments of ``keras.activations.relu`` that keep it a plain ReLU
_PLAIN_RELU = {"negative_slope": 0, "max_value": None, "threshold": 0}


#: the library's own ReLU functions (taken before any patching); a user's function
#: that happens to be named ``relu`` is not one of them
_RELU_FUNCS = tuple(
    fn for fn in (getattr(tf.nn, "relu", None), getattr(keras.activations, "relu", None),
                  getattr(getattr(keras, "ops", None), "relu", None),
                  getattr(_k_src_activations, "relu", None), getattr(_k_src_ops, "relu", None))
    if fn is not None
)


#: the library's piecewise-linear functions (taken before any patching)
_PIECEWISE_LINEAR = tuple(
    fn for mod in (tf.nn, keras.activations, getattr(keras, "ops", None), _k_src_activations, _k_src_ops)
    if mod is not None for name in _PIECEWISE_LINEAR_NAMES for fn in (getattr(mod, name, None),)
    if fn is not None
)


def _is_piecewise_linear(orig: Callable) -> bool:
    return any(orig is fn for fn in _PIECEWISE_LINEAR)


def _smooth_tolerance(dtype: Any) -> float:
    """``eps ** (1/3)`` of ``dtype``: see ``backends/torch/rescale.smooth_tolerance``."""
    return float(tf.experimental.numpy.finfo(dtype.as_numpy_dtype).eps) ** (1.0 / 3.0)


def _is_plain_relu(orig: Callable, args: Tuple, kwargs: Dict[str, Any]) -> bool:
    """True for ``relu(x)`` with no slope, cap or threshold (a Keras ``ReLU`` layer passes
    its defaults explicitly), ``relu`` being one of :data:`_RELU_FUNCS`."""
    if not any(orig is fn for fn in _RELU_FUNCS):
        return False
    if not args and not kwargs:
        return True
    try:
        bound = inspect.signature(orig).bind(None, *args, **kwargs).arguments
    except (TypeError, ValueError):
        return False
    rest = dict(list(bound.items())[1:])
    rest.pop("name", None)
    return all(
        k in _PLAIN_RELU and (v is None if _PLAIN_RELU[k] is None else isinstance(v, (int, float)) and v == 0)
        for k, v in rest.items()
    )


def _with_variables(gi: Any, variables: Any) -> Any:
    """A custom gradient's return value: no gradient for variables read inside the op."""
    return (gi, [None] * len(variables)) if variables else gi


def _multiplier(fn: Callable, derivative: Optional[Callable], ux: Any, d_in: Any, out_x: Any, out_b: Any,
                pwl: bool = False) -> Any:
    """Rescale multiplier ``(out_x - out_b) / d_in`` with the fallbacks of
    ``backends/torch/rescale._multiplier``: a piecewise-linear function (``pwl``) uses the
    local gradient at ``ux`` only where ``d_in == 0``; a smooth one uses the
    derivative at the midpoint where ``|d_in| <= tol * max(|u| + |u'|, 1)`` and
    ``u``, ``u'`` lie on one side of 0
    (``tf.where`` picks the fallback, and the unused NaN is never differentiated,
    the multiplier being a constant)."""
    ub = ux - d_in
    if pwl:
        small = tf.equal(d_in, 0)
        at = ux
    else:
        scale = tf.maximum(tf.abs(ux) + tf.abs(ub), tf.ones([], ux.dtype))
        near = tf.abs(d_in) <= tf.cast(_smooth_tolerance(ux.dtype), ux.dtype) * scale
        # never across 0, where PReLU/SELU-like functions have their kink
        small = tf.logical_or(tf.equal(d_in, 0), tf.logical_and(near, tf.equal(tf.sign(ux), tf.sign(ub))))
        at = (ux + ub) * tf.cast(0.5, ux.dtype)
    with _Inside():
        if derivative is not None:
            dg = derivative(at)
        else:
            with tf.GradientTape() as tape:
                tape.watch(at)
                y = fn(at)
            dg = tape.gradient(y, at)
    return tf.where(small, dg, (out_x - out_b) / d_in)


def _rescale(fn: Callable, u: Any, derivative: Optional[Callable] = None, pwl: bool = False) -> Any:
    """``fn(u)`` whose gradient is the Rescale multiplier between the two halves of ``u``."""

    @tf.custom_gradient
    def op(v):
        with _Inside():
            out = fn(v)

        def grad(g, variables=None):
            # the multiplier is built here, in the backward pass, where it is used
            v2, o2 = _pairs(v), _pairs(out)
            m = _multiplier(fn, derivative, v2[0], v2[0] - v2[1], o2[0], o2[1], pwl)
            gi = tf.reshape(_pairs(g) * m, tf.shape(g))  # one multiplier for both halves
            return _with_variables(gi, variables)

        return out, grad

    return op(tf.convert_to_tensor(u))


@tf.function(jit_compile=True, autograph=False)
def _relu_rescale_backward(g: Any, u: Any, ub: Any) -> Any:
    """``g`` times a ReLU's Rescale multiplier between ``u`` and ``ub`` (broadcast).

    Compiled by XLA into one loop over the elements: as separate TensorFlow ops the
    seven element-wise steps cost as much as a small CNN's convolutions on a CPU.
    """
    d_in = u - ub
    zero = tf.zeros([], u.dtype)  # tf.maximum, not tf.nn.relu: that one is patched while tracing
    ratio = (tf.maximum(u, zero) - tf.maximum(ub, zero)) / d_in
    return g * tf.where(tf.equal(d_in, 0), tf.cast(u > 0, u.dtype), ratio)


def _rescale_replay(fn: Callable, u: Any, ub: Any, out_b: Any, derivative: Optional[Callable] = None,
                    pwl: bool = False) -> Any:
    """``fn(u)`` whose gradient is the Rescale multiplier against the baseline's record.

    ``ub``/``out_b``: the call's input and output in the baseline pass (``n`` rows or
    one, which broadcasts).
    """

    @tf.custom_gradient
    def op(v):
        with _Inside():
            out = fn(v)

        def grad(g, variables=None):
            if derivative is _relu_derivative:
                with _Inside():
                    return _with_variables(_relu_rescale_backward(g, v, ub), variables)
            return _with_variables(g * _multiplier(fn, derivative, v, v - ub, out, out_b, pwl), variables)

        return out, grad

    return op(tf.convert_to_tensor(u))


def _route_max_pool(pool: Callable, u: Any, ub: Any, out: Any, out_b: Any, g: Any) -> Any:
    """The max-pool rule's backward for ``n`` rows of ``u`` against the baseline ``ub``.

    Any pooling geometry: ``delta_in`` at each window's maximum for x and for the
    baseline comes from one JVP of the pooling over ``cat([u, u'])``, and the
    weighted values are sent to the maxima by one VJP over it.
    """
    with _Inside():
        v2 = tf.concat([u, tf.broadcast_to(ub, tf.shape(u))], 0)
        d_in = u - ub
        d_out = out - out_b
        with tf.autodiff.ForwardAccumulator(v2, tf.concat([d_in, d_in], 0)) as acc:
            pv = pool(v2)
        at2 = _pairs(acc.jvp(pv))
        up = d_out >= 0
        div = tf.where(up, at2[0], at2[1])
        ok = tf.not_equal(div, 0)  # |div| >= |d_out|: only an exact 0 needs the fallback
        val = g * d_out / div  # NaN only where not ok, never selected
        zero = tf.zeros_like(div)
        to_x = tf.where(ok, tf.where(up, val, zero), g)
        to_b = tf.where(tf.logical_and(ok, tf.logical_not(up)), val, zero)
        with tf.GradientTape() as tape:
            tape.watch(v2)
            pv = pool(v2)
        r2 = _pairs(tape.gradient(pv, v2, output_gradients=tf.concat([to_x, to_b], 0)))
    return r2[0] + r2[1]


def _tiled_route(u: Any, ub: Any, g: Any, kh: int, kw: int) -> Any:
    """:func:`_route_max_pool` for tiling windows: NHWC, ``kh x kw`` windows with equal
    strides that cover ``u`` exactly (Keras ``MaxPooling2D`` at its defaults).

    Each window position ``(i, j)`` is one strided slice, so the maxima (the first
    in row-major order, as the pooling's gradient picks), the divisors and the
    routing are element-wise over the pooled grid; compiled by XLA
    (:data:`_tiled_route_xla`) this is one loop over the elements, where the JVP and
    VJP of the general path cost several max-pool gradients.
    """
    parts = [(i, j) for i in range(kh) for j in range(kw)]
    us = [u[:, i::kh, j::kw, :] for i, j in parts]
    ubs = [ub[:, i::kh, j::kw, :] for i, j in parts]

    def first_max(vs):
        best, arg = vs[0], tf.zeros(tf.shape(vs[0]), tf.int32)
        for t, v in enumerate(vs[1:], 1):
            bigger = v > best
            best, arg = tf.where(bigger, v, best), tf.where(bigger, t, arg)
        return best, arg

    out, ix = first_max(us)
    out_b, ib = first_max(ubs)
    d_out = out - out_b
    idx = tf.where(d_out >= 0, ix, ib)
    div = tf.zeros_like(out)
    for t in range(len(parts)):
        div = tf.where(idx == t, us[t] - ubs[t], div)
    ok = tf.not_equal(div, 0)
    val = tf.where(ok, g * d_out / tf.where(ok, div, tf.ones_like(div)), g)
    dest = tf.where(ok, idx, ix)
    zero = tf.zeros_like(val)
    pieces = [tf.where(dest == t, val, zero) for t in range(len(parts))]
    shape = tf.shape(u)
    # interleave back: window column j of row i is element (i, j) of each window
    rows = [tf.reshape(tf.stack(pieces[i * kw:(i + 1) * kw], axis=3),
                       tf.stack([shape[0], shape[1] // kh, shape[2], shape[3]])) for i in range(kh)]
    return tf.reshape(tf.stack(rows, axis=2), shape)


_tiled_route_xla = tf.function(_tiled_route, jit_compile=True, autograph=False)


def _tiling_window(orig: Callable, x: Any, args: Tuple, kwargs: Dict[str, Any]) -> Optional[Tuple[int, int]]:
    """``(kh, kw)`` where ``keras.ops.max_pool(x, ...)`` tiles ``x`` (see :func:`_tiled_route`), else None."""
    try:
        bound = inspect.signature(orig).bind(x, *args, **kwargs).arguments
    except (TypeError, ValueError):
        return None
    shape = getattr(x, "shape", None)
    fmt = bound.get("data_format") or keras.config.image_data_format()
    if shape is None or len(shape) != 4 or fmt != "channels_last":
        return None

    def pair(v):
        if isinstance(v, int):
            return (v, v)
        v = tuple(v) if isinstance(v, (tuple, list)) else None
        return v if v is not None and len(v) == 2 and all(isinstance(i, int) for i in v) else None

    size = pair(bound.get("pool_size"))
    strides = pair(bound.get("strides")) if bound.get("strides") is not None else size
    padding = str(bound.get("padding", "valid")).lower()
    h, w = shape[1], shape[2]
    if size is None or strides != size or padding not in ("valid", "same") or h is None or w is None:
        return None
    return size if h % size[0] == 0 and w % size[1] == 0 else None


def _route(pool: Callable, tiling: Optional[Tuple[int, int]], u: Any, ub: Any, out: Any, out_b: Any,
           g: Any) -> Any:
    if tiling is not None:
        return _tiled_route_xla(u, ub, g, *tiling)
    return _route_max_pool(pool, u, ub, out, out_b, g)


def _rescale_max_pool(pool: Callable, u: Any, tiling: Optional[Tuple[int, int]] = None) -> Any:
    """Max pooling ``pool(u)`` of the doubled batch with the rule of the module docstring."""

    @tf.custom_gradient
    def op(v):
        with _Inside():
            out = pool(v)

        def grad(g, variables=None):
            v2, o2 = _pairs(v), _pairs(out)
            routed = _route(pool, tiling, v2[0], v2[1], o2[0], o2[1], _pairs(g)[0])
            return _with_variables(tf.concat([routed, tf.zeros_like(routed)], 0), variables)

        return out, grad

    return op(tf.convert_to_tensor(u))


def _rescale_max_pool_replay(pool: Callable, u: Any, ub: Any, out_b: Any,
                             tiling: Optional[Tuple[int, int]] = None) -> Any:
    """Max pooling ``pool(u)`` of the input pass, against the baseline's record."""

    @tf.custom_gradient
    def op(v):
        with _Inside():
            out = pool(v)

        def grad(g, variables=None):
            with _Inside():
                return _with_variables(_route(pool, tiling, v, ub, out, out_b, g), variables)

        return out, grad

    return op(tf.convert_to_tensor(u))


class _Mismatch(Exception):
    """The input pass does not make the baseline pass's calls: use the doubled batch."""


class _Calls:
    """Which pass the patched functions are in, and the baseline pass's records.

    ``phase`` is ``"doubled"`` (one batch ``cat([x, x'])``), ``"record"`` (the
    baseline pass) or ``"replay"`` (the input pass); ``rows`` is the batch size of
    the pass (None: traced with an unknown batch size).
    """

    def __init__(self, rows: Optional[int] = None):
        self.phase, self.rows = "doubled", rows
        # the thread that patched: other threads' calls pass through unchanged
        self.owner = threading.get_ident()
        self.records: List[Tuple[str, Tuple[Any, ...]]] = []
        self.pos = 0

    def start(self, phase: str, rows: Optional[int]) -> None:
        self.phase, self.rows = phase, rows
        if phase == "record":
            self.records, self.pos = [], 0

    def run_and_record(self, name: str, fn: Callable, x: Any) -> Any:
        """The baseline pass's call: ``fn(x)``, its input and output recorded."""
        u = tf.convert_to_tensor(x)
        with _Inside():
            out = fn(u)
        self.records.append((name, (u, out)))
        return out

    def replay(self, name: str, u: Any) -> Tuple[Any, ...]:
        if self.pos >= len(self.records):
            raise _Mismatch
        rec_name, tensors = self.records[self.pos]
        self.pos += 1
        if rec_name != name or tensors[0].shape[1:].as_list() != u.shape[1:].as_list():
            raise _Mismatch
        return tensors

    def finish(self) -> None:
        """After the input pass: every record must have been used."""
        if self.pos != len(self.records):
            raise _Mismatch


def _check_rows(name: str, u: Any, rows: Optional[int]) -> None:
    # rows None: traced with an unknown batch size, so a first axis of known size is
    # not the batch axis
    first = getattr(u, "shape", None)
    first = first[0] if first is not None and len(first) else None
    if first is not None and first != rows:
        raise ModelError(
            f"DeepLIFT: {name} received a tensor of shape {tuple(u.shape)} whose first axis is "
            f"not the batch ({rows or 'batch'} rows); DeepLIFT needs models that keep the batch "
            "axis first and examples independent."
        )


def _wrap_elementwise(orig: Callable, name: str, calls: _Calls) -> Callable:
    def rescaled(x, *args, **kwargs):
        if _depth() or threading.get_ident() != calls.owner:
            return orig(x, *args, **kwargs)
        _check_rows(name, x, calls.rows)
        # a plain ReLU (no slope, cap or threshold) is common enough to skip the tape
        # that computes the fallback gradient of any other element-wise function
        derivative = _relu_derivative if _is_plain_relu(orig, args, kwargs) else None
        pwl = _is_piecewise_linear(orig)

        def fn(v):
            return orig(v, *args, **kwargs)

        if calls.phase == "doubled":
            return _rescale(fn, x, derivative, pwl)
        if calls.phase == "record":
            return calls.run_and_record(name, fn, x)
        ub, out_b = calls.replay(name, x)
        return _rescale_replay(fn, x, ub, out_b, derivative, pwl)

    rescaled.__name__ = getattr(orig, "__name__", name)
    rescaled.__wrapped__ = orig
    return rescaled


def _wrap_max_pool(orig: Callable, calls: _Calls) -> Callable:
    def rescaled(x, *args, **kwargs):
        if _depth() or threading.get_ident() != calls.owner:
            return orig(x, *args, **kwargs)
        _check_rows("max_pool", x, calls.rows)

        def pool(v):
            return orig(v, *args, **kwargs)

        tiling = _tiling_window(orig, x, args, kwargs)
        if calls.phase == "doubled":
            return _rescale_max_pool(pool, x, tiling)
        if calls.phase == "record":
            return calls.run_and_record("max_pool", pool, x)
        ub, out_b = calls.replay("max_pool", x)
        return _rescale_max_pool_replay(pool, x, ub, out_b, tiling)

    rescaled.__wrapped__ = orig
    return rescaled


def _wrap_rejected(orig: Callable, name: str, owner: int) -> Callable:
    def rejected(x, *args, **kwargs):
        if _depth() or threading.get_ident() != owner:
            return orig(x, *args, **kwargs)
        raise ModelError(
            f"DeepLIFT: {name} is called inside the model; the Rescale rule is defined for "
            "element-wise nonlinearities and max pooling only. Explain the logits before the "
            "softmax, or use Integrated Gradients."
        )

    rejected.__wrapped__ = orig
    return rejected


def _activation_name(fn: Any) -> str:
    return getattr(fn, "__name__", type(fn).__name__)


class RescalePatches:
    """Context manager: Rescale versions of the nonlinearities while it is open.

    Args:
        model: the Keras model whose layers' ``activation`` attributes are swapped
            (None: only the module functions are patched).
        rows: the batch size of the first pass (None: tracing with an unknown
            batch size); ``calls.start`` sets the phase and rows of each pass.

    Raises:
        ModelError: a layer of ``model`` is a softmax (or has a softmax activation).
    """

    def __init__(self, model: Any, rows: Optional[int]):
        self.model = model
        self.calls = _Calls(rows)
        self._undo: List[Tuple[Any, str, Any]] = []

    def _set(self, obj: Any, attr: str, value: Any) -> None:
        self._undo.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    def __enter__(self) -> "RescalePatches":
        # one thread patches at a time: interleaved patches and restores of two
        # threads could leave a wrapper in place for good
        _PATCH_LOCK.acquire()
        try:
            self._patch_layers()
            self._patch_modules()
        except BaseException:
            self.restore()
            _PATCH_LOCK.release()
            raise
        return self

    def __exit__(self, *exc) -> None:
        try:
            self.restore()
        finally:
            _PATCH_LOCK.release()

    def restore(self) -> None:
        """Put every replaced attribute back (last replaced first)."""
        while self._undo:
            obj, attr, value = self._undo.pop()
            setattr(obj, attr, value)

    def _patch_layers(self) -> None:
        model = self.model
        if model is None or not hasattr(model, "_flatten_layers"):
            return
        for layer in model._flatten_layers(include_self=True, recursive=True):
            if isinstance(layer, keras.layers.Softmax) and "call" not in layer.__dict__:
                raise ModelError(
                    f"DeepLIFT: layer {layer.name!r} is a Softmax inside the network; the Rescale "
                    "rule is defined for element-wise nonlinearities and max pooling only."
                )
            act = getattr(layer, "activation", None)
            if not callable(act) or act is keras.activations.linear:
                continue
            name = _activation_name(act)
            if name in _REJECTED:
                raise ModelError(
                    f"DeepLIFT: layer {layer.name!r} applies a {name} activation inside the "
                    "network; the Rescale rule is defined for element-wise nonlinearities only."
                )
            self._set(layer, "activation", _wrap_elementwise(act, f"layer {layer.name!r}", self.calls))

    def _patch_modules(self) -> None:
        modules = [keras.activations, keras.ops]
        if _k_src_activations is not None:
            modules += [_k_src_activations, _k_src_ops]
        for mod in modules:
            for name in _ELEMENTWISE:
                if hasattr(mod, name):
                    self._set(mod, name, _wrap_elementwise(getattr(mod, name), f"{mod.__name__}.{name}", self.calls))
            for name in _REJECTED:
                if hasattr(mod, name):
                    self._set(mod, name, _wrap_rejected(getattr(mod, name), f"{mod.__name__}.{name}",
                                                        self.calls.owner))
            if hasattr(mod, "max_pool"):
                self._set(mod, "max_pool", _wrap_max_pool(mod.max_pool, self.calls))
        for name in _TF_NN:
            if hasattr(tf.nn, name):
                self._set(tf.nn, name, _wrap_elementwise(getattr(tf.nn, name), f"tf.nn.{name}", self.calls))


def _label_grad(f: Callable, z: Any, labels: Any) -> Any:
    """Gradient of the sum of the first ``n`` rows' label logits w.r.t. ``z``, first ``n`` rows."""
    n = tf.shape(labels)[0]
    with tf.GradientTape() as tape:
        tape.watch(z)
        score = tf.gather(f(z)[:n], tf.cast(labels, tf.int64), axis=1, batch_dims=1)
        total = tf.reduce_sum(score)
    return tape.gradient(total, z)[:n]


def _rows(t: Any, traced: bool) -> Optional[int]:
    return None if traced else int(t.shape[0])


def _multipliers(f: Callable, x: Any, baseline: Any, labels: Any, calls: _Calls, *,
                 traced: bool, doubled: bool = False, times_delta: bool = False) -> Any:
    """The multipliers by two passes (or the doubled batch); the patches must be on.

    ``times_delta``: return ``multipliers * (x - baseline)`` instead.

    Raises:
        _Mismatch: the two passes do not make the same calls (``doubled`` False).
    """
    b = tf.cast(baseline, x.dtype)
    if not doubled:
        calls.start("record", _rows(b, traced))
        f(b)
        calls.start("replay", _rows(x, traced))
        grad = _label_grad(f, x, labels)
        calls.finish()
    else:
        z = tf.concat([x, tf.broadcast_to(b, tf.shape(x))], 0)
        calls.start("doubled", None if traced else 2 * int(x.shape[0]))
        grad = _label_grad(f, z, labels)
    return grad * (x - b) if times_delta else grad


# --- the compiled path ------------------------------------------------------------------
# owner (the Keras model, or ``f`` without one) -> {trace key: ConcreteFunction}. Weak, so
# a deleted model frees its graphs. The graph reads the model's variables, so new values
# (``set_weights``) need no retrace; new variables or new activations change the key.
_TRACES: "weakref.WeakKeyDictionary[Any, Dict[Tuple, Any]]" = weakref.WeakKeyDictionary()

#: number of traces made so far (tests use it to see that a second call does not retrace)
trace_count = 0

#: calls (or traces) that fell back to the doubled batch so far (tests read it)
fallback_count = 0


def _layer_state(model: Any) -> Tuple:
    """What of the layers goes into the graph at trace time besides the variables."""
    if model is None or not hasattr(model, "_flatten_layers"):
        return ()
    return tuple(
        (id(layer), id(getattr(layer, "activation", None)), id(layer.__dict__.get("call")))
        for layer in model._flatten_layers(include_self=True, recursive=True)
    )


def _spec(t: Any, batch_free: bool = True) -> Any:
    shape = [None] + list(t.shape[1:]) if batch_free else list(t.shape)
    return tf.TensorSpec(shape, t.dtype)


def _trace(f: Callable, model: Optional[Any], x: Any, baseline: Any, labels: Any, doubled: bool,
           times_delta: bool) -> Callable:
    def step(xs, bs, ys):
        global trace_count
        trace_count += 1  # a Python side effect: runs only while tracing
        return _multipliers(f, xs, bs, ys, patches.calls, traced=True, doubled=doubled, times_delta=times_delta)

    with RescalePatches(model, None) as patches:
        return tf.function(step, autograph=False).get_concrete_function(_spec(x), _spec(baseline), _spec(labels))


def _compiled(f: Callable, model: Optional[Any], x: Any, baseline: Any, labels: Any,
              fingerprint: Tuple, times_delta: bool = False) -> Optional[Callable]:
    """The DeepLIFT graph for this model and input signature, traced once under the patches.

    The batch axis of the signature is ``None``, so every chunk size (and a shared
    one-row baseline) reuses one graph and TensorFlow never retraces behind our
    back (a ConcreteFunction does not retrace; a new example shape or dtype is a
    new key, traced here, under the patches). The two-pass graph is traced first;
    where its passes do not make the same calls, the doubled batch is. Returns None
    where the owner cannot be weakly referenced (run eagerly).
    """
    owner = model if model is not None else f
    try:
        per_owner = _TRACES.setdefault(owner, {})
    except TypeError:
        return None
    key = (id(f), fingerprint, _layer_state(model), _spec(x), _spec(baseline), _spec(labels), times_delta)
    fn = per_owner.get(key)
    if fn is None:
        try:
            fn = _trace(f, model, x, baseline, labels, False, times_delta)
        except _Mismatch:
            global fallback_count
            fallback_count += 1
            fn = _trace(f, model, x, baseline, labels, True, times_delta)
        per_owner[key] = fn
    return fn


def deeplift_grad(f: Callable, x: Any, baseline: Any, labels: Any, *, model: Optional[Any] = None,
                  compile: bool = True, fingerprint: Tuple = (), doubled: bool = False,
                  times_delta: bool = False) -> Any:
    """DeepLIFT multipliers of each example's label logit with respect to ``x``.

    The first call for a model (and example shape/dtype) traces the baseline
    pass, the input pass and its backward pass inside ``tf.function`` while the
    Rescale patches are on, and takes them off right after tracing; the graph
    keeps the Rescale ops, so later calls run it without patching anything.

    Args:
        f: the model's inference-mode logits function; x: ``(n, ...)``;
        baseline: ``(n, ...)``, or ``(1, ...)`` for a baseline shared by all rows
        (its pass then runs one row); labels: ``(n,)`` integer classes; model: the
        Keras model behind ``f`` (its layers' activations are swapped while
        tracing; None: module functions only).
        compile: False runs eagerly under the patches (debugging, benchmarks).
        fingerprint: identifies the model's variables (``B.fingerprint(model)``);
            part of the trace key.
        doubled: run the doubled batch ``cat([x, baseline])`` eagerly (tests,
            benchmarks).
        times_delta: return the attributions ``multipliers * (x - baseline)``,
            computed in the same graph.

    Returns:
        Multipliers shaped like ``x``, or the attributions.

    Raises:
        MethodError: the model uses a nonlinearity the Rescale rule rejects.
    """
    baseline = tf.convert_to_tensor(baseline)
    labels = tf.convert_to_tensor(labels)
    if compile and not doubled:
        fn = _compiled(f, model, x, baseline, labels, fingerprint, times_delta)
        if fn is not None:
            return fn(x, baseline, labels)
    with RescalePatches(model, None) as patches:
        if not doubled:
            try:
                return _multipliers(f, x, baseline, labels, patches.calls, traced=False, times_delta=times_delta)
            except _Mismatch:
                global fallback_count
                fallback_count += 1
        return _multipliers(f, x, baseline, labels, patches.calls, traced=False, doubled=True,
                            times_delta=times_delta)
