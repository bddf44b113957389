"""The boundary search: analytic oracle (linear classifier), invariants, errors, backends."""

import warnings

import numpy as np
import pytest

import boundary_xg as bxg
from boundary_xg.errors import InputError
from boundary_xg.search.pipeline import AlreadyMisclassifiedWarning, BoundaryNotFoundWarning
from boundary_xg.testing import models as tm
from conftest import BACKENDS, build_cnn, needs_both, needs_torch

FEATURES, CLASSES = 12, 4


def _linear(backend, seed=0):
    w = tm.linear_weights(seed, features=FEATURES, classes=CLASSES)
    model = tm.torch_linear(w) if backend == "torch" else tm.keras_linear(w)
    return model, w["weight"].astype(np.float64), w["bias"].astype(np.float64)


def _exact_distance(x, y, W, b):
    """Closed form: distance to the nearest boundary of a linear classifier, no box."""
    return np.array([
        min((xi @ (W[yi] - W[j]) + b[yi] - b[j]) / np.linalg.norm(W[yi] - W[j])
            for j in range(W.shape[0]) if j != yi)
        for xi, yi in zip(x.astype(np.float64), y)
    ])


def _data(n=8, seed=0):
    return np.random.default_rng(seed).standard_normal((n, FEATURES)).astype(np.float32)


@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_distance_matches_closed_form(backend):
    model, W, b = _linear(backend)
    x = _data()
    y = (x @ W.T + b).argmax(1)
    res = bxg.find_boundary(model, x, y, attacks=[
        bxg.PGD(eps=[0.25, 0.5, 1, 2, 4], steps=20), bxg.CW(steps=100, step_size=0.05)])
    exact = _exact_distance(x, y, W, b)
    assert res.found.all()
    np.testing.assert_allclose(res.distances, exact, rtol=0.05)
    # every found point is misclassified (NumPy oracle of the same weights)
    assert np.all((res.points @ W.T + b).argmax(1) != y)
    np.testing.assert_allclose(res.distances, np.linalg.norm(res.points - x, axis=1), rtol=1e-5)


