"""DeepLIFT (Rescale) in both backends.

Oracles: Captum's DeepLift where it is correct (distinct, non-in-place
activation modules), summation-to-delta, the same NumPy weights in torch and
Keras, hand-computed max-pooling cases, and equalities between models that
compute the same function in different ways (reused vs distinct ReLU objects,
in-place vs functional activations, PReLU(a) vs LeakyReLU(a)).
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import build_cnn, needs_both, needs_captum, needs_tf, needs_torch, to_nchw

import boundary_xg as bxg
from boundary_xg.errors import MethodError

RNG = np.random.default_rng(7)
X = RNG.standard_normal((4, 3, 8, 8)).astype(np.float32)
BASE = (0.3 * RNG.standard_normal((4, 3, 8, 8))).astype(np.float32)
Y = np.array([0, 1, 2, 3])


def _dl(model, x, labels, **kw):
    return bxg.attribute(model, x, labels, method="DeepLIFT", **kw)


def _assert_summation(gap, fx, fb, rtol=1e-5):
    """Summation-to-delta to ``rtol`` relative (float32) to the logits subtracted.

    Random deep nets can have logits of order 1e-3 while their activations are of
    order 1, where float32 rounding lives: the scale has a floor of 0.05.
    """
    gap, fx, fb = (np.asarray(a, dtype=np.float64) for a in (gap, fx, fb))
    scale = np.maximum(np.maximum(np.abs(fx), np.abs(fb)), 0.05)
    assert np.all(np.abs(gap) <= rtol * scale), (gap, fx - fb)


# --- PyTorch ---------------------------------------------------------------------------
def _torch_mlp(act_factory, seed=0, features=6, hidden=10, classes=3):
    import torch
    from torch import nn

    torch.manual_seed(seed)
    return nn.Sequential(
        nn.Linear(features, hidden), act_factory(), nn.Linear(hidden, hidden), act_factory(),
        nn.Linear(hidden, classes),
    ).eval()


@needs_captum
@pytest.mark.parametrize("act", ["relu", "leaky", "elu", "sigmoid", "tanh", "softplus"])
def test_torch_matches_captum_mlp(act):
    import torch
    from captum.attr import DeepLift
    from torch import nn

    factory = {"relu": nn.ReLU, "leaky": lambda: nn.LeakyReLU(0.2), "elu": nn.ELU,
               "sigmoid": nn.Sigmoid, "tanh": nn.Tanh, "softplus": nn.Softplus}[act]
    model = _torch_mlp(factory)
    x = torch.from_numpy(RNG.standard_normal((5, 6)).astype(np.float32))
    b = torch.from_numpy(RNG.standard_normal((5, 6)).astype(np.float32))
    y = torch.tensor([0, 1, 2, 0, 1])
    ours = _dl(model, x, y, baseline=b)
    ref = DeepLift(model).attribute(x, baselines=b, target=y)
    np.testing.assert_allclose(ours.detach().numpy(), ref.detach().numpy(), atol=1e-5)


@needs_captum
def test_torch_matches_captum_cnn_with_maxpool():
    import torch
    from captum.attr import DeepLift

    model, _ = build_cnn("torch", seed=0)
    zero = torch.zeros(4, 3, 8, 8)
    ref, ref_gap = DeepLift(model).attribute(torch.from_numpy(X), baselines=zero,
                                             target=torch.from_numpy(Y), return_convergence_delta=True)
    assert ref_gap.abs().max() < 1e-5  # Captum is correct here, so it is an oracle
    ours = _dl(model, X, Y, baseline=0.0)
    np.testing.assert_allclose(ours, ref.detach().numpy(), atol=1e-5)


@needs_captum
def test_torch_max_pool_matches_captum_where_captum_is_complete():
    import torch
    from captum.attr import DeepLift
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.MaxPool2d(2), nn.Flatten(),
                          nn.Linear(3 * 4 * 4, 4)).eval()
    x, b = torch.randn(5, 2, 8, 8), torch.randn(5, 2, 8, 8)
    y = torch.tensor([0, 1, 2, 3, 0])
    ref, ref_gap = DeepLift(model).attribute(x, baselines=b, target=y, return_convergence_delta=True)
    assert ref_gap.abs().max() < 1e-5
    np.testing.assert_allclose(_dl(model, x, y, baseline=b).numpy(), ref.detach().numpy(), atol=1e-5)


@needs_captum
def test_torch_max_pool_keeps_summation_where_captum_loses_it():
    import torch
    from captum.attr import DeepLift

    # after a ReLU, both halves are often 0 at x's maximum: Captum falls back to the
    # gradient there and loses summation-to-delta; our rule keeps it
    model, _ = build_cnn("torch", seed=3)
    _, ref_gap = DeepLift(model).attribute(torch.from_numpy(X), baselines=torch.from_numpy(BASE),
                                           target=torch.from_numpy(Y), return_convergence_delta=True)
    _, gap = _dl(model, X, Y, baseline=BASE, return_gap=True)
    assert ref_gap.abs().max() > 1e-2
    assert np.abs(gap).max() < 1e-5


def _residual_pair():
    """The same residual block twice: one reusing one in-place ReLU object with
    functional calls and an in-place residual addition, one with distinct
    non-in-place ReLU modules (the form Captum handles)."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    class Reused(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv1 = nn.Conv2d(3, 4, 3, padding=1)
            self.conv1b = nn.Conv2d(4, 4, 3, padding=1)
            self.conv2 = nn.Conv2d(4, 4, 3, padding=1)
            self.proj = nn.Conv2d(3, 4, 1)
            self.mid = nn.Conv2d(4, 4, 1)
            self.relu = nn.ReLU(inplace=True)
            self.fc = nn.Linear(4 * 4 * 4, 5)

        def forward(self, x):
            out = self.relu(self.conv1(x))
            out = F.relu(self.conv1b(out))               # functional F.relu
            out = self.conv2(out)
            out += self.proj(x)                          # in-place residual addition
            out = self.relu(out)                         # the same in-place ReLU object again
            out = F.avg_pool2d(out, 2)
            return self.fc(torch.relu(self.mid(out) - 0.1).flatten(1))  # torch.relu

    class Distinct(nn.Module):
        def __init__(self, src):
            super().__init__()
            for name in ("conv1", "conv1b", "conv2", "proj", "mid", "fc"):
                setattr(self, name, getattr(src, name))
            self.r1, self.r2, self.r3, self.r4 = nn.ReLU(), nn.ReLU(), nn.ReLU(), nn.ReLU()
            self.pool = nn.AvgPool2d(2)

        def forward(self, x):
            out = self.r2(self.conv1b(self.r1(self.conv1(x))))
            out = self.pool(self.r3(self.conv2(out) + self.proj(x)))
            return self.fc(self.r4(self.mid(out) - 0.1).flatten(1))

    torch.manual_seed(0)
    reused = Reused().eval()
    return reused, Distinct(reused).eval()


