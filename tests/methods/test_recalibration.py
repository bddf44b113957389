"""Reference-based path methods (IG_Uniform, IG_SG, IG_SQ, LPI), AGI, objectives and
attribution re-calibration.

Oracles: closed forms on linear models, a direct NumPy implementation of the
re-calibration formulas (spec 4.12) and of the reference code's grouping
(spec 4.2) on a tiny ReLU network in float64 with hand-written gradients, the
same weights in both frameworks, and hand-computed objective gradients.
"""

import re

import numpy as np
import pytest

import boundary_xg as bxg
from boundary_xg.errors import InputError, MethodError
from conftest import BACKENDS, needs_both, needs_torch


# --- models and a NumPy oracle ----------------------------------------------------------------
def _linear(backend, features=6, classes=4, seed=0):
    from boundary_xg.testing import models as tm

    w = tm.linear_weights(seed=seed, features=features, classes=classes)
    return (tm.torch_linear(w) if backend == "torch" else tm.keras_linear(w)), w["weight"], w["bias"]


class NumpyMLP:
    """``F(x) = W2 relu(W1 x + b1) + b2`` in float64 with its input gradient written by hand."""

    def __init__(self, seed=0, features=5, hidden=7, classes=3):
        rng = np.random.default_rng(seed)
        self.w1 = rng.standard_normal((hidden, features))
        self.b1 = rng.standard_normal(hidden) * 0.5
        self.w2 = rng.standard_normal((classes, hidden))
        self.b2 = rng.standard_normal(classes) * 0.5

    def logits(self, x):
        return np.maximum(x @ self.w1.T + self.b1, 0) @ self.w2.T + self.b2

    def grad(self, x, y):
        """d F_y / d x for one point ``x (features,)``."""
        active = (self.w1 @ x + self.b1 > 0).astype(np.float64)
        return self.w1.T @ (active * self.w2[y])

    def torch(self):
        import torch

        model = torch.nn.Sequential(torch.nn.Linear(self.w1.shape[1], self.w1.shape[0]), torch.nn.ReLU(),
                                    torch.nn.Linear(self.w1.shape[0], self.w2.shape[0])).double()
        with torch.no_grad():
            for layer, w, b in ((model[0], self.w1, self.b1), (model[2], self.w2, self.b2)):
                layer.weight.copy_(torch.from_numpy(w))
                layer.bias.copy_(torch.from_numpy(b))
        return model.eval()


def _grid_reference(net, x, y, refs, alphas, weights, mode, square=False):
    """Spec 4.12 written directly: one example, references ``(M, d)``, nodes/weights of the rule."""
    c_ip, per_ref = [], []
    for r in refs:
        gsum = np.zeros_like(x)
        for a, w in zip(alphas, weights):
            point = a * x + (1 - a) * r  # x - point is exactly 0 at alpha = 1 (a valid point)
            g = net.grad(point, y)
            gsum += w * g
            c_ip.append(w * g * (x - point))
        per_ref.append((x - r) * gsum)
        if mode is None and square:
            per_ref[-1] = (x - r) * gsum * gsum
    if mode is None:
        return np.mean(per_ref, axis=0)
    c = np.array(c_ip if mode == "valid_ip" else per_ref)
    valid = c >= 0
    terms = np.where(valid, c * c if square else c, 0.0)
    return terms.sum(0) / np.maximum(1, valid.sum(0))


