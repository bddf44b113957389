"""Layer methods (GradCAM, GradCAM++, FullGrad) and the ``layer=`` argument.

Oracles: Captum's ``LayerGradCam`` + ``LayerAttribution.interpolate(..., "bilinear")``
on torchvision models; the same weights in PyTorch and Keras (the BN CNN of
``testing/bn_models.py``, same layer names); the full-gradient decomposition
``F_y(x) = sum(x grad_x) + sum_l sum(b_l grad_{z_l})`` of piecewise-linear
networks; a FullGrad written here with plain functional torch ops.
"""

from __future__ import annotations

import os
import re

import numpy as np
import pytest

from conftest import needs_both, needs_captum, needs_tf, needs_torch

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def rel(a, b) -> float:
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return float(np.abs(a - b).max() / max(np.abs(b).max(), 1e-30))


def torchvision_model(name: str):
    import torch
    import torchvision

    torch.manual_seed(0)
    ctor = {"resnet18": torchvision.models.resnet18, "vgg11_bn": torchvision.models.vgg11_bn}[name]
    model = ctor(weights=None, num_classes=10).eval()
    # random batch-norm statistics, so that its effective bias is far from zero
    g = torch.Generator().manual_seed(1)
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, torch.nn.BatchNorm2d):
                m.running_mean.normal_(0, 0.2, generator=g)
                m.running_var.uniform_(0.5, 2.0, generator=g)
                m.weight.normal_(1, 0.2, generator=g)
                m.bias.normal_(0, 0.2, generator=g)
    return model


@pytest.fixture(scope="module")
def tv_models():
    pytest.importorskip("torchvision")
    return {name: torchvision_model(name) for name in ("resnet18", "vgg11_bn")}


def _x64(n=2, seed=0):
    return np.random.default_rng(seed).standard_normal((n, 3, 64, 64)).astype(np.float32)


def _last_bn_index(model) -> str:
    import torch

    return max(int(n.split(".")[1]) for n, m in model.features.named_modules(prefix="features")
               if isinstance(m, torch.nn.BatchNorm2d) and n.count(".") == 1).__str__()


# --- GradCAM against Captum ------------------------------------------------------------
@needs_captum
@pytest.mark.parametrize("arch,layer", [("resnet18", None), ("resnet18", "layer3"),
                                        ("vgg11_bn", None), ("vgg11_bn", "last_bn")])
def test_gradcam_equals_captum(tv_models, arch, layer):
    import torch
    from captum.attr import LayerAttribution, LayerGradCam

    import boundary_xg as bxg

    model = tv_models[arch]
    if layer == "last_bn":  # followed by an in-place ReLU: the captured output is the BN's
        layer = "features." + _last_bn_index(model)
    module = model.get_submodule(layer or ("layer4" if arch == "resnet18" else "features"))
    x, y = _x64(), np.array([1, 7])
    xt, yt = torch.from_numpy(x), torch.from_numpy(y)
    cam = LayerGradCam(model, module)
    for relu in (True, False):
        raw = cam.attribute(xt, target=yt, relu_attributions=relu).detach()
        ref = LayerAttribution.interpolate(raw, (64, 64), "bilinear").numpy()
        opts = {} if layer is None else {"layer": layer}
        ours = bxg.attribute(model, x, y, method="GradCAM", relu=relu, **opts)
        assert ours.shape == (2, 1, 64, 64)
        assert rel(ours, ref) < 1e-5
        small = bxg.attribute(model, x, y, method="GradCAM", relu=relu, upsample=False, layer=module)
        assert small.shape == raw.shape and rel(small, raw.numpy()) < 1e-5


@needs_torch
def test_default_layers_torchvision_and_sequential(tv_models):
    import torch

    from boundary_xg.backends import get_backend
    from boundary_xg.demo_models import load_digit_model
    from boundary_xg.testing import bn_models as bm

    B = get_backend("torch")
    x = torch.from_numpy(_x64(1))
    assert B.default_layer(tv_models["resnet18"], x) is tv_models["resnet18"].layer4
    assert B.default_layer(tv_models["vgg11_bn"], x) is tv_models["vgg11_bn"].features
    digits = load_digit_model("torch")  # conv, relu, maxpool, conv, relu, avgpool, ...
    assert B.default_layer(digits, torch.zeros(1, 1, 8, 8)) is digits[4]
    tmodel = bm.torch_bn_cnn(bm.bn_cnn_weights())
    assert B.default_layer(tmodel, torch.zeros(1, 3, 16, 16)) is tmodel.relu2


