"""The TensorFlow / Keras 3 backend: the only module of boundary_xg that imports them.

Keras models are called with ``training=False`` (inference semantics for dropout
and batch norm) and nothing on the model is changed, except that a final softmax
activation is switched off for the duration of a call so that the pre-softmax
logit is explained; it is put back on exit, also after an error.

The hot step (the gradient of the label's logit for a chunk of path points or
noisy samples) runs under ``tf.function`` when that is faster: one traced graph
per model and step function, kept in a weak cache so that repeated calls do not
retrace and a deleted model frees its graphs.
"""

from __future__ import annotations

import contextlib
import functools
import weakref
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

import numpy as np
import tensorflow as tf

from ...errors import SoftmaxOutputWarning
from .._protocol import Backend
from . import IDENTITY
from ...errors import warn

try:  # Keras 3 is its own package; TF >= 2.16 ships it as tf.keras
    import keras
except ImportError:  # pragma: no cover - TF without Keras 3
    keras = tf.keras




def _is_softmax(fn: Any) -> bool:
    return fn is keras.activations.softmax or getattr(fn, "__name__", "") == "softmax"


_GPU: list = []


def _static_key(s: Any) -> Any:
    """Cache key of one bound argument of :meth:`TensorFlowBackend.jit`: plain values (numbers,
    strings, flags, tuples of them: shapes, options) by value, so a caller may build them
    anew each call; anything else (models, functions, plans) by identity."""
    if s is None or isinstance(s, (bool, int, str)) or (isinstance(s, float) and s == s):
        return (type(s), s)
    if isinstance(s, tuple):
        inner = tuple(_static_key(v) for v in s)
        if all(isinstance(k, tuple) and len(k) == 2 and k[0] is not id for k in inner):
            return (tuple, inner)
    return (id, id(s))


def _gpu_visible() -> bool:
    """Whether TensorFlow sees a GPU (asked once)."""
    if not _GPU:
        _GPU.append(bool(tf.config.list_logical_devices("GPU")))
    return _GPU[0]


def _shape_of(v: Any) -> Tuple:
    """A variable's shape as a tuple, cheaply for Keras variables."""
    shape = getattr(v, "_shape", None)
    return shape if isinstance(shape, tuple) else tuple(v.shape)


def _identity_call(inputs, *args, **kwargs):
    return inputs


#: a sum over a last axis at most this long adds its slices instead (see ``sum``)
_FEW = 4


class _KerasLogits:
    """The model's inference-mode logits function (one object per model and mode).

    A stable object per model lets ``tf.function`` caches keyed on it be reused.
    """

    def __init__(self, model: Any, training: Any):
        self._model = weakref.ref(model)
        self._training = training

    def __call__(self, x: Any) -> Any:
        model = self._model()
        if self._training is None:
            return model(x)
        return model(x, training=self._training)


