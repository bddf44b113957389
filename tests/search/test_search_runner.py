"""The shared row-pool runner drives every attack: the reference preset (PGD, CW) pinned to its
numbers from before PGD and CW ran through it, and the refinement's early exit."""

import numpy as np
import pytest

import boundary_xg as bxg
from boundary_xg.testing import models as tm
from conftest import needs_tf, needs_torch

D, K, N = 20, 3, 24


def _linear(backend, box=(-3.0, 3.0), seed=0):
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((K, D)).astype(np.float32)
    b = (rng.standard_normal(K) * 0.1).astype(np.float32)
    x = rng.standard_normal((N, D)) * 0.3
    x = (np.clip(x, *box) if box else x).astype(np.float32)
    y = (x.astype(np.float64) @ W.T + b).argmax(1)
    w = {"weight": W, "bias": b}
    return (tm.torch_linear(w) if backend == "torch" else tm.keras_linear(w)), W, b, x, y


def _odd_attacks():
    """PGD with steps not a multiple of its check interval, every radius in order, the last iterate;
    CW warm-started from PGD's point with a short schedule."""
    return [bxg.PGD(eps=[0.1, 0.2, 0.4, 0.8], steps=15, radius_search="increasing", early_exit=False),
            bxg.CW(steps=25, warm_start=True, binary_search_steps=4)]


# Measured on the code before PGD and CW were re-expressed as stepwise attacks of the shared
# runner (commit d37dbc9, CPU, float32): (passes, forwards, distances). The runner must
# reproduce the same jobs in the same order (the same random starts): equal pass counts
# and distances up to float rounding of a different batch composition.
_PINNED = {
    ("torch", "reference", None): (195.33333333333334, 2.7083333333333335, [
        0.13265866, 0.1563381, 0.13300358, 0.16763307, 0.41849199, 0.13279334, 0.13294075, 0.61535239,
        0.29360294, 0.11726308, 0.32765216, 0.25560856, 0.37620744, 0.1332816, 0.22541286, 0.33952025,
        0.03411965, 0.13234001, 0.13272439, 0.26277685, 0.19801781, 0.2478139, 0.13298684, 0.12963669]),
    ("torch", "reference", 5): (196.66666666666666, 2.75, [
        0.13265866, 0.1563381, 0.13300358, 0.16763307, 0.41849196, 0.13279334, 0.13294074, 0.61535239,
        0.29360303, 0.11726306, 0.32765207, 0.25560856, 0.37620744, 0.13328162, 0.22541286, 0.33952022,
        0.03411967, 0.13234001, 0.13272439, 0.26277685, 0.19801788, 0.2478139, 0.13298686, 0.12963665]),
    ("torch", "odd", 7): (58.208333333333336, 4.208333333333333, [
        0.09999999, 0.20000002, 0.10000001, 0.2, 0.47589797, 0.1, 0.10000001, 0.72215366,
        0.3295697, 0.13675214, 0.36163834, 0.36326835, 0.43119135, 0.1, 0.24990705, 0.36155465,
        0.01127222, 0.09999999, 0.13517825, 0.29046151, 0.2, 0.26492548, 0.1, 0.16383047]),
    ("tensorflow", "reference", None): (193.66666666666666, 2.6666666666666665, [
        0.13265869, 0.15633813, 0.13300359, 0.16763307, 0.41849205, 0.13279332, 0.13294078, 0.61535239,
        0.293603, 0.11726307, 0.32765219, 0.25560859, 0.37620741, 0.13328162, 0.22541273, 0.33952016,
        0.03411962, 0.13233998, 0.1327244, 0.26277688, 0.19801778, 0.24781384, 0.13298684, 0.12963668]),
    ("tensorflow", "odd", 7): (58.291666666666664, 4.166666666666667, [
        0.10000001, 0.2, 0.09999999, 0.2, 0.44150087, 0.10000001, 0.1, 0.65105236,
        0.32464913, 0.13511389, 0.36177462, 0.29658818, 0.40000007, 0.1, 0.25207293, 0.36079085,
        0.01019045, 0.1, 0.13277578, 0.28258339, 0.19999997, 0.27327091, 0.10000001, 0.16380529]),
}
_DIGITS_PINNED = (239.16666666666666, 3.5, [
    0.2999458, 0.69939321, 0.69921219, 0.6855436, 0.49993944, 0.44048306, 0.49987501, 0.35985851,
    0.15250088, 0.89727092, 0.49971887, 0.69982976])


