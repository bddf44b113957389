"""Layers of Keras models: the ``layer=`` argument, layer capture and bias terms.

Behind :meth:`TensorFlowBackend.resolve_layer`, :meth:`~TensorFlowBackend.default_layer`,
:meth:`~TensorFlowBackend.capture_layers` and :meth:`~TensorFlowBackend.bias_terms`.
A layer's output is captured by replacing its ``call`` for the duration of one
model call (the tape records the captured tensor like any other, so its gradient
is one ``tape.gradient`` away); this works alike for Sequential, functional and
subclassed models and for layers inside nested models. The replaced ``call`` is
put back in a ``finally`` block, also when an error is raised.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, List, Optional, Sequence, Tuple

import tensorflow as tf

try:  # Keras 3 is its own package; TF >= 2.16 ships it as tf.keras
    import keras
except ImportError:  # pragma: no cover - TF without Keras 3
    keras = tf.keras

from ...errors import InputError, UnsupportedModelError
from .._layers_common import check_ran, last_spatial_block, listed_names, per_layer_grads

_L = keras.layers
_POOLING = tuple(
    getattr(_L, n) for n in (
        "MaxPooling1D", "MaxPooling2D", "MaxPooling3D", "AveragePooling1D", "AveragePooling2D",
        "AveragePooling3D", "GlobalAveragePooling1D", "GlobalAveragePooling2D",
        "GlobalAveragePooling3D", "GlobalMaxPooling1D", "GlobalMaxPooling2D", "GlobalMaxPooling3D",
    ) if hasattr(_L, n)
)


def all_layers(model: Any) -> List[Any]:
    """Every layer of ``model``, nested models' layers included, in order."""
    if not hasattr(model, "_flatten_layers"):
        raise UnsupportedModelError(
            f"layer methods need a Keras model or layer; got {type(model).__name__}."
        )
    return list(model._flatten_layers(include_self=False, recursive=True))


def layer_names(model: Any) -> List[str]:
    """Names of every layer (nested models' layers included)."""
    return [layer.name for layer in all_layers(model)]


def resolve_layer(model: Any, layer: Any) -> Any:
    """The layer of ``model`` that ``layer`` names: a layer object, its name or its index.

    An index counts in ``model.layers`` (negative from the end), as
    ``model.get_layer(index=i)`` does; a string of digits that is no layer's name
    is read as an index (the command line passes strings).

    Raises:
        InputError: a layer the model does not have; the message lists the names.
    """
    layers = all_layers(model)
    names = [lay.name for lay in layers]
    if isinstance(layer, _L.Layer):
        if any(lay is layer for lay in layers):
            return layer
        raise InputError(
            f"layer={layer.name!r} (a {type(layer).__name__}) is not a layer of the model; "
            f"available names: {listed_names(names)}."
        )
    if isinstance(layer, str) and layer:
        for lay in layers:
            if lay.name == layer:
                return lay
        if layer.lstrip("-").isdigit():
            return resolve_layer(model, int(layer))
        raise InputError(f"layer={layer!r} names no layer of the model; available names: "
                         f"{listed_names(names)}.")
    if isinstance(layer, int) and not isinstance(layer, bool):
        top = list(getattr(model, "layers", []))
        if -len(top) <= layer < len(top):
            return top[layer]
        raise InputError(
            f"layer={layer}: the model has {len(top)} layers in model.layers, so an index must "
            f"lie in [{-len(top)}, {len(top) - 1}]; available names: {listed_names(names)}."
        )
    raise InputError(
        f"layer={layer!r}: expected a Keras layer of the model, its name or its index; available "
        f"names: {listed_names(names)}."
    )


class _CallPatches:
    """Replaced ``call`` attributes of layers, put back by :meth:`restore` (last first)."""

    def __init__(self) -> None:
        self._undo: List[Tuple[Any, bool, Any]] = []

    def wrap(self, layer: Any, wrapper: Callable[[Callable], Callable]) -> None:
        had_own = "call" in layer.__dict__
        own = layer.__dict__.get("call")
        self._undo.append((layer, had_own, own))
        layer.call = wrapper(layer.call)

    def restore(self) -> None:
        while self._undo:
            layer, had_own, own = self._undo.pop()
            if had_own:
                layer.call = own
            else:
                del layer.call