class TensorFlowBackend(Backend):
    """Backend for Keras 3 models on the TensorFlow backend (and TF callables)."""

    name = IDENTITY.name
    image_layout = IDENTITY.image_layout
    capabilities = IDENTITY.capabilities
    # TensorFlow's per-call cost is larger and its CPU kernels keep gaining up to
    # larger batches (bench/gradient_methods.py measures the floor per batch size)
    cpu_chunk_elements = 2 ** 20

    # --- construction -----------------------------------------------------------------
    def __init__(self) -> None:
        self._logits: "weakref.WeakKeyDictionary[Any, Dict[str, _KerasLogits]]" = (
            weakref.WeakKeyDictionary()
        )
        self._compiled: "weakref.WeakKeyDictionary[Any, Dict[Any, Callable]]" = (
            weakref.WeakKeyDictionary()
        )
        #: set to False to run the hot steps eagerly (for benchmarks and debugging)
        self.use_tf_function = True

    # --- conversion and devices -------------------------------------------------------
    def is_tensor(self, obj: Any) -> bool:
        if isinstance(obj, (tf.Tensor, tf.Variable)):
            return True
        # tf.is_tensor checks typing protocols (about 35 us a call); NumPy arrays and
        # Python numbers, what callers pass most, are answered without it
        if isinstance(obj, (np.ndarray, np.generic, int, float, list, tuple)):
            return False
        return tf.is_tensor(obj)

    def asarray(self, data: Any, like: Any = None, dtype: Any = None, device: Any = None) -> Any:
        if dtype is not None and not isinstance(dtype, tf.dtypes.DType):
            dtype = tf.as_dtype(np.dtype(dtype).name if not isinstance(dtype, str) else dtype)
        if isinstance(data, np.ndarray) and data.dtype.kind in "biuf":
            # a NumPy array straight to a tensor: tf.constant skips convert_to_tensor's
            # protocol checks (half of its cost on a small input); the cast is NumPy's,
            # except to a dtype NumPy lacks (bfloat16), which TensorFlow casts
            if dtype is None and like is not None and data.dtype.kind == "f":
                dtype = like.dtype
            if dtype is not None and dtype.is_numpy_compatible and dtype != tf.bfloat16:
                with np.errstate(over="ignore", invalid="ignore"):  # inf is refused by the caller's check
                    return tf.constant(data.astype(dtype.as_numpy_dtype, copy=False))
            t = tf.constant(data)
            return t if dtype is None or t.dtype == dtype else tf.cast(t, dtype)
        if tf.is_tensor(data):
            t = tf.convert_to_tensor(data)
            return tf.cast(t, dtype) if dtype is not None and t.dtype != dtype else t
        arr = np.asarray(data)
        if dtype is None and like is not None and arr.dtype.kind == "f":
            dtype = like.dtype
        return tf.convert_to_tensor(arr, dtype=dtype)

    def is_floating(self, t: Any) -> bool:
        return t.dtype.is_floating

    def to_numpy(self, t: Any) -> Any:
        return t.numpy()

    def dtype_name(self, t: Any) -> str:
        return t.dtype.name

    def cast(self, t: Any, like: Any) -> Any:
        return tf.cast(t, like.dtype)

    def device_of(self, t: Any) -> Any:
        return None  # TensorFlow places ops itself and copies across devices as needed

    def model_device(self, model: Any) -> Any:
        return None

    def on_accelerator(self, t: Any) -> bool:
        device = getattr(t, "device", "") or ""
        return ":GPU:" in device or ":TPU:" in device

    def model_dtype(self, model: Any) -> Any:
        name = getattr(model, "compute_dtype", None) or "float32"
        return tf.as_dtype(name)

    def all_finite(self, t: Any) -> bool:
        if not t.dtype.is_floating:
            return True
        if "CPU" in getattr(t, "device", "") and t.dtype != tf.bfloat16:
            # on a CPU, NumPy's test costs about half of two eager TF ops, and every
            # call checks its inputs; np.asarray shares the tensor's memory (.numpy()
            # copies: 0.37 of 0.62 ms for 256x32x32x3 float32)
            return bool(np.isfinite(np.asarray(t)).all())
        return bool(tf.reduce_all(tf.math.is_finite(t)))

    # --- the model --------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, model: Any, *, mode: str = "eval") -> Iterator[Callable]:
        if not isinstance(model, keras.Model) and not isinstance(model, keras.layers.Layer):
            yield model
            return
        restore = self._strip_softmax(model)
        try:
            per_model = self._logits.setdefault(model, {})
            if mode not in per_model:
                per_model[mode] = _KerasLogits(model, False if mode == "eval" else None)
            yield per_model[mode]
        finally:
            restore()

    def _strip_softmax(self, model: Any) -> Callable[[], None]:
        """Switch a final softmax off; return the function that switches it back on."""
        layers = getattr(model, "layers", None) or []
        if not layers:
            return lambda: None
        last = layers[-1]
        if not isinstance(model, keras.Sequential):
            outputs = getattr(model, "outputs", None)
            if not outputs or len(outputs) != 1:
                return lambda: None
            history = getattr(outputs[0], "_keras_history", None)
            if history is None or history[0] is not last:
                return lambda: None
        if _is_softmax(getattr(last, "activation", None)):
            original = last.activation
            warn(
                f"the model's last layer {last.name!r} applies a softmax; boundary_xg "
                "explains the pre-softmax logit (the softmax is switched off during the call).",
                SoftmaxOutputWarning
            )
            last.activation = keras.activations.linear

            def restore() -> None:
                last.activation = original

            return restore
        if isinstance(last, keras.layers.Softmax):
            warn(
                f"the model ends in a Softmax layer {last.name!r}; boundary_xg explains the "
                "pre-softmax logit (the layer passes its input through during the call).",
                SoftmaxOutputWarning
            )
            had_own = "call" in last.__dict__
            own = last.__dict__.get("call")
            last.call = _identity_call

            def restore() -> None:
                if had_own:
                    last.call = own
                else:
                    del last.call

            return restore
        return lambda: None

    def entry_context(self) -> Any:
        return contextlib.nullcontext()

    def no_grad(self) -> Any:
        return contextlib.nullcontext()  # nothing is recorded outside a GradientTape

    def fingerprint(self, model: Any) -> Tuple:
        weights = getattr(model, "weights", None)
        if weights is None:
            return (id(model),)
        # a Keras variable's shape is the tuple ``_shape`` (``.shape`` builds a TensorShape,
        # about 10 us a weight, which made the fingerprint a third of a small call's checks)
        return tuple((id(v), _shape_of(v)) for v in weights)

    def named_weights(self, model: Any) -> list:
        return [(str(getattr(w, "path", getattr(w, "name", ""))), w) for w in getattr(model, "weights", None) or []]

    def forward(self, f: Callable, x: Any) -> Any:
        return f(x)

    def jit(self, fn: Callable, owner: Any, *static: Any, fuse: bool = False) -> Callable:
        bound = functools.partial(fn, *static)
        if not self.use_tf_function:
            return bound
        # as_written: no autograph, so our errors raised while tracing pass through unwrapped
        options = dict(autograph=not getattr(fn, "jit_as_written", False), reduce_retracing=True)
        if fuse:
            from .layers import xla_available

            if xla_available():
                # one XLA kernel; traced per exact shape (XLA compiles per shape anyway)
                options.update(jit_compile=True, reduce_retracing=False)
        try:
            cache = self._compiled.setdefault(owner, {})
        except TypeError:  # owner not weak-referenceable: compile without caching
            return tf.function(bound, **options)
        key = (fn, fuse) + tuple(_static_key(s) for s in static)
        if key not in cache:
            cache[key] = tf.function(bound, **options)
        return cache[key]

    # --- autodiff ---------------------------------------------------------------------
    def value_and_grad(self, fn: Callable, x: Any, create_graph: bool = False) -> Tuple[Any, Any]:
        # An outer tape, if any, records these ops too, so the gradient stays
        # differentiable without doing anything for create_graph.
        with tf.GradientTape() as tape:
            tape.watch(x)
            value = fn(x)
            total = tf.reduce_sum(value)
        grad = tape.gradient(total, x)
        if grad is None:
            grad = tf.zeros_like(x)
        return value, grad

    def value_aux_and_grad(self, fn: Callable, x: Any) -> Tuple[Any, Any, Any]:
        with tf.GradientTape() as tape:
            tape.watch(x)
            value, aux = fn(x)
            total = tf.reduce_sum(value)
        grad = tape.gradient(total, x)
        if grad is None:
            grad = tf.zeros_like(x)
        return tf.stop_gradient(value), tf.stop_gradient(aux), grad

    def stop_gradient(self, t: Any) -> Any:
        if tf.executing_eagerly() and not _could_record():
            # nothing records: an eager tensor is already cut off from every later tape
            # (the eager op cost 0.1-0.2 ms per call, 1 % of a one-pass method on 64 rows)
            return t
        return tf.stop_gradient(t)

    # --- creation ---------------------------------------------------------------------
    def zeros_like(self, t: Any) -> Any:
        return tf.zeros_like(t)

    def constant(self, values: Sequence[float], like: Any) -> Any:
        return tf.constant(np.asarray(values), dtype=like.dtype)

    def arange(self, start: int, stop: int, like: Any) -> Any:
        return tf.range(start, stop, dtype=tf.int64)

    def one_hot(self, labels: Any, depth: int, like: Any) -> Any:
        return tf.one_hot(tf.cast(labels, tf.int64), int(depth), dtype=like.dtype)

    # --- random numbers ---------------------------------------------------------------
    def rng(self, seed: Any, like: Any) -> Any:
        if seed is None:
            return tf.random.Generator.from_non_deterministic_state()
        return tf.random.Generator.from_seed(int(seed))

    def normal(self, rng: Any, shape: Sequence[int], like: Any) -> Any:
        return rng.normal(tuple(shape), dtype=like.dtype)

    def uniform(self, rng: Any, shape: Sequence[int], like: Any) -> Any:
        return rng.uniform(tuple(shape), dtype=like.dtype)

    # --- shape and indexing -----------------------------------------------------------
    def shape(self, t: Any) -> Tuple[int, ...]:
        # None: a dimension unknown while a step is traced with relaxed shapes
        return tuple(None if d is None else int(d) for d in t.shape)

    def reshape(self, t: Any, shape: Sequence[int]) -> Any:
        return tf.reshape(t, tuple(shape))

    def broadcast_to(self, t: Any, shape: Sequence[int]) -> Any:
        return tf.broadcast_to(t, tuple(shape))

    def concat(self, ts: Sequence[Any], axis: int = 0) -> Any:
        return tf.concat(list(ts), axis=axis)

    def gather(self, t: Any, index: Any) -> Any:
        return tf.gather(t, index)

    def take_along_axis(self, t: Any, index: Any) -> Any:
        return tf.gather(t, tf.cast(index, tf.int64), axis=1, batch_dims=1)

    def index_add(self, acc: Any, index: Any, rows: Any) -> Any:
        return tf.tensor_scatter_nd_add(acc, tf.reshape(index, (-1, 1)), rows)

    # --- element-wise -----------------------------------------------------------------
    def abs(self, t: Any) -> Any:
        return tf.abs(t)

    def sqrt(self, t: Any) -> Any:
        return tf.sqrt(t)

    def exp(self, t: Any) -> Any:
        return tf.exp(t)

    def sign(self, t: Any) -> Any:
        return tf.sign(t)

    def tanh(self, t: Any) -> Any:
        return tf.tanh(t)

    def atanh(self, t: Any) -> Any:
        return tf.atanh(t)

    def minimum(self, a: Any, b: Any) -> Any:
        return tf.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return tf.maximum(a, b)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return tf.where(cond, a, b)

    def not_equal(self, a: Any, b: Any) -> Any:
        return tf.not_equal(a, b)

    def logical_and(self, a: Any, b: Any) -> Any:
        return tf.logical_and(a, b)

    def logical_or(self, a: Any, b: Any) -> Any:
        return tf.logical_or(a, b)

    def logical_not(self, a: Any) -> Any:
        return tf.logical_not(a)

    # --- reductions -------------------------------------------------------------------
    def sum(self, t: Any, axis: Any = None) -> Any:
        rank = t.shape.rank
        last = axis if isinstance(axis, int) else (
            axis[0] if isinstance(axis, (tuple, list)) and len(axis) == 1 else None)
        if rank is not None and rank >= 2 and last is not None and last % rank == rank - 1:
            n = t.shape[-1]
            if n is not None and 1 < n <= _FEW:
                # a sum over a short last axis (an image's channels): Eigen's reduction runs
                # 2-3x slower than adding the slices (FullGrad's input term at 3 channels)
                return tf.add_n(tf.unstack(t, axis=-1))
        return tf.reduce_sum(t, axis=axis)

    def max(self, t: Any, axis: Any = None) -> Any:
        return tf.reduce_max(t, axis=axis)

    def min(self, t: Any, axis: Any = None) -> Any:
        return tf.reduce_min(t, axis=axis)

    def argmax(self, t: Any, axis: int = -1) -> Any:
        return tf.argmax(t, axis=axis, output_type=tf.int64)

    def logsumexp(self, t: Any, axis: int = -1) -> Any:
        return tf.reduce_logsumexp(t, axis=axis)

    def sort(self, t: Any, axis: int = -1) -> Any:
        return tf.sort(t, axis=axis)

    def argsort(self, t: Any, axis: int = -1) -> Any:
        return tf.cast(tf.argsort(t, axis=axis, stable=True), tf.int64)

    def select(self, cond: Any, a: Any, b: Any) -> Any:
        # tf.where (SelectV2, broadcasting) runs at a fraction of the speed of Select on a CPU
        # (24 against 3 ms for 8x224x224x3 on one thread); Select takes a condition of the
        # values' shape, or a vector over their first axis: a condition that broadcasts over
        # trailing axes (one entry per pixel, channels last) becomes such a vector
        cs, vs = cond.shape.as_list(), a.shape.as_list()
        if len(cs) != len(vs) or b.shape.as_list() != vs:
            return tf.where(cond, a, b)
        k = len(cs)
        while k > 0 and cs[k - 1] == 1 and vs[k - 1] != 1:
            k -= 1
        lead_ok = all(c == v or c is None or v is None for c, v in zip(cs[:k], vs[:k]))
        if not lead_ok or any(c != 1 for c in cs[k:]):
            return tf.where(cond, a, b)
        if k == len(cs):
            return tf.raw_ops.Select(condition=cond, x=a, y=b)
        inner = vs[k:]
        if k == 0 or any(d is None for d in inner):
            return tf.where(cond, a, b)
        width = int(np.prod(inner))
        flat = tf.raw_ops.Select(condition=tf.reshape(cond, [-1]), x=tf.reshape(a, [-1, width]),
                                 y=tf.reshape(b, [-1, width]))
        return tf.reshape(flat, tf.shape(a))

    def invert_permutation(self, order: Any) -> Any:
        if not _gpu_visible():
            # rows as one permutation of 0..N*P-1 (row r offset by r*P) and TensorFlow's
            # InvertPermutation, a plain O(n) loop: scatter_nd took as long as the sort
            # itself on a CPU (360x64 digits ranks: 1.9 of 3.7 ms); its GPU kernel keeps
            # the data in host memory, so accelerators keep the scatter
            shape = tf.shape(order, out_type=order.dtype)
            offsets = tf.range(shape[0], dtype=order.dtype)[:, None] * shape[1]
            flat = tf.math.invert_permutation(tf.reshape(order + offsets, [-1]))
            return tf.reshape(flat, shape) - offsets
        shape = tf.shape(order, out_type=order.dtype)
        rows = tf.broadcast_to(tf.range(shape[0], dtype=order.dtype)[:, None], shape)
        pos = tf.broadcast_to(tf.range(shape[1], dtype=order.dtype)[None, :], shape)
        return tf.scatter_nd(tf.stack([rows, order], axis=-1), pos, shape)

    def einsum(self, spec: str, *operands: Any) -> Any:
        return tf.einsum(spec, *operands)

    def weighted_sum(self, t: Any, w: Any, axis: int) -> Any:
        # channels last (NHWC): a reshape to (N*H*W, C) and one matrix product
        return tf.tensordot(t, tf.cast(w, t.dtype), axes=[[axis % t.shape.rank], [0]])

    # --- the model: copies and weights (the randomisation check) ----------------------
    def copy_model(self, model: Any) -> Any:
        from ...errors import InputError

        if not isinstance(model, keras.Model):
            raise InputError(f"the model, a {type(model).__name__}, cannot be copied; the randomisation "
                             "check works on a copy of a keras.Model.")
        try:
            twin = keras.models.clone_model(model)
            twin.set_weights(model.get_weights())
        except Exception as err:  # subclassed models without get_config / from_config
            raise InputError(
                f"the model could not be copied (keras.models.clone_model: {type(err).__name__}: "
                f"{str(err).strip().splitlines()[0] if str(err).strip() else ''}); the randomisation "
                "check works on a copy: pass a Sequential or functional model, or give the "
                "subclassed model get_config/from_config.") from err
        return twin

    def parameter_layers(self, model: Any) -> list:
        out = []

        def visit(layer: Any) -> None:
            subs = getattr(layer, "layers", None)
            if subs:  # a nested model: its own layers, in order
                for sub in subs:
                    visit(sub)
                return
            if _own_weights(layer):
                out.append((layer.name, layer))

        for layer in getattr(model, "layers", None) or []:
            visit(layer)
        return out

    def randomize_layer(self, model: Any, layer: Any, seed: Sequence[int]) -> None:
        for k, v in enumerate(_own_weights(layer)):
            w = np.asarray(v.numpy(), dtype=np.float64)
            rng = np.random.default_rng(list(seed) + [k])
            # drawn in PyTorch's layout (see the protocol), then moved to Keras'
            if w.ndim == 4:  # Conv2D kernel (kh, kw, in, out) <- (out, in, kh, kw)
                new = rng.standard_normal((w.shape[3], w.shape[2], w.shape[0], w.shape[1]))
                new = new.transpose(2, 3, 1, 0)
            elif w.ndim == 2:  # Dense kernel (in, out) <- (out, in)
                new = rng.standard_normal(w.shape[::-1]).T
            else:
                new = rng.standard_normal(w.shape)
            v.assign((new * w.std() + w.mean()).astype(v.dtype))

    # --- fast paths: each has a fallback written once here over the core primitives ---
    def tanh_backward(self, y: Any, dy: Any) -> Any:
        return tf.raw_ops.TanhGrad(y=y, dy=dy)

    def adam_update(self, d: Any, m: Any, v: Any, g: Any, lr: Any, eps: Any, beta1: float,
                    beta2: float) -> Tuple[Any, Any, Any]:
        m = m * beta1 + g
        v = v * beta2 + g * g
        return d - lr * m / (tf.sqrt(v) + eps), m, v

    def index_update(self, acc: Any, index: Any, rows: Any) -> Any:
        return tf.tensor_scatter_nd_update(acc, tf.reshape(index, (-1, 1)), rows)

    # --- capability "deeplift": DeepLIFT's Rescale kernel -----------------------------
    def check_deeplift_model(self, model: Any) -> None:
        # the Keras kernel intercepts every layer and activation it can see, and a
        # nonlinearity it cannot handle raises from deeplift_grad itself
        return None

    def deeplift_grad(self, f: Callable, x: Any, baseline: Any, labels: Any, times_delta: bool = False) -> Any:
        from .rescale import deeplift_grad

        model = f._model() if isinstance(f, _KerasLogits) else None
        return deeplift_grad(f, x, baseline, labels, model=model, compile=self.use_tf_function,
                             fingerprint=self.fingerprint(model) if model is not None else (),
                             times_delta=times_delta)

    # --- capability "layers": running the model while capturing layers (GradCAM, FullGrad) ---
    def resolve_layer(self, model: Any, layer: Any) -> Any:
        from .layers import resolve_layer

        return resolve_layer(model, layer)

    def layer_names(self, model: Any) -> list:
        from .layers import layer_names

        return layer_names(model)

    def layer_name(self, model: Any, layer: Any) -> str:
        return str(getattr(layer, "name", type(layer).__name__))

    def default_layer(self, model: Any, x: Any) -> Any:
        from .layers import default_layer

        # a softmax warning here is the call's one (errors.warn gives it once per call)
        with self.session(model, mode="eval") as f:
            return default_layer(model, f, x)

    def capture_layers(self, f: Callable, layers: Sequence[Any], x: Any, labels: Any,
                       wrt_input: bool = False, pre_activation: bool = False,
                       strict: bool = True, values: bool = True,
                       reduce: Optional[Callable[[int, Any], Any]] = None) -> Tuple[Any, list, list, Any]:
        from .layers import capture_layers

        # values: TensorFlow has no in-place ops, so the captured outputs cost nothing

        flags = (wrt_input, pre_activation, strict)
        if reduce is not None or not self.use_tf_function:
            # with reduce (a new closure per call) the caller compiles: FullGrad's step
            # traces this into its own graph once
            return capture_layers(f, layers, x, labels, *flags, reduce=reduce)
        # one traced graph per model, layer set and flags; the layers' calls are
        # patched while the graph is traced, so a compiled call patches nothing
        try:
            cache = self._compiled.setdefault(f, {})
        except TypeError:  # f not weak-referenceable: run eagerly
            return capture_layers(f, layers, x, labels, *flags)
        key = ("capture_layers", tuple(id(layer) for layer in layers)) + flags
        if key not in cache:
            layers = list(layers)
            cache[key] = tf.function(
                lambda z, y: capture_layers(f, layers, z, y, *flags),
                reduce_retracing=True, autograph=False,  # our InputErrors pass through unwrapped
            )
        return cache[key](x, labels)

    def bias_terms(self, model: Any) -> list:
        from .layers import bias_terms

        return bias_terms(model)

    def abs_channel_stats(self, t: Any, w: Optional[Any], axis: int,
                          times: Optional[Any] = None) -> Tuple[Any, Any, Any]:
        from .layers import abs_channel_stats

        # one XLA kernel, one pass over t (FullGrad at 256 rows of the small CNN: the
        # statistics of its terms 14.7 -> ~5 ms)
        fused = abs_channel_stats(t, w, axis, times)
        return fused if fused is not None else super().abs_channel_stats(t, w, axis, times)

    def resize(self, t: Any, size: Tuple[int, int], align_corners: bool = False) -> Any:
        from .layers import resize

        return resize(t, size, align_corners)

    # --- capability "xdnn" (and "state_dict_checkpoints") -----------------------------
    def xdnn_kernels(self) -> Any:
        from . import xdnn

        return xdnn

    # --- capability "datasets" --------------------------------------------------------
    def data_plan(self, data: Any) -> Any:
        from .data import plan

        return plan(data)

    # --- capability "model_files" -----------------------------------------------------
    def model_files(self) -> Any:
        from . import model_files

        return model_files


def _could_record() -> bool:
    """Whether a gradient tape or forward accumulator may record eager ops now (True when
    TensorFlow's internal test is not there: then every stop_gradient runs)."""
    return _RECORDING()


try:  # TensorFlow's own test of its tape stack (no public API exposes it)
    from tensorflow.python.eager.record import could_possibly_record as _RECORDING
except ImportError:  # pragma: no cover - another TensorFlow layout
    def _RECORDING() -> bool:
        return True


def _own_weights(layer: Any) -> list:
    """The weights of ``layer`` the randomisation test re-draws: not batch-norm running statistics."""
    return [v for v in layer.weights if "moving_" not in (getattr(v, "path", None) or v.name)]


BACKEND = TensorFlowBackend()