@needs_tf
def test_default_layer_keras_applications():
    import keras

    from boundary_xg.backends import get_backend
    from boundary_xg.testing import bn_models as bm

    B = get_backend("tensorflow")
    kmodel = bm.keras_bn_cnn(bm.bn_cnn_weights())
    assert B.default_layer(kmodel, np.zeros((1, 16, 16, 3), np.float32)).name == "relu2"
    app = keras.applications.MobileNetV2(weights=None, input_shape=(64, 64, 3), alpha=0.35, classes=4)
    assert B.default_layer(app, np.zeros((1, 64, 64, 3), np.float32)).name == "out_relu"


# --- the same weights in both frameworks ------------------------------------------------
@pytest.fixture(scope="module")
def bn_pair():
    from boundary_xg.testing import bn_models as bm

    w = bm.bn_cnn_weights(seed=0)
    return bm.torch_bn_cnn(w), bm.keras_bn_cnn(w)


@needs_both
@pytest.mark.parametrize("method", ["GradCAM", "GradCAM++"])
@pytest.mark.parametrize("opts", [{}, {"layer": "conv2"}, {"layer": "bn1", "upsample": False},
                                  {"layer": "relu2", "relu": False}])
def test_gradcam_same_weights_same_maps(bn_pair, method, opts):
    import boundary_xg as bxg
    from boundary_xg.testing.models import nchw_to_nhwc, nhwc_to_nchw

    tmodel, kmodel = bn_pair
    x, y = np.random.default_rng(2).standard_normal((3, 3, 16, 16)).astype(np.float32), np.array([0, 2, 4])
    a = bxg.attribute(tmodel, x, y, method=method, **opts)
    b = bxg.attribute(kmodel, nchw_to_nhwc(x), y, method=method, **opts)
    assert b.shape == (a.shape[0],) + a.shape[2:] + (1,)
    assert rel(nhwc_to_nchw(b), a) < 1e-4
    assert np.abs(a).max() > 0


@needs_tf
def test_keras_nested_model_layers(bn_pair):
    import keras

    import boundary_xg as bxg

    kmodel = bn_pair[1]
    base = keras.Model(kmodel.inputs, kmodel.get_layer("relu2").output, name="base")
    head = keras.layers.Dense(3, name="head")
    outer = keras.Sequential([keras.Input((16, 16, 3)), base, keras.layers.GlobalAveragePooling2D(), head])
    x, y = np.random.default_rng(10).standard_normal((2, 16, 16, 3)).astype(np.float32), np.array([0, 2])
    # the default is the nested model's output; a layer inside it is found by its name
    whole = bxg.attribute(outer, x, y, method="GradCAM")
    np.testing.assert_allclose(whole, bxg.attribute(outer, x, y, method="GradCAM", layer="base"), rtol=1e-6)
    np.testing.assert_allclose(whole, bxg.attribute(outer, x, y, method="GradCAM", layer="relu2"), rtol=1e-5,
                               atol=1e-7)
    inner = bxg.attribute(outer, x, y, method="GradCAM", layer="conv1")
    assert inner.shape == (2, 16, 16, 1) and not np.allclose(inner, whole)
    _, gap = bxg.attribute(outer, x, y, method="FullGrad", return_gap=True)
    logit = outer(x).numpy()[np.arange(2), y]
    assert np.all(np.abs(gap) < 1e-4 * np.abs(logit))
    assert all("call" not in lay.__dict__ for lay in outer._flatten_layers(include_self=True))


@needs_tf
def test_keras_layer_by_object_and_index(bn_pair):
    import boundary_xg as bxg

    kmodel = bn_pair[1]
    x, y = np.random.default_rng(3).standard_normal((2, 16, 16, 3)).astype(np.float32), np.array([1, 3])
    by_name = bxg.attribute(kmodel, x, y, method="GradCAM", layer="conv2")
    index = [lay.name for lay in kmodel.layers].index("conv2")
    np.testing.assert_allclose(bxg.attribute(kmodel, x, y, method="GradCAM", layer=kmodel.get_layer("conv2")),
                               by_name, rtol=1e-6)
    np.testing.assert_allclose(bxg.attribute(kmodel, x, y, method="GradCAM", layer=index), by_name, rtol=1e-6)
    np.testing.assert_allclose(bxg.attribute(kmodel, x, y, method="GradCAM", layer=str(index)), by_name,
                               rtol=1e-6)


