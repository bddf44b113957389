"""Expected Gradients: analytic linear case, completeness in expectation, seeds, errors.

Oracles: the linear model's closed form (EG = (x - r) * w whatever the path
points), the completeness axiom in expectation against the model's own outputs
on the background, IG with 128 Gauss-Legendre nodes for a one-row background,
and the model's state before and after.
"""

import numpy as np
import pytest

import boundary_xg as bxg
from conftest import BACKENDS, build_cnn, needs_torch


def _linear(backend, features=6, classes=3):
    from boundary_xg.testing import models as tm

    w = tm.linear_weights(seed=0, features=features, classes=classes)
    model = tm.torch_linear(w) if backend == "torch" else tm.keras_linear(w)
    return model, w


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_model_closed_form(backend):
    model, w = _linear(backend)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    r = rng.standard_normal((1, 6)).astype(np.float32)
    labels = np.array([0, 1, 2, 1])
    attr = bxg.attribute(model, x, labels, method="EG", background=r, num_samples=7, seed=0)
    np.testing.assert_allclose(attr, (x - r) * w["weight"][labels], rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_completeness_in_expectation(backend):
    model, conv = build_cnn(backend, seed=3, bias=True, activation="softplus")
    rng = np.random.default_rng(2)
    x = conv(rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    bg = conv(rng.standard_normal((3, 3, 8, 8)).astype(np.float32))
    labels = np.array([1, 3])
    attr, gap = bxg.attribute(model, x, labels, method="EG", background=bg, num_samples=3000,
                              seed=1, return_gap=True)
    out_x = _logits(model, backend, x)[np.arange(2), labels]
    out_bg = _logits(model, backend, bg)[:, labels].mean(axis=0)
    expected = out_x - out_bg
    total = attr.reshape(2, -1).sum(1)
    scale = np.abs(expected) + np.abs(_logits(model, backend, bg)[:, labels]).std(0) + 0.1
    # Monte Carlo: reference choice and path point; 3000 samples keep the error ~2% of scale
    assert np.all(np.abs(total - expected) <= 0.1 * scale), (total, expected)
    # the gap against the drawn references only carries the path-point noise: smaller
    assert np.all(np.abs(gap) <= 0.05 * scale), gap


def _logits(model, backend, x):
    if backend == "torch":
        import torch

        with torch.no_grad():
            return model(torch.as_tensor(x)).numpy()
    return np.asarray(model(x, training=False))


@pytest.mark.parametrize("backend", BACKENDS)
def test_seed_reproducible_and_batch_size_independent(backend):
    model, conv = build_cnn(backend, seed=0)
    rng = np.random.default_rng(4)
    x = conv(rng.standard_normal((3, 3, 8, 8)).astype(np.float32))
    bg = conv(rng.standard_normal((5, 3, 8, 8)).astype(np.float32))
    eg = bxg.BA("EG", background=bg, num_samples=8)
    a = eg.attribute(model, x, [0, 1, 2], seed=7)
    b = eg.attribute(model, x, [0, 1, 2], seed=7, batch_size=5)
    c = eg.attribute(model, x, [0, 1, 2], seed=8)
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)
    assert not np.allclose(a, c)


@pytest.mark.parametrize("backend", BACKENDS)
def test_background_errors(backend):
    model, conv = build_cnn(backend, seed=0)
    x = conv(np.zeros((2, 3, 8, 8), np.float32))
    with pytest.raises(bxg.InputError, match="background"):
        bxg.attribute(model, x, [0, 1], method="EG")
    with pytest.raises(bxg.InputError, match="background has shape"):
        bxg.attribute(model, x, [0, 1], method="EG", background=np.zeros((3, 5), np.float32))
    with pytest.raises(bxg.InputError, match="NaN"):
        bxg.attribute(model, x, [0, 1], method="EG", background=np.full_like(x, np.nan))
    with pytest.raises(bxg.InputError, match="num_samples"):
        bxg.BA("EG", num_samples=0)


@needs_torch
def test_tensor_background_and_model_unchanged():
    import torch

    model, _ = build_cnn("torch", seed=0)
    model.train()
    model[0].weight.requires_grad_(False)
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = torch.randn(2, 3, 8, 8)
    bg = torch.randn(4, 3, 8, 8, dtype=torch.float64)
    attr = bxg.attribute(model, x, [0, 1], method="expected_gradients", background=bg, num_samples=4, seed=0)
    assert isinstance(attr, torch.Tensor) and attr.shape == x.shape and attr.dtype == x.dtype
    assert model.training and not model[0].weight.requires_grad and model[3].weight.requires_grad
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    with pytest.raises(bxg.InputError):
        bxg.attribute(model, x, [0, 1], method="EG", background=np.zeros((2, 5)), num_samples=2)
    assert model.training


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_reference_is_integrated_gradients(backend):
    """With a one-row background, EG is IG from that row with a Monte Carlo path point.

    Oracle: IG with 128 Gauss-Legendre nodes (a deterministic quadrature) on a smooth
    model whose gradient changes along the path. Input x Gradient at x (the path
    point pinned to alpha = 1) is far from it, so the test detects a wrong alpha.
    """
    model, conv = build_cnn(backend, seed=3, bias=True, activation="softplus")
    rng = np.random.default_rng(5)
    x = conv(2.0 * rng.standard_normal((2, 3, 8, 8)).astype(np.float32))
    r = conv(rng.standard_normal((1, 3, 8, 8)).astype(np.float32))
    labels = np.array([0, 2])
    eg = bxg.attribute(model, x, labels, method="EG", background=r, num_samples=4000, seed=3)
    ig = bxg.attribute(model, x, labels, method="IG", baseline=r, steps=128)
    ixg_at_x = (x - r) * bxg.attribute(model, x, labels, method="SM")

    def rel(a):
        return np.linalg.norm(a - ig) / np.linalg.norm(ig)

    assert rel(eg) < 0.03, rel(eg)
    assert rel(ixg_at_x) > 0.1, rel(ixg_at_x)


@pytest.mark.parametrize("backend", BACKENDS)
def test_examples_draw_their_own_references_and_path_points(backend):
    """Identical examples get different single-draw estimates (no shared reference or alpha,
    unlike the reference code, spec 3.5) that agree in expectation."""
    model, conv = build_cnn(backend, seed=2, bias=True, activation="softplus")
    rng = np.random.default_rng(6)
    x = conv(np.repeat(rng.standard_normal((1, 3, 8, 8)).astype(np.float32), 2, axis=0))
    bg = conv(rng.standard_normal((6, 3, 8, 8)).astype(np.float32))
    one = bxg.attribute(model, x, [1, 1], method="EG", background=bg, num_samples=1, seed=0)
    assert not np.allclose(one[0], one[1])
    many = bxg.attribute(model, x, [1, 1], method="EG", background=bg, num_samples=3000, seed=0)
    assert np.linalg.norm(many[0] - many[1]) < 0.1 * np.linalg.norm(many[0])


@needs_torch
def test_seed_gives_the_same_draws_for_every_dtype():
    """The draws are made in float32: float64 inputs and models reproduce the float32 result."""
    import copy

    model, _ = build_cnn("torch", seed=0)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((2, 3, 8, 8)).astype(np.float32)
    bg = rng.standard_normal((7, 3, 8, 8)).astype(np.float32)
    a32 = bxg.attribute(model, x, [0, 1], method="EG", background=bg, num_samples=16, seed=4)
    a64 = bxg.attribute(copy.deepcopy(model).double(), x.astype(np.float64), [0, 1], method="EG",
                        background=bg, num_samples=16, seed=4)
    assert a64.dtype == np.float64
    np.testing.assert_allclose(a64, a32, rtol=1e-4, atol=1e-5 * np.abs(a32).max())
