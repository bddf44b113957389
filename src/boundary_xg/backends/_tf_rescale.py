"""DeepLIFT's Rescale rule for Keras 3 / TensorFlow: swap nonlinearities for one call.

Why patching and not graph rewriting
------------------------------------
A Keras model applies its nonlinearities in three ways: as a function stored on
a layer (``Dense(..., activation="relu")``, ``Conv2D``, ``Activation``), through
``keras.activations`` called by a layer's ``call`` (``ReLU``, ``LeakyReLU``,
``PReLU``, ``ELU``) and through ``keras.ops`` / ``tf.nn`` inside a subclassed
model's ``call``. For the duration of one forward pass over the doubled batch
``cat([x, x'])`` (row ``i`` and row ``n + i`` are a pair), this module

* replaces each layer's ``activation`` attribute by a Rescale version of itself;
* replaces the element-wise activation functions and ``max_pool`` in the modules
  ``keras.activations``, ``keras.ops`` (and their ``keras.src`` twins) and the
  ReLU family in ``tf.nn`` by Rescale versions;

and puts every original object back in ``finally`` (also after an error). A
reentrancy guard makes sure one nonlinearity is rescaled once even when the
patched function calls another patched one internally. The patches are global
to the process while the forward pass runs, so do not run another Keras model
in a second thread at the same time.

A Rescale version computes the ordinary output and carries a
``tf.custom_gradient`` whose gradient is the multiplier
``(g(u) - g(u')) / (u - u')`` of the pair (the local gradient where
``|u - u'| < 1e-10``). Max pooling routes each window's ``grad * delta_out`` to
the window's maximum for x when ``delta_out >= 0`` and to the baseline's maximum
when ``delta_out < 0``, divided there by ``delta_in`` (never smaller than
``|delta_out|``, so multipliers lie in [0, 1]); where that divisor is below
1e-10, the plain gradient is used. These are the rules of
``_torch_rescale.py``, so both backends give the same attributions.

Batch norm and dropout in inference mode are linear and need nothing. A
``Softmax`` layer or a softmax activation inside the network is rejected with an
error that names the layer (the model's final softmax is switched off by the
backend's session before this runs).
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Dict, List, Optional, Tuple

import tensorflow as tf

from ..errors import MethodError

try:
    import keras
    import keras.src.activations as _k_src_activations
    import keras.src.ops as _k_src_ops
except ImportError:  # pragma: no cover - TF without Keras 3
    keras = tf.keras
    _k_src_activations = _k_src_ops = None

#: below this |u - u'| the Rescale ratio is 0/0 and the gradient is used instead
EPS = 1e-10

_ELEMENTWISE = (
    "relu", "relu6", "leaky_relu", "elu", "selu", "celu", "gelu", "silu", "swish", "mish",
    "hard_sigmoid", "hard_silu", "hard_swish", "hard_tanh", "sigmoid", "tanh", "softplus",
    "softsign", "log_sigmoid", "squareplus", "sparse_plus", "sparse_sigmoid", "exponential",
)
_REJECTED = ("softmax", "log_softmax", "glu", "sparsemax")
_TF_NN = ("relu", "relu6", "leaky_relu", "elu", "selu", "gelu", "silu", "swish", "softplus", "sigmoid")

_guard = threading.local()


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


def _rescale(fn: Callable, u: Any, derivative: Optional[Callable] = None) -> Any:
    """``fn(u)`` whose gradient is the Rescale multiplier between the two halves of ``u``."""

    @tf.custom_gradient
    def op(v):
        with _Inside():
            out = fn(v)

        def grad(g, variables=None):
            # the multiplier is built here, in the backward pass, where it is used
            with _Inside():
                v2, o2 = _pairs(v), _pairs(out)
                vx = v2[0]
                d_in = vx - v2[1]
                if derivative is not None:
                    dg = derivative(vx)
                else:
                    with tf.GradientTape() as tape:
                        tape.watch(vx)
                        yx = fn(vx)
                    dg = tape.gradient(yx, vx)
            # 0/0 where the halves coincide: tf.where picks the gradient there (the
            # unused NaN is never differentiated, the multiplier is a constant)
            m = tf.where(tf.abs(d_in) < EPS, dg, (o2[0] - o2[1]) / d_in)
            gi = tf.reshape(_pairs(g) * m, tf.shape(g))  # one multiplier for both halves
            if variables:
                return gi, [None] * len(variables)
            return gi

        return out, grad

    return op(tf.convert_to_tensor(u))


def _rescale_max_pool(pool: Callable, u: Any) -> Any:
    """Max pooling ``pool(u)`` with the routing rule of the module docstring."""

    @tf.custom_gradient
    def op(v):
        with _Inside():
            out = pool(v)

        def grad(g, variables=None):
            v2, o2 = _pairs(v), _pairs(out)
            d_in = v2[0] - v2[1]
            d_out = o2[0] - o2[1]
            gx = _pairs(g)[0]
            with _Inside():
                # delta_in at each window's maximum, for x and for the baseline at once:
                # one JVP of the pooling over the doubled batch
                with tf.autodiff.ForwardAccumulator(v, tf.concat([d_in, d_in], 0)) as acc:
                    pv = pool(v)
                at2 = _pairs(acc.jvp(pv))
                up = d_out >= 0
                div = tf.where(up, at2[0], at2[1])
                ok = tf.abs(div) >= EPS
                val = gx * d_out / div  # NaN only where not ok, never selected
                zero = tf.zeros_like(div)
                to_x = tf.where(ok, tf.where(up, val, zero), gx)
                to_b = tf.where(tf.logical_and(ok, tf.logical_not(up)), val, zero)
                # route both to the maxima with one VJP over the doubled batch
                with tf.GradientTape() as tape:
                    tape.watch(v)
                    pv = pool(v)
                r2 = _pairs(tape.gradient(pv, v, output_gradients=tf.concat([to_x, to_b], 0)))
            routed = r2[0] + r2[1]
            gi = tf.concat([routed, tf.zeros_like(routed)], 0)
            if variables:
                return gi, [None] * len(variables)
            return gi

        return out, grad

    return op(tf.convert_to_tensor(u))


def _check_rows(name: str, u: Any, rows: Optional[int]) -> None:
    # rows None: traced with an unknown batch size, so a first axis of known size is
    # not the batch axis
    first = getattr(u, "shape", None)
    first = first[0] if first is not None and len(first) else None
    if first is not None and first != rows:
        raise MethodError(
            f"DeepLIFT: {name} received a tensor of shape {tuple(u.shape)} whose first axis is "
            f"not the doubled batch ({rows or 'batch'} rows); DeepLIFT needs models that keep the batch "
            "axis first and examples independent."
        )


def _wrap_elementwise(orig: Callable, name: str, rows: Optional[int]) -> Callable:
    def rescaled(x, *args, **kwargs):
        if _depth():
            return orig(x, *args, **kwargs)
        _check_rows(name, x, rows)
        # a plain ReLU (no slope, cap or threshold) is common enough to skip the tape
        # that computes the fallback gradient of any other element-wise function
        relu = getattr(orig, "__name__", "") == "relu" and not args and not kwargs
        return _rescale(lambda v: orig(v, *args, **kwargs), x, _relu_derivative if relu else None)

    rescaled.__name__ = getattr(orig, "__name__", name)
    rescaled.__wrapped__ = orig
    return rescaled


def _wrap_max_pool(orig: Callable, rows: Optional[int]) -> Callable:
    def rescaled(x, *args, **kwargs):
        if _depth():
            return orig(x, *args, **kwargs)
        _check_rows("max_pool", x, rows)
        return _rescale_max_pool(lambda v: orig(v, *args, **kwargs), x)

    rescaled.__wrapped__ = orig
    return rescaled


def _wrap_rejected(orig: Callable, name: str) -> Callable:
    def rejected(x, *args, **kwargs):
        if _depth():
            return orig(x, *args, **kwargs)
        raise MethodError(
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
        rows: ``2 N``, the rows of the doubled batch (None: tracing with an unknown
            batch size).

    Raises:
        MethodError: a layer of ``model`` is a softmax (or has a softmax activation).
    """

    def __init__(self, model: Any, rows: Optional[int]):
        self.model = model
        self.rows = rows
        self._undo: List[Tuple[Any, str, Any]] = []

    def _set(self, obj: Any, attr: str, value: Any) -> None:
        self._undo.append((obj, attr, getattr(obj, attr)))
        setattr(obj, attr, value)

    def __enter__(self) -> "RescalePatches":
        try:
            self._patch_layers()
            self._patch_modules()
        except BaseException:
            self.restore()
            raise
        return self

    def __exit__(self, *exc) -> None:
        self.restore()

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
                raise MethodError(
                    f"DeepLIFT: layer {layer.name!r} is a Softmax inside the network; the Rescale "
                    "rule is defined for element-wise nonlinearities and max pooling only."
                )
            act = getattr(layer, "activation", None)
            if not callable(act) or act is keras.activations.linear:
                continue
            name = _activation_name(act)
            if name in _REJECTED:
                raise MethodError(
                    f"DeepLIFT: layer {layer.name!r} applies a {name} activation inside the "
                    "network; the Rescale rule is defined for element-wise nonlinearities only."
                )
            self._set(layer, "activation", _wrap_elementwise(act, f"layer {layer.name!r}", self.rows))

    def _patch_modules(self) -> None:
        modules = [keras.activations, keras.ops]
        if _k_src_activations is not None:
            modules += [_k_src_activations, _k_src_ops]
        for mod in modules:
            for name in _ELEMENTWISE:
                if hasattr(mod, name):
                    self._set(mod, name, _wrap_elementwise(getattr(mod, name), f"{mod.__name__}.{name}", self.rows))
            for name in _REJECTED:
                if hasattr(mod, name):
                    self._set(mod, name, _wrap_rejected(getattr(mod, name), f"{mod.__name__}.{name}"))
            if hasattr(mod, "max_pool"):
                self._set(mod, "max_pool", _wrap_max_pool(getattr(mod, "max_pool"), self.rows))
        for name in _TF_NN:
            if hasattr(tf.nn, name):
                self._set(tf.nn, name, _wrap_elementwise(getattr(tf.nn, name), f"tf.nn.{name}", self.rows))