@needs_torch
def test_gradcam_chunks_and_tensors(bn_pair):
    import torch

    import boundary_xg as bxg

    tmodel = bn_pair[0]
    x, y = np.random.default_rng(4).standard_normal((5, 3, 16, 16)).astype(np.float32), np.arange(5)
    whole = bxg.attribute(tmodel, x, y, method="GradCAM")
    np.testing.assert_allclose(bxg.attribute(tmodel, x, y, method="GradCAM", batch_size=2), whole,
                               rtol=1e-5, atol=1e-7)
    out = bxg.BA("grad-cam").attribute(tmodel, torch.from_numpy(x), torch.from_numpy(y))
    assert isinstance(out, torch.Tensor) and not out.requires_grad
    np.testing.assert_allclose(out.numpy(), whole, rtol=1e-6)


# --- FullGrad ---------------------------------------------------------------------------
def _fullgrad_gap(model, x, y):
    import boundary_xg as bxg

    saliency, gap = bxg.attribute(model, x, y, method="FullGrad", return_gap=True)
    return saliency, np.asarray(gap)


@needs_torch
@pytest.mark.parametrize("arch", ["resnet18", "vgg11_bn"])
def test_fullgrad_decomposition_torchvision(tv_models, arch):
    import torch

    model = tv_models[arch]
    x, y = _x64(), np.array([3, 5])
    saliency, gap = _fullgrad_gap(model, x, y)
    with torch.no_grad():
        logit = model(torch.from_numpy(x)).numpy()[np.arange(2), y]
    assert saliency.shape == (2, 1, 64, 64) and saliency.min() >= 0
    assert np.all(np.abs(gap) < 1e-4 * np.abs(logit))
    # the decomposition needs batch norm's effective bias: without it the gap is large
    from boundary_xg.backends import get_backend

    B = get_backend("torch")
    terms = [t for t in B.bias_terms(model) if not isinstance(t[0], torch.nn.BatchNorm2d)]
    from boundary_xg.methods.fullgrad import fullgrad

    with B.session(model) as f:
        _, partial = fullgrad(B, f, torch.from_numpy(x), torch.from_numpy(y), bias_terms=terms,
                              return_gap=True)
    assert np.all(np.abs(partial.numpy()) > 1e-2 * np.abs(logit))


@needs_tf
def test_fullgrad_decomposition_keras_bn_and_fused_activations(bn_pair):
    import keras

    kmodel = bn_pair[1]
    x, y = np.random.default_rng(5).standard_normal((3, 16, 16, 3)).astype(np.float32), np.array([0, 1, 2])
    saliency, gap = _fullgrad_gap(kmodel, x, y)
    logit = kmodel(x).numpy()[np.arange(3), y]
    assert saliency.shape == (3, 16, 16, 1)
    assert np.all(np.abs(gap) < 1e-4 * np.abs(logit))
    # activations fused into Conv2D / Dense: the bias gradient is taken before the ReLU
    keras.utils.set_random_seed(0)
    L = keras.layers
    fused = keras.Sequential([
        keras.Input((12, 12, 3)), L.Conv2D(6, 3, activation="relu", bias_initializer="random_normal"),
        L.BatchNormalization(), L.MaxPooling2D(), L.Conv2D(8, 3, activation="relu",
                                                           bias_initializer="random_normal"),
        L.Flatten(), L.Dense(10, activation="relu", bias_initializer="random_normal"), L.Dense(4),
    ])
    xf = np.random.default_rng(6).standard_normal((3, 12, 12, 3)).astype(np.float32)
    _, gap = _fullgrad_gap(fused, xf, np.array([0, 1, 3]))
    logit = fused(xf).numpy()[np.arange(3), [0, 1, 3]]
    assert np.all(np.abs(gap) < 1e-4 * np.maximum(np.abs(logit), 1e-3))
    assert all("call" not in lay.__dict__ for lay in fused.layers)
    assert [lay.activation.__name__ for lay in fused.layers if hasattr(lay, "activation")] == \
        ["relu", "relu", "relu", "linear"]


