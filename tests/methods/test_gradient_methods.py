"""Gradient methods against oracles we did not write: closed forms of analytic
models, Captum, the other backend with the same weights, and the completeness axiom."""

from __future__ import annotations

import numpy as np
import pytest

import boundary_xg as bxg
from boundary_xg.methods.quadrature import RULES
from boundary_xg.testing import models as tm
from boundary_xg.testing import oracles
from conftest import BACKENDS, build_cnn, needs_both, needs_captum, needs_tf, needs_torch, to_nchw

EXACT_RULES = [r for r in RULES if r != "captum_trapezoid"]


def _linear(backend, shape=(3, 2, 2), classes=4, seed=0):
    w = tm.linear_weights(seed, int(np.prod(shape)), classes)
    if backend == "torch":
        return tm.torch_linear(w, shape), w
    return tm.keras_linear(w, shape), w


def _rel(a, b):
    return np.abs(a - b).max() / max(np.abs(b).max(), 1e-12)


# --- analytic: linear models -------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("rule", EXACT_RULES)
def test_ig_is_exact_on_linear_models_for_every_rule(backend, rule):
    model, w = _linear(backend)
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 3, 2, 2)).astype(np.float32)
    labels = np.array([0, 1, 2, 3, 1])
    for baseline in (None, 0.5, rng.standard_normal((5, 3, 2, 2)).astype(np.float32),
                     rng.standard_normal((3, 2, 2)).astype(np.float32)):
        attr = bxg.attribute(model, x, labels, method="IG", baseline=baseline, steps=7, rule=rule)
        b = 0.0 if baseline is None else baseline
        expected = oracles.linear_integrated_gradients(w["weight"], labels, x, np.broadcast_to(b, x.shape))
        np.testing.assert_allclose(attr, expected, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_saliency_ixg_and_xg_on_linear_models(backend):
    model, w = _linear(backend)
    x = np.random.default_rng(4).standard_normal((5, 3, 2, 2)).astype(np.float32)
    labels = np.array([3, 2, 1, 0, 0])
    row = oracles.linear_saliency(w["weight"], labels, x.shape)
    np.testing.assert_allclose(bxg.attribute(model, x, labels, method="SM"), row, rtol=1e-6)
    np.testing.assert_allclose(bxg.attribute(model, x, labels, method="SM", abs=True), np.abs(row), rtol=1e-6)
    np.testing.assert_allclose(bxg.attribute(model, x, labels, method="IxG"), x * row, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(bxg.attribute(model, x, labels, method="XG"), x * row, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_smoothgrad_of_a_linear_model_is_its_weight_row(backend):
    model, w = _linear(backend)
    x = np.random.default_rng(5).standard_normal((3, 3, 2, 2)).astype(np.float32)
    labels = np.array([0, 1, 2])
    sg = bxg.attribute(model, x, labels, method="SG", num_samples=8, sigma=0.3, seed=0)
    np.testing.assert_allclose(sg, oracles.linear_saliency(w["weight"], labels, x.shape), rtol=1e-5, atol=1e-6)


# --- analytic: a quadratic model, where SmoothGrad has a closed form -----------------
def _quadratic(backend, a):
    """F_c(x) = sum_i a[c, i] * x_i**2, so grad = 2 a_y x and, under N(0, s^2) noise,
    E[grad] = 2 a_y x, E[grad^2] = 4 a_y^2 (x^2 + s^2), Var[grad] = 4 a_y^2 s^2."""
    if backend == "torch":
        import torch

        class Quad(torch.nn.Module):
            def __init__(self):
                super().__init__()
                self.a = torch.nn.Parameter(torch.from_numpy(a))

            def forward(self, x):
                return (x.flatten(1) ** 2) @ self.a.T

        return Quad()
    import keras

    inp = keras.Input((a.shape[1],))
    sq = keras.layers.Lambda(lambda t: keras.ops.square(t))(inp)
    out = keras.layers.Dense(a.shape[0], use_bias=False, name="quad")(sq)
    model = keras.Model(inp, out)
    model.get_layer("quad").set_weights([a.T])
    return model


@pytest.mark.parametrize("backend", BACKENDS)
def test_smoothgrad_variants_match_their_closed_forms(backend):
    rng = np.random.default_rng(6)
    a = rng.uniform(0.5, 1.5, (3, 6)).astype(np.float32)
    model = _quadratic(backend, a)
    x = rng.standard_normal((2, 6)).astype(np.float32)
    labels = np.array([0, 2])
    s, n = 0.2, 4000
    ay = a[labels]
    mean = bxg.attribute(model, x, labels, method="SG", num_samples=n, sigma_abs=s, seed=1)
    # each sample's gradient is 2 a (x + e): the mean's std is 2 a s / sqrt(n)
    assert np.all(np.abs(mean - 2 * ay * x) <= 5 * 2 * ay * s / np.sqrt(n))
    sq = bxg.attribute(model, x, labels, method="SG", num_samples=n, sigma_abs=s, seed=1, variant="smoothgrad_sq")
    np.testing.assert_allclose(sq, 4 * ay**2 * (x**2 + s**2), rtol=0.08, atol=0.02)
    var = bxg.attribute(model, x, labels, method="SG", num_samples=n, sigma_abs=s, seed=1, variant="vargrad")
    np.testing.assert_allclose(var, 4 * ay**2 * s**2, rtol=0.12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_smoothgrad_sigma_is_a_fraction_of_each_inputs_range(backend):
    rng = np.random.default_rng(7)
    a = rng.uniform(0.5, 1.5, (3, 6)).astype(np.float32)
    model = _quadratic(backend, a)
    x = (rng.standard_normal((2, 6)) * np.array([[1.0], [10.0]])).astype(np.float32)
    labels = np.array([0, 1])
    var = bxg.attribute(model, x, labels, method="SG", num_samples=3000, sigma=0.1, seed=2, variant="vargrad")
    s = 0.1 * (x.max(axis=1) - x.min(axis=1))[:, None]  # per example, not per batch
    np.testing.assert_allclose(var, 4 * a[labels] ** 2 * s**2, rtol=0.12)


@pytest.mark.parametrize("backend", BACKENDS)
def test_smoothgrad_is_reproducible_with_a_seed(backend, images):
    model, conv = build_cnn(backend)
    x = conv(images)
    one = bxg.attribute(model, x, [0, 1, 2, 3], method="SG", num_samples=6, seed=11)
    two = bxg.attribute(model, x, [0, 1, 2, 3], method="SG", num_samples=6, seed=11)
    other = bxg.attribute(model, x, [0, 1, 2, 3], method="SG", num_samples=6, seed=12)
    np.testing.assert_array_equal(one, two)
    assert np.abs(one - other).max() > 0


# --- Captum --------------------------------------------------------------------------
def _captum_models():
    import torch
    import torchvision

    torch.manual_seed(0)
    resnet = torchvision.models.resnet18(weights=None, num_classes=10).eval()
    small = tm.torch_cnn(tm.cnn_weights(seed=3, size=16))
    return [("small_cnn", small, (3, 16, 16)), ("resnet18", resnet, (3, 32, 32))]


@needs_captum
@pytest.mark.parametrize("which", [0, 1], ids=["small_cnn", "resnet18"])
def test_gradient_methods_match_captum(which):
    import torch
    from captum.attr import InputXGradient, IntegratedGradients, Saliency

    _, model, shape = _captum_models()[which]
    x = torch.from_numpy(np.random.default_rng(8).standard_normal((3,) + shape).astype(np.float32))
    labels = torch.tensor([1, 4, 7]) % 5
    ours = bxg.attribute(model, x, labels, method="SM")
    theirs = Saliency(model).attribute(x, target=labels, abs=False)
    assert _rel(ours.numpy(), theirs.detach().numpy()) < 1e-5
    ours = bxg.attribute(model, x, labels, method="IxG")
    theirs = InputXGradient(model).attribute(x, target=labels)
    assert _rel(ours.numpy(), theirs.detach().numpy()) < 1e-5
    baseline = torch.full_like(x, 0.1)
    for ours_rule, captum_rule in [("gausslegendre", "gausslegendre"), ("riemann_left", "riemann_left"),
                                   ("riemann_right", "riemann_right"), ("riemann_middle", "riemann_middle"),
                                   ("captum_trapezoid", "riemann_trapezoid")]:
        ours = bxg.attribute(model, x, labels, method="IG", baseline=baseline, steps=12, rule=ours_rule)
        theirs = IntegratedGradients(model).attribute(
            x, baselines=baseline, target=labels, n_steps=12, method=captum_rule)
        assert _rel(ours.numpy(), theirs.detach().numpy()) < 1e-5, ours_rule


@needs_captum
def test_smoothgrad_agrees_with_captum_in_expectation():
    import torch
    from captum.attr import NoiseTunnel, Saliency

    _, model, shape = _captum_models()[0]
    x = torch.from_numpy(np.random.default_rng(9).standard_normal((2,) + shape).astype(np.float32))
    labels = torch.tensor([0, 3])
    n, s = 400, 0.3
    torch.manual_seed(0)
    tunnel = NoiseTunnel(Saliency(model))
    theirs = tunnel.attribute(x, target=labels, nt_type="smoothgrad", nt_samples=n, stdevs=s, abs=False).numpy()
    spread = tunnel.attribute(x, target=labels, nt_type="vargrad", nt_samples=n, stdevs=s, abs=False).numpy()
    ours = bxg.attribute(model, x.numpy(), labels.numpy(), method="SG", num_samples=n, sigma_abs=s, seed=0)
    # two independent means of n draws: their difference has std sqrt(2 var / n)
    bound = 5 * np.sqrt(2 * spread / n) + 1e-6
    assert np.mean(np.abs(ours - theirs) <= bound) > 0.995


# --- cross-backend: the same weights in both frameworks --------------------------------
@needs_both
@pytest.mark.parametrize("bias", [True, False])
def test_backends_agree_with_the_same_weights(bias, images):
    torch_model, _ = build_cnn("torch", seed=2, bias=bias)
    keras_model, conv = build_cnn("tensorflow", seed=2, bias=bias)
    labels = np.array([0, 1, 2, 4])
    cases = [("SM", {}), ("IxG", {}), ("XG", {}), ("IG", {"steps": 16}),
             ("IG", {"steps": 9, "rule": "riemann_trapezoid", "baseline": 0.3})]
    for method, opts in cases:
        a = bxg.attribute(torch_model, images, labels, method=method, **opts)
        b = to_nchw("tensorflow", bxg.attribute(keras_model, conv(images), labels, method=method, **opts))
        assert _rel(b, a) < 1e-4, method


# --- the completeness axiom ----------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("activation", ["relu", "softplus"])
def test_ig_gap_falls_with_steps(backend, activation, images):
    """The gap is the quadrature error. Along a path through a ReLU network the
    gradient jumps at every kink, so any rule converges like O(1/steps); with a
    smooth activation Gauss-Legendre converges fast: below 1e-3 of |F(x) - F(0)|
    at 64 nodes."""
    model, conv = build_cnn(backend, seed=4, activation=activation)
    x = conv(images)
    labels = np.array([0, 1, 2, 3])
    gaps = []
    for steps in (2, 8, 64):
        attr, gap = bxg.attribute(model, x, labels, method="IG", steps=steps, return_gap=True)
        assert gap.shape == (4,)
        np.testing.assert_allclose(gap, attr.reshape(4, -1).sum(1) - _delta_f(backend, model, x, labels), atol=1e-5)
        gaps.append(np.abs(gap))
    delta = np.abs(_delta_f(backend, model, x, labels))
    if activation == "softplus":
        assert np.all(gaps[2] < 1e-3 * delta)
        assert gaps[0].sum() > 10 * gaps[2].sum()
    else:
        assert gaps[2].sum() < gaps[1].sum() < gaps[0].sum()
        assert gaps[2].sum() < 1e-2 * delta.sum()


def _delta_f(backend, model, x, labels):
    """F_y(x) - F_y(0), computed directly with the framework (no boundary_xg code)."""
    if backend == "torch":
        import torch

        with torch.no_grad():
            t = torch.from_numpy(x)
            out = model(t) - model(torch.zeros_like(t))
        return out.numpy()[np.arange(len(labels)), labels]
    out = model(x, training=False).numpy() - model(np.zeros_like(x), training=False).numpy()
    return out[np.arange(len(labels)), labels]


# --- X-Gradient equals IG on a bias-free ReLU network -----------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_xgradient_equals_ig_only_without_bias(backend, images):
    labels = np.array([0, 1, 2, 3])
    diffs = {}
    for bias in (False, True):
        model, conv = build_cnn(backend, seed=5, bias=bias)
        x = conv(images)
        xg = bxg.attribute(model, x, labels, method="XG")
        ig = bxg.attribute(model, x, labels, method="IG", steps=128)
        diffs[bias] = _rel(xg, ig)
    assert diffs[False] < 1e-4
    assert diffs[True] > 1e-2


# --- differentiable X-Gradient (attribution priors) -----------------------------------
@needs_torch
def test_xgradient_create_graph_is_differentiable_in_torch():
    import torch

    w = tm.linear_weights(1, 6, 3)
    model = tm.torch_linear(w)
    x = torch.from_numpy(np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32))
    labels = torch.tensor([0, 2, 2, 1])
    attr = bxg.attribute(model, x, labels, method="XG", create_graph=True)
    attr.sum().backward()
    # sum_n x_n . W[y_n]  =>  d/dW[c] = sum of the x_n with y_n = c
    expected = np.stack([x.numpy()[labels.numpy() == c].sum(0) for c in range(3)])
    np.testing.assert_allclose(model.weight.grad.numpy(), expected, rtol=1e-5, atol=1e-6)


@needs_tf
def test_xgradient_is_differentiable_under_an_outer_tape():
    import tensorflow as tf

    w = tm.linear_weights(1, 6, 3)
    model = tm.keras_linear(w)
    x = tf.constant(np.random.default_rng(1).standard_normal((4, 6)).astype(np.float32))
    labels = np.array([0, 2, 2, 1])
    kernel = model.get_layer("linear").kernel
    with tf.GradientTape() as tape:
        attr = bxg.attribute(model, x, labels, method="XG", create_graph=True)
        total = tf.reduce_sum(attr)
    grad = tape.gradient(total, kernel.value if hasattr(kernel, "value") else kernel)
    expected = np.stack([x.numpy()[labels == c].sum(0) for c in range(3)]).T
    np.testing.assert_allclose(np.asarray(grad), expected, rtol=1e-5, atol=1e-6)


# --- chunking: rows of one example may straddle chunks ------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_results_do_not_depend_on_batch_size(backend, images):
    model, conv = build_cnn(backend, seed=6)
    x = conv(images)
    labels = np.array([1, 0, 3, 2])
    for method, opts in [("IG", {"steps": 10}), ("SM", {}), ("XG", {})]:
        whole = bxg.attribute(model, x, labels, method=method, **opts)
        for bs in (1, 3, 7):
            part = bxg.attribute(model, x, labels, method=method, batch_size=bs, **opts)
            np.testing.assert_allclose(part, whole, rtol=1e-5, atol=1e-6, err_msg=f"{method} bs={bs}")