def _spatial(shape: Tuple[Any, ...]) -> bool:
    return len(shape) == 4 and None not in shape[1:3] and int(shape[1]) * int(shape[2]) > 1


def default_layer(model: Any, f: Callable, x: Any) -> Any:
    """GradCAM's default layer: the output of the last block with spatial extent.

    One call of ``f`` on ``x`` (one example) records the output shape of every
    layer. Among ``model.layers``, the last one (in order of completion) whose
    output is 4-D with ``H * W > 1`` and that is not a pooling layer is taken;
    where none qualifies, the search descends into the last nested model that
    ran. keras.applications: ``conv5_block3_out`` (ResNet50), ``block5_conv3``
    (VGG16), ``block14_sepconv2_act`` (Xception), ``out_relu`` (MobileNetV2),
    ``top_activation`` (EfficientNet); a Sequential CNN: the last layer before the
    pooling or flattening that ends its spatial part.

    Raises:
        InputError: no layer with a spatial output ran.
    """
    done: dict = {}
    patches = _CallPatches()

    def recorder(layer):
        def wrapper(original):
            def call(*args, **kwargs):
                out = original(*args, **kwargs)
                shape = tuple(out.shape) if tf.is_tensor(out) else ()
                done[id(layer)] = (len(done), _spatial(shape))
                return out
            return call
        return wrapper

    try:
        for layer in all_layers(model):
            patches.wrap(layer, recorder(layer))
        f(x)
    finally:
        patches.restore()

    chosen = last_spatial_block(
        model, lambda lay: list(getattr(lay, "layers", [])),
        lambda lay: done[id(lay)][0] if id(lay) in done else None,
        lambda lay: done[id(lay)][1], lambda lay: isinstance(lay, _POOLING))
    if chosen is None:
        raise InputError(
            "layer=None: no layer of the model has an output with spatial extent (N, H, W, C) "
            f"with H * W > 1; pass layer= explicitly. Available names: "
            f"{listed_names(layer_names(model))}."
        )
    return chosen


def capture_layers(f: Callable, layers: Sequence[Any], x: Any, labels: Any,
                   wrt_input: bool = False, pre_activation: bool = False,
                   strict: bool = True, reduce: Optional[Callable[[int, Any], Any]] = None
                   ) -> Tuple[Any, list, list, Any]:
    """Run ``f`` on ``x`` capturing every output of ``layers``; gradients of the label logits.

    With ``pre_activation=True`` a layer with a fused activation (``Conv2D(...,
    activation="relu")``) is captured before its activation, which is applied
    after the capture (FullGrad's bias terms need the pre-activation output).

    Returns:
        ``(scores (N,), outputs, grads, grad_x)`` as in
        :meth:`boundary_xg.backends.Backend.capture_layers`.

    Raises:
        InputError: with ``strict``, a layer did not run or does not lie on the
            path from the input to the output.
    """
    calls: List[list] = [[] for _ in layers]
    order: List[Tuple[int, int]] = []  # (layer, call) of every capture, in the order they ran
    patches = _CallPatches()
    linear = keras.activations.linear

    def name_of(i: int) -> str:
        return layers[i].name

    def capturer(i, layer):
        def wrapper(original):
            def call(*args, **kwargs):
                act = getattr(layer, "activation", None)
                fused = pre_activation and callable(act) and act is not linear
                if not fused:
                    out = original(*args, **kwargs)
                    order.append((i, len(calls[i])))
                    calls[i].append(out)
                    return out
                layer.activation = linear
                try:
                    z = original(*args, **kwargs)
                finally:
                    layer.activation = act
                order.append((i, len(calls[i])))
                calls[i].append(z)
                return act(z)
            return call
        return wrapper

    try:
        for i, layer in enumerate(layers):
            patches.wrap(layer, capturer(i, layer))
        with tf.GradientTape() as tape:
            tape.watch(x)
            logits = f(x)
            # an objective other than the logit (ops.with_objective) scores the rows itself
            score = getattr(f, "score", None)
            if score is not None:
                scores = score(logits, labels)
            else:
                scores = tf.gather(logits, tf.cast(labels, tf.int64), axis=1, batch_dims=1)
            total = tf.reduce_sum(scores)
    finally:
        patches.restore()
    check_ran(calls, name_of, strict)
    for i, c in enumerate(calls):
        if not all(tf.is_tensor(t) for t in c):
            raise InputError(f"layer={layers[i].name!r} returns an output that is not one tensor.")
    flat = [t for c in calls for t in c]
    grads = tape.gradient(total, flat + ([x] if wrt_input else []))
    gx = grads.pop() if wrt_input else None
    if wrt_input and gx is None:
        gx = tf.zeros_like(x)
    out_grads = per_layer_grads(calls, grads, name_of, strict, lambda i, o: tf.zeros_like(o))
    if reduce is not None:  # in a compiled step, the graph frees each gradient once reduced
        out_grads = _reduce_in_order(reduce, out_grads, grads, calls, order, gx)
    return tf.stop_gradient(scores), calls, out_grads, gx


