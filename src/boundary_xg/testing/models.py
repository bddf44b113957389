"""Identical small models in PyTorch and Keras, built from one set of NumPy weights.

The same weights in both frameworks give the same function (up to float
rounding), so attributions computed by the two backends can be compared with
each other: an oracle that neither backend wrote. Layouts differ (PyTorch NCHW,
Keras NHWC); :func:`nchw_to_nhwc` converts inputs, and the builders permute the
first dense layer's weights so that the two flatten orders agree.

The small CNN (default input 3x8x8, 5 classes), its layers named alike in both frameworks
(conv1, act1, pool1, conv2, act2, pool2, flatten, fc1, act3, fc2)::

    conv3x3(3->4, pad 1) -> ReLU -> maxpool 2 -> conv3x3(4->8, pad 1) -> ReLU
    -> avgpool 2 -> flatten -> dense(32->16) -> ReLU -> dense(16->classes)

With ``bias=False`` every layer is bias-free: a nonnegatively homogeneous network
(an X-DNN), on which X-Gradient equals Integrated Gradients from zero exactly.
"""

from __future__ import annotations

from collections import OrderedDict
from typing import Dict

import numpy as np

Weights = Dict[str, np.ndarray]


def cnn_weights(
    seed: int = 0, in_channels: int = 3, size: int = 8, classes: int = 5, bias: bool = True,
    widths=(4, 8), hidden: int = 16,
) -> Weights:
    """Random weights of the small CNN, in PyTorch's shapes (``(out, in, kh, kw)``).

    Args:
        seed: NumPy seed; size: input height = width (a multiple of 4);
        bias: include biases (False gives an X-DNN).

    Returns:
        Dict with ``conv1.weight``, ``conv2.weight``, ``fc1.weight``, ``fc2.weight``,
        the ``.bias`` entries when ``bias`` is True, and ``meta`` (the sizes).
    """
    if size % 4:
        raise ValueError("size must be a multiple of 4")
    rng = np.random.default_rng(seed)
    c1, c2 = widths
    flat = c2 * (size // 4) ** 2

    def he(shape, fan_in):
        return (rng.standard_normal(shape) * np.sqrt(2.0 / fan_in)).astype(np.float32)

    w: Weights = {
        "conv1.weight": he((c1, in_channels, 3, 3), in_channels * 9),
        "conv2.weight": he((c2, c1, 3, 3), c1 * 9),
        "fc1.weight": he((hidden, flat), flat),
        "fc2.weight": he((classes, hidden), hidden),
        "meta": np.array([in_channels, size, classes, c1, c2, hidden]),
    }
    if bias:
        for name, n in (("conv1", c1), ("conv2", c2), ("fc1", hidden), ("fc2", classes)):
            w[name + ".bias"] = (rng.standard_normal(n) * 0.1).astype(np.float32)
    return w


def torch_cnn(w: Weights, activation: str = "relu"):
    """The small CNN as a ``torch.nn.Sequential`` (input ``(N, C, H, W)``).

    ``activation``: "relu" (default) or "softplus" (smooth, for quadrature tests).
    """
    import torch
    from torch import nn

    cin, size, classes, c1, c2, hidden = (int(v) for v in w["meta"])
    bias = "conv1.bias" in w
    act = {"relu": nn.ReLU, "softplus": nn.Softplus}[activation]
    # the layers carry the Keras model's names, so layer="conv2" means the same in both
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(cin, c1, 3, padding=1, bias=bias)), ("act1", act()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(c1, c2, 3, padding=1, bias=bias)), ("act2", act()), ("pool2", nn.AvgPool2d(2)),
        ("flatten", nn.Flatten()), ("fc1", nn.Linear(c2 * (size // 4) ** 2, hidden, bias=bias)), ("act3", act()),
        ("fc2", nn.Linear(hidden, classes, bias=bias)),
    ]))
    with torch.no_grad():
        for name in ("conv1", "conv2", "fc1", "fc2"):
            layer = getattr(model, name)
            layer.weight.copy_(torch.from_numpy(w[name + ".weight"]))
            if bias:
                layer.bias.copy_(torch.from_numpy(w[name + ".bias"]))
    return model.eval()