def _multipliers(f: Callable, x: Any, baseline: Any, labels: Any) -> Any:
    """One forward and one backward over ``cat([x, baseline])``; the patches must be on."""
    n = tf.shape(x)[0]
    z = tf.concat([x, tf.cast(baseline, x.dtype)], 0)
    with tf.GradientTape() as tape:
        tape.watch(z)
        out = f(z)
        score = tf.gather(out[:n], tf.cast(labels, tf.int64), axis=1, batch_dims=1)
        total = tf.reduce_sum(score)
    return tape.gradient(total, z)[:n]


# --- the compiled path ------------------------------------------------------------------
# owner (the Keras model, or ``f`` without one) -> {trace key: ConcreteFunction}. Weak, so
# a deleted model frees its graphs. The graph reads the model's variables, so new values
# (``set_weights``) need no retrace; new variables or new activations change the key.
_TRACES: "weakref.WeakKeyDictionary[Any, Dict[Tuple, Any]]" = weakref.WeakKeyDictionary()

#: number of traces made so far (tests use it to see that a second call does not retrace)
trace_count = 0


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


def _compiled(f: Callable, model: Optional[Any], x: Any, baseline: Any, labels: Any,
              fingerprint: Tuple) -> Optional[Callable]:
    """The DeepLIFT graph for this model and input signature, traced once under the patches.

    The batch axis of the signature is ``None``, so every chunk size reuses one graph
    and TensorFlow never retraces behind our back (a ConcreteFunction does not
    retrace; a new example shape or dtype is a new key, traced here, under the
    patches). Returns None where the owner cannot be weakly referenced (run eagerly).
    """
    global trace_count
    owner = model if model is not None else f
    try:
        per_owner = _TRACES.setdefault(owner, {})
    except TypeError:
        return None
    key = (id(f), fingerprint, _layer_state(model), _spec(x), _spec(baseline), _spec(labels))
    fn = per_owner.get(key)
    if fn is None:
        def step(xs, bs, ys):
            global trace_count
            trace_count += 1  # a Python side effect: runs only while tracing
            return _multipliers(f, xs, bs, ys)

        with RescalePatches(model, None):
            fn = tf.function(step, autograph=False).get_concrete_function(_spec(x), _spec(baseline), _spec(labels))
        per_owner[key] = fn
    return fn