def _reduce_in_order(reduce: Callable[[int, Any], Any], out_grads: List[list], grads: List[Any],
                     calls: List[list], order: List[Tuple[int, int]], gx: Any) -> List[list]:
    """``reduce(i, g)`` of every captured gradient, each run after the backward pass has used ``g``.

    The gradient of a layer's output is also the input of that layer's backward
    ops; while they have not run, the reduction's first elementwise op (FullGrad's
    ``|g|``) cannot reuse ``g``'s buffer and writes a new tensor of its size (a
    quarter of FullGrad's post-processing on a small CNN at 256 rows). Each
    reduction waits (a control dependency, no data) for the gradient of the capture
    that ran just before it in the forward pass, computed from those backward ops
    (``grad_x`` for the first); on a chain ``g`` lives one layer's backward step longer,
    not to the end of the backward pass (the peak memory grows by about one gradient).
    With FullGrad's fused XLA kernel (:func:`abs_channel_stats`) nothing of ``g``'s size is
    written, and the dependency only orders the work (measured: no difference either way);
    it matters for the stock-op fallback where XLA is missing.
    """
    flat_index, k = {}, 0
    for i, c in enumerate(calls):
        for j in range(len(c)):
            flat_index[(i, j)] = k
            k += 1
    after: dict = {}
    previous = gx
    for i, j in order:
        after[(i, j)] = previous
        g = grads[flat_index[(i, j)]]
        if g is not None:
            previous = g
    out: List[list] = []
    for i, gl in enumerate(out_grads):
        reduced = []
        for j, g in enumerate(gl):
            dep = after.get((i, j))
            if dep is None:
                reduced.append(reduce(i, g))
                continue
            with tf.control_dependencies([dep]):
                reduced.append(reduce(i, g))
        out.append(reduced)
    return out


def bias_terms(model: Any) -> List[Tuple[Any, Any, int]]:
    """``(layer, bias (C,), channel axis of its output)`` for every layer that adds a bias.

    Layers with ``use_bias`` and a ``bias`` weight (Dense, Conv*, DepthwiseConv2D,
    SeparableConv2D, ...; the bias is the layer's ``tf.Variable``, read where it is
    used) and batch normalisation with its effective bias
    ``beta - moving_mean * gamma / sqrt(moving_variance + epsilon)`` (a tensor of the
    variables' current values, all batch norms in one compiled call).
    """
    out: list = []
    norms: list = []
    for layer in all_layers(model):
        if isinstance(layer, _L.BatchNormalization):
            axis = layer.axis if isinstance(layer.axis, int) else list(layer.axis)[0]
            norms.append(len(out))
            out.append([layer, None, axis])
        elif getattr(layer, "use_bias", False) and getattr(layer, "bias", None) is not None:
            axis = 1 if getattr(layer, "data_format", "channels_last") == "channels_first" else -1
            # the tf.Variable itself, not a copy: a compiled step reads it in its graph
            # (eager reads cost more than FullGrad's post-processing on a small CNN)
            bias = getattr(layer.bias, "value", layer.bias)  # keras.Variable -> tf.Variable
            out.append([layer, bias if isinstance(bias, tf.Variable) else tf.convert_to_tensor(bias), axis])
    if norms:
        for i, b in zip(norms, _norm_biases(model, tuple(out[i][0] for i in norms))()):
            out[i][1] = b
    return [tuple(t) for t in out]


def _effective_bias(layer: Any) -> Any:
    mean = tf.convert_to_tensor(layer.moving_mean)
    var = tf.convert_to_tensor(layer.moving_variance)
    gamma = tf.convert_to_tensor(layer.gamma) if layer.scale else tf.ones_like(mean)
    beta = tf.convert_to_tensor(layer.beta) if layer.center else tf.zeros_like(mean)
    return beta - mean * gamma / tf.sqrt(var + layer.epsilon)