def _check_pinned(res, pinned):
    passes, forwards, dist = pinned
    assert res.passes == pytest.approx(passes, rel=1e-12)
    assert res.forwards == pytest.approx(forwards, rel=1e-12)
    assert np.asarray(res.found).all()
    np.testing.assert_allclose(np.asarray(res.distances, np.float64), dist, rtol=2e-5, atol=1e-7)


@pytest.mark.parametrize("backend,preset,batch_size", [
    pytest.param(*key, marks=needs_torch if key[0] == "torch" else needs_tf) for key in _PINNED])
def test_reference_preset_pinned(backend, preset, batch_size):
    """PGD and CW through the shared runner give the numbers they gave with their own loops."""
    model, W, b, x, y = _linear(backend)
    if preset == "reference":
        res = bxg.find_boundary(model, x, y, attacks="reference", bounds=(-3, 3), batch_size=batch_size,
                                progress=False)
    else:
        res = bxg.find_boundary(model, x, y, attacks=_odd_attacks(), batch_size=batch_size, progress=False,
                                refine=0)
    _check_pinned(res, _PINNED[(backend, preset, batch_size)])
    assert np.all((np.asarray(res.points, np.float64) @ W.T + b).argmax(1) != y)


@needs_torch
def test_reference_preset_pinned_on_digits():
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    x, y = load_digit_test_set()
    model = load_digit_model("torch", "regular")
    res = bxg.find_boundary(model, x[:12], y[:12], attacks="reference", bounds=(0, 1), progress=False)
    _check_pinned(res, _DIGITS_PINNED)


class StagedWalk:
    """An attack with several jobs per example, written against the job hooks only: each job walks
    down the margin with half the previous job's step for a set number of steps (``limits[e][j]``)."""

    check = 1
    norm = "l2"
    steps = 50

    def __init__(self, step_size, limits):
        self.step_size, self.limits = step_size, np.asarray(limits)

    def jobs(self):
        return self.limits.shape[1]

    def begin(self, ctx, x, labels, prior, prior_d):
        from boundary_xg.search.base import FAR

        n = ctx.B.shape(x)[0]
        self.admitted = []
        return dict(x=x, labels=labels, best=x, best_d=ctx.B.zeros_like(prior_d) + FAR, job=np.zeros(n, int))

    def start_job(self, ctx, carry, ex, it):
        from boundary_xg.search.base import rows_of

        B = ctx.B
        self.admitted.append(ex.tolist())
        x0, y = rows_of(B, carry["x"], it), rows_of(B, carry["labels"], it)
        j = carry["job"][ex]
        zeros = B.zeros_like(B.sum(x0, axis=1))
        return dict(z=x0 + B.zeros_like(x0), x0=x0, y=y, oh=B.one_hot(y, ctx.num_classes, like=x0),
                    size=zeros + B.asarray((self.step_size * 0.5 ** j).astype(np.float32), like=x0),
                    limit=zeros + B.asarray(self.limits[ex, j].astype(np.float32), like=x0), t=zeros,
                    best=rows_of(B, carry["best"], it), best_d=rows_of(B, carry["best_d"], it))

    def step(self, B, f, state, lo, hi, proto):
        from boundary_xg.search._ops import margin, misclassified, model_logits
        from boundary_xg.search.base import keep_closer

        z = state["z"]

        def fn(u):
            logits = model_logits(B, f, u, proto)
            return margin(B, logits, state["oh"]), logits

        _, logits, g = B.value_aux_and_grad(fn, z)
        best, best_d = keep_closer(B, z, state["x0"], misclassified(B, logits, state["y"]),
                                   state["best"], state["best_d"])
        gn = B.sqrt(B.sum(g * g, axis=1))
        new = z - g * B.reshape(state["size"] / gn, (-1, 1))
        return dict(state, z=new, best=best, best_d=best_d, t=state["t"] + 1.0)

    def done(self, ctx, state):
        return state["t"] >= state["limit"]

    def end_job(self, ctx, carry, ex, it, state, stopped):
        B = ctx.B
        assert stopped.all()  # every job here ends by its own limit, before `steps`
        # the job's rows are its examples' (a full, permuted admission must gather too)
        np.testing.assert_array_equal(B.to_numpy(state["x0"]), B.to_numpy(carry["x"])[ex])
        carry["best"] = B.index_update(carry["best"], it, state["best"])
        carry["best_d"] = B.index_update(carry["best_d"], it, state["best_d"])
        carry["job"][ex] += 1
        return carry, carry["job"][ex] < self.limits.shape[1]

    def result(self, ctx, carry):
        return carry["best"], carry["best_d"]


