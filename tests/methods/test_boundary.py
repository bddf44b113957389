"""Boundary attributions: oracles are autograd at the point, completeness, and the
same NumPy weights in both frameworks given the same boundary points."""

import numpy as np
import pytest

import boundary_xg as bxg
from boundary_xg.errors import InputError
from boundary_xg.methods.registry import _LOOKUP
from conftest import BACKENDS, build_cnn, needs_both, needs_torch, to_nchw

HAS_DEEPLIFT = "deeplift" in _LOOKUP
needs_deeplift = pytest.mark.skipif(
    not HAS_DEEPLIFT, reason="DeepLIFT (methods/deeplift.py) is not registered yet; BDT builds on it")

ATTACKS = [bxg.PGD(eps=[0.25, 0.5, 1.0, 2.0], steps=10), bxg.CW(steps=20, step_size=0.05, binary_search_steps=3)]


def _logits(model, backend, z):
    if backend == "torch":
        import torch

        with torch.no_grad():
            return model(torch.from_numpy(z)).numpy()
    return np.asarray(model(z, training=False))


def _logit(model, backend, z, y):
    return _logits(model, backend, z)[np.arange(len(y)), y]


@pytest.mark.parametrize("backend", BACKENDS)
def test_big_completeness_from_the_boundary_point(backend, images):
    model, conv = build_cnn(backend, activation="softplus")
    x = conv(images)
    y = np.array([np.argmax(_logits(model, backend, x[i:i + 1])) for i in range(4)])
    attacks = [bxg.PGD(eps=[0.5, 1.0, 2.0, 4.0, 8.0], steps=10)]
    attr, gap, dist = bxg.BA("BIG", steps=64, attacks=attacks).attribute(
        model, x, y, return_gap=True, return_dis=True)
    res = bxg.find_boundary(model, x, y, attacks=attacks, seed=0)
    np.testing.assert_allclose(dist, res.distances, rtol=1e-5)
    found = res.found
    assert found.sum() >= 3
    expected = _logit(model, backend, x, y) - _logit(model, backend, res.points, y)
    # rtol: the 64-node rule's own error on these paths (length 4) reaches ~1.5e-3 for some
    # random boundary points; the check is completeness, not the draw
    np.testing.assert_allclose(attr.reshape(4, -1).sum(1)[found], expected[found], rtol=3e-3, atol=1e-4)
    # the returned gap is that completeness residual (bounded above through rtol)
    residual = attr.reshape(4, -1).sum(1) - expected
    np.testing.assert_allclose(gap[found], residual[found], atol=2e-5)


@needs_torch
def test_bsm_is_the_gradient_at_the_boundary_point(images):
    import torch

    model, _ = build_cnn("torch")
    pts = images + 0.3 * np.random.default_rng(5).standard_normal(images.shape).astype(np.float32)
    y = np.array([1, 0, 3, 2])
    attr = bxg.BA("SM", use_boundary=True).attribute(model, images, y, boundary_points=pts)
    z = torch.from_numpy(pts).requires_grad_(True)
    model(z)[torch.arange(4), torch.from_numpy(y)].sum().backward()
    np.testing.assert_allclose(attr, z.grad.numpy(), rtol=1e-5, atol=1e-6)


@needs_both
@pytest.mark.parametrize("method, opts", [
    ("BSM", {}), ("BIG", {"steps": 16}), ("BSG", {"num_samples": 4, "sigma_abs": 0.0}),
    pytest.param("BDT", {}, marks=needs_deeplift),
])
def test_backends_agree_given_the_same_points(method, opts, images):
    pts = images + 0.4 * np.random.default_rng(7).standard_normal(images.shape).astype(np.float32)
    y = np.array([0, 1, 2, 3])
    out = {}
    for backend in ("torch", "tensorflow"):
        model, conv = build_cnn(backend, seed=2)
        a, d = bxg.BA(method, **opts).attribute(model, conv(images), y, boundary_points=conv(pts),
                                                return_dis=True)
        out[backend] = (to_nchw(backend, a), d)
    np.testing.assert_allclose(out["tensorflow"][0], out["torch"][0], rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(out["tensorflow"][1], out["torch"][1], rtol=1e-5)


def test_use_boundary_maps_names():
    assert bxg.BA("IG", use_boundary=True).name == "BIG"
    assert bxg.BA("BIG", use_boundary=False).name == "IG"
    assert bxg.BA("Boundary-based_SG").name == "BSG"
    assert bxg.BA("bsm", use_boundary=False).name == "SM"
    with pytest.raises(InputError, match="no boundary variant"):
        bxg.BA("XG", use_boundary=True)


@pytest.mark.parametrize("backend", BACKENDS)
def test_boundary_points_shape_is_checked_and_model_unchanged(backend, images):
    model, conv = build_cnn(backend)
    x = conv(images)
    with pytest.raises(InputError, match="boundary_points"):
        bxg.BA("BIG").attribute(model, x, None, boundary_points=x[:2])
    if backend == "torch":
        import torch

        before = {k: v.clone() for k, v in model.state_dict().items()}
        model.train()
        bxg.BA("BSM", attacks=ATTACKS[:1]).attribute(model, x, None)
        assert model.training and all(p.grad is None for p in model.parameters())
        assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