def _fullgrad_reference(w, x, y):
    """FullGrad of the BN CNN with functional torch ops and autograd on the named tensors."""
    import torch
    import torch.nn.functional as F

    t = {k: torch.from_numpy(v) for k, v in w.items() if k != "meta"}
    xt = torch.from_numpy(x).requires_grad_(True)
    eff = {}
    for bn in ("bn1", "bn2"):
        scale = t[f"{bn}.weight"] / torch.sqrt(t[f"{bn}.running_var"] + 1e-5)
        eff[bn] = (scale, t[f"{bn}.bias"] - t[f"{bn}.running_mean"] * scale)
    z1 = F.conv2d(xt, t["conv1.weight"], t["conv1.bias"], padding=1)
    b1 = z1 * eff["bn1"][0][:, None, None] + eff["bn1"][1][:, None, None]
    z2 = F.conv2d(F.max_pool2d(F.relu(b1), 2), t["conv2.weight"], t["conv2.bias"], padding=1)
    b2 = z2 * eff["bn2"][0][:, None, None] + eff["bn2"][1][:, None, None]
    zf = F.linear(F.relu(b2).mean((2, 3)), t["fc.weight"], t["fc.bias"])
    score = zf[torch.arange(len(y)), torch.from_numpy(y)]
    grads = torch.autograd.grad(score.sum(), [xt, z1, b1, z2, b2])
    biases = [t["conv1.bias"], eff["bn1"][1], t["conv2.bias"], eff["bn2"][1]]

    def psi(v):
        v = v.abs()
        v = v - v.flatten(1).min(1).values[:, None, None, None]
        return v / (v.flatten(1).max(1).values[:, None, None, None] + 1e-6)

    out = psi(xt * grads[0]).sum(1, keepdim=True)
    for b, g in zip(biases, grads[1:]):
        m = psi(g * b[:, None, None]).sum(1, keepdim=True)
        out = out + F.interpolate(m, size=x.shape[2:], mode="bilinear", align_corners=True)
    return out.detach().numpy()


@needs_both
def test_fullgrad_map_against_functional_reference_and_across_frameworks(bn_pair):
    import boundary_xg as bxg
    from boundary_xg.testing import bn_models as bm
    from boundary_xg.testing.models import nchw_to_nhwc, nhwc_to_nchw

    tmodel, kmodel = bn_pair
    x, y = np.random.default_rng(7).standard_normal((3, 3, 16, 16)).astype(np.float32), np.array([4, 0, 2])
    ours = bxg.attribute(tmodel, x, y, method="FullGrad")
    assert rel(ours, _fullgrad_reference(bm.bn_cnn_weights(seed=0), x, y)) < 1e-5
    keras_map = bxg.attribute(kmodel, nchw_to_nhwc(x), y, method="FullGrad")
    assert rel(nhwc_to_nchw(keras_map), ours) < 1e-4


# --- bad input and a model left as it was -------------------------------------------------
def _torch_state(model):
    return [(name, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks), m.training)
            for name, m in model.named_modules()]


