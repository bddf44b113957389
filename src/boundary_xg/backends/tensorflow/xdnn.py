"""Keras 3 side of the X-DNN toolkit: the layer scan, bias stripping, the architectures.

Imported only by the public functions of :mod:`boundary_xg.xdnn` when a Keras
model is involved. The architectures are functional models in NHWC built to
spec section 3.3; PyTorch's explicit paddings are reproduced with
``ZeroPadding2D`` (Keras' "same" padding is asymmetric at stride 2), and
PyTorch's ``AdaptiveAvgPool2d`` with :class:`AdaptiveAveragePooling2D`, a linear
(hence homogeneous) layer. ``width`` scales channels and hidden sizes.
"""

from __future__ import annotations

import math
from typing import Any, List, Sequence, Tuple

import numpy as np
import keras
from keras import layers as L

from ...errors import UnsupportedModelError
from .._xdnn_common import Offender

_PKG = "boundary_xg"


@keras.saving.register_keras_serializable(package=_PKG)
class AdaptiveAveragePooling2D(L.Layer):
    """PyTorch's ``AdaptiveAvgPool2d`` for NHWC inputs of static size (a linear map)."""

    def __init__(self, output_size: Any, **kwargs: Any):
        super().__init__(**kwargs)
        self.output_size = tuple(output_size) if isinstance(output_size, (tuple, list)) else (
            int(output_size), int(output_size))

    @staticmethod
    def _matrix(n_in: int, n_out: int) -> np.ndarray:
        m = np.zeros((n_out, n_in), dtype=np.float32)
        for i in range(n_out):  # PyTorch's bins: [floor(i n / o), ceil((i + 1) n / o))
            lo, hi = (i * n_in) // n_out, -(-((i + 1) * n_in) // n_out)
            m[i, lo:hi] = 1.0 / (hi - lo)
        return m

    def build(self, input_shape: Any) -> None:
        h, w = int(input_shape[1]), int(input_shape[2])
        self._ph = self._matrix(h, self.output_size[0])
        self._pw = self._matrix(w, self.output_size[1])

    def call(self, x: Any) -> Any:
        ph = keras.ops.cast(keras.ops.convert_to_tensor(self._ph), x.dtype)
        pw = keras.ops.cast(keras.ops.convert_to_tensor(self._pw), x.dtype)
        x = keras.ops.einsum("ih,bhwc->biwc", ph, x)
        return keras.ops.einsum("jw,biwc->bijc", pw, x)

    def compute_output_shape(self, input_shape: Any) -> Tuple:
        return (input_shape[0],) + self.output_size + (input_shape[3],)

    def get_config(self) -> dict:
        return {**super().get_config(), "output_size": self.output_size}


@keras.saving.register_keras_serializable(package=_PKG)
class ScalarBias(L.Layer):
    """Adds one learned scalar (Fixup's ``bias1a`` ...): breaks homogeneity."""

    def build(self, input_shape: Any) -> None:
        self.bias = self.add_weight(shape=(1,), initializer="zeros", name="bias")

    def call(self, x: Any) -> Any:
        return x + keras.ops.cast(self.bias, x.dtype)


@keras.saving.register_keras_serializable(package=_PKG)
class Scale(L.Layer):
    """Multiplies by one learned scalar (Fixup's ``scale``): homogeneous."""

    def build(self, input_shape: Any) -> None:
        self.scale = self.add_weight(shape=(1,), initializer="ones", name="scale")

    def call(self, x: Any) -> Any:
        return x * keras.ops.cast(self.scale, x.dtype)


# --- the layer scan -------------------------------------------------------------------
_NORM_NAMES = ("BatchNormalization", "LayerNormalization", "GroupNormalization",
               "UnitNormalization", "Normalization", "RMSNormalization")
_NORMS = tuple(getattr(L, n) for n in _NORM_NAMES if hasattr(L, n))
_OK_ACTIVATIONS = {"linear", "relu", "leaky_relu", "identity", None}
_BAD_LAYERS = tuple(getattr(L, n) for n in ("ELU", "Softmax", "MultiHeadAttention", "Attention")
                    if hasattr(L, n))


def _layers(model: Any) -> List[Any]:
    if hasattr(model, "_flatten_layers"):
        return [lay for lay in model._flatten_layers(include_self=False, recursive=True)]
    return list(getattr(model, "layers", []))


def _act_name(fn: Any) -> Any:
    if fn is None:
        return None
    return getattr(fn, "__name__", type(fn).__name__)


def _final_softmax_layer(model: Any) -> Any:
    # the backend switches a final softmax off and explains the logit: not an offence
    top = getattr(model, "layers", None) or []
    if not top:
        return None
    last = top[-1]
    if _act_name(getattr(last, "activation", None)) == "softmax" or isinstance(last, L.Softmax):
        return last
    return None