# --- closed forms on linear models --------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_linear_closed_forms_with_explicit_references(backend):
    model, w, _ = _linear(backend)
    rng = np.random.default_rng(0)
    x = rng.uniform(0, 1, (3, 6)).astype(np.float32)
    y = np.array([0, 3, 1])
    wy = w[y][:, None, :]
    for refs in (rng.uniform(0, 1, (5, 6)).astype(np.float32),  # shared (M, ...)
                 rng.uniform(0, 1, (3, 4, 6)).astype(np.float32)):  # per example (N, M, ...)
        r = refs[None] if refs.ndim == 2 else refs
        mean_ig = ((x[:, None] - r) * wy).mean(1)
        for method in ("IG_Uniform", "IG_SG"):
            for rule in ("gausslegendre", "riemann_trapezoid"):
                a = bxg.attribute(model, x, y, method=method, references=refs, steps=3, rule=rule)
                np.testing.assert_allclose(a, mean_ig, rtol=1e-6, atol=1e-6)
        sq = bxg.attribute(model, x, y, method="IG_SQ", references=refs, steps=4)
        np.testing.assert_allclose(sq, ((x[:, None] - r) * wy ** 2).mean(1), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("backend", BACKENDS)
def test_lpi_closed_form_on_a_clustered_background(backend):
    # three distinct background points, four copies each: three clusters whose members are
    # identical, so every reference drawn for an input is its cluster's point
    model, w, b = _linear(backend, features=4, classes=3, seed=1)
    rng = np.random.default_rng(1)
    points = rng.standard_normal((3, 4)).astype(np.float32) * 3
    bg = np.repeat(points, 4, axis=0)
    x = rng.standard_normal((5, 4)).astype(np.float32)
    y = np.array([0, 1, 2, 0, 1])
    attr, gap = bxg.attribute(model, x, y, method="LPI", background=bg, num_clusters=3, seed=0,
                              return_gap=True)
    logits = lambda z: z @ w.T + b  # noqa: E731
    nearest = ((logits(x)[:, None] - logits(points)[None]) ** 2).sum(2).argmin(1)
    np.testing.assert_allclose(attr, (x - points[nearest]) * w[y], rtol=1e-6, atol=1e-6)
    assert np.all(np.abs(gap) < 1e-5)


@pytest.mark.parametrize("backend", BACKENDS)
def test_agi_closed_form_on_a_linear_model(backend):
    # linear: every attack step moves by step * sign(w_t) (clipped); the label's gradient is w_y
    model, w, b = _linear(backend, features=5, classes=4, seed=2)
    rng = np.random.default_rng(2)
    x = rng.uniform(0.2, 0.8, (3, 5)).astype(np.float32)
    y = np.array([0, 1, 3])
    steps, size = 4, 0.1
    for targets in ("top", None):
        opts = {} if targets is None else {"num_classes": 2}
        attr, gap = bxg.attribute(model, x, y, method="AGI", bounds=(0, 1), steps=steps, step_size=size,
                                  return_gap=True, **opts)
        logits = x @ w.T + b
        expected = np.zeros_like(x)
        t_count = 3 if targets is None else 2
        for i in range(3):
            order = [c for c in np.argsort(-logits[i]) if c != y[i]][:t_count]
            for t in order:
                end = np.clip(x[i] + steps * size * np.sign(w[t]), 0, 1)
                expected[i] += w[y[i]] * (x[i] - end)
        np.testing.assert_allclose(attr, expected, rtol=1e-5, atol=1e-6)
        assert np.all(np.abs(gap) < 1e-5)


# --- re-calibration against a direct NumPy implementation (float64) -------------------------------
@needs_torch
def test_recalibration_matches_numpy_float64():
    from boundary_xg.methods.quadrature import quadrature

    net = NumpyMLP(seed=0)
    model = net.torch()
    rng = np.random.default_rng(3)
    x = rng.standard_normal((3, 5))
    y = np.array([0, 2, 1])
    refs = rng.standard_normal((3, 4, 5))
    for rule, k in (("gausslegendre", 5), ("riemann_trapezoid", 4)):
        alphas, weights = quadrature(rule, k)
        for mode in (None, "valid_ip", "valid_ref"):
            for method, square in (("IG_Uniform", False), ("IG_SQ", True)):
                # batch_size 3 < k: a reference's path spans several chunks
                got = bxg.attribute(model, x, y, method=method, references=refs, steps=k, rule=rule,
                                    recalibrate=mode, batch_size=3 if mode == "valid_ref" else 7)
                want = np.stack([_grid_reference(net, x[i], y[i], refs[i], alphas, weights, mode, square)
                                 for i in range(3)])
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, err_msg=f"{method} {mode} {rule}")
                if mode is not None:
                    assert np.all(got >= 0)
        # IG and BIG with one reference (the baseline / the boundary point)
        base = refs[:, 0]
        for mode in ("valid_ip", "valid_ref"):
            want = np.stack([_grid_reference(net, x[i], y[i], base[i:i + 1], alphas, weights, mode)
                             for i in range(3)])
            got = bxg.attribute(model, x, y, method="IG", baseline=base, steps=k, rule=rule, recalibrate=mode)
            np.testing.assert_allclose(got, want, rtol=0, atol=1e-10)
            big = bxg.attribute(model, x, y, method="BIG", boundary_points=base, steps=k, rule=rule,
                                recalibrate=mode)
            np.testing.assert_allclose(big, want, rtol=0, atol=1e-10)
    # valid_ref with one reference is max(IG, 0)
    ig = bxg.attribute(model, x, y, method="IG", baseline=base, steps=5)
    np.testing.assert_allclose(bxg.attribute(model, x, y, method="IG", baseline=base, steps=5,
                                             recalibrate="valid_ref"), np.maximum(ig, 0), atol=1e-12)