#: model -> (its batch-norm layers, one compiled function of their effective biases). Eagerly,
#: each batch norm cost about eight ops per call (~1 ms for one layer on a loaded CPU, more
#: than a small model's FullGrad pass); compiled, the variables are read when it runs, so
#: the biases follow any change of the statistics.
_NORM_FNS: "weakref.WeakKeyDictionary[Any, Tuple[Tuple[int, ...], Callable]]" = weakref.WeakKeyDictionary()


def _norm_biases(model: Any, layers: Tuple[Any, ...]) -> Callable:
    key = tuple(id(layer) for layer in layers)
    try:
        hit = _NORM_FNS.get(model)
    except TypeError:  # not weak-referenceable: eagerly
        return lambda: tuple(_effective_bias(layer) for layer in layers)
    if hit is None or hit[0] != key:
        fn = tf.function(lambda: tuple(_effective_bias(layer) for layer in layers), autograph=False)
        hit = _NORM_FNS[model] = (key, fn)
    return hit[1]


_XLA: List[bool] = []  # [whether XLA compiles and runs here], filled on first use


def xla_available() -> bool:
    """Whether ``tf.function(jit_compile=True)`` works in this process (one trial call, cached)."""
    if not _XLA:
        try:
            with tf.init_scope():  # eagerly, also while a caller is being traced
                got = tf.function(lambda t: t * 2.0 + 1.0, jit_compile=True, autograph=False)(
                    tf.constant([1.0, 2.0]))
                _XLA.append([float(v) for v in got.numpy()] == [3.0, 5.0])
        except Exception:  # noqa: BLE001 - no XLA in this build or on this device
            _XLA.append(False)
    return _XLA[0]


#: (dtype, rank, weighted, with times) -> the XLA kernel of :func:`abs_channel_stats`
_FUSED: dict = {}


def _fused_kernel(dtype: Any, rank: int, weighted: bool, product: bool) -> Optional[Callable]:
    """:meth:`Backend.abs_channel_stats` of channels-last ``rank``-D tensors as one XLA kernel.

    One variadic reduction over the channels computes the channel sum, the minimum
    and the maximum of ``|t| w`` (``|t * times| w``) in a single pass over ``t``; the
    extremes over the positions are then reductions of ``(N, H, W)`` maps. Stock
    TensorFlow ops read ``t`` four times (``|t|``, its minimum and maximum over the
    positions, a matrix product), and XLA runs separate reductions as separate
    passes. None where the tf2xla op is missing.
    """
    key = (dtype, rank, weighted, product)
    if key in _FUSED:
        return _FUSED[key]
    fn = None
    try:
        # tf2xla's wrapper of XLA's variadic Reduce (no public API exposes it)
        from tensorflow.compiler.tf2xla.ops import gen_xla_ops

        scalar = tf.TensorSpec((), dtype)
        combine = tf.function(
            lambda s0, lo0, hi0, s1, lo1, hi1: (s0 + s1, tf.minimum(lo0, lo1), tf.maximum(hi0, hi1)),
            autograph=False).get_concrete_function(*[scalar] * 6)
        rest = list(range(1, rank - 1))

        def kernel(t, *more):
            a = tf.abs(t * more[-1] if product else t)
            p = a * more[0] if weighted else a
            init = [tf.constant(v, dtype) for v in (0.0, float("inf"), float("-inf"))]
            s, lo, hi = gen_xla_ops.xla_variadic_reduce_v2([p, p, p], init, [rank - 1], combine)
            return s, tf.reduce_min(lo, rest), tf.reduce_max(hi, rest)

        # traced once per key; XLA compiles once per shape when the step first runs
        spec = ([tf.TensorSpec([None] * rank, dtype)] + ([tf.TensorSpec([None], dtype)] if weighted else [])
                + ([tf.TensorSpec([None] * rank, dtype)] if product else []))
        fn = tf.function(kernel, jit_compile=True, autograph=False, input_signature=spec)
        with tf.init_scope():  # one eager trial call: a failure here leaves the fallback
            t = tf.reshape(tf.constant([-1.0, 2.0], dtype), [1] * (rank - 1) + [2])
            args = [t] + ([tf.constant([3.0, 0.5], dtype)] if weighted else []) + ([t] if product else [])
            got = [float(tf.reshape(v, [-1])[0]) for v in fn(*args)]
            a = [1.0, 4.0] if product else [1.0, 2.0]
            p = [a[0] * 3.0, a[1] * 0.5] if weighted else a
            if got != [p[0] + p[1], min(p), max(p)]:
                fn = None
    except Exception:  # noqa: BLE001 - no XLA here: the caller's fallback
        fn = None
    _FUSED[key] = fn
    return fn