@needs_captum
def test_torch_reused_inplace_functional_relus_match_distinct_and_captum():
    import torch
    from captum.attr import DeepLift

    reused, distinct = _residual_pair()
    x, b = X[:, :, :8, :8], BASE
    a_reused, gap = _dl(reused, x, Y, baseline=b, return_gap=True)
    a_distinct = _dl(distinct, x, Y, baseline=b)
    np.testing.assert_allclose(a_reused, a_distinct, atol=1e-6)
    ref, ref_gap = DeepLift(distinct).attribute(
        torch.from_numpy(x), baselines=torch.from_numpy(b), target=torch.from_numpy(Y),
        return_convergence_delta=True)
    assert ref_gap.abs().max() < 1e-5
    np.testing.assert_allclose(a_distinct, ref.detach().numpy(), atol=1e-5)
    with torch.no_grad():
        fx, fb = reused(torch.from_numpy(x)), reused(torch.from_numpy(b))
    _assert_summation(gap, fx.numpy()[np.arange(4), Y], fb.numpy()[np.arange(4), Y])


@needs_torch
def test_torch_max_pool_rule_hand_computed():
    import torch
    from torch import nn

    model = nn.Sequential(nn.MaxPool2d(2), nn.Flatten()).eval()
    # d = max(x) - max(b) = 3 - 4 = -1 < 0: routed to the baseline's maximum (0,0),
    # delta_in there = 1 - 4 = -3: multiplier 1/3, attribution -1 there, 0 elsewhere
    x = np.array([[[[1, 3], [2, 0]]]], np.float32)
    b = np.array([[[[4, 0], [0, 1]]]], np.float32)
    np.testing.assert_allclose(_dl(model, x, [0], baseline=b), [[[[-1, 0], [0, 0]]]], atol=1e-7)
    # d = 3 - 2.5 = 0.5 >= 0: routed to x's maximum (0,1), delta_in = 3: attribution 0.5
    b1 = np.array([[[[0, 0], [2.5, 0]]]], np.float32)
    np.testing.assert_allclose(_dl(model, x, [0], baseline=b1), [[[[0, 0.5], [0, 0]]]], atol=1e-7)
    # x is all 0 (a tie): d = -2 goes to the baseline's maximum (0,1)
    x0 = np.zeros((1, 1, 2, 2), np.float32)
    b0 = np.array([[[[0, 2], [0, 0]]]], np.float32)
    attr, gap = _dl(model, x0, [0], baseline=b0, return_gap=True)
    np.testing.assert_allclose(attr, [[[[0, -2], [0, 0]]]], atol=1e-7)
    assert abs(float(gap[0])) < 1e-7
    # overlapping windows (3x3, stride 1 on 3x4): the routed differences add up
    m2 = nn.Sequential(nn.MaxPool2d(3, stride=1), nn.Flatten(), nn.Linear(2, 1)).eval()
    with torch.no_grad():
        m2[2].weight.copy_(torch.tensor([[1.0, 2.0]]))
        m2[2].bias.zero_()
    x2 = np.zeros((1, 1, 3, 4), np.float32)
    x2[0, 0, 1, 1] = 5.0  # the maximum of both windows for x; the baseline is 0
    attr = _dl(m2, x2, [0], baseline=np.zeros_like(x2))
    expected = np.zeros_like(x2)
    expected[0, 0, 1, 1] = 15.0  # 1 * 5 + 2 * 5, all at the one element
    np.testing.assert_allclose(attr, expected, atol=1e-6)