@needs_torch
def test_torch_errors_name_the_layer_and_leave_the_model_as_it_was(bn_pair):
    import torch
    from torch import nn

    import boundary_xg as bxg
    from boundary_xg.errors import InputError, MethodError, UnsupportedModelError

    tmodel = bn_pair[0]
    tmodel.train()  # a mixed-mode model must come back in the same modes
    tmodel.bn2.eval()
    before = _torch_state(tmodel)
    stats = tmodel.bn1.running_mean.clone()
    x, y = np.random.default_rng(8).standard_normal((2, 3, 16, 16)).astype(np.float32), np.array([0, 1])
    try:
        with pytest.raises(InputError, match=r"layer='nope' names no sub-module.*'conv2'.*'relu2'"):
            bxg.attribute(tmodel, x, y, method="GradCAM", layer="nope")
        with pytest.raises(InputError, match=r"layer='fc' has output of shape \(2, 5\), without spatial"):
            bxg.attribute(tmodel, x, y, method="GradCAM", layer="fc")
        with pytest.raises(InputError, match="without spatial extent"):
            bxg.attribute(tmodel, x, y, method="GradCAM", layer="gap")  # (N, C, 1, 1)
        with pytest.raises(InputError, match="not a sub-module"):
            bxg.attribute(tmodel, x, y, method="GradCAM", layer=nn.Conv2d(3, 3, 1))
        with pytest.raises(MethodError, match=r"SM takes no option 'layer'.*GradCAM"):
            bxg.attribute(tmodel, x, y, method="SM", layer="conv2")
        with pytest.raises(MethodError, match="FullGrad takes no option 'layer'"):
            bxg.BA("FullGrad", layer="conv2")
        with pytest.raises(InputError, match="relu='yes'"):
            bxg.BA("GradCAM", relu="yes")
        with pytest.raises(InputError, match="image models"):
            bxg.attribute(tmodel, x.reshape(2, -1), y, method="GradCAM", layer="conv2")
        for method in ("GradCAM", "GradCAM++", "FullGrad"):
            bxg.attribute(tmodel, x, y, method=method)
        assert _torch_state(tmodel) == before
        assert torch.equal(tmodel.bn1.running_mean, stats)  # inference semantics, also for the probe
    finally:
        tmodel.eval()

    class SideBranch(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv2d(3, 4, 3, padding=1)
            self.side = nn.Conv2d(3, 4, 3, padding=1)
            self.unused = nn.Conv2d(3, 4, 1)
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            self.side(x)  # computed and dropped: not on the path to the output
            return self.fc(torch.relu(self.conv(x)).mean((2, 3)))

    model = SideBranch().eval()
    before = _torch_state(model)
    with pytest.raises(InputError, match="layer='side' does not lie on the path"):
        bxg.attribute(model, x, y, method="GradCAM", layer="side")
    with pytest.raises(InputError, match="layer='unused' did not run"):
        bxg.attribute(model, x, y, method="GradCAM", layer=model.unused)
    assert _torch_state(model) == before
    _, gap = bxg.attribute(model, x, y, method="FullGrad", return_gap=True)  # unused biases skipped
    assert np.all(np.abs(gap) < 1e-5)
    import warnings

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        scripted = torch.jit.script(bn_pair[0])
    with pytest.raises(UnsupportedModelError, match="TorchScript"):
        bxg.attribute(scripted, x, y, method="GradCAM", layer="conv2")


@needs_tf
@pytest.mark.filterwarnings("ignore:.*build")
def test_keras_errors_name_the_layer_and_leave_the_model_as_it_was(bn_pair):
    import keras

    import boundary_xg as bxg
    from boundary_xg.errors import InputError

    kmodel = bn_pair[1]
    x, y = np.random.default_rng(9).standard_normal((2, 16, 16, 3)).astype(np.float32), np.array([0, 1])

    def untouched():
        return all("call" not in lay.__dict__ for lay in kmodel._flatten_layers(include_self=True))

    with pytest.raises(InputError, match=r"layer='nope' names no layer.*'conv1'.*'fc'"):
        bxg.attribute(kmodel, x, y, method="GradCAM", layer="nope")
    with pytest.raises(InputError, match=r"layer=42: the model has 9 layers"):
        bxg.attribute(kmodel, x, y, method="GradCAM", layer=42)
    with pytest.raises(InputError, match="without spatial extent"):
        bxg.attribute(kmodel, x, y, method="GradCAM", layer="fc")
    with pytest.raises(InputError, match="is not a layer of the model"):
        bxg.attribute(kmodel, x, y, method="GradCAM", layer=keras.layers.Dense(3))
    assert untouched()

    class SideBranch(keras.Model):
        def __init__(self):
            super().__init__()
            self.conv = keras.layers.Conv2D(4, 3, padding="same", name="conv")
            self.side = keras.layers.Conv2D(4, 3, padding="same", name="side")
            self.unused = keras.layers.Conv2D(4, 1, name="unused")
            self.fc = keras.layers.Dense(3, name="fc")

        def call(self, z):
            self.side(z)
            return self.fc(keras.ops.mean(keras.ops.relu(self.conv(z)), axis=(1, 2)))

    model = SideBranch()
    model(x)
    model.unused.build((None, 16, 16, 3))
    # a subclassed model: the layers' calls are replaced as in a Sequential one
    cam = bxg.attribute(model, x, y, method="GradCAM")  # default: "conv", the last to finish
    np.testing.assert_allclose(cam, bxg.attribute(model, x, y, method="GradCAM", layer="conv"))
    assert cam.shape == (2, 16, 16, 1) and cam.max() > 0
    with pytest.raises(InputError, match="layer='side' does not lie on the path"):
        bxg.attribute(model, x, y, method="GradCAM", layer="side")
    with pytest.raises(InputError, match="layer='unused' did not run"):
        bxg.attribute(model, x, y, method="GradCAM", layer="unused")
    assert all("call" not in lay.__dict__ for lay in model._flatten_layers(include_self=True))
    _, gap = bxg.attribute(model, x, y, method="FullGrad", return_gap=True)
    assert np.all(np.abs(gap) < 1e-5)


# --- cost: the primitives behind the fused post-processing, one compiled step ---------------
@needs_torch
def test_torch_resize_and_weighted_sum_match_the_framework_ops():
    import torch

    from boundary_xg.backends import get_backend

    B = get_backend("torch")
    F = torch.nn.functional
    g = torch.Generator().manual_seed(0)
    for (h, w), size in [((2, 2), (64, 64)), ((7, 7), (224, 224)), ((16, 16), (32, 32)),
                         ((5, 3), (4, 9)), ((1, 1), (8, 8)), ((9, 9), (1, 1))]:
        for align in (True, False):
            t = torch.randn(3, 2, h, w, dtype=torch.float64, generator=g)
            ref = F.interpolate(t, size=size, mode="bilinear", align_corners=align)
            assert rel(B.resize(t, size, align), ref) < 1e-12  # the same weights
            t32 = t.float()
            ref32 = F.interpolate(t32, size=size, mode="bilinear", align_corners=align)
            assert rel(B.resize(t32, size, align), ref32) < 1e-5
    t = torch.randn(4, 6, 5, 7, dtype=torch.float64, generator=g)
    for axis in (1, 2, 3, -1):
        w = torch.randn(t.shape[axis], dtype=torch.float64, generator=g)
        shape = [1] * 4
        shape[axis] = -1
        ref = (t * w.reshape(shape)).sum(axis)
        assert rel(B.weighted_sum(t, w, axis), ref) < 1e-12


@needs_tf
def test_tf_weighted_sum_and_layer_methods_trace_once():
    import tensorflow as tf

    import boundary_xg as bxg
    import boundary_xg.methods.fullgrad as fg
    import boundary_xg.methods.gradcam as gc
    from boundary_xg.backends import get_backend
    from boundary_xg.testing import models as tm

    B = get_backend("tensorflow")
    t = np.random.default_rng(0).standard_normal((4, 6, 5, 7))
    for axis in (1, 3, -1):
        w = np.random.default_rng(1).standard_normal(t.shape[axis])
        ref = np.tensordot(t, w, axes=([axis % 4], [0]))
        assert rel(B.weighted_sum(tf.constant(t), tf.constant(w), axis).numpy(), ref) < 1e-12
    # the Keras path runs as one compiled step per model and method, traced once
    model = tm.keras_cnn(tm.cnn_weights(seed=0, size=8, widths=(4, 8), hidden=16, classes=10))
    x = np.random.default_rng(0).random((3, 8, 8, 3)).astype(np.float32)
    for method, step in (("FullGrad", fg._step), ("GradCAM", gc._cam_step)):
        first = bxg.attribute(model, x, [0, 1, 2], method=method)
        for _ in range(2):
            np.testing.assert_array_equal(bxg.attribute(model, x, [0, 1, 2], method=method), first)
        with B.session(model, mode="eval") as f:
            compiled = [c for k, c in B._compiled[f].items() if k[0] is step]
        assert len(compiled) == 1 and compiled[0].experimental_get_tracing_count() == 1, method


@needs_tf
def test_tf_fused_abs_channel_stats_match_the_written_once_fallback():
    """FullGrad's per-term statistics: TensorFlow's XLA kernel against the protocol's fallback."""
    import tensorflow as tf

    from boundary_xg.backends import Backend, get_backend
    from boundary_xg.backends.tensorflow import layers as tl

    B = get_backend("tensorflow")
    assert tl.xla_available()  # the CPU build has XLA: the fused path is the one tested
    g = np.random.default_rng(3)
    for dtype in (np.float32, np.float64):
        t = g.standard_normal((3, 5, 4, 6)).astype(dtype)
        t[0, 1, 2, 3] = 0.0  # an exact zero: the minimum of |t| is 0 for example 0
        u = g.standard_normal(t.shape).astype(dtype)
        w = np.abs(g.standard_normal(6))
        w[2] = 0.0
        for weights, times in ((w, None), (None, None), (None, u), (w, u)):
            args = (tf.constant(t), None if weights is None else tf.constant(weights), 3,
                    None if times is None else tf.constant(times))
            fused = tl.abs_channel_stats(*args)
            assert fused is not None
            want = Backend.abs_channel_stats(B, *args)  # the fallback written once
            a = np.abs(t if times is None else t * times) * (1.0 if weights is None else weights)
            ref = (a.sum(3), a.reshape(3, -1).min(1), a.reshape(3, -1).max(1))
            for got, fb, r in zip(fused, want, ref):
                assert got.dtype == tf.as_dtype(dtype) and got.shape == r.shape
                assert rel(got.numpy(), r) < (1e-6 if dtype == np.float32 else 1e-12)
                assert rel(fb.numpy(), r) < (1e-6 if dtype == np.float32 else 1e-12)
            # the extremes are exact: the same rounded products as the fallback's
            np.testing.assert_array_equal(fused[1].numpy(), want[1].numpy())
            np.testing.assert_array_equal(fused[2].numpy(), want[2].numpy())
    # where the kernel does not apply (channels not last, half precision): the fallback
    assert tl.abs_channel_stats(tf.constant(t), None, 1) is None
    assert tl.abs_channel_stats(tf.constant(t.astype(np.float16)), None, 3) is None


@needs_tf
def test_tf_fullgrad_without_xla_gives_the_same_maps(monkeypatch):
    import boundary_xg as bxg
    from boundary_xg.backends.tensorflow import layers as tl
    from boundary_xg.testing import models as tm

    w = tm.cnn_weights(seed=2, size=8, widths=(4, 8), hidden=16, classes=10)
    x = np.random.default_rng(5).standard_normal((3, 8, 8, 3)).astype(np.float32)
    fused = bxg.attribute(tm.keras_cnn(w), x, [1, 2, 3], method="FullGrad")
    monkeypatch.setattr(tl, "_XLA", [False])  # a build without XLA: stock ops, no fused kernel
    plain, gap = bxg.attribute(tm.keras_cnn(w), x, [1, 2, 3], method="FullGrad", return_gap=True)
    assert rel(fused, plain) < 1e-6
    assert np.abs(gap).max() < 1e-4


@needs_tf
def test_tf_resize_and_short_channel_sum_match_the_framework_ops():
    import tensorflow as tf

    from boundary_xg.backends import get_backend

    B = get_backend("tensorflow")
    g = np.random.default_rng(0)
    for (h, w), size in [((2, 2), (64, 64)), ((7, 7), (224, 224)), ((16, 16), (32, 32)),
                         ((5, 3), (4, 9)), ((1, 1), (8, 8)), ((9, 9), (1, 1))]:
        t = tf.constant(g.standard_normal((3, h, w, 1)).astype(np.float32))
        # one-channel maps go through interpolation matrices, the rest through the framework op
        for align in (True, False):
            if align:
                ref = tf.raw_ops.ResizeBilinear(images=t, size=list(size), align_corners=True)
            else:
                ref = tf.image.resize(t, size, method="bilinear")
            assert rel(B.resize(t, size, align).numpy(), ref.numpy()) < 1e-5
    t = g.standard_normal((2, 4, 5, 3)).astype(np.float32)
    for axis in (3, -1, (3,), 1):  # slices added for a short last axis
        np.testing.assert_allclose(B.sum(tf.constant(t), axis=axis).numpy(), t.sum(axis=axis),
                                   rtol=1e-6, atol=1e-6)


# --- the registry is the one source of method facts ---------------------------------------
def test_registry_facts_readme_cli_and_demo():
    from boundary_xg.cli import build_parser
    from boundary_xg.demo import DEMO_METHODS
    from boundary_xg.methods.registry import METHODS, MethodSpec, lookup

    shorts = [s.short for s in METHODS.values()]
    layer_methods = sorted(s.short for s in METHODS.values() if s.takes_layer)
    assert layer_methods == ["GradCAM", "GradCAM++"]
    assert {s.short: s.output for s in METHODS.values() if s.output == "map"} == {
        "GradCAM": "map", "GradCAM++": "map", "FullGrad": "map"}
    assert "layers" in lookup("FullGrad").needs and lookup("FullGrad").supports_gap
    # registrations written before these fields existed still work (defaults)
    old = MethodSpec(name="x", short="X", func=lambda *a: None, defaults={})
    assert (old.takes_layer, old.output, old.needs, dict(old.checks)) == (False, "like_x", (), {})
    # README's method table has one row per registered method, and no row for an unknown one
    readme = open(os.path.join(REPO, "README.md"), encoding="utf-8").read()
    table = readme.split("## Methods", 1)[1].split("\n## ", 1)[0]
    rows = [re.match(r"\| `([^`]+)`", ln).group(1) for ln in table.splitlines() if re.match(r"\| `", ln)]
    missing = [s for s in shorts if s not in rows]
    assert not missing, f"README.md's method table lacks rows for {missing}"
    for r in rows:
        lookup(r)
    # the CLI's --method help and the demo's list come from / are checked against the registry
    explain = build_parser()._subparsers._group_actions[0].choices["explain"]
    help_text = next(a.help for a in explain._actions if a.dest == "method")
    assert all(s in help_text for s in shorts)
    for name in DEMO_METHODS:
        lookup(name)
    assert {"GradCAM", "FullGrad"} <= set(DEMO_METHODS)


# --- heatmaps and the command line ---------------------------------------------------------
def test_heatmaps_overlay_coarse_maps():
    from matplotlib.figure import Figure

    from boundary_xg.viz import HeatmapVisualizer, heatmap, plot_grid
    from boundary_xg.viz._arrays import resize_maps

    maps = np.zeros((2, 1, 2, 2))
    maps[:, 0, 0, 0] = 1.0
    img = np.random.default_rng(0).random((2, 1, 8, 8))
    out = HeatmapVisualizer(overlay_opacity=1.0)(maps, img, imshow=False)
    assert out.shape == (2, 8, 8, 3)
    assert out[0, 0, 0, 2] < out[0, 7, 7, 2]  # the hot (red, not white) corner stays in its corner
    assert heatmap(maps[:1], img[:1], ax=Figure().add_subplot()).shape == (8, 8)
    plot_grid(img, [("GradCAM", maps)], output_file=None, fig=Figure())
    # bilinear with half-pixel centres: a 2x upsampling of [0, 1] is [0, .25, .75, 1]
    np.testing.assert_allclose(resize_maps(np.array([[[0.0, 1.0]]]), (1, 4))[0, 0], [0, 0.25, 0.75, 1])


@needs_torch
def test_cli_explain_gradcam_with_layer(tmp_path, monkeypatch, capsys):
    import boundary_xg as bxg
    from boundary_xg.cli import main
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    # in this process (the suite's subprocess runs are in test_cli.py): main() is what the
    # console script calls
    x, y = load_digit_test_set()
    np.save(tmp_path / "x.npy", x[:3])
    module = f"layer_cli_digits_{os.getpid()}"
    (tmp_path / f"{module}.py").write_text(
        "from boundary_xg.demo_models import load_digit_model\n"
        "def build():\n    return load_digit_model('torch')\n"
    )
    monkeypatch.chdir(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    common = ["explain", "--model", f"{module}:build", "--images", "x.npy", "--out", "o"]
    assert main(common + ["--method", "GradCAM", "--layer", "conv2", "--labels", *map(str, y[:3])]) == 0
    attr = np.load(tmp_path / "o" / "attributions.npy")
    expect = bxg.attribute(load_digit_model("torch"), x[:3], y[:3], method="GradCAM", layer="conv2")
    assert attr.shape == (3, 1, 8, 8)
    np.testing.assert_allclose(attr, expect, rtol=1e-5, atol=1e-7)
    assert (tmp_path / "o" / "heatmaps.png").stat().st_size > 1000
    capsys.readouterr()
    assert main(common + ["--method", "GradCAM", "--layer", "nope"]) == 1
    assert "layer='nope' names no sub-module" in capsys.readouterr().err
    assert main(common + ["--method", "SM", "--layer", "conv2"]) == 1
    assert "takes no option 'layer'" in capsys.readouterr().err


@needs_tf
def test_fullgrad_keras_batch_norm_biases_follow_new_statistics():
    # the effective biases run as one compiled function cached per model: it must read the
    # statistics when it runs, so the decomposition still closes after they change
    import keras

    keras.utils.set_random_seed(1)
    L = keras.layers
    model = keras.Sequential([keras.Input((8, 8, 3)), L.Conv2D(4, 3, padding="same"), L.BatchNormalization(),
                              L.ReLU(), L.GlobalAveragePooling2D(), L.Dense(3)])
    x, y = np.random.default_rng(7).standard_normal((2, 8, 8, 3)).astype(np.float32), np.array([0, 2])
    for shift in (0.0, 0.7):
        bn = model.layers[1]
        bn.moving_mean.assign(np.full((4,), shift, np.float32))
        bn.moving_variance.assign(np.full((4,), 1.0 + shift, np.float32))
        _, gap = _fullgrad_gap(model, x, y)
        logit = model(x, training=False).numpy()[np.arange(2), y]
        assert np.all(np.abs(gap) < 1e-4 * np.maximum(np.abs(logit), 1e-2)), (shift, gap, logit)