def scan(model: Any) -> List[Offender]:
    """Every layer of ``model`` that breaks ``F(a x) = a F(x)``."""
    if not isinstance(model, (keras.Model, L.Layer)):
        return []
    final = _final_softmax_layer(model)
    out: List[Offender] = []
    for lay in _layers(model):
        if isinstance(lay, keras.Model):
            continue  # nested models: their layers are scanned one by one
        name, kind = lay.name, type(lay).__name__
        if isinstance(lay, _NORMS):
            out.append(Offender(name, "normalization",
                                f"{kind} shifts and rescales by statistics (mean, offset)"))
            continue
        if isinstance(lay, L.Rescaling) and np.any(np.asarray(lay.offset) != 0):
            out.append(Offender(name, "offset", "Rescaling adds a non-zero offset (input normalisation)"))
        if isinstance(lay, _BAD_LAYERS) and not (lay is final and isinstance(lay, L.Softmax)):
            out.append(Offender(name, "activation", f"{kind} is not nonnegatively homogeneous"))
        if isinstance(lay, L.ReLU) and (lay.max_value is not None or float(lay.threshold) != 0.0):
            out.append(Offender(name, "activation", "ReLU with max_value or a non-zero threshold"))
        act = _act_name(getattr(lay, "activation", None))
        if act not in _OK_ACTIVATIONS and not (lay is final and act == "softmax"):
            out.append(Offender(name, "activation",
                                f"activation {act!r} is not nonnegatively homogeneous"))
        if getattr(lay, "use_bias", False):
            out.append(Offender(name, "bias", f"{kind} has a bias (use_bias=True)"))
        elif not hasattr(lay, "use_bias"):
            for v in lay._trainable_variables + lay._non_trainable_variables:
                vname = v.path.split("/")[-1]
                if "bias" in vname.lower():
                    size = "learned scalar bias" if int(np.prod(v.shape)) == 1 else "learned bias"
                    out.append(Offender(f"{name}/{vname}", "bias", f"{size} added inside {kind}"))
    return out


def strip_bias(model: Any) -> Tuple[Any, Tuple[Offender, ...]]:
    """``clone_model`` of ``model`` with ``use_bias=False`` everywhere, weights copied."""
    is_graph = isinstance(model, keras.Sequential) or getattr(model, "_is_graph_network", False) or (
        type(model).__name__ == "Functional")
    if not is_graph:
        raise UnsupportedModelError(
            f"strip_bias supports Keras Sequential and functional models; {type(model).__name__} "
            "is subclassed, so clone_model cannot rebuild it. Build it with use_bias=False instead."
        )

    def clone_layer(layer: Any) -> Any:
        if isinstance(layer, ScalarBias):
            return L.Identity(name=layer.name)
        cfg = layer.get_config()
        if cfg.get("use_bias"):
            cfg["use_bias"] = False
        return layer.__class__.from_config(cfg)

    clone = keras.models.clone_model(model, clone_function=clone_layer, recursive=True)
    source = {v.path: v for v in model.weights}
    missing = [v.path for v in clone.weights if v.path not in source]
    if missing:
        raise UnsupportedModelError(
            f"strip_bias could not match the weights {missing[:3]} of the copy to the model's; "
            "give the model's layers unique names.")
    for v in clone.weights:
        v.assign(source[v.path])
    unfixable = tuple(scan(clone))
    object.__setattr__(clone, "xdnn_unfixable", unfixable)
    return clone, unfixable


# --- architectures (the X-DNN paper's) ------------------------------------------------------------
def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


_HE_FAN_OUT = dict(scale=2.0, mode="fan_out", distribution="untruncated_normal")


def _alexnet(x: Any, num_classes: int, bias: bool, width: float) -> Any:
    c = [_w(n, width) for n in (64, 192, 384, 256, 256)]
    h = _w(4096, width)
    x = L.ZeroPadding2D(2)(x)
    x = L.ReLU()(L.Conv2D(c[0], 11, strides=4, use_bias=bias, name="conv1")(x))
    x = L.MaxPooling2D(3, 2)(x)
    x = L.ZeroPadding2D(2)(x)
    x = L.ReLU()(L.Conv2D(c[1], 5, use_bias=bias, name="conv2")(x))
    x = L.MaxPooling2D(3, 2)(x)
    for i, ch in enumerate(c[2:], start=3):
        x = L.ReLU()(L.Conv2D(ch, 3, padding="same", use_bias=bias, name=f"conv{i}")(x))
    x = L.MaxPooling2D(3, 2)(x)
    x = L.Flatten()(AdaptiveAveragePooling2D(6)(x))
    x = L.ReLU()(L.Dense(h, use_bias=bias, name="fc1")(L.Dropout(0.5)(x)))
    x = L.ReLU()(L.Dense(h, use_bias=bias, name="fc2")(L.Dropout(0.5)(x)))
    return L.Dense(num_classes, use_bias=bias, name="fc3")(x)