@needs_torch
def test_torch_resnet18_summation_to_delta():
    import torch
    import torchvision

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).eval()
    x = torch.randn(2, 3, 64, 64)
    b = 0.2 * torch.randn(2, 3, 64, 64)
    y = torch.tensor([1, 7])
    attr, gap = _dl(model, x, y, baseline=b, return_gap=True)
    with torch.no_grad():
        fx, fb = model(x)[torch.arange(2), y], model(b)[torch.arange(2), y]
    assert attr.shape == x.shape
    _assert_summation(gap.numpy(), fx.numpy(), fb.numpy())


@needs_torch
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["vgg11_bn", "mobilenet_v2", "densenet121"])
def test_torch_torchvision_summation_to_delta(arch):
    import torch
    import torchvision

    torch.manual_seed(0)
    model = getattr(torchvision.models, arch)(num_classes=10).eval()
    # random BN statistics make batch norm a non-trivial affine map
    for m in model.modules():
        if isinstance(m, torch.nn.BatchNorm2d):
            m.running_mean.uniform_(-0.1, 0.1)
            m.running_var.uniform_(0.5, 1.5)
    x = torch.randn(2, 3, 64, 64)
    b = 0.2 * torch.randn(2, 3, 64, 64)
    y = torch.tensor([1, 7])
    _, gap = _dl(model, x, y, baseline=b, return_gap=True)
    with torch.no_grad():
        fx, fb = model(x)[torch.arange(2), y], model(b)[torch.arange(2), y]
    _assert_summation(gap.numpy(), fx.numpy(), fb.numpy())


@needs_torch
def test_torch_chunking_and_aliases_agree():
    model, _ = build_cnn("torch", seed=1)
    whole = _dl(model, X, Y, baseline=BASE)
    chunked = bxg.attribute(model, X, Y, method="dl", baseline=BASE, batch_size=2)
    np.testing.assert_allclose(whole, chunked, atol=1e-6)
    zero = bxg.attribute(model, X, Y, method="rescale")
    np.testing.assert_allclose(zero, _dl(model, X, Y, baseline=np.zeros_like(X)), atol=1e-7)


def _torch_state(model):
    import torch

    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [(m.training, len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks))
         for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        torch._C._len_torch_function_stack(),
    )


def _same_torch_state(a, b):
    import torch

    assert a[1:] == b[1:]
    assert all(torch.equal(a[0][k], b[0][k]) for k in a[0])


