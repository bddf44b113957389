"""Evaluation metrics on both frameworks.

Oracles we did not write in the package:

* a direct NumPy implementation of each metric's definition, written here from
  the spec (methods.md 3.6 and 4.16) and the papers, on a linear model in float64
  (its logits are a matrix product), to 1e-6;
* the same weights in PyTorch and Keras (the shipped digit CNN twins) giving the
  same metric values, to 1e-5;
* sense on the shipped digit CNN: IG and BIG rank better than random and than
  sign-flipped maps, and the randomisation check's correlation falls.
"""

from __future__ import annotations

import math
import os
import warnings

import numpy as np
import pytest

from conftest import BACKENDS, keras_dtype_policy, needs_both, needs_torch

import boundary_xg as bxg
from boundary_xg import metrics
from boundary_xg.testing import models as tm

SHAPE = (3, 6, 6)  # C, H, W of the linear model's inputs
CLASSES = 4


# --- the linear model and NumPy references ----------------------------------------------------
def _linear(backend, seed=0):
    """(model, to_layout, F): F(x NCHW float64) -> logits, the model's exact function."""
    w = tm.linear_weights(seed=seed, features=int(np.prod(SHAPE)), classes=CLASSES)
    W, b = w["weight"].astype(np.float64), w["bias"].astype(np.float64)

    def F(x):
        return x.reshape(len(x), -1) @ W.T + b

    if backend == "torch":
        return tm.torch_linear(w, input_shape=SHAPE).double(), (lambda a: a), F
    import keras

    c, h, wd = SHAPE
    kernel = W.reshape(CLASSES, c, h, wd).transpose(2, 3, 1, 0).reshape(-1, CLASSES)  # NHWC flatten order
    with keras_dtype_policy("float64"):
        model = keras.Sequential([keras.Input((h, wd, c), dtype="float64"), keras.layers.Flatten(),
                                  keras.layers.Dense(CLASSES, name="linear")])
    model.get_layer("linear").set_weights([kernel, b])
    return model, tm.nchw_to_nhwc, F


def _data(seed=0, n=4):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n,) + SHAPE)
    a = rng.standard_normal((n,) + SHAPE)
    y = rng.integers(0, CLASSES, n)
    return x, y, a


def _softmax(z):
    z = z - z.max(axis=-1, keepdims=True)
    e = np.exp(z)
    return e / e.sum(axis=-1, keepdims=True)


def _gauss2d(size, sigma, spec_formula=False):
    u = np.arange(size) - (size - 1) / 2
    if spec_formula:  # the X-DNN code's kernel (spec 3.6): exp(-((u - c) / (2 sigma))^2)
        g = 1 / (sigma * math.sqrt(2 * math.pi)) * np.exp(-((u / (2 * sigma)) ** 2))
    else:
        g = np.exp(-(u ** 2) / (2 * sigma ** 2))
    k = np.outer(g, g)
    return k / k.sum()


def _blur(x, kernel):
    """Correlate every channel with ``kernel`` after reflect padding (NCHW)."""
    p = kernel.shape[0] // 2
    padded = np.pad(x, ((0, 0), (0, 0), (p, p), (p, p)), mode="reflect")
    win = np.lib.stride_tricks.sliding_window_view(padded, kernel.shape, axis=(2, 3))
    return np.einsum("nchwab,ab->nchw", win, kernel)


def ref_diffid(F, x, y, a, ratios, score="logit_ratio", order="abs"):
    """Spec 4.16: the n_r least (insertion) / most (deletion) important elements replaced by
    the mean of the kept ones; importance = channel sum of |A| (a pixel's channels tie and
    stay together, in channel order: our documented tie-break); per-ratio Ins - Del."""
    n, c = x.shape[:2]
    p = x.shape[2] * x.shape[3]
    e = c * p
    key = (np.abs(a) if order == "abs" else a).sum(axis=1).reshape(n, p)
    clean = F(x)
    ins, dele = np.zeros((n, len(ratios))), np.zeros((n, len(ratios)))
    for i in range(n):
        for out, pix in ((ins, np.argsort(key[i], kind="stable")), (dele, np.argsort(-key[i], kind="stable"))):
            elems = [(ch, q) for q in pix for ch in range(c)]
            for j, r in enumerate(ratios):
                k = int(math.floor(e * r))
                img = x[i].reshape(c, p).copy()
                gone = np.zeros((c, p), bool)
                for ch, q in elems[:k]:
                    gone[ch, q] = True
                img[gone] = img[~gone].mean()
                z = F(img.reshape((1,) + x.shape[1:]))[0]
                out[i, j] = (z[y[i]] / clean[i, y[i]]) if score == "logit_ratio" else float(z.argmax() == y[i])
    return ins, dele