def keras_cnn(w: Weights, activation: str = "relu"):
    """The small CNN as a Keras ``Sequential`` (input ``(N, H, W, C)``).

    ``activation``: "relu" (default) or "softplus".
    """
    import keras

    cin, size, classes, c1, c2, hidden = (int(v) for v in w["meta"])
    bias = "conv1.bias" in w
    L = keras.layers

    def act(name):
        return L.ReLU(name=name) if activation == "relu" else L.Activation(activation, name=name)

    model = keras.Sequential([
        keras.Input((size, size, cin)),
        L.Conv2D(c1, 3, padding="same", use_bias=bias, name="conv1"), act("act1"), L.MaxPooling2D(2, name="pool1"),
        L.Conv2D(c2, 3, padding="same", use_bias=bias, name="conv2"), act("act2"),
        L.AveragePooling2D(2, name="pool2"),
        L.Flatten(name="flatten"), L.Dense(hidden, use_bias=bias, name="fc1"), act("act3"),
        L.Dense(classes, use_bias=bias, name="fc2"),
    ])
    q = size // 4
    fc1 = w["fc1.weight"].reshape(hidden, c2, q, q).transpose(2, 3, 1, 0).reshape(q * q * c2, hidden)
    kernels = {
        "conv1": w["conv1.weight"].transpose(2, 3, 1, 0),
        "conv2": w["conv2.weight"].transpose(2, 3, 1, 0),
        "fc1": fc1,
        "fc2": w["fc2.weight"].T,
    }
    for name, kernel in kernels.items():
        layer = model.get_layer(name)
        layer.set_weights([kernel] + ([w[name + ".bias"]] if bias else []))
    return model


#: the builder of the small CNN per framework (the demo's digit models use these)
CNN_BUILDERS = {"torch": torch_cnn, "tensorflow": keras_cnn}


def cnn(w: Weights, framework: str, activation: str = "relu"):
    """The small CNN with weights ``w`` in ``framework`` (a canonical backend name).

    Raises:
        UnsupportedModelError: no builder for that framework.
    """
    builder = CNN_BUILDERS.get(framework)
    if builder is None:
        from ..errors import UnsupportedModelError

        raise UnsupportedModelError(f"framework={framework!r}: the test CNN is built for {sorted(CNN_BUILDERS)}.")
    return builder(w, activation)


def linear_weights(seed: int = 0, features: int = 12, classes: int = 4) -> Weights:
    """Weights ``W (classes, features)`` and bias ``b`` of a linear classifier."""
    rng = np.random.default_rng(seed)
    return {
        "weight": rng.standard_normal((classes, features)).astype(np.float32),
        "bias": rng.standard_normal(classes).astype(np.float32),
    }


def torch_linear(w: Weights, input_shape=None):
    """``F(x) = W flatten(x) + b`` in PyTorch (``input_shape`` adds a Flatten)."""
    import torch
    from torch import nn

    classes, features = w["weight"].shape
    lin = nn.Linear(features, classes)
    with torch.no_grad():
        lin.weight.copy_(torch.from_numpy(w["weight"]))
        lin.bias.copy_(torch.from_numpy(w["bias"]))
    return nn.Sequential(nn.Flatten(), lin).eval() if input_shape is not None else lin.eval()


def keras_linear(w: Weights, input_shape=None):
    """``F(x) = W flatten(x) + b`` in Keras (``input_shape`` without the batch axis)."""
    import keras

    classes, features = w["weight"].shape
    shape = tuple(input_shape) if input_shape is not None else (features,)
    layers = [keras.Input(shape)]
    if input_shape is not None:
        layers.append(keras.layers.Flatten())
    layers.append(keras.layers.Dense(classes, name="linear"))
    model = keras.Sequential(layers)
    model.get_layer("linear").set_weights([w["weight"].T, w["bias"]])
    return model


def nchw_to_nhwc(x: np.ndarray) -> np.ndarray:
    """``(N, C, H, W) -> (N, H, W, C)``."""
    return np.ascontiguousarray(np.transpose(x, (0, 2, 3, 1)))


def nhwc_to_nchw(x: np.ndarray) -> np.ndarray:
    """``(N, H, W, C) -> (N, C, H, W)``."""
    return np.ascontiguousarray(np.transpose(x, (0, 3, 1, 2)))