@needs_torch
def test_torch_model_unchanged_after_call_and_error():
    import torch
    import torch.nn.functional as F
    from torch import nn

    model, _ = build_cnn("torch", seed=0)
    model.train()
    model[1].training = False  # mixed flags must survive too
    before = _torch_state(model)
    _dl(model, X, Y, baseline=BASE)
    _same_torch_state(before, _torch_state(model))
    assert torch._C._len_torch_function_stack() == 0

    class SoftmaxInside(nn.Module):
        def __init__(self):
            super().__init__()
            self.a, self.b = nn.Linear(6, 4), nn.Linear(4, 3)

        def forward(self, x):
            return self.b(F.softmax(self.a(x), dim=1))

    bad = SoftmaxInside().eval()
    before = _torch_state(bad)
    with pytest.raises(MethodError, match="softmax"):
        _dl(bad, RNG.standard_normal((2, 6)).astype(np.float32), [0, 1])
    _same_torch_state(before, _torch_state(bad))
    assert torch._C._len_torch_function_stack() == 0


# --- Keras / TensorFlow -----------------------------------------------------------------
def _mlp_weights(seed=0, features=6, hidden=10, classes=3):
    rng = np.random.default_rng(seed)
    shapes = [(hidden, features), (hidden, hidden), (classes, hidden)]
    return [((rng.standard_normal(s) / np.sqrt(s[1])).astype(np.float32),
             (0.1 * rng.standard_normal(s[0])).astype(np.float32)) for s in shapes]


def _torch_mlp_from(weights, act):
    import torch
    from torch import nn

    layers = []
    for i, (w, bias) in enumerate(weights):
        lin = nn.Linear(w.shape[1], w.shape[0])
        with torch.no_grad():
            lin.weight.copy_(torch.from_numpy(w))
            lin.bias.copy_(torch.from_numpy(bias))
        layers.append(lin)
        if i < len(weights) - 1:
            layers.append(act())
    return nn.Sequential(*layers).eval()


def _keras_mlp(weights, style):
    """The same MLP in Keras with its ReLUs expressed in ``style``."""
    import keras

    L = keras.layers
    (w1, b1), (w2, b2), (w3, b3) = weights
    if style == "ops":
        class Sub(keras.Model):
            def __init__(self):
                super().__init__()
                self.d1, self.d2, self.d3 = L.Dense(10), L.Dense(10), L.Dense(3)

            def call(self, x):
                return self.d3(keras.ops.relu(self.d2(keras.ops.relu(self.d1(x)))))

        model = Sub()
        model(np.zeros((1, 6), np.float32))
        dense = [model.d1, model.d2, model.d3]
    else:
        def act():
            return {"layer": L.ReLU, "activation": lambda: L.Activation("relu"),
                    "leaky": lambda: L.LeakyReLU(negative_slope=0.2),
                    "prelu": lambda: L.PReLU(alpha_initializer=keras.initializers.Constant(0.2))}[style]()

        if style == "dense":
            dense = [L.Dense(10, activation="relu"), L.Dense(10, activation="relu"), L.Dense(3)]
            model = keras.Sequential([keras.Input((6,))] + dense)
        else:
            dense = [L.Dense(10), L.Dense(10), L.Dense(3)]
            model = keras.Sequential([keras.Input((6,)), dense[0], act(), dense[1], act(), dense[2]])
    for layer, (w, bias) in zip(dense, weights):
        layer.set_weights([w.T, bias])
    return model