def ref_curve(kind, F, x, y, a, steps, base, score="probability"):
    """RISE: pixels ranked by the channel sum of A (most positive first); step s moves the top
    floor(P s / steps) pixels (from x into the baseline, or from the baseline into x)."""
    n, c = x.shape[:2]
    p = x.shape[2] * x.shape[3]
    order = np.argsort(-a.sum(axis=1).reshape(n, p), axis=1, kind="stable")
    vals = np.zeros((n, steps + 1))
    for s in range(steps + 1):
        imgs = (base if kind == "insertion" else x).reshape(n, c, p).copy()
        src = (x if kind == "insertion" else base).reshape(n, c, p)
        for i in range(n):
            top = order[i, : (p * s) // steps]
            imgs[i][:, top] = src[i][:, top]
        z = F(imgs.reshape(x.shape))
        vals[:, s] = _softmax(z)[np.arange(n), y] if score == "probability" else z[np.arange(n), y]
    return vals


def ref_keep_remove(F, x, y, a, test):
    """Spec 3.6: channel-mean map, P = max(map, 0), k = floor(min(p HW, n+)) at
    geomspace(0.01, 1, 16); keep: the k largest of P sharp; remove: zeros of P set to +inf,
    the k smallest sharp; the rest from the X-DNN code's blur; logit or accuracy; np.trapz."""
    mode, order = {"kpm": ("keep", "pos"), "knm": ("keep", "neg"), "kam": ("keep", "abs"),
                   "ram": ("remove", "abs"), "rpm": ("remove", "pos"), "rnm": ("remove", "neg")}[test]
    n, c, h, w = x.shape
    blurred = _blur(x, _gauss2d(51, 41.0, spec_formula=True))
    m = a.mean(axis=1).reshape(n, h * w)
    m = {"pos": m, "neg": -m, "abs": np.abs(m)}[order]
    pos = np.maximum(m, 0)
    fr = np.geomspace(0.01, 1.0, 16)
    vals = np.zeros((n, len(fr)))
    for i in range(n):
        npos = int((pos[i] > 0).sum())
        for j, f in enumerate(fr):
            k = int(math.floor(min(f * h * w, npos)))
            if mode == "keep":
                sharp = np.argsort(-pos[i], kind="stable")[:k]
            else:
                q = np.where(pos[i] > 0, pos[i], np.inf)
                sharp = np.argsort(q, kind="stable")[:k]
            img = blurred[i].reshape(c, h * w).copy()
            img[:, sharp] = x[i].reshape(c, h * w)[:, sharp]
            z = F(img.reshape(1, c, h, w))[0]
            vals[i, j] = float(z.argmax() == y[i]) if order == "abs" else z[y[i]]
    return vals, np.trapezoid(vals, fr, axis=1)


def _spearman(u, v):
    from scipy.stats import spearmanr

    return spearmanr(u.ravel(), v.ravel()).statistic


def _ssim_direct(a, b, win=7):
    """SSIM (Wang et al. 2004) with a uniform window over every window inside the maps,
    sample (co)variances, K1 = 0.01, K2 = 0.03, data range 1: loops, no vectorisation."""
    c1, c2 = 0.01 ** 2, 0.03 ** 2
    vals = []
    for i in range(a.shape[0] - win + 1):
        for j in range(a.shape[1] - win + 1):
            pa, pb = a[i:i + win, j:j + win].ravel(), b[i:i + win, j:j + win].ravel()
            ua, ub = pa.mean(), pb.mean()
            va, vb = pa.var(ddof=1), pb.var(ddof=1)
            cab = np.cov(pa, pb, ddof=1)[0, 1]
            vals.append(((2 * ua * ub + c1) * (2 * cab + c2)) / ((ua ** 2 + ub ** 2 + c1) * (va + vb + c2)))
    return float(np.mean(vals))


# --- exactness ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_every_metric_equals_its_numpy_definition_on_a_linear_model(backend):
    model, conv, F = _linear(backend)
    x, y, a = _data()
    X, A = conv(x), conv(a)
    tol = dict(rtol=0, atol=1e-6)
    ratios = [k * 0.1 for k in range(1, 10)]

    # DiffID, the paper's conventions, both of its scores, and the signed order
    res = metrics.diffid(model, X, y, A)
    ins, dele = ref_diffid(F, x, y, a, ratios)
    np.testing.assert_allclose(res.details["insertion_curves"], ins, **tol)
    np.testing.assert_allclose(res.details["deletion_curves"], dele, **tol)
    np.testing.assert_allclose(res.curve, (ins - dele).mean(0), **tol)
    np.testing.assert_allclose(res.per_example, (ins - dele).mean(1), **tol)
    assert abs(res.value - (ins - dele).mean()) < 1e-6 and isinstance(res.value, np.float64)
    ins_a, del_a = ref_diffid(F, x, y, a, ratios, score="accuracy")
    np.testing.assert_allclose(res.details["paper"]["accuracy"]["diffid"], (ins_a - del_a).mean(0), **tol)
    assert list(res.details["counts"]) == [int(math.floor(108 * r)) for r in ratios]
    ins_p, del_p = ref_diffid(F, x, y, a, [0.25, 0.5], order="positive")
    np.testing.assert_allclose(metrics.diffid(model, X, y, A, ratios=[0.25, 0.5], order="positive").curve,
                               (ins_p - del_p).mean(0), **tol)

    # insertion (blurred baseline, RISE) and deletion (zeros), probability of the label
    blurred = _blur(x, _gauss2d(11, 1.1))
    for kind, base, opts in (("insertion", blurred, {}), ("deletion", np.zeros_like(x), {}),
                             ("deletion", np.zeros_like(x) + x.mean(axis=(1, 2, 3), keepdims=True),
                              {"baseline": "mean", "score": "logit"})):
        res = getattr(metrics, kind)(model, X, y, A, steps=8, **opts)
        want = ref_curve(kind, F, x, y, a, 8, base, opts.get("score", "probability"))
        np.testing.assert_allclose(res.per_example_curves, want, **tol)
        np.testing.assert_allclose(res.per_example, np.trapezoid(want, np.arange(9) / 8, axis=1), **tol)
        np.testing.assert_allclose(res.curve, want.mean(0), **tol)

    # the X-DNN paper's six keep/remove tests (its blur with the sqrt(2) width, reflect padding)
    fam = metrics.kpm_family(model, X, y, A)
    for test in ("kpm", "knm", "kam", "ram", "rpm", "rnm"):
        vals, area = ref_keep_remove(F, x, y, a, test)
        np.testing.assert_allclose(fam[test].per_example_curves, vals, err_msg=test, **tol)
        np.testing.assert_allclose(fam[test].per_example, area, err_msg=test, **tol)
    np.testing.assert_allclose(metrics.kam(model, X, y, A).per_example, fam["kam"].per_example, **tol)

    # sensitivity-n: Bernoulli(q) pixel masks from NumPy, seeded per example (documented),
    # zero reference, Pearson(sum of A over masked pixels, F(x) - F(x_ref)) over the masks
    res = metrics.sensitivity_n(model, X, y, A, ratios=[0.2, 0.6], num_masks=6, seed=3)
    amap = a.sum(axis=1).reshape(len(x), -1)
    probs = np.repeat(np.float32([0.2, 0.6]), 6)
    corr = np.zeros((len(x), 2))
    for i in range(len(x)):
        masks = np.random.default_rng([3, i]).random((12, 36), dtype=np.float32) < probs[:, None]
        sums, deltas = [], []
        for mk in masks:
            xr = x[i].reshape(3, 36).copy()
            xr[:, mk] = 0.0
            deltas.append(F(x[i:i + 1])[0, y[i]] - F(xr.reshape(1, *SHAPE))[0, y[i]])
            sums.append(amap[i][mk].sum())
        sums, deltas = np.reshape(sums, (2, 6)), np.reshape(deltas, (2, 6))
        corr[i] = [np.corrcoef(sums[q], deltas[q])[0, 1] for q in range(2)]
    np.testing.assert_allclose(res.per_example_curves, corr, **tol)
    np.testing.assert_allclose(res.curve, corr.mean(0), **tol)

    # completeness, sparseness (Gini), mean absolute relative difference
    res = metrics.completeness(model, X, y, A, baseline=0.5)
    gap = a.reshape(4, -1).sum(1) - (F(x)[np.arange(4), y] - F(np.full_like(x, 0.5))[np.arange(4), y])
    np.testing.assert_allclose(res.details["gap"], gap, **tol)
    np.testing.assert_allclose(res.per_example, np.abs(gap), **tol)
    srt = np.sort(np.abs(a).reshape(4, -1), axis=1)
    m = srt.shape[1]
    gini = ((2 * np.arange(1, m + 1) - m - 1) * srt).sum(1) / (m * srt.sum(1))
    np.testing.assert_allclose(metrics.sparseness(model, X, y, A).per_example, gini, **tol)
    r = a + 0.3 * np.random.default_rng(5).standard_normal(a.shape)
    res = metrics.mean_absolute_relative_difference(model, X, y, A, reference=conv(r))
    d = np.abs(a - r).reshape(4, -1).mean(1) / (np.abs(a).reshape(4, -1).mean(1) + 1e-7)
    np.testing.assert_allclose(res.per_example, d, **tol)
    np.testing.assert_allclose(res.details["pooled"], np.abs(a - r).mean() / (np.abs(a).mean() + 1e-7), **tol)

    # randomisation check: saliency of a linear model is its weight row; the one layer is
    # re-drawn from N(mean, std) of its own weights (NumPy, seed [seed, layer, tensor], drawn
    # as (out, in): the in axis follows the framework's own flatten order, NHWC for Keras)
    res = metrics.randomization_check(model, X, y, method="SM", seed=7)
    W = tm.linear_weights(seed=0, features=108, classes=CLASSES)["weight"].astype(np.float64)
    W2 = np.random.default_rng([7, 0, 0]).standard_normal(W.shape) * W.std() + W.mean()
    for i in range(4):
        m0 = np.abs(W[y[i]].reshape(SHAPE)).sum(0)
        if backend == "torch":
            m1 = np.abs(W2[y[i]].reshape(SHAPE)).sum(0)
        else:
            m1 = np.abs(W2[y[i]].reshape(SHAPE[1:] + SHAPE[:1])).sum(-1)
        assert abs(res.per_example[i] - _spearman(m0, m1)) < 1e-6
        mm = [(v - v.min()) / (v.max() - v.min()) for v in (m0, m1)]
        assert abs(res.details["ssim"][i, 1] - _ssim_direct(*mm, win=5)) < 1e-6
    assert res.details["stages"][0] == "original" and np.allclose(res.curve[0], 1.0)


# --- the same weights in both frameworks ------------------------------------------------------
@pytest.fixture(scope="module")
def digits():
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    x, y = load_digit_test_set()
    return load_digit_model, x, y


@needs_both
def test_same_weights_give_the_same_values_in_both_frameworks(digits):
    import torch

    load, x, y = digits
    x, y = x[:12], y[:12]
    tmodel, kmodel = load("torch"), load("tensorflow")
    a = bxg.attribute(tmodel, x, y, method="IG", steps=16)
    xk, ak = tm.nchw_to_nhwc(x), tm.nchw_to_nhwc(a)
    cases = [("diffid", {}), ("diffid", {"baseline": "blur", "score": "probability", "ratios": [0.3, 0.6]}),
             ("insertion", {"steps": 8}), ("deletion", {"steps": 8, "baseline": "mean"}),
             ("kpm", {}), ("knm", {}), ("kam", {}), ("ram", {}),
             ("sensitivity_n", {"num_masks": 4, "ratios": [0.3, 0.7]}), ("completeness", {}),
             ("sparseness", {}), ("mean_absolute_relative_difference", {})]
    for name, opts in cases:
        rt = getattr(metrics, name)(tmodel, x, y, a, **opts)
        rk = getattr(metrics, name)(kmodel, xk, y, ak, **opts)
        np.testing.assert_allclose(rt.per_example, rk.per_example, rtol=1e-5, atol=1e-5, err_msg=name)
        assert abs(rt.value - rk.value) <= 1e-5 * max(1.0, abs(rt.value)), name
        if rt.curve is not None:
            np.testing.assert_allclose(rt.curve, rk.curve, rtol=1e-5, atol=1e-5, err_msg=name)
    # native tensors in, NumPy numbers out
    rt = metrics.diffid(tmodel, torch.from_numpy(x), torch.from_numpy(y), torch.from_numpy(a))
    assert isinstance(rt.value, np.float64) and isinstance(rt.per_example, np.ndarray)
    # the randomisation check: conv and final dense kernels map between the layouts (the
    # dense layer after a flatten sees NHWC-ordered features in Keras, so it is left out)
    rt = metrics.randomization_check(tmodel, x[:4], y[:4], method="SM", layers=["fc2", "conv2", "conv1"])
    rk = metrics.randomization_check(kmodel, xk[:4], y[:4], method="SM", layers=["fc2", "conv2", "conv1"])
    np.testing.assert_allclose(rt.details["spearman"], rk.details["spearman"], atol=1e-5)
    np.testing.assert_allclose(rt.details["ssim"], rk.details["ssim"], atol=1e-5)


# --- sense on the shipped digits CNN -----------------------------------------------------------
@needs_torch
def test_ig_and_big_beat_random_and_flipped_maps_on_the_digits(digits):
    load, x, y = digits  # all 360 held-out digits
    model = load("torch")
    ig = bxg.attribute(model, x, y, method="IG", steps=16)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        big = bxg.attribute(model, x, y, method="BIG", steps=16, bounds=(0.0, 1.0), seed=0,
                            attacks=[bxg.PGD(eps=[0.5, 1.0, 2.0, 4.0], steps=10)])
    rnd = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    for name, a in (("IG", ig), ("BIG", big)):
        for metric, opts in (("diffid", {}), ("diffid", {"score": "accuracy"}), ("diffid", {"order": "positive"}),
                             ("insertion", {"steps": 16}), ("deletion", {"steps": 16})):
            f = getattr(metrics, metric)
            ours, rand, flip = (f(model, x, y, b, **opts) for b in (a, rnd, -a))
            sign = 1 if ours.higher_is_better else -1
            assert sign * (ours.value - rand.value) > 0, (name, metric, opts, ours.value, rand.value)
            if opts.get("order", "positive" if metric != "diffid" else "abs") == "abs":
                # the paper's DiffID ranks by |A|: a flipped map is the same map
                assert ours.value == flip.value
            else:
                assert sign * (ours.value - flip.value) > 0, (name, metric, opts, ours.value, flip.value)


@pytest.mark.parametrize("backend", BACKENDS)
def test_randomization_check_falls_and_leaves_the_model_unchanged(digits, backend):
    load, x, y = digits
    model = load(backend)
    x = x[:6] if backend == "torch" else tm.nchw_to_nhwc(x[:6])
    before = _state(backend, model)
    res = metrics.randomization_check(model, x, y[:6], method="SM")
    assert res.details["stages"][0] == "original" and len(res.curve) == 5
    assert res.curve[0] == pytest.approx(1.0)
    assert res.curve[1] < 0.6 and res.curve[-1] < res.curve[1] - 0.05, res.curve
    assert res.details["ssim_curve"][-1] < 0.5
    assert _state(backend, model) == before
    # a run cannot compute its own attributions: a clear error, not a silent misuse
    with pytest.raises(bxg.InputError, match="method"):
        metrics.randomization_check(model, x, y[:6], np.zeros_like(x))


def _state(backend, model):
    if backend == "torch":
        return ([(k, v.detach().numpy().tobytes()) for k, v in model.state_dict().items()],
                [m.training for m in model.modules()], [p.requires_grad for p in model.parameters()],
                [len(m._forward_hooks) + len(m._forward_pre_hooks) for m in model.modules()])
    return ([w.tobytes() for w in model.get_weights()], [l.trainable for l in model.layers],
            [getattr(l, "activation", None) for l in model.layers])


# --- bad input ----------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_name_the_argument_and_leave_the_model_as_it_was(digits, backend):
    load, x, y = digits
    model = load(backend)
    x, y = x[:4], y[:4]
    if backend != "torch":
        x = tm.nchw_to_nhwc(x)
    a = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    before = _state(backend, model)
    nan = a.copy()
    nan[1, 0, 0, 0] = np.nan
    bad = [
        (lambda: metrics.diffid(model, x, y, a[:, :, :4]), "attributions has shape"),
        (lambda: metrics.insertion(model, x, y, a[:3]), "attributions has shape"),
        (lambda: metrics.kpm(model, x, y, nan), "attributions contains NaN"),
        (lambda: metrics.diffid(model, x, y, nan), "attributions contains NaN"),
        (lambda: metrics.diffid(model, x, y, None), "attributions is None"),
        (lambda: metrics.diffid(model, x, y, a, ratios=[0.5, 1.0]), "ratios"),
        (lambda: metrics.diffid(model, x, y, a, ratios=[0.0]), "ratios"),
        (lambda: metrics.sensitivity_n(model, x, y, a, ratios=[-0.1, 0.5]), "ratios"),
        (lambda: metrics.diffid(model, x, y, a, ratios=[]), "ratios"),
        (lambda: metrics.diffid(model, x[:0], y[:0], a[:0]), "x has no examples"),
        (lambda: metrics.insertion(model, x, y, a, steps=0), "steps"),
        (lambda: metrics.insertion(model, x, y, a, baseline="noise"), "baseline"),
        (lambda: metrics.insertion(model, x, y, a, blur=(4, 1.0)), "blur"),
        (lambda: metrics.diffid(model, x, y, a, score="auc"), "score"),
        (lambda: metrics.deletion(model, x, y[:3], a), "labels"),
        (lambda: metrics.kpm(model, x, y, a, fractions=[0.5]), "fractions"),
        (lambda: metrics.completeness(model, x, y, a, baseline=np.zeros((2, 2))), "baseline"),
        (lambda: metrics.mean_absolute_relative_difference(model, x, y, a, reference=a[:2]), "reference"),
        (lambda: metrics.mean_absolute_relative_difference(model, x, y, a, reference="nope"), "reference"),
        (lambda: metrics.randomization_check(model, x, y, method="SM", layers=["nope"]), "layers"),
    ]
    for call, pattern in bad:
        with pytest.raises(bxg.InputError, match=pattern):
            call()
        assert _state(backend, model) == before, pattern
    # a one-channel map per example is accepted in the model's layout, or without a channel axis
    m = a.sum(axis=1 if backend == "torch" else -1)
    r1 = metrics.insertion(model, x, y, m, steps=4)
    r2 = metrics.insertion(model, x, y, a, steps=4)
    np.testing.assert_allclose(r1.per_example, r2.per_example, atol=1e-6)


# --- the run table, the public names, the figures -----------------------------------------------
@needs_torch
def test_explain_dataset_records_real_diffid_values(digits, tmp_path):
    load, x, y = digits
    model = load("torch")
    x, y = x[:20], y[:20]
    run = bxg.explain_dataset(model, (x, y), methods={"IG": {"steps": 8}}, metrics=["diffid"],
                              out=str(tmp_path / "run"), batch_size=8, progress=False)
    ig = bxg.attribute(model, x, y, method="IG", steps=8)
    want = metrics.diffid(model, x, y, ig).per_example
    np.testing.assert_allclose(np.asarray(run.table["diffid_IG"], np.float64), want, rtol=1e-5, atol=1e-6)
    assert np.ptp(want) > 0  # real per-example values, not a constant


def test_metrics_import_no_framework():
    import ast
    import pathlib

    frameworks = {"torch", "tensorflow", "keras", "jax", "torchvision", "matplotlib"}
    for path in (pathlib.Path(metrics.__file__).parent).glob("*.py"):
        roots = set()
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                roots |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
                roots.add(node.module.split(".")[0])
        assert not frameworks & roots, path.name


def test_all_lists_only_the_metric_functions():
    from boundary_xg.runs import metrics_adapter

    assert all(callable(getattr(metrics, n)) and not isinstance(getattr(metrics, n), type) for n in metrics.__all__)
    assert "MetricResult" not in metrics.__all__ and "kpm_family" not in metrics.__all__
    assert metrics_adapter.available() == sorted(metrics.__all__)
    assert metrics_adapter.resolve("DiffID") is metrics.diffid
    assert bxg.metrics is metrics


@needs_torch
def test_plotting_helpers_draw_curves_families_and_grids(digits, tmp_path):
    from boundary_xg import viz

    load, x, y = digits
    model = load("torch")
    x, y = x[:3], y[:3]
    a = bxg.attribute(model, x, y, method="IG", steps=8)
    curves = {"IG": metrics.insertion(model, x, y, a, steps=8),
              "random": metrics.insertion(model, x, y, a[::-1].copy(), steps=8)}
    fig = viz.plot_metric_curves(curves, output_file=str(tmp_path / "c.png"))
    assert os.path.getsize(tmp_path / "c.png") > 1000 and "area" in fig.axes[0].get_legend().texts[0].get_text()
    viz.plot_kpm_family({"IG": metrics.kpm_family(model, x, y, a)}, output_file=str(tmp_path / "k.png"))
    assert os.path.getsize(tmp_path / "k.png") > 1000
    res = metrics.randomization_check(model, x, y, method="SM")
    fig = viz.plot_randomization(res, x, output_file=str(tmp_path / "r.png"))
    assert os.path.getsize(tmp_path / "r.png") > 1000