@needs_torch
def test_agi_and_eg_recalibration_match_numpy_float64():
    net = NumpyMLP(seed=4, features=4, classes=4)
    model = net.torch()
    rng = np.random.default_rng(5)
    x = rng.uniform(0.1, 0.9, (2, 4))
    y = np.array([1, 3])
    steps, size, t_count = 3, 0.07, 2
    for mode in (None, "valid_ip", "valid_ref"):
        got = bxg.attribute(model, x, y, method="AGI", bounds=(0, 1), steps=steps, step_size=size,
                            num_classes=t_count, recalibrate=mode, batch_size=3)
        want = []
        for i in range(2):
            order = [c for c in np.argsort(-net.logits(x[i])) if c != y[i]][:t_count]
            cs, per_t = [], []
            for t in order:
                p, total = x[i].copy(), 0.0
                for _ in range(steps):
                    nxt = np.clip(p + size * np.sign(net.grad(p, t)), 0, 1)
                    c = net.grad(p, y[i]) * (p - nxt)
                    cs.append(c)
                    total = total + c
                    p = nxt
                per_t.append(total)
            if mode is None:
                want.append(np.sum(cs, axis=0))
                continue
            c = np.array(cs if mode == "valid_ip" else per_t)
            want.append(np.where(c >= 0, c, 0).sum(0) / np.maximum(1, (c >= 0).sum(0)))
        np.testing.assert_allclose(got, np.stack(want), rtol=0, atol=1e-10, err_msg=str(mode))
    # EG with a one-row background: the reference is known, the path points are random; the
    # re-calibrated values are non-negative and zero where every term is negative
    bg = rng.standard_normal((1, 4))
    for mode in ("valid_ip", "valid_ref"):
        eg = bxg.attribute(model, x, y, method="EG", background=bg, num_samples=16, seed=0, recalibrate=mode)
        assert np.all(eg >= 0) and np.any(eg > 0)