@needs_tf
@needs_captum
@pytest.mark.parametrize("style", ["dense", "layer", "activation", "ops", "leaky", "prelu"])
def test_keras_activation_styles_match_captum(style):
    import torch
    from captum.attr import DeepLift
    from torch import nn

    weights = _mlp_weights(seed=2)
    act = (lambda: nn.LeakyReLU(0.2)) if style in ("leaky", "prelu") else nn.ReLU
    x = RNG.standard_normal((5, 6)).astype(np.float32)
    b = RNG.standard_normal((5, 6)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    ref = DeepLift(_torch_mlp_from(weights, act)).attribute(
        torch.from_numpy(x), baselines=torch.from_numpy(b), target=torch.from_numpy(y)).detach().numpy()
    ours = _dl(_keras_mlp(weights, style), x, y, baseline=b)
    np.testing.assert_allclose(ours, ref, atol=1e-5)


@needs_tf
def test_keras_max_pool_rule_hand_computed():
    import keras

    model = keras.Sequential([keras.Input((2, 2, 1)), keras.layers.MaxPooling2D(2), keras.layers.Flatten()])
    x = np.array([[1, 3], [2, 0]], np.float32).reshape(1, 2, 2, 1)
    b = np.array([[4, 0], [0, 1]], np.float32).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(_dl(model, x, [0], baseline=b).reshape(2, 2), [[-1, 0], [0, 0]], atol=1e-7)
    b1 = np.array([[0, 0], [2.5, 0]], np.float32).reshape(1, 2, 2, 1)
    np.testing.assert_allclose(_dl(model, x, [0], baseline=b1).reshape(2, 2), [[0, 0.5], [0, 0]], atol=1e-7)
    x0 = np.zeros((1, 2, 2, 1), np.float32)
    b0 = np.array([[0, 2], [0, 0]], np.float32).reshape(1, 2, 2, 1)
    attr, gap = _dl(model, x0, [0], baseline=b0, return_gap=True)
    np.testing.assert_allclose(attr.reshape(2, 2), [[0, -2], [0, 0]], atol=1e-7)
    assert abs(float(gap[0])) < 1e-7


@needs_both
@pytest.mark.parametrize("bias", [True, False])
def test_cross_backend_same_weights(bias):
    out = {}
    for backend in ("torch", "tensorflow"):
        model, make_input = build_cnn(backend, seed=5, bias=bias)
        attr, gap = _dl(model, make_input(X), Y, baseline=make_input(BASE), return_gap=True)
        out[backend] = to_nchw(backend, attr)
        assert np.all(np.abs(gap) < 1e-5)
    np.testing.assert_allclose(out["torch"], out["tensorflow"], atol=1e-4)


def _keras_state(model):
    import keras
    import tensorflow as tf

    layers = list(model._flatten_layers(include_self=True, recursive=True))
    return (
        [(id(l), getattr(l, "activation", None), "call" in l.__dict__) for l in layers],
        [w.numpy().copy() for w in model.weights],
        (keras.ops.relu, keras.ops.max_pool, keras.ops.softmax, keras.activations.relu, tf.nn.relu),
    )


def _same_keras_state(a, b):
    assert a[0] == b[0] and a[2] == b[2]
    assert all(np.array_equal(u, v) for u, v in zip(a[1], b[1]))


@needs_tf
def test_keras_model_unchanged_after_call_and_error():
    import keras

    model, make_input = build_cnn("tensorflow", seed=0)
    dense_relu = _keras_mlp(_mlp_weights(), "dense")
    for m, x in ((model, make_input(X)), (dense_relu, RNG.standard_normal((3, 6)).astype(np.float32))):
        before = _keras_state(m)
        _dl(m, x, [0, 1, 2, 0][: len(x)])
        _same_keras_state(before, _keras_state(m))

    L = keras.layers
    inner = keras.Sequential([keras.Input((6,)), L.Dense(4, activation="relu"), L.Softmax(name="mid_softmax"),
                              L.Dense(3)])
    before = _keras_state(inner)
    with pytest.raises(MethodError, match="mid_softmax"):
        _dl(inner, RNG.standard_normal((2, 6)).astype(np.float32), [0, 1])
    _same_keras_state(before, _keras_state(inner))

    class OpsSoftmax(keras.Model):
        def __init__(self):
            super().__init__()
            self.d1, self.d2 = L.Dense(4, activation="relu"), L.Dense(3)

        def call(self, x):
            return self.d2(keras.ops.softmax(self.d1(x)))

    sub = OpsSoftmax()
    sub(np.zeros((1, 6), np.float32))
    before = _keras_state(sub)
    with pytest.raises(MethodError, match="softmax"):
        _dl(sub, RNG.standard_normal((2, 6)).astype(np.float32), [0, 1])
    _same_keras_state(before, _keras_state(sub))


@needs_tf
@pytest.mark.slow
@pytest.mark.parametrize("arch", ["ResNet50", "MobileNetV2"])
def test_keras_applications_summation_to_delta(arch):
    import keras

    keras.utils.set_random_seed(0)
    model = getattr(keras.applications, arch)(weights=None, input_shape=(64, 64, 3), classes=10)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((2, 64, 64, 3)).astype(np.float32)
    b = (0.2 * rng.standard_normal((2, 64, 64, 3))).astype(np.float32)
    y = np.array([1, 7])
    with pytest.warns(UserWarning):  # the final softmax is switched off
        _, gap = _dl(model, x, y, baseline=b, return_gap=True)
    # F_y(x) - F_y(b) on the pre-softmax logits
    last = model.layers[-1]
    last.activation, act = keras.activations.linear, last.activation
    try:
        logits = model(np.concatenate([x, b]), training=False).numpy()
    finally:
        last.activation = act
    _assert_summation(gap, logits[[0, 1], y], logits[[2, 3], y])


# --- two passes (baseline pass, input pass), their fallback and shared baselines --------
@needs_torch
def test_torch_two_passes_equal_the_doubled_batch_on_resnet_blocks():
    import torch
    import torchvision

    from boundary_xg.backends.torch import rescale as R

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=5).eval()
    x, b = torch.randn(2, 3, 32, 32), 0.2 * torch.randn(2, 3, 32, 32)
    y = torch.tensor([1, 3])
    before = R.fallback_count
    two = R.deeplift_grad(model, x, b, y)
    assert R.fallback_count == before  # reused, in-place ReLUs pair up call by call
    doubled = R.deeplift_grad(model, x, b, y, doubled=True)
    torch.testing.assert_close(two, doubled, rtol=1e-5, atol=1e-7)


