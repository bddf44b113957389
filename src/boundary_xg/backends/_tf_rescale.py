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
from typing import Any, Callable, List, Optional, Tuple

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


def _halves(u: Any) -> Tuple[Any, Any, Any]:
    n = tf.shape(u)[0] // 2
    return n, u[:n], u[n:]


def _rescale(fn: Callable, u: Any) -> Any:
    """``fn(u)`` whose gradient is the Rescale multiplier between the two halves of ``u``."""

    @tf.custom_gradient
    def op(v):
        with _Inside():
            out = fn(v)
            n, vx, vb = _halves(v)
            d_in = vx - vb
            small = tf.abs(d_in) < EPS
            ratio = (out[:n] - out[n:]) / tf.where(small, tf.ones_like(d_in), d_in)
            with tf.GradientTape() as tape:
                tape.watch(vx)
                yx = fn(vx)
            dg = tape.gradient(yx, vx)
        m = tf.where(small, dg, ratio)
        mm = tf.concat([m, m], 0)

        def grad(g, variables=None):
            if variables:
                return g * mm, [None] * len(variables)
            return g * mm

        return out, grad

    return op(tf.convert_to_tensor(u))


def _rescale_max_pool(pool: Callable, u: Any) -> Any:
    """Max pooling ``pool(u)`` with the routing rule of the module docstring."""

    @tf.custom_gradient
    def op(v):
        with _Inside():
            out = pool(v)
        n, vx, vb = _halves(v)
        d_in = vx - vb
        d_out = out[:n] - out[n:]

        def grad(g, variables=None):
            gx = g[:n]
            with _Inside():
                # delta_in at each window's maximum (for x, for the baseline): a JVP
                with tf.autodiff.ForwardAccumulator(vx, d_in) as acc_x:
                    ox = pool(vx)
                with tf.autodiff.ForwardAccumulator(vb, d_in) as acc_b:
                    ob = pool(vb)
                at_x, at_b = acc_x.jvp(ox), acc_b.jvp(ob)
                up = d_out >= 0
                div = tf.where(up, at_x, at_b)
                ok = tf.abs(div) >= EPS
                zero = tf.zeros_like(div)
                val = gx * d_out / tf.where(ok, div, tf.ones_like(div))
                to_x = tf.where(ok, tf.where(up, val, zero), gx)
                to_b = tf.where(tf.logical_and(ok, tf.logical_not(up)), val, zero)
                with tf.GradientTape(persistent=True) as tape:
                    tape.watch([vx, vb])
                    px, pb = pool(vx), pool(vb)
                routed = tape.gradient(px, vx, output_gradients=to_x) + tape.gradient(
                    pb, vb, output_gradients=to_b)
                del tape
            gi = tf.concat([routed, tf.zeros_like(routed)], 0)
            if variables:
                return gi, [None] * len(variables)
            return gi

        return out, grad

    return op(tf.convert_to_tensor(u))


def _check_rows(name: str, u: Any, rows: int) -> None:
    first = getattr(u, "shape", None)
    first = first[0] if first is not None and len(first) else None
    if first is not None and first != rows:
        raise MethodError(
            f"DeepLIFT: {name} received a tensor of shape {tuple(u.shape)} whose first axis is "
            f"not the doubled batch ({rows} rows); DeepLIFT needs models that keep the batch "
            "axis first and examples independent."
        )


def _wrap_elementwise(orig: Callable, name: str, rows: int) -> Callable:
    def rescaled(x, *args, **kwargs):
        if _depth():
            return orig(x, *args, **kwargs)
        _check_rows(name, x, rows)
        return _rescale(lambda v: orig(v, *args, **kwargs), x)

    rescaled.__name__ = getattr(orig, "__name__", name)
    rescaled.__wrapped__ = orig
    return rescaled


def _wrap_max_pool(orig: Callable, rows: int) -> Callable:
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
        rows: ``2 N``, the rows of the doubled batch.

    Raises:
        MethodError: a layer of ``model`` is a softmax (or has a softmax activation).
    """

    def __init__(self, model: Any, rows: int):
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


def deeplift_grad(f: Callable, x: Any, baseline: Any, labels: Any, *, model: Optional[Any] = None) -> Any:
    """DeepLIFT multipliers of each example's label logit with respect to ``x``.

    Args:
        f: the model's inference-mode logits function; x, baseline: ``(n, ...)``;
        labels: ``(n,)`` integer classes; model: the Keras model behind ``f`` (its
        layers' activations are swapped; None: module functions only).

    Returns:
        Multipliers shaped like ``x`` (attribution = multipliers * (x - baseline)).
    """
    rows = 2 * int(x.shape[0])
    with RescalePatches(model, rows):
        # eager on purpose: a tf.function traced under the patches would keep their
        # graph, and one forward/backward per chunk gains little from compiling
        return _multipliers(f, x, baseline, labels)