# --- the reference code's layout and grouping (spec 4.2, 4.9, 4.12) -------------------------------
def _rec_reference(net, x, y, refs, k, mode, square=False):
    """The reference code's sample layout and grouping, from the spec's formulas (one example).

    Sample j = 0..kM-1 uses reference j mod M at alpha = linspace(0, 1, k)[j mod k] (1 for
    k = 1); G_b = 1/k sum_s g(x_{bk+s}); vanilla 1/M sum_b (x - r_b) G_b (IG-SQ: G_b^2);
    valid_ip: c_j = 1/k g(x_j)(x - x_j); valid_ref: c_b = (x - r_b) G_b; masked means (IG-SQ: c^2).
    """
    m = len(refs)
    lin = np.linspace(0, 1, k) if k > 1 else np.array([1.0])
    pts = [lin[j % k] * x + (1 - lin[j % k]) * refs[j % m] for j in range(k * m)]
    grads = [net.grad(p, y) / k for p in pts]
    groups = [np.sum(grads[b * k:(b + 1) * k], axis=0) for b in range(m)]
    if mode is None:
        return np.mean([(x - refs[b]) * (groups[b] ** 2 if square else groups[b]) for b in range(m)], axis=0)
    if mode == "valid_ip":
        c = np.array([g * (x - p) for g, p in zip(grads, pts)])
    else:
        c = np.array([(x - refs[b]) * groups[b] for b in range(m)])
    valid = c >= 0
    return np.where(valid, c * c if square else c, 0).sum(0) / np.maximum(1, valid.sum(0))


@needs_torch
def test_pairing_rec_reproduces_the_reference_grouping():
    net = NumpyMLP(seed=6)
    model = net.torch()
    rng = np.random.default_rng(6)
    x = rng.standard_normal((2, 5))
    y = np.array([2, 0])
    refs = rng.standard_normal((2, 4, 5))
    for k in (1, 3, 2):  # gcd(k, M) = 1 and 2: the degenerate grid
        for mode in (None, "valid_ip", "valid_ref"):
            for method, square in (("IG_Uniform", False), ("IG_SQ", True)):
                got = bxg.attribute(model, x, y, method=method, references=refs, steps=k, pairing="rec",
                                    recalibrate=mode, batch_size=5)
                want = np.stack([_rec_reference(net, x[i], y[i], refs[i], k, mode, square) for i in range(2)])
                np.testing.assert_allclose(got, want, rtol=0, atol=1e-10, err_msg=f"{method} k={k} {mode}")
    # at k = 2, M = 4 the rec layout differs from the full grid
    full = bxg.attribute(model, x, y, method="IG_Uniform", references=refs, steps=2, rule="riemann_trapezoid")
    rec = bxg.attribute(model, x, y, method="IG_Uniform", references=refs, steps=2, pairing="rec")
    assert not np.allclose(full, rec)


# --- both frameworks, same weights, same references ----------------------------------------------
@needs_both
def test_same_weights_same_references_same_attributions():
    from boundary_xg.testing import models as tm

    w = tm.cnn_weights(seed=0)
    mt, mk = tm.torch_cnn(w), tm.keras_cnn(w)
    rng = np.random.default_rng(7)
    x = rng.uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    refs = rng.uniform(0, 1, (2, 3, 3, 8, 8)).astype(np.float32)
    points = rng.uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 3])
    cases = [
        ("IG_Uniform", {"references": refs, "objective": "contrastive"}),
        ("IG_SG", {"references": refs, "recalibrate": "valid_ip"}),
        ("IG_SQ", {"references": refs[0], "recalibrate": "valid_ref", "objective": "log_prob"}),
        ("IG_Uniform", {"references": refs, "pairing": "rec", "recalibrate": "valid_ip"}),
        ("AGI", {"bounds": (0, 1), "num_classes": 2, "steps": 3, "recalibrate": "valid_ref"}),
        ("IG", {"recalibrate": "valid_ip", "steps": 8}),
        ("BIG", {"boundary_points": points, "recalibrate": "valid_ref", "steps": 8}),
    ]
    for method, opts in cases:
        a = bxg.attribute(mt, x, y, method=method, **opts)
        ko = dict(opts)
        if "references" in ko:
            ko["references"] = np.moveaxis(ko["references"], -3, -1)
        if "boundary_points" in ko:
            ko["boundary_points"] = tm.nchw_to_nhwc(ko["boundary_points"])
        b = tm.nhwc_to_nchw(np.asarray(bxg.attribute(mk, tm.nchw_to_nhwc(x), y, method=method, **ko)))
        scale = max(1.0, float(np.abs(a).max()))
        np.testing.assert_allclose(a, b, rtol=0, atol=1e-5 * scale, err_msg=f"{method} {opts.keys()}")