@needs_torch
def test_torch_falls_back_when_the_passes_differ():
    import torch
    from torch import nn

    from boundary_xg.backends.torch import rescale as R

    class InPlaceAfter(nn.Module):
        """Modifies a ReLU's output in place afterwards: the record would be stale."""

        def __init__(self, inplace_after):
            super().__init__()
            torch.manual_seed(3)
            self.a, self.b = nn.Linear(6, 8), nn.Linear(8, 3)
            self.inplace_after = inplace_after

        def forward(self, x):
            h = torch.relu(self.a(x))
            h = h.mul_(2.0) if self.inplace_after else h * 2.0
            return self.b(h)

    class DataDependent(nn.Module):
        """One more ReLU when the batch holds large values: a different call sequence."""

        def __init__(self):
            super().__init__()
            torch.manual_seed(4)
            self.a, self.b = nn.Linear(6, 6), nn.Linear(6, 3)

        def forward(self, x):
            h = torch.relu(self.a(x))
            if bool(x.abs().max() > 3):
                h = torch.relu(h - 0.1)
            return self.b(h)

    x = RNG.standard_normal((3, 6)).astype(np.float32)
    b = (0.1 * RNG.standard_normal((3, 6))).astype(np.float32)
    y = [0, 1, 2]
    before = R.fallback_count
    stale, fresh = InPlaceAfter(True).eval(), InPlaceAfter(False).eval()
    np.testing.assert_allclose(_dl(stale, x, y, baseline=b), _dl(fresh, x, y, baseline=b), rtol=1e-5, atol=1e-7)
    assert R.fallback_count == before + 1
    x[0, 0] = 5.0  # the input takes the extra ReLU, the baseline does not
    model = DataDependent().eval()
    attr, gap = _dl(model, x, y, baseline=b, return_gap=True)
    assert R.fallback_count == before + 2
    with torch.no_grad():
        out = model(torch.from_numpy(np.concatenate([x, b])))
    fx, fb = out[:3].numpy()[np.arange(3), y], out[3:].numpy()[np.arange(3), y]
    _assert_summation(gap, fx, fb)


@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_shared_baseline_runs_one_row_and_agrees(framework):
    pytest.importorskip("torch" if framework == "torch" else "tensorflow")
    model, make_input = build_cnn(framework, seed=2)
    x = make_input(X)
    one = (0.3 * RNG.standard_normal(x.shape[1:])).astype(np.float32)
    per_row = np.repeat(one[None], len(x), axis=0)
    per_row_distinct = per_row.copy()
    per_row_distinct[-1] += 1e-3  # the same but for one row: runs the full baseline pass
    shared = _dl(model, x, Y, baseline=per_row)  # detected: every row is the same
    np.testing.assert_allclose(shared, _dl(model, x, Y, baseline=one), atol=1e-7)
    full = _dl(model, x, Y, baseline=per_row_distinct)
    np.testing.assert_allclose(shared[:-1], full[:-1], rtol=1e-5, atol=1e-6)
    attr, gap = _dl(model, x, Y, baseline=0.25, return_gap=True)
    assert np.all(np.abs(gap) < 1e-4)


@needs_torch
def test_torch_shared_baseline_pass_has_one_row():
    import torch

    model, _ = build_cnn("torch", seed=2)
    rows = []
    handle = model[0].register_forward_hook(lambda m, i, o: rows.append(i[0].shape[0]))
    try:
        _dl(model, X, Y, baseline=0.0)
        _dl(model, X, Y, baseline=BASE)
    finally:
        handle.remove()
    probe = rows[0]  # the front end's one-example probe (first call of a model only)
    assert rows[-4:] == [1, len(X), len(X), len(X)] and probe == 1
    del torch