def deeplift_grad(f: Callable, x: Any, baseline: Any, labels: Any, *, model: Optional[Any] = None,
                  compile: bool = True, fingerprint: Tuple = ()) -> Any:
    """DeepLIFT multipliers of each example's label logit with respect to ``x``.

    The first call for a model (and example shape/dtype) traces one forward and
    backward over the doubled batch inside ``tf.function`` while the Rescale
    patches are on, and takes them off right after tracing; the graph keeps the
    Rescale ops, so later calls run it without patching anything.

    Args:
        f: the model's inference-mode logits function; x, baseline: ``(n, ...)``;
        labels: ``(n,)`` integer classes; model: the Keras model behind ``f`` (its
        layers' activations are swapped while tracing; None: module functions only).
        compile: False runs eagerly under the patches (debugging, benchmarks).
        fingerprint: identifies the model's variables (``B.fingerprint(model)``);
            part of the trace key.

    Returns:
        Multipliers shaped like ``x`` (attribution = multipliers * (x - baseline)).

    Raises:
        MethodError: the model uses a nonlinearity the Rescale rule rejects.
    """
    baseline = tf.convert_to_tensor(baseline)
    labels = tf.convert_to_tensor(labels)
    if compile:
        fn = _compiled(f, model, x, baseline, labels, fingerprint)
        if fn is not None:
            return fn(x, baseline, labels)
    with RescalePatches(model, 2 * int(x.shape[0])):
        return _multipliers(f, x, baseline, labels)