# --- seeds -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_drawn_references_reproducible_with_a_seed(backend):
    from conftest import build_cnn

    model, conv = build_cnn(backend, seed=1)
    rng = np.random.default_rng(8)
    x = conv(rng.uniform(0, 1, (3, 3, 8, 8)).astype(np.float32))
    bg = conv(rng.uniform(0, 1, (12, 3, 8, 8)).astype(np.float32))
    y = [0, 1, 2]
    cases = [("IG_Uniform", {"bounds": (0, 1), "num_references": 3}),
             ("IG_SG", {"num_references": 3, "bounds": (0, 1)}),
             ("LPI", {"background": bg, "num_references": 3, "num_clusters": 3}),
             ("AGI", {"bounds": (0, 1), "targets": "random", "num_classes": 2, "steps": 2})]
    for method, opts in cases:
        a = bxg.attribute(model, x, y, method=method, seed=5, **opts)
        b = bxg.attribute(model, x, y, method=method, seed=5, batch_size=4, **opts)
        c = bxg.attribute(model, x, y, method=method, seed=6, **opts)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-7, err_msg=method)
        assert not np.allclose(a, c), method
    # the draws stay inside bounds and around each example: IG_SG's references are its noisy copies
    ig_sg = bxg.attribute(model, x, y, method="IG_SG", seed=1, num_references=2, sigma=0.0)
    np.testing.assert_allclose(ig_sg, 0, atol=1e-7)  # sigma 0: every reference is x itself


# --- objectives --------------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_objective_gradients_on_a_linear_model(backend):
    model, w, b = _linear(backend, features=5, classes=4, seed=3)
    rng = np.random.default_rng(9)
    x = rng.standard_normal((3, 5)).astype(np.float32)
    y = np.array([0, 2, 3])
    f = x.astype(np.float64) @ w.T + b
    p = np.exp(f - f.max(1, keepdims=True))
    p /= p.sum(1, keepdims=True)
    log_prob = w[y] - p @ w  # d log softmax_y / dx = w_y - sum_c p_c w_c
    contrast = []
    for i in range(3):
        others = [c for c in range(4) if c != y[i]]
        q = np.exp(f[i, others] - f[i, others].max())
        q /= q.sum()
        wbar = q @ w[others]
        # d/dx [F_y - sum_j q_j F_j] with q = softmax over the others (not detached)
        contrast.append(w[y[i]] - wbar - sum(q[a] * f[i, c] * (w[c] - wbar) for a, c in enumerate(others)))
    for objective, want in (("log_prob", log_prob), ("contrastive", np.array(contrast))):
        got = bxg.attribute(model, x, y, method="SM", objective=objective)
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5, err_msg=objective)
        # IG's completeness gap refers to the explained scalar
        _, gap = bxg.attribute(model, x, y, method="IG", objective=objective, steps=64, return_gap=True)
        assert np.all(np.abs(gap) < 1e-3), (objective, gap)


@needs_torch
def test_contrastive_objective_of_a_layer_method_is_the_difference_model():
    # two classes: the contrastive scalar is F_y - F_other, i.e. the logit of a model whose
    # outputs are the differences; GradCAM (layer capture in the backend) sees it
    import torch
    from boundary_xg.testing import models as tm

    base = tm.torch_cnn(tm.cnn_weights(seed=2, classes=2))
    head = torch.nn.Linear(2, 2, bias=False)
    with torch.no_grad():
        head.weight.copy_(torch.tensor([[1.0, -1.0], [-1.0, 1.0]]))
    diff = torch.nn.Sequential(base, head).eval()
    x = np.random.default_rng(10).uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    y = np.array([0, 1])
    for method, layer, diff_layer in (("GradCAM", {"layer": "conv2"}, {"layer": "0.conv2"}), ("SM", {}, {})):
        a = bxg.attribute(base, x, y, method=method, objective="contrastive", **layer)
        b = bxg.attribute(diff, x, y, method=method, **diff_layer)
        np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6, err_msg=method)