@pytest.mark.parametrize("backend", [pytest.param("torch", marks=needs_torch),
                                     pytest.param("tensorflow", marks=needs_tf)])
def test_custom_attack_with_several_jobs_runs_through_the_pool(backend):
    """Jobs queue behind the waiting ones; a later admission of every example in another order gathers its rows."""
    model, W, b, x, y = _linear(backend, box=None)
    x, y = x[:2], y[:2]
    # example 0's first job ends after 1 step and its second job enters beside example 1's first;
    # both end at step 3, so the third admission holds both examples in the order [1, 0]
    atk = StagedWalk(0.1, [[1, 2, 30], [3, 1, 30]])
    res = bxg.find_boundary(model, x, y, attacks=[atk], batch_size=2, refine=0, progress=False)
    assert atk.admitted == [[0, 1], [0], [1, 0], [1]]
    assert res.passes == pytest.approx((1 + 2 + 30 + 3 + 1 + 30) / 2)
    assert np.asarray(res.found).all()
    pts = np.asarray(res.points, np.float64)
    assert np.all((pts @ W.T + b).argmax(1) != y)


@pytest.mark.parametrize("backend", [pytest.param("torch", marks=needs_torch),
                                     pytest.param("tensorflow", marks=needs_tf)])
def test_refinement_exits_early_per_row(backend):
    """The refinement lands within 2**-12 of the crossing along each segment (closed form on a
    linear model), in a few forward rows per candidate: one where the candidate is already that
    close, none where there is no candidate."""
    from boundary_xg.backends import get_backend
    from boundary_xg.search._ops import Cost
    from boundary_xg.search.base import SearchContext
    from boundary_xg.search.refine import refine

    model, W, b, x, y = _linear(backend, box=None)
    W64, b64, x64 = W.astype(np.float64), b.astype(np.float64), x.astype(np.float64)
    rng = np.random.default_rng(5)
    # a direction per row that crosses the boundary, scaled so that the crossing is at t*
    t_star = np.resize([0.3, 0.7, 0.95, 0.999, 1 - 2.0 ** -14], N)
    margins0 = (x64 @ W64.T + b64)

    def crossing(u):  # first t in (0, inf) where another class's logit reaches the label's
        m0 = margins0[np.arange(N), y][:, None] - margins0
        du = (u @ W64.T)[np.arange(N), y][:, None] - u @ W64.T
        with np.errstate(divide="ignore", invalid="ignore"):
            t = np.where(du < 0, m0 / -du, np.inf)
        t[np.arange(N), y] = np.inf
        return t.min(1)

    u = W64[(y + 1) % K] - W64[y] + 0.3 * rng.standard_normal((N, D))  # toward another class
    u *= crossing(u)[:, None]  # the crossing at t = 1
    p = x64 + u / t_star[:, None]      # ... and now at t = t_star
    found = np.ones(N, bool)
    found[3] = False                   # no candidate: left alone, costs nothing
    B = get_backend(backend)
    with B.session(model) as f:
        xt = B.asarray(x, dtype="float32")
        lab = B.argmax(B.forward(f, xt), axis=1)
        inf = np.full((1, 1), np.inf, np.float32)
        ctx = SearchContext(B, f, B.asarray(-inf, like=xt), B.asarray(inf, like=xt), xt[:1], K, B.rng(0, xt),
                            Cost(), 64)
        pt = B.asarray(p.astype(np.float32), like=xt)
        out = B.to_numpy(refine(ctx, xt, pt, lab, 12, found=B.asarray(found, like=lab)))
    t_got = np.linalg.norm(out - x64, axis=1) / np.linalg.norm(p - x64, axis=1)
    rows = found
    np.testing.assert_array_equal(out[~found], p.astype(np.float32)[~found])
    assert np.all((out[rows].astype(np.float64) @ W64.T + b64).argmax(1) != y[rows])  # past the boundary
    assert np.all(t_got[rows] >= t_star[rows] * (1 - 1e-5))
    assert np.all(t_got[rows] <= t_star[rows] * (1 + 2.0 ** -12) + 1e-6)
    # candidates already within 2**-12 of the crossing: one row each, returned bit for bit
    close = rows & (t_star > 1 - 2.0 ** -12)
    np.testing.assert_array_equal(out[close], p.astype(np.float32)[close])
    # a linear margin: the secant lands on the crossing, so a row needs round 0 and one or two
    # rounds of two rows (12 for a bisection), plus one row for its margin at x
    per_row = ctx.cost.forwards / rows.sum()
    assert per_row <= 1 + 1 + 2 * 2, per_row