def abs_channel_stats(t: Any, w: Optional[Any], axis: int, times: Optional[Any] = None
                      ) -> Optional[Tuple[Any, Any, Any]]:
    """:meth:`Backend.abs_channel_stats` as one XLA kernel, or None for the fallback.

    Channels last, a static non-batch shape, float32 or float64, XLA available.
    The extremes equal the fallback's exactly; the channel sum to rounding (1e-7
    relative: XLA adds the channels in another order than the matrix product).
    """
    shape = t.shape
    rank = shape.rank
    if (rank is None or rank < 3 or axis % rank != rank - 1 or not shape[1:].is_fully_defined()
            or int(shape[-1]) == 0 or t.dtype not in (tf.float32, tf.float64)
            or (times is not None and (times.dtype != t.dtype or times.shape != shape))
            or not xla_available()):
        return None
    fn = _fused_kernel(t.dtype, rank, w is not None, times is not None)
    if fn is None:
        return None
    args = [t] + ([tf.cast(w, t.dtype)] if w is not None else []) + ([times] if times is not None else [])
    return fn(*args)


def _bilinear_matrix(n_in: int, n_out: int, align_corners: bool) -> Any:
    """``(n_out, n_in)`` weights of 1-D linear interpolation, float64 (numpy).

    ``align_corners=True``: source ``i (n_in - 1) / (n_out - 1)``; False: half-pixel
    centres ``(i + 0.5) n_in / n_out - 0.5`` clamped at 0 (``tf.image.resize``);
    two taps, the upper one clamped to the last row.
    """
    import numpy as np

    i = np.arange(n_out, dtype=np.float64)
    if align_corners:
        src = i * ((n_in - 1) / (n_out - 1)) if n_out > 1 else np.zeros_like(i)
    else:
        src = np.maximum((i + 0.5) * (n_in / n_out) - 0.5, 0.0)
    lo = np.minimum(np.floor(src).astype(np.int64), n_in - 1)
    hi = np.minimum(lo + 1, n_in - 1)
    frac = src - lo
    m = np.zeros((n_out, n_in), dtype=np.float64)
    rows = np.arange(n_out)
    np.add.at(m, (rows, lo), 1.0 - frac)
    np.add.at(m, (rows, hi), frac)
    return m


def resize(t: Any, size: Tuple[int, int], align_corners: bool = False) -> Any:
    """Bilinear resize of ``(N, h, w, C)`` to ``(N, *size, C)``.

    One-channel float maps (the layer methods' output) with a static ``h, w`` are
    resized as ``R_h @ t @ R_w^T`` with the interpolation weights as constant
    matrices: ResizeBilinear does not vectorise over a single channel and cost
    more than FullGrad's other post-processing of a layer (3x at 256 maps of
    16x16 to 32x32). Equal to the framework op up to rounding (1e-6 relative).
    """
    size = (int(size[0]), int(size[1]))
    shape = tuple(t.shape)
    if (len(shape) == 4 and shape[3] == 1 and None not in shape[1:3]
            and t.dtype in (tf.float32, tf.float64)):
        h, w = int(shape[1]), int(shape[2])
        r_h = tf.constant(_bilinear_matrix(h, size[0], align_corners), dtype=t.dtype)
        r_wt = tf.constant(_bilinear_matrix(w, size[1], align_corners).T, dtype=t.dtype)
        m = tf.reshape(t, (-1, h, w))
        out = tf.matmul(r_h, tf.reshape(tf.matmul(tf.reshape(m, (-1, w)), r_wt), (-1, h, size[1])))
        return tf.reshape(out, (-1, size[0], size[1], 1))
    if align_corners:
        out = tf.raw_ops.ResizeBilinear(images=t, size=list(size), align_corners=True)
    else:
        out = tf.image.resize(t, size, method="bilinear")
    return tf.cast(out, t.dtype)
