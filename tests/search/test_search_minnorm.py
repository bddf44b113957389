"""The minimum-norm boundary search: exact linear cases, the attack protocol, refinement, bad input."""

import warnings

import numpy as np
import pytest

import boundary_xg as bxg
from boundary_xg.errors import InputError
from boundary_xg.search.base import FAR, finish_last_iterate, keep_closer
from boundary_xg.search.pipeline import BoundaryNotFoundWarning
from boundary_xg.search._ops import margin, misclassified, model_logits
from boundary_xg.testing import models as tm
from boundary_xg.testing.oracles import linear_box_distance
from conftest import BACKENDS, needs_torch

D, K, N = 20, 3, 24


def _linear_case(backend, box, seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((K, D)).astype(np.float32)
    b = (rng.standard_normal(K) * 0.1).astype(np.float32)
    x = rng.standard_normal((N, D)) * 0.3
    x = (np.clip(x, *box) if box else x).astype(np.float32)
    y = (x.astype(np.float64) @ W.T + b).argmax(1)
    w = {"weight": W, "bias": b}
    model = tm.torch_linear(w) if backend == "torch" else tm.keras_linear(w)
    return model, W, b, x, y


def test_oracle_matches_scipy():
    """The box-constrained linear oracle against a generic constrained solver (SLSQP)."""
    from scipy.optimize import minimize

    rng = np.random.default_rng(1)
    W, b = rng.standard_normal((K, 6)), rng.standard_normal(K) * 0.1
    x = np.clip(rng.standard_normal((5, 6)) * 0.3, -0.25, 0.25)
    y = (x @ W.T + b).argmax(1)
    ours = linear_box_distance(W, b, x, y, -0.25, 0.25)
    for i in range(len(x)):
        best = np.inf
        for j in range(K):
            if j == y[i]:
                continue
            a, need = W[j] - W[y[i]], (W[y[i]] - W[j]) @ x[i] + b[y[i]] - b[j]
            res = minimize(lambda d: d @ d, np.zeros(6), jac=lambda d: 2 * d, method="SLSQP",
                           bounds=[(-0.25 - v, 0.25 - v) for v in x[i]],
                           constraints=[{"type": "ineq", "fun": lambda d, a=a, need=need: a @ d - need,
                                             "jac": lambda d, a=a: a}],
                           options={"ftol": 1e-14, "maxiter": 500})
            if res.success and a @ res.x >= need - 1e-9:
                best = min(best, np.sqrt(res.fun))
        np.testing.assert_allclose(ours[i], best, rtol=1e-5)


_CASES = [("torch", (-0.5, 0.5)), ("torch", (-3.0, 3.0)), ("torch", None), ("tensorflow", (-0.5, 0.5)),
          ("tensorflow", None)]


@pytest.mark.parametrize("backend,box", [pytest.param(b, box, marks=m.marks) for b, box in _CASES
                                         for m in BACKENDS if m.values[0] == b])
def test_default_search_exact_on_linear_models(backend, box):
    """The default pipeline reaches the exact box-constrained distance of a linear model."""
    model, W, b, x, y = _linear_case(backend, box)
    exact = linear_box_distance(W, b, x, y, *(box or (-np.inf, np.inf)))
    assert np.all(np.isfinite(exact))
    res = bxg.find_boundary(model, x, y, bounds=box)
    assert res.found.all()
    ratio = np.asarray(res.distances, np.float64) / exact
    assert ratio.min() >= 1 - 1e-4  # never closer than the exact minimum
    assert np.median(ratio) <= 1.005 and ratio.max() <= 1.01
    pts = np.asarray(res.points, np.float64)
    assert np.all((pts @ W.T + b).argmax(1) != y)  # misclassified by the NumPy model
    if box:
        assert pts.min() >= box[0] - 1e-6 and pts.max() <= box[1] + 1e-6
    # model gradient rows: forward+backward plus backward-only (DeepFool's classes through a
    # shared forward in PyTorch; none in TensorFlow)
    assert res.passes + res.backwards <= 100
    assert res.backwards == 0 or backend == "torch"


@pytest.mark.parametrize("backend", [pytest.param(m.values[0], marks=m.marks) for m in BACKENDS])
def test_default_preset_is_deepfool_on_six_classes_then_fmn(backend):
    """The default pipeline is the documented one (``DeepFool(steps=3, candidates=6)`` then
    ``FMN(steps=70, init="best", alpha=(0.3, 0.01))``, refined) and, on a 10-class model,
    stays within its model-row budget: 3 DeepFool steps of 6 rows and 70 FMN steps."""
    w = tm.linear_weights(seed=3, features=D, classes=10)
    model = tm.torch_linear(w) if backend == "torch" else tm.keras_linear(w)
    x = (np.random.default_rng(3).standard_normal((12, D)) * 0.3).astype(np.float32)
    default = bxg.find_boundary(model, x, bounds=(-1.0, 1.0))
    spelled = bxg.find_boundary(model, x, bounds=(-1.0, 1.0), attacks=[
        bxg.DeepFool(steps=3, candidates=6), bxg.FMN(steps=70, init="best", alpha=(0.3, 0.01))])
    np.testing.assert_array_equal(np.asarray(default.distances), np.asarray(spelled.distances))
    # the same rows run (more classes would give the same distances here, not the same rows)
    assert (default.passes, default.backwards, default.forwards) == (
        spelled.passes, spelled.backwards, spelled.forwards)
    assert default.found.all()
    assert default.passes + default.backwards <= 3 * 6 + 70
    # the 6 classes with the largest logits other than the label need one forward at x
    assert default.forwards >= 1


@needs_torch
def test_reference_preset_is_pgd_cw_without_refinement():
    model, W, b, x, y = _linear_case("torch", (-3.0, 3.0))
    a = bxg.find_boundary(model, x, y, attacks="reference", bounds=(-3, 3))
    b_ = bxg.find_boundary(model, x, y, attacks=[bxg.PGD(), bxg.CW()], bounds=(-3, 3), refine=0)
    np.testing.assert_array_equal(np.asarray(a.distances), np.asarray(b_.distances))
    assert a.passes == b_.passes


class GradientWalk:
    """A tiny attack written against the protocol only: fixed-length steps down the margin."""

    steps = 40
    check = 4
    norm = "l2"

    def __init__(self, step_size):
        self.step_size = step_size

    def jobs(self):
        return 1

    def start(self, ctx, x, labels, prior, prior_d):
        B = ctx.B
        return dict(z=x + B.zeros_like(x), x0=x, y=labels, oh=B.one_hot(labels, ctx.num_classes, like=x),
                    best=x, best_d=B.zeros_like(prior_d) + FAR)

    def step(self, B, f, state, lo, hi, proto):
        z = state["z"]

        def fn(u):
            logits = model_logits(B, f, u, proto)
            return margin(B, logits, state["oh"]), logits

        _, logits, g = B.value_aux_and_grad(fn, z)
        best, best_d = keep_closer(B, z, state["x0"], misclassified(B, logits, state["y"]),
                                   state["best"], state["best_d"])
        gn = B.sqrt(B.sum(g * g, axis=1))
        new = B.maximum(B.minimum(z - g * B.reshape(self.step_size / gn, (-1, 1)), hi), lo)
        return dict(state, z=new, best=best, best_d=best_d)

    def done(self, ctx, state):
        return state["best_d"] < FAR

    def finish(self, ctx, state):
        return finish_last_iterate(ctx, state)


@pytest.mark.parametrize("backend", BACKENDS)
def test_custom_attack_runs_through_the_pool(backend):
    """An attack defined here runs through the shared row pool (refilled: batch_size < N) and is refined."""
    model, W, b, x, y = _linear_case(backend, None)
    exact = linear_box_distance(W, b, x, y)
    res = bxg.find_boundary(model, x, y, attacks=[GradientWalk(0.05)], batch_size=5, refine=0)
    assert res.found.all()
    pts = np.asarray(res.points, np.float64)
    assert np.all((pts @ W.T + b).argmax(1) != y)
    # done rows leave at the checks (every 4 steps): far fewer passes than 40 per input
    assert res.passes < 40
    # the first misclassified iterate is at most one step past the boundary along the walk
    assert np.all(np.asarray(res.distances) >= exact - 1e-5)
    refined = bxg.find_boundary(model, x, y, attacks=[GradientWalk(0.05)], batch_size=5)
    assert np.all(np.asarray(refined.distances) <= np.asarray(res.distances) + 1e-6)
    assert np.all((np.asarray(refined.points, np.float64) @ W.T + b).argmax(1) != y)
    # the walk follows a constant direction on a linear model: refinement lands on the boundary
    # where that direction is the closest class's normal
    assert np.median(np.asarray(refined.distances) / exact) < np.median(np.asarray(res.distances) / exact)


@needs_torch
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_default_search_on_16_bit_model(dtype):
    import torch

    model, W, b, x, y = _linear_case("torch", (-3.0, 3.0))
    model = model.to(getattr(torch, dtype))
    xt = torch.tensor(x).to(getattr(torch, dtype))
    exact = linear_box_distance(W, b, x, y, -3, 3)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", BoundaryNotFoundWarning)
        res = bxg.find_boundary(model, xt, torch.tensor(y), bounds=(-3, 3))
    found = res.found.numpy()
    assert res.points.dtype == xt.dtype
    # one input lies 0.002 from the boundary, less than bfloat16's spacing near its
    # coordinates (0.002 at 0.25-0.5): the float32 iterates round back to x there
    assert found[exact > 0.01].all()
    with torch.no_grad():
        assert bool((model(res.points[found]).argmax(1) != torch.tensor(y)[found]).all())
    assert np.median(res.distances.float().numpy()[found] / exact[found]) < 1.05


@needs_torch
def test_demo_distances_not_on_a_radius_grid():
    """The default search returns boundary points, not PGD's radii (0.30, 0.50, 0.70, ...)."""
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    x, y = load_digit_test_set()
    model = load_digit_model("torch", "regular")
    res = bxg.find_boundary(model, x[:12], y[:12], bounds=(0, 1))
    d = np.asarray(res.distances)[np.asarray(res.found)]
    radii = np.array(bxg.PGD().eps)
    assert d.size >= 10
    assert np.min(np.abs(d[:, None] - radii[None, :])) > 1e-4
    assert len(np.unique(np.round(d, 4))) == d.size


@needs_torch
def test_bad_input_names_the_argument():
    model, W, b, x, y = _linear_case("torch", None)
    with pytest.raises(InputError, match=r"attacks\[1\]"):
        bxg.find_boundary(model, x, y, attacks=[bxg.FMN(steps=5), object()])
    with pytest.raises(InputError, match="preset"):
        bxg.find_boundary(model, x, y, attacks="fastest")
    with pytest.raises(InputError, match="refine"):
        bxg.find_boundary(model, x, y, refine=-1)
    with pytest.raises(InputError, match="bounds"):
        bxg.find_boundary(model, x, y, bounds=(-0.1, 0.1))

    class BadNorm(GradientWalk):
        norm = "l1"

    with pytest.raises(InputError, match=r"attacks\[0\] has norm"):
        bxg.find_boundary(model, x, y, attacks=[BadNorm(0.1)])

    class BadSteps(GradientWalk):
        steps = -3

    with pytest.raises(InputError, match=r"attacks\[0\] has steps"):
        bxg.find_boundary(model, x, y, attacks=[BadSteps(0.1)])
    for bad in (dict(steps=-1), dict(steps=0), dict(candidates=0), dict(overshoot=-0.1), dict(norm="linf")):
        with pytest.raises(InputError):
            bxg.DeepFool(**bad)
    for bad in (dict(steps=-1), dict(alpha=(0, 0.1)), dict(gamma=(0.5, 2.0)), dict(init="y"), dict(norm="l1"),
                dict(alpha=1.0)):
        with pytest.raises(InputError):
            bxg.FMN(**bad)
    # nothing changed on the caller's side
    x0 = x.copy()
    bxg.find_boundary(model, x, y, attacks=[bxg.FMN(steps=3)])
    np.testing.assert_array_equal(x, x0)


def test_halfspace_projection_numpy():
    """The projection composite against the NumPy oracle's minimiser (a NumPy backend-free check)."""
    torch = pytest.importorskip("torch")
    from boundary_xg.backends import get_backend
    from boundary_xg.search._box import halfspace_projection

    B = get_backend("torch")
    rng = np.random.default_rng(3)
    a = rng.standard_normal((6, 9))
    x = rng.uniform(-1, 1, (6, 9))
    need = np.abs(rng.standard_normal(6)) * 0.5
    need[-1] = 100.0  # infeasible in the box
    lo, hi = -1 - x, 1 - x
    d, feas = halfspace_projection(B, torch.tensor(a), torch.tensor(need), torch.tensor(lo), torch.tensor(hi))
    d, feas = d.numpy(), feas.numpy()
    assert feas[:-1].all() and not feas[-1]
    assert np.all(d >= lo - 1e-9) and np.all(d <= hi + 1e-9)
    assert np.all(np.sum(a * d, 1)[:-1] >= need[:-1] * (1 - 1e-6))
    # the same minimum as the oracle's: a two-class linear model whose margin is `need` at 0
    for i in range(5):
        W = np.stack([np.zeros(9), a[i]])
        bias = np.array([need[i], 0.0])
        exact = linear_box_distance(W, bias, np.zeros((1, 9)), np.array([0]), lo[i], hi[i])
        np.testing.assert_allclose(np.linalg.norm(d[i]), exact[0], rtol=1e-5)  # the 1e-6 push past the level


def test_halfspace_projection_classes_broadcast_bounds_at_zero():
    """``lead=2`` (classes x rows, bounds per row) equals the projection of each row on its own,
    with coordinates on the box (a bound at 0) and zero gradients: finite, feasible, exact."""
    torch = pytest.importorskip("torch")
    from boundary_xg.backends import get_backend
    from boundary_xg.search._box import halfspace_projection

    B = get_backend("torch")
    rng = np.random.default_rng(5)
    k, R, n = 3, 4, 10
    a = rng.standard_normal((k, R, n)).astype(np.float32)
    a[:, :, :3] = 0.0  # no gradient there
    x = rng.uniform(0, 1, (R, n)).astype(np.float32)
    x[:, 2:6] = 0.0  # on the lower bound
    x[:, 6:8] = 1.0  # on the upper bound
    lo, hi = -x, 1 - x
    need = np.abs(rng.standard_normal((k, R))).astype(np.float32) * 0.2
    d, feas = halfspace_projection(B, torch.tensor(a), torch.tensor(need), torch.tensor(lo), torch.tensor(hi), lead=2)
    d, feas = d.numpy(), feas.numpy()
    assert d.shape == (k, R, n) and feas.shape == (k, R) and np.isfinite(d).all()
    for j in range(k):
        for r in range(R):
            if not feas[j, r]:
                continue
            assert np.all(d[j, r] >= lo[r]) and np.all(d[j, r] <= hi[r]) and np.all(d[j, r, :3] == 0)
            W = np.stack([np.zeros(n), a[j, r]]).astype(np.float64)
            exact = linear_box_distance(W, np.array([need[j, r], 0.0]), np.zeros((1, n)), np.array([0]), lo[r], hi[r])
            np.testing.assert_allclose(np.linalg.norm(d[j, r]), exact[0], rtol=1e-5)


@needs_torch
def test_seed_api_pipeline_is_the_reference_preset():
    """``get_boundary_points`` with the reference's ``PIPELINE`` runs the reference preset (no refinement)."""
    model, W, b, x, y = _linear_case("torch", (-3.0, 3.0))
    legacy = bxg.get_boundary_points(model, x, y, clamp=(-3, 3), batch_size=None)
    ref = bxg.find_boundary(model, x, y, attacks="reference", bounds=(-3, 3))
    np.testing.assert_array_equal(np.asarray(legacy.distances), np.asarray(ref.distances))
