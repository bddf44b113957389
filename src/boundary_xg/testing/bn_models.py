"""A small CNN with batch norm, identical in PyTorch and Keras, with the same layer names.

For the layer methods' cross-backend tests (GradCAM maps of the same layer, the
FullGrad decomposition with batch norm's effective bias)::

    conv1 3x3 (C->c1, bias) -> bn1 -> relu1 -> pool1 (max 2) -> conv2 3x3 (c1->c2, bias)
    -> bn2 -> relu2 -> gap (global average) -> fc (c2->classes)

Batch norm carries random running statistics, scale and shift, so its effective
bias is far from zero; both frameworks use ``eps = 1e-5``. The layers share their
names across frameworks (``"conv2"``, ``"relu2"``, ...), so ``layer="relu2"``
names the same layer in both.
"""

from __future__ import annotations

from typing import Dict

import numpy as np

Weights = Dict[str, np.ndarray]

#: batch norm's epsilon in both frameworks (Keras' default is 1e-3, PyTorch's 1e-5)
BN_EPS = 1e-5


def bn_cnn_weights(seed: int = 0, in_channels: int = 3, classes: int = 5, widths=(8, 16)) -> Weights:
    """Random weights in PyTorch's shapes, with batch-norm statistics.

    Returns:
        ``conv{1,2}.weight/.bias``, ``bn{1,2}.weight/.bias/.running_mean/.running_var``,
        ``fc.weight/.bias`` and ``meta`` (the sizes).
    """
    rng = np.random.default_rng(seed)
    c1, c2 = widths

    def normal(shape, scale):
        return (rng.standard_normal(shape) * scale).astype(np.float32)

    w: Weights = {"meta": np.array([in_channels, classes, c1, c2])}
    for name, cin, cout in (("conv1", in_channels, c1), ("conv2", c1, c2)):
        w[f"{name}.weight"] = normal((cout, cin, 3, 3), np.sqrt(2.0 / (cin * 9)))
        w[f"{name}.bias"] = normal((cout,), 0.1)
    for name, c in (("bn1", c1), ("bn2", c2)):
        w[f"{name}.weight"] = (1.0 + normal((c,), 0.2)).astype(np.float32)
        w[f"{name}.bias"] = normal((c,), 0.2)
        w[f"{name}.running_mean"] = normal((c,), 0.3)
        w[f"{name}.running_var"] = rng.uniform(0.5, 2.0, c).astype(np.float32)
    w["fc.weight"] = normal((classes, c2), np.sqrt(1.0 / c2))
    w["fc.bias"] = normal((classes,), 0.1)
    return w


def torch_bn_cnn(w: Weights):
    """The CNN as a ``torch.nn.Sequential`` with named children (input ``(N, C, H, W)``), eval mode."""
    from collections import OrderedDict

    import torch
    from torch import nn

    cin, classes, c1, c2 = (int(v) for v in w["meta"])
    model = nn.Sequential(OrderedDict([
        ("conv1", nn.Conv2d(cin, c1, 3, padding=1)), ("bn1", nn.BatchNorm2d(c1, eps=BN_EPS)),
        ("relu1", nn.ReLU()), ("pool1", nn.MaxPool2d(2)),
        ("conv2", nn.Conv2d(c1, c2, 3, padding=1)), ("bn2", nn.BatchNorm2d(c2, eps=BN_EPS)),
        ("relu2", nn.ReLU()), ("gap", nn.AdaptiveAvgPool2d(1)), ("flatten", nn.Flatten()),
        ("fc", nn.Linear(c2, classes)),
    ]))
    state = {k: torch.from_numpy(v) for k, v in w.items() if k != "meta"}
    model.load_state_dict(state, strict=False)
    return model.eval()


def keras_bn_cnn(w: Weights):
    """The CNN as a Keras ``Sequential`` with the same layer names (input ``(N, H, W, C)``)."""
    import keras

    cin, classes, c1, c2 = (int(v) for v in w["meta"])
    L = keras.layers
    model = keras.Sequential([
        keras.Input((None, None, cin)),
        L.Conv2D(c1, 3, padding="same", name="conv1"), L.BatchNormalization(epsilon=BN_EPS, name="bn1"),
        L.ReLU(name="relu1"), L.MaxPooling2D(2, name="pool1"),
        L.Conv2D(c2, 3, padding="same", name="conv2"), L.BatchNormalization(epsilon=BN_EPS, name="bn2"),
        L.ReLU(name="relu2"), L.GlobalAveragePooling2D(name="gap"), L.Dense(classes, name="fc"),
    ])
    for name in ("conv1", "conv2"):
        model.get_layer(name).set_weights([w[f"{name}.weight"].transpose(2, 3, 1, 0), w[f"{name}.bias"]])
    for name in ("bn1", "bn2"):
        model.get_layer(name).set_weights([w[f"{name}.{k}"] for k in ("weight", "bias", "running_mean",
                                                                        "running_var")])
    model.get_layer("fc").set_weights([w["fc.weight"].T, w["fc.bias"]])
    return model