@pytest.mark.filterwarnings("ignore::boundary_xg.search.pipeline.BoundaryNotFoundWarning")
@pytest.mark.parametrize("norm", ["l2", "linf"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_pgd_points_within_eps_and_bounds(backend, norm, images):
    model, conv = build_cnn(backend)
    x = conv(np.clip(images, -1.5, 1.5))
    lo = np.array([-1.6, -1.7, -1.8], np.float32)
    hi = np.array([1.6, 1.7, 1.8], np.float32)
    shape = (3, 1, 1) if backend == "torch" else (3,)
    eps = 0.8 if norm == "l2" else 0.1
    res = bxg.find_boundary(model, x, None, attacks=[bxg.PGD(eps=[eps], steps=10, norm=norm)],
                            bounds=(lo.reshape(shape), hi.reshape(shape)), progress=False)
    d = (res.points - x).reshape(len(x), -1)
    size = np.linalg.norm(d, axis=1) if norm == "l2" else np.abs(d).max(axis=1)
    assert np.all(size <= eps * (1 + 1e-5))
    assert np.all(res.points >= lo.reshape(shape) - 1e-6) and np.all(res.points <= hi.reshape(shape) + 1e-6)
    assert res.found.any()


@pytest.mark.parametrize("backend", BACKENDS)
def test_not_found_and_already_misclassified_are_reported(backend):
    model, W, b = _linear(backend)
    x = _data(4)
    y = (x @ W.T + b).argmax(1)
    y[0] = (y[0] + 1) % CLASSES  # the model already disagrees with this label
    with pytest.warns(AlreadyMisclassifiedWarning, match="1 of 4"):
        with pytest.warns(BoundaryNotFoundWarning, match="3 of 4"):
            res = bxg.find_boundary(model, x, y, attacks=[bxg.PGD(eps=[1e-3], steps=2)])
    assert res.found.tolist() == [True, False, False, False]
    assert res.distances[0] == 0 and np.all(np.isinf(res.distances[1:]))
    np.testing.assert_array_equal(res.points, x)


@pytest.mark.parametrize("kwargs, match", [
    (dict(eps=[-0.1, 0.2]), "eps"),
    (dict(eps=[0.5, 0.2]), "increasing"),
    (dict(eps=0.0), "eps"),
    (dict(norm="l3"), "norm"),
    (dict(steps=0), "steps"),
    (dict(step_size=-1.0), "step_size"),
])
def test_pgd_rejects_bad_settings(kwargs, match):
    with pytest.raises(InputError, match=match):
        bxg.PGD(**kwargs)


def test_cw_rejects_bad_settings():
    with pytest.raises(InputError, match="steps"):
        bxg.CW(steps=0)
    with pytest.raises(InputError, match="step_size"):
        bxg.CW(step_size=0)


@needs_torch
@pytest.mark.filterwarnings("ignore::boundary_xg.search.pipeline.BoundaryNotFoundWarning")
def test_bounds_must_contain_x_and_model_unchanged():
    import torch

    model, W, b = _linear("torch")
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    x = _data(3)
    with pytest.raises(InputError, match="do not contain x"):
        bxg.find_boundary(model, x, None, bounds=(-0.5, 0.5))
    with pytest.raises(InputError, match="attacks"):
        bxg.find_boundary(model, x, None, attacks=["pgd"])
    bxg.find_boundary(model, x, None,
                      attacks=[bxg.PGD(eps=[1.0, 2.0], steps=5), bxg.CW(steps=5, binary_search_steps=2)])
    assert model.training
    assert all(p.requires_grad for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert all(p.grad is None for p in model.parameters())


def _search_context(B, f, x, classes, batch_size, lo=None, hi=None):
    """A search context over the model function ``f`` (unbounded by default), as the pipeline builds it."""
    from boundary_xg.search._ops import Cost
    from boundary_xg.search.base import SearchContext

    inf = np.full((1,) * len(B.shape(x)), np.inf, np.float32)
    lo = B.asarray(-inf, like=x) if lo is None else lo
    hi = B.asarray(inf, like=x) if hi is None else hi
    return SearchContext(B, f, lo, hi, x[:1], classes, B.rng(0, x), Cost(), batch_size)


@needs_torch
def test_pgd_jobs_through_the_shared_runner():
    """PGD's radius jobs through the shared runner at any pool size: misclassified points, the same examples found."""
    import torch

    from boundary_xg.backends import get_backend
    from boundary_xg.search.base import FAR, run_attack

    model, W, b = _linear("torch")
    B = get_backend("torch")
    x = torch.from_numpy(_data(8))
    y = torch.from_numpy((x.numpy() @ W.T + b).argmax(1))
    atk = bxg.PGD(eps=[0.5, 1, 2, 4], steps=10)
    out = {}
    with B.session(model) as f:
        for bs in (1, 3, 8):
            ctx = _search_context(B, f, x, CLASSES, bs)
            far = torch.full((8,), FAR)
            pts, d = run_attack(ctx, atk, x, y, x, far)
            pts, found = pts.detach().numpy(), (d < FAR).numpy()
            assert np.all((pts[found] @ W.T + b).argmax(1) != y.numpy()[found])
            np.testing.assert_array_equal(pts[~found], x.numpy()[~found])
            np.testing.assert_allclose(d.numpy()[found], np.linalg.norm(pts - x.numpy(), axis=1)[found], rtol=1e-5)
            # at most one job per radius and example, one pass per row and step
            assert ctx.cost.passes <= 8 * 4 * 10
            out[bs] = found
    assert out[1].all() and out[3].all() and out[8].all()


@needs_both
def test_torch_and_tensorflow_find_similar_distances(images):
    ds = {}
    for backend in ("torch", "tensorflow"):
        model, conv = build_cnn(backend, seed=3)
        res = bxg.find_boundary(model, conv(images), None, attacks=[
            bxg.PGD(eps=[0.25, 0.5, 1.0, 2.0], steps=20), bxg.CW(steps=50, step_size=0.05, binary_search_steps=6)],
            bounds=(-4.0, 4.0), seed=0)
        assert res.found.all()
        ds[backend] = res.distances
    np.testing.assert_allclose(ds["tensorflow"], ds["torch"], rtol=0.10)


@pytest.mark.parametrize("backend", BACKENDS)
def test_cw_informed_constant_matches_closed_form(backend):
    """CW alone with its default informed constant and early stops: the linear oracle holds."""
    model, W, b = _linear(backend)
    x = _data()
    y = (x @ W.T + b).argmax(1)
    res = bxg.find_boundary(model, x, y, attacks=[bxg.CW(step_size=0.05, steps=200)])
    assert res.found.all()
    np.testing.assert_allclose(res.distances, _exact_distance(x, y, W, b), rtol=0.05)
    assert np.all((res.points @ W.T + b).argmax(1) != y)
    ref = bxg.find_boundary(model, x, y, attacks=[
        bxg.CW(step_size=0.05, steps=200, initial_const=1e-3, const_rtol=0, dist_rtol=0)])
    assert res.passes < ref.passes / 2  # far fewer binary-search steps


@needs_torch
def test_cw_warm_start_never_returns_a_farther_point():
    """With a far misclassified prior point (an earlier attack's), CW's points are misclassified, never farther,
    near the oracle."""
    import torch

    from boundary_xg.backends import get_backend
    from boundary_xg.search.base import FAR, run_attack

    model, W, b = _linear("torch")
    B = get_backend("torch")
    xn = _data(8)
    yn = (xn @ W.T + b).argmax(1)
    exact = _exact_distance(xn, yn, W, b)
    # a misclassified start far beyond the boundary: the oracle's direction, 3x the distance
    own = W[yn] - W[[np.argmin([(xi @ (W[yi] - W[j]) + b[yi] - b[j]) / np.linalg.norm(W[yi] - W[j])
                                if j != yi else np.inf for j in range(CLASSES)]) for xi, yi in zip(xn, yn)]]
    far = xn - 3 * exact[:, None] * own / np.linalg.norm(own, axis=1, keepdims=True)
    assert np.all((far @ W.T + b).argmax(1) != yn)
    x, y = torch.from_numpy(xn), torch.from_numpy(yn)
    prior = torch.from_numpy(far.astype(np.float32))
    with B.session(model) as f:
        ctx = _search_context(B, f, x, CLASSES, 8)
        pts, d = run_attack(ctx, bxg.CW(step_size=0.05, steps=200), x, y, prior, (prior - x).norm(dim=1))
    pts = pts.detach().numpy()
    d_np = np.linalg.norm(pts - xn, axis=1)
    assert bool((d < FAR).all())
    assert np.all(d_np <= 3 * exact * (1 + 1e-5))
    assert np.all((pts @ W.T + b).argmax(1) != yn)
    np.testing.assert_allclose(d_np, exact, rtol=0.05)


@pytest.mark.filterwarnings("ignore::boundary_xg.search.pipeline.BoundaryNotFoundWarning")
@pytest.mark.parametrize("backend", BACKENDS)
def test_radius_bisection_agrees_with_increasing_order(backend):
    """On a linear model (success monotone in the radius) both orders find the same examples."""
    model, W, b = _linear(backend)
    x = _data(8)
    y = (x @ W.T + b).argmax(1)
    exact = _exact_distance(x, y, W, b)
    eps = [0.05, 0.1, 0.2, 0.4, 0.8, 1.6, 3.2]
    out = {}
    for order in ("bisect", "increasing"):
        res = bxg.find_boundary(model, x, y, attacks=[bxg.PGD(eps=eps, steps=20, radius_search=order)])
        f = res.found
        assert np.all((res.points[f] @ W.T + b).argmax(1) != y[f])
        assert np.all(res.distances[f] >= exact[f] * (1 - 1e-4))  # never closer than the boundary
        out[order] = res
    np.testing.assert_array_equal(out["bisect"].found, out["increasing"].found)
    assert out["bisect"].passes <= out["increasing"].passes


def test_new_settings_are_checked():
    with pytest.raises(InputError, match="radius_search"):
        bxg.PGD(radius_search="random")
    with pytest.raises(InputError, match="const_rtol"):
        bxg.CW(const_rtol=-1)
    with pytest.raises(InputError, match="initial_const"):
        bxg.CW(initial_const=0)


@pytest.mark.parametrize("backend", BACKENDS)
def test_small_batches_refilled_are_as_good_as_one_batch(backend):
    """batch_size < N (rows of finished work refilled from the queue): all found, misclassified, near the oracle."""
    model, W, b = _linear(backend)
    x = _data(10)
    y = (x @ W.T + b).argmax(1)
    exact = _exact_distance(x, y, W, b)
    attacks = [bxg.PGD(eps=[0.25, 0.5, 1, 2, 4], steps=20), bxg.CW(steps=100, step_size=0.05, abort_early=False)]
    one = bxg.find_boundary(model, x, y, attacks=attacks)
    for bs in ((1, 4) if backend == "torch" else (4,)):  # TF: each new row count traces again
        res = bxg.find_boundary(model, x, y, attacks=attacks, batch_size=bs)
        assert res.found.all()
        assert np.all((res.points @ W.T + b).argmax(1) != y)
        assert np.all(res.distances >= exact * (1 - 1e-4))  # never closer than the boundary
        np.testing.assert_allclose(res.distances, exact, rtol=0.05)
        np.testing.assert_allclose(res.distances, one.distances, rtol=0.05)
        assert res.passes <= one.passes * 1.1  # rows run, not rows padded


@pytest.mark.parametrize("backend", BACKENDS)
def test_put_rows_is_exact_over_large_sentinels(backend):
    """Replacing a 1e10 sentinel by a small value gives that value (an add of the difference gave 0)."""
    from boundary_xg.backends import get_backend
    from boundary_xg.search._ops import put_rows

    B = get_backend(backend)
    full = B.asarray(np.array([1e10, 1e30, 5.0], np.float32))
    idx = B.asarray(np.array([1, 0]), dtype="int64")
    out = B.to_numpy(put_rows(B, full, idx, B.asarray(np.array([1.5, 3.25], np.float32))))
    np.testing.assert_array_equal(out, np.array([3.25, 1.5, 5.0], np.float32))


@pytest.mark.parametrize("backend", BACKENDS)
def test_one_model_searched_at_two_image_sizes(backend):
    """A fully convolutional model searched at two input sizes: TensorFlow relaxes its traced
    steps over the image shape, and the row selection must still work there."""
    if backend == "torch":
        import torch
        from torch import nn

        torch.manual_seed(0)
        model = nn.Sequential(nn.Conv2d(3, 6, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1), nn.Flatten(),
                              nn.Linear(6, 3)).eval()
        shapes = [(4, 3, 8, 8), (4, 3, 12, 12)]
    else:
        import keras

        keras.utils.set_random_seed(0)
        L = keras.layers
        model = keras.Sequential([keras.Input((None, None, 3)), L.Conv2D(6, 3, padding="same"), L.ReLU(),
                                  L.GlobalAveragePooling2D(), L.Dense(3)])
        shapes = [(4, 8, 8, 3), (4, 12, 12, 3), (4, 10, 10, 3)]
    rng = np.random.default_rng(1)
    for shape in shapes:
        x = rng.uniform(-1, 1, shape).astype(np.float32)
        res = bxg.find_boundary(model, x, attacks=[bxg.PGD(eps=[0.5, 2, 8], steps=10), bxg.CW(steps=20)],
                                bounds=(-3, 3), seed=0, progress=False)
        pred = res.points.reshape(len(x), -1)
        assert res.found.all() and pred.shape[1] == int(np.prod(shape[1:]))


def _numpy_cw(x, y, W, b, const, lo, hi, steps, lr=0.01):
    """Textbook CW-L2 with Adam (float64) on a linear model: the iterates ``x(u_t)`` and their losses."""
    b1, b2, eps = 0.9, 0.999, 1e-8
    bounded = lo is not None
    a, h = ((hi + lo) / 2, (hi - lo) / 2) if bounded else (0.0, 1.0)
    w = np.arctanh(np.clip((x - a) / h, -1, 1) * 0.999999) if bounded else x.copy()
    d, m, v = np.zeros_like(x), np.zeros_like(x), np.zeros_like(x)
    seen, losses = [], []
    for t in range(1, steps + 1):
        xa = np.tanh(w + d) * h + a if bounded else w + d
        seen.append(xa)
        logits = xa @ W.T + b
        other = np.where(np.eye(W.shape[0])[y] > 0, -np.inf, logits).argmax(1)
        mrg = logits[np.arange(len(y)), y] - logits[np.arange(len(y)), other]
        active = mrg > 0
        losses.append(const * np.maximum(mrg, 0) + ((xa - x) ** 2).sum(1))
        gx = const[:, None] * active[:, None] * (W[y] - W[other]) + 2 * (xa - x)
        g = gx * h * (1 - np.tanh(w + d) ** 2) if bounded else gx
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        d = d - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return np.stack(seen), np.stack(losses)


@pytest.mark.parametrize("bounds", ["none", "scalar", "per-feature"])
@pytest.mark.parametrize("backend", BACKENDS)
def test_cw_step_is_textbook_adam(backend, bounds):
    """Our CW iteration (tanh map, hand-written chain rule, folded Adam) against NumPy in float64."""
    import functools

    from boundary_xg.backends import get_backend
    from boundary_xg.search import cw

    w = tm.linear_weights(0, features=FEATURES, classes=CLASSES)
    # one feature's gradient as small as Adam's epsilon (1e-8): its step depends on epsilon
    w["weight"][:, 0] *= 1e-8
    model = tm.torch_linear(w) if backend == "torch" else tm.keras_linear(w)
    W, bias = w["weight"].astype(np.float64), w["bias"].astype(np.float64)
    B = get_backend(backend)
    x_np = _data(5)
    y_np = (x_np @ W.T + bias).argmax(1)
    const_np = np.array([0.5, 1.0, 2.0, 4.0, 8.0])
    bounded = bounds != "none"
    lo_np = np.full((1, FEATURES), -3.0, np.float32)
    hi_np = np.full((1, FEATURES), 3.5, np.float32)
    if bounds == "per-feature":
        lo_np -= np.linspace(0.7, 2.0, FEATURES, dtype=np.float32)
        hi_np += np.linspace(0.5, 0.1, FEATURES, dtype=np.float32)
    want, want_loss = _numpy_cw(x_np.astype(np.float64), y_np, W, bias, const_np,
                                lo_np.astype(np.float64) if bounded else None, hi_np.astype(np.float64), steps=12)
    with B.session(model) as f:
        x = B.asarray(x_np, dtype="float32")
        y = B.asarray(y_np.astype(np.int64), like=B.argmax(B.forward(f, x), axis=1))
        lo = B.asarray(lo_np if bounded else np.full((1, 1), -np.inf, np.float32), like=x)
        hi = B.asarray(hi_np if bounded else np.full((1, 1), np.inf, np.float32), like=x)
        if bounds == "scalar":
            lo, hi = lo[:, :1], hi[:, :1]
        a, h = ((hi + lo) / 2.0, (hi - lo) / 2.0) if bounded else (lo, hi)
        n = B.shape(x)[0]
        ones = B.asarray(np.ones(n, np.float32), like=x)
        state = [cw._start(B, bounded, False, x, ones * 1e30, cw._tanh_space(B, bounded, x, a, h), a, h),
                 B.zeros_like(x), B.zeros_like(x), x, ones * 1e30,
                 B.not_equal(B.zeros_like(y), B.zeros_like(y)), -ones]
        p1 = p2 = ones
        step = functools.partial(cw._cw_step, B, f, bounded)
        onehot = B.one_hot(y, CLASSES, like=x)
        const = B.asarray(const_np.astype(np.float32), like=x)
        for t in range(12):
            got = B.to_numpy(cw._to_input(B, bounded, state[0], a, h))
            # feature 0 only while its step is set by epsilon: later (with bounds, from the
            # second step: x(w) is x up to 1e-6) its gradient is float32 rounding of x(u) - x
            cols = slice(0, None) if t < (1 if bounded else 3) else slice(1, None)
            np.testing.assert_allclose(got[:, cols], want[t][:, cols], rtol=1e-4, atol=1e-5, err_msg=f"iterate {t}")
            out = step(x, a, h, x[:1], y, onehot, const, B.constant([0.0], like=x), B.constant([0.01], like=x),
                       p1, p2, *state)
            np.testing.assert_allclose(B.to_numpy(out[3]), want_loss[t], rtol=1e-4, atol=1e-5,
                                       err_msg=f"loss at iterate {t}")
            state = list(out[:3]) + list(out[4:8])
            p1, p2 = out[8], out[9]


@pytest.mark.parametrize("bounds", [None, (-4.0, 4.0)])
@pytest.mark.parametrize("backend", BACKENDS)
def test_search_leaves_the_input_unchanged(backend, bounds):
    """The search's in-place updates never write into the caller's array or tensor."""
    model, W, b = _linear(backend)
    x = _data(6)
    keep = x.copy()
    attacks = [bxg.PGD(eps=[0.5, 1.0], steps=4), bxg.CW(steps=6, binary_search_steps=2, warm_start=True),
               bxg.CW(steps=6, binary_search_steps=2)]
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        bxg.find_boundary(model, x, None, attacks=attacks, bounds=bounds, progress=False)
        if backend == "torch":
            import torch

            xt = torch.from_numpy(x)
            bxg.find_boundary(model, xt, None, attacks=attacks, bounds=bounds, progress=False)
    np.testing.assert_array_equal(x, keep)


@needs_torch
@pytest.mark.filterwarnings("ignore::boundary_xg.search.pipeline.BoundaryNotFoundWarning")
@pytest.mark.parametrize("dtype", ["float16", "bfloat16"])
def test_attacks_on_16_bit_models(dtype):
    """The attacks keep their state in float32: float16 overflowed CW's second moment at
    large constants, in bfloat16 beta2 ** t rounds to 1 (a zero step), and PGD lost
    examples to the rounding of its iterates (4 of 6 found here, all 6 in float32)."""
    import torch

    w = tm.linear_weights(0, features=FEATURES, classes=CLASSES)
    W, b = w["weight"].astype(np.float64), w["bias"].astype(np.float64)
    model = tm.torch_linear(w).to(getattr(torch, dtype))
    x = _data(6)
    y = (x @ W.T + b).argmax(1)
    exact = _exact_distance(x, y, W, b)
    for attack, slack in ((bxg.CW(steps=100), 1.1),
                          (bxg.CW(steps=60, binary_search_steps=1, step_size=0.05, initial_const=1000.0), 2.0),
                          (bxg.PGD(eps=[0.25, 0.5, 1, 2, 4], steps=20), 2.0)):
        res = bxg.find_boundary(model, x, y, attacks=[attack], progress=False)
        assert res.points.dtype == x.dtype
        assert res.found.sum() >= (6 if isinstance(attack, bxg.PGD) else 5), attack
        # the 16-bit model's own boundary is within its rounding of the exact one
        ratio = res.distances[res.found] / exact[res.found]
        assert np.all(ratio > 0.97) and np.all(ratio < slack), (attack, ratio)


@needs_torch
def test_search_accepts_an_input_that_records_gradients():
    import torch

    model, W, b = _linear("torch")
    x = torch.from_numpy(_data(4)).requires_grad_()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        res = bxg.find_boundary(model, x, None, attacks=[bxg.PGD(eps=[1.0, 2.0], steps=5), bxg.CW(steps=5)],
                                progress=False)
    assert not res.points.requires_grad and x.grad is None