@needs_tf
def test_keras_tiled_max_pool_route_equals_the_general_route():
    import tensorflow as tf

    from boundary_xg.backends.tensorflow import rescale as R

    rng = np.random.default_rng(5)
    # ReLU outputs: many ties at 0, where the first maximum in row-major order wins
    u = tf.nn.relu(tf.constant(rng.standard_normal((3, 6, 8, 4)).astype(np.float32)))
    ub = tf.nn.relu(tf.constant(rng.standard_normal((3, 6, 8, 4)).astype(np.float32)))
    u = tf.tensor_scatter_nd_update(u, [[0, 0, 0, 0]], [0.0])
    for size in [(2, 2), (3, 2), (2, 4)]:
        def pool(v, size=size):
            return tf.nn.max_pool2d(v, size, size, "VALID")

        out, out_b = pool(u), pool(ub)
        g = tf.constant(rng.standard_normal(out.shape).astype(np.float32))
        general = R._route_max_pool(pool, u, ub, out, out_b, g)
        np.testing.assert_allclose(R._tiled_route(u, ub, g, *size), general, atol=1e-6)
        np.testing.assert_allclose(R._tiled_route_xla(u, ub, g, *size), general, atol=1e-6)
        # a baseline shared by all rows (one row) broadcasts the same way
        one = R._tiled_route_xla(u, ub[:1], g, *size)
        ref = R._route_max_pool(pool, u, tf.broadcast_to(ub[:1], u.shape), out,
                                tf.broadcast_to(pool(ub[:1]), out.shape), g)
        np.testing.assert_allclose(one, ref, atol=1e-6)


@needs_tf
def test_keras_max_pool_paths_keep_summation():
    import keras

    L = keras.layers
    rng = np.random.default_rng(6)
    for size, pool in [(8, L.MaxPooling2D(2)), (9, L.MaxPooling2D(2)),
                       (8, L.MaxPooling2D(3, strides=2, padding="same"))]:
        model = keras.Sequential([keras.Input((size, size, 2)), L.Conv2D(4, 3, padding="same"), L.ReLU(), pool,
                                  L.Flatten(), L.Dense(3)])
        x = rng.standard_normal((3, size, size, 2)).astype(np.float32)
        b = (0.2 * rng.standard_normal((3, size, size, 2))).astype(np.float32)
        attr, gap = _dl(model, x, [0, 1, 2], baseline=b, return_gap=True)
        fx = model(x).numpy()[np.arange(3), [0, 1, 2]]
        fb = model(b).numpy()[np.arange(3), [0, 1, 2]]
        _assert_summation(gap, fx, fb)


@needs_tf
def test_keras_falls_back_when_the_passes_differ():
    import keras
    import tensorflow as tf

    from boundary_xg.backends.tensorflow import rescale as R
    from boundary_xg.backends import get_backend

    class BatchDependent(keras.Model):
        """One more ReLU for a one-row batch: a shared baseline's pass differs (eager only)."""

        def __init__(self):
            super().__init__()
            self.a, self.b = keras.layers.Dense(6), keras.layers.Dense(3)

        def call(self, x):
            h = keras.ops.relu(self.a(x))
            if x.shape[0] == 1:
                h = keras.ops.relu(h - 0.1)
            return self.b(h)

    model = BatchDependent()
    model(np.zeros((2, 6), np.float32))
    x = RNG.standard_normal((3, 6)).astype(np.float32)
    B = get_backend("tensorflow")
    before = R.fallback_count
    B.use_tf_function = False
    try:
        attr, gap = _dl(model, x, [0, 1, 2], baseline=0.0, return_gap=True)
    finally:
        B.use_tf_function = True
    assert R.fallback_count == before + 1
    fx = model(x).numpy()[np.arange(3), [0, 1, 2]]
    fb = model(np.zeros_like(x)).numpy()[np.arange(3), [0, 1, 2]]
    _assert_summation(gap, fx, fb)
    del tf