# --- bad input -----------------------------------------------------------------------------------------
@needs_torch
def test_bad_input_errors():
    model, _, _ = _linear("torch")
    x = np.random.default_rng(11).uniform(0, 1, (2, 6)).astype(np.float32)
    y = [0, 1]
    ok_refs = np.zeros((3, 6), np.float32)
    bad = [
        (InputError, "references has shape", dict(method="IG_Uniform", references=np.zeros((3, 5), np.float32))),
        (InputError, "references has shape", dict(method="IG_SG", references=np.zeros((3, 2, 6), np.float32))),
        (InputError, "NaN", dict(method="IG_SQ", references=np.full((2, 6), np.nan, np.float32))),
        (InputError, "M = 0", dict(method="IG_SG", references=np.zeros((0, 6), np.float32))),
        (InputError, "num_references=2 but", dict(method="IG_Uniform", references=ok_refs, num_references=2)),
        (InputError, "num_references=0", dict(method="IG_Uniform", bounds=(0, 1), num_references=0)),
        (InputError, "steps=0", dict(method="IG_SG", steps=0)),
        (InputError, "steps=0", dict(method="AGI", bounds=(0, 1), steps=0)),
        (InputError, "bounds=", dict(method="IG_Uniform")),
        (InputError, "AGI needs bounds", dict(method="AGI")),
        (InputError, "LPI needs background", dict(method="LPI")),
        (InputError, "num_clusters=5 but background has 3",
         dict(method="LPI", background=np.zeros((3, 6), np.float32), num_clusters=5)),
        (InputError, "num_classes=4", dict(method="AGI", bounds=(0, 1), num_classes=4)),
        (MethodError, "re-calibration is supported by", dict(method="SM", recalibrate="valid_ip")),
        (MethodError, "re-calibration is supported by", dict(method="SG", recalibrate="valid_ref")),
        (InputError, "recalibrate='abs'", dict(method="IG", recalibrate="abs")),
        (InputError, "pairing='x'", dict(method="IG_Uniform", references=ok_refs, pairing="x")),
        (InputError, "objective='prob'", dict(method="SM", objective="prob")),
        (MethodError, "DeepLIFT explains only", dict(method="DeepLIFT", objective="contrastive")),
        (InputError, "return_gap=True",
         dict(method="IG_Uniform", references=ok_refs, recalibrate="valid_ip", return_gap=True)),
        (InputError, "exact=True", dict(method="IG", recalibrate="valid_ip", exact=True)),
        (InputError, "targets='all'", dict(method="AGI", bounds=(0, 1), targets="all")),
    ]
    for err, text, opts in bad:
        with pytest.raises(err, match=re.escape(text)):
            bxg.attribute(model, x, y, **opts)
    from conftest import HAS_TF

    if HAS_TF:
        import tensorflow as tf

        with pytest.raises(InputError, match="references is a tensorflow tensor"):
            bxg.attribute(model, x, y, method="IG_Uniform", references=tf.zeros((2, 6)))


@needs_torch
def test_heatmap_grid_knows_the_new_methods(tmp_path):
    from boundary_xg.testing import models as tm
    from boundary_xg.viz import compare

    model = tm.torch_cnn(tm.cnn_weights(seed=0))
    x = np.random.default_rng(12).uniform(0, 1, (2, 3, 8, 8)).astype(np.float32)
    res = compare(model, x, methods=["IG_Uniform", "AGI", "LPI"], output_file=str(tmp_path / "g.png"),
                  options={"IG_Uniform": {"bounds": (0, 1), "seed": 0, "recalibrate": "valid_ip"},
                           "AGI": {"bounds": (0, 1)}, "LPI": {"background": x, "num_clusters": 2}})
    assert set(res.attributions) == {"IG_Uniform", "AGI", "LPI"}
    assert np.all(res.attributions["IG_Uniform"] >= 0) and (tmp_path / "g.png").stat().st_size > 1000