def _vgg16(x: Any, num_classes: int, bias: bool, width: float) -> Any:
    from .._xdnn_common import VGG16_CONFIG

    k = 0
    for v in VGG16_CONFIG:
        if v == "M":
            x = L.MaxPooling2D(2, 2)(x)
        else:
            k += 1
            conv = L.Conv2D(_w(v, width), 3, padding="same", use_bias=bias, name=f"conv{k}",
                            kernel_initializer=keras.initializers.VarianceScaling(**_HE_FAN_OUT))
            x = L.ReLU()(conv(x))
    h = _w(4096, width)
    x = L.Flatten()(AdaptiveAveragePooling2D(7)(x))
    dense_init = keras.initializers.RandomNormal(0.0, 0.01)
    x = L.Dropout(0.5)(L.ReLU()(L.Dense(h, use_bias=bias, kernel_initializer=dense_init, name="fc1")(x)))
    x = L.Dropout(0.5)(L.ReLU()(L.Dense(h, use_bias=bias, kernel_initializer=dense_init, name="fc2")(x)))
    return L.Dense(num_classes, use_bias=bias, kernel_initializer=dense_init, name="fc3")(x)


def _normal(std: float) -> Any:
    return keras.initializers.RandomNormal(0.0, std)


def _bottleneck(x: Any, cin: int, planes: int, stride: int, bias: bool, num_blocks: int,
                name: str) -> Any:
    def sb(t: Any, n: str) -> Any:
        return ScalarBias(name=f"{name}_{n}")(t) if bias else t

    def std(cout: int, k: int, power: float) -> float:
        return math.sqrt(2.0 / (cout * k * k)) * num_blocks ** (-power)

    xa = sb(x, "bias1a")
    out = L.Conv2D(planes, 1, use_bias=False, name=f"{name}_conv1",
                   kernel_initializer=_normal(std(planes, 1, 0.25)))(xa)
    out = L.ReLU()(sb(out, "bias1b"))
    out = L.ZeroPadding2D(1)(sb(out, "bias2a"))
    out = L.Conv2D(planes, 3, strides=stride, use_bias=False, name=f"{name}_conv2",
                   kernel_initializer=_normal(std(planes, 3, 0.25)))(out)
    out = L.ReLU()(sb(out, "bias2b"))
    out = L.Conv2D(planes * 4, 1, use_bias=False, name=f"{name}_conv3",
                   kernel_initializer="zeros")(sb(out, "bias3a"))
    if bias:
        out = sb(Scale(name=f"{name}_scale")(out), "bias3b")
    identity = x
    if stride != 1 or cin != planes * 4:
        identity = L.Conv2D(planes * 4, 1, strides=stride, use_bias=False, name=f"{name}_downsample",
                            kernel_initializer=_normal(std(planes * 4, 1, 0.0)))(xa)
    return L.ReLU()(L.Add()([out, identity]))


def _fixup_resnet50(x: Any, num_classes: int, bias: bool, width: float,
                    layers: Sequence[int] = (3, 4, 6, 3)) -> Any:
    num_blocks = sum(layers)
    cin = _w(64, width)
    x = L.ZeroPadding2D(3)(x)
    x = L.Conv2D(cin, 7, strides=2, use_bias=False, name="conv1",
                 kernel_initializer=keras.initializers.HeNormal())(x)
    if bias:
        x = ScalarBias(name="bias1")(x)
    # zero padding equals PyTorch's -inf padding here: the input is >= 0 after the ReLU
    x = L.MaxPooling2D(3, 2)(L.ZeroPadding2D(1)(L.ReLU()(x)))
    for s, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers), start=1):
        planes = _w(planes, width)
        for b in range(blocks):
            stride = 2 if (s > 1 and b == 0) else 1
            x = _bottleneck(x, cin, planes, stride, bias, num_blocks, f"layer{s}_{b}")
            cin = planes * 4
    x = L.GlobalAveragePooling2D()(x)
    if bias:
        x = ScalarBias(name="bias2")(x)
    return L.Dense(num_classes, use_bias=bias, kernel_initializer="zeros", name="fc")(x)


def _cnn(x: Any, num_classes: int, bias: bool, width: float, widths=(8, 16), hidden: int = 32) -> Any:
    c1, c2 = widths
    x = L.MaxPooling2D(2)(L.ReLU()(L.Conv2D(c1, 3, padding="same", use_bias=bias, name="conv1")(x)))
    x = L.ReLU()(L.Conv2D(c2, 3, padding="same", use_bias=bias, name="conv2")(x))
    x = L.Flatten()(AdaptiveAveragePooling2D(2)(x))
    x = L.ReLU()(L.Dense(hidden, use_bias=bias, name="fc1")(x))
    return L.Dense(num_classes, use_bias=bias, name="fc2")(x)


def build(arch: str, num_classes: int, bias: bool, width: float, in_channels: int,
          input_size: int, seed: Any = None) -> Any:
    """Construct ``arch`` ("alexnet", "vgg16", "fixup_resnet50", "cnn") as a Keras functional model."""
    if seed is not None:
        keras.utils.set_random_seed(int(seed))
    body = {"alexnet": _alexnet, "vgg16": _vgg16, "fixup_resnet50": _fixup_resnet50, "cnn": _cnn}[arch]
    inp = keras.Input((input_size, input_size, in_channels))
    prefix = "x_" if not bias else ""
    return keras.Model(inp, body(inp, num_classes, bias, width), name=f"{prefix}{arch}")