@needs_tf
def test_keras_plain_relu_fast_path_only_for_the_library_relu():
    """A user's activation that is merely *named* ``relu`` must not get the ReLU kernel
    (it would ignore the function's own outputs and break summation-to-delta)."""
    import keras
    import tensorflow as tf

    from boundary_xg.backends.tensorflow import rescale as R

    def relu(x):  # capped: not a plain ReLU despite its name
        return keras.activations.relu(x, max_value=0.5)

    assert not R._is_plain_relu(relu, (), {})
    for fn in (tf.nn.relu, keras.activations.relu, keras.ops.relu):
        assert R._is_plain_relu(fn, (), {})
    assert R._is_plain_relu(keras.activations.relu, (), dict(negative_slope=0.0, max_value=None, threshold=0.0))
    assert not R._is_plain_relu(keras.activations.relu, (), dict(max_value=6.0))

    L = keras.layers
    rng = np.random.default_rng(8)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    b = (0.3 * rng.standard_normal((4, 6))).astype(np.float32)
    y = [0, 1, 2, 0]
    for act in ([L.Dense(8, activation=relu)], [L.Dense(8), L.ReLU(max_value=0.5)],
                [L.Dense(8), L.ReLU(threshold=0.3)]):
        keras.utils.set_random_seed(1)
        model = keras.Sequential([keras.Input((6,))] + act + [L.Dense(3)])
        for base in (b, b[:1]):  # per-row and shared baselines
            attr, gap = _dl(model, x, y, baseline=base, return_gap=True)
            fx = model(x).numpy()[np.arange(4), y]
            fb = model(np.broadcast_to(base, x.shape)).numpy()[np.arange(4), y]
            _assert_summation(gap, fx, fb)


@needs_torch
def test_torch_max_pool_with_return_indices():
    """``return_indices=True`` (``F.max_pool2d`` or ``nn.MaxPool2d``) gives the values and the
    indices, and the same attributions as the pooling without them."""
    import torch
    from torch import nn
    import torch.nn.functional as F

    class Pool(nn.Module):
        def __init__(self, with_idx):
            super().__init__()
            torch.manual_seed(5)
            self.conv, self.fc = nn.Conv2d(3, 4, 3, padding=1), nn.Linear(4 * 4 * 4, 3)
            self.with_idx = with_idx

        def forward(self, x):
            h = torch.relu(self.conv(x))
            if self.with_idx:
                h, idx = F.max_pool2d(h, 3, 2, ceil_mode=True, return_indices=True)
                assert idx.dtype == torch.int64 and idx.shape == h.shape
            else:
                h = F.max_pool2d(h, 3, 2, ceil_mode=True)
            return self.fc(h.flatten(1))

    x = RNG.standard_normal((3, 3, 9, 9)).astype(np.float32)
    ref = _dl(Pool(False).eval(), x, [0, 1, 2], baseline=0.1)
    np.testing.assert_allclose(_dl(Pool(True).eval(), x, [0, 1, 2], baseline=0.1), ref, atol=1e-7)


@needs_tf
def test_keras_traced_fallback_when_the_passes_differ():
    """A model whose Python-level behaviour changes between the traced passes (here a call
    counter) gets the doubled-batch graph instead, with the same attributions."""
    import keras

    from boundary_xg.backends.tensorflow import rescale as R

    class Alternating(keras.Model):
        def __init__(self, alternate):
            super().__init__()
            self.a, self.b = keras.layers.Dense(6), keras.layers.Dense(3)
            self.alternate, self.calls = alternate, 0

        def call(self, x):
            self.calls += 1
            h = keras.ops.relu(self.a(x))
            if self.alternate and self.calls % 2 == 0:  # traced passes see 1, 2: they differ
                h = keras.ops.relu(h)
            return self.b(h)

    keras.utils.set_random_seed(3)
    odd = Alternating(True)
    odd(np.zeros((2, 6), np.float32))  # call 1
    plain = Alternating(False)
    plain(np.zeros((2, 6), np.float32))
    plain.set_weights(odd.get_weights())
    x = RNG.standard_normal((3, 6)).astype(np.float32)
    b = (0.2 * RNG.standard_normal((3, 6))).astype(np.float32)
    from boundary_xg.backends import get_backend

    B = get_backend("tensorflow")
    before = R.fallback_count
    with B.session(odd) as f:
        odd.calls = 0  # the probe's call is outside; the traces make calls 1, 2 then 3
        got = B.deeplift_grad(f, x, b, np.array([0, 1, 2]), times_delta=True).numpy()
    assert R.fallback_count == before + 1
    with B.session(plain) as f:
        want = B.deeplift_grad(f, x, b, np.array([0, 1, 2]), times_delta=True).numpy()
    np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-6)
