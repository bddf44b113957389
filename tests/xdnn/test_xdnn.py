"""X-DNN toolkit: homogeneity scan, strip_bias, X-architectures, exact IG, priors, checkpoints.

Oracles: IG with 128 Gauss-Legendre steps (a different computation than one
gradient), the completeness axiom against the model's own outputs, the same
NumPy weights in both frameworks, torchvision's AlexNet/VGG16/ResNet-50 for the
PyTorch layer lists, the PyTorch build for the Keras one (weights ported, same
logits), NumPy formulas for the priors and the numerical homogeneity check,
forward-hook row counts for IG's one-pass path, and the models' weights
themselves for checkpoint loading.
"""

import logging
import warnings

import numpy as np
import pytest

import boundary_xg as bxg
import boundary_xg.xdnn as X
from conftest import BACKENDS, build_cnn, needs_both, needs_tf, needs_torch

FW = {"torch": "torch", "tensorflow": "keras"}


def _randomize(model, backend, seed=0):
    """Random weights everywhere (Fixup initialises some layers to zero)."""
    rng = np.random.default_rng(seed)
    if backend == "torch":
        import torch

        with torch.no_grad():
            for name, p in model.named_parameters():
                shape = tuple(p.shape)
                if name.endswith("scale"):
                    v = 1.0 + 0.1 * rng.standard_normal(shape)
                elif len(shape) > 1:
                    v = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[1:]))
                else:
                    v = 0.1 * rng.standard_normal(shape)
                p.copy_(torch.as_tensor(v, dtype=p.dtype))
        return model
    for v in model.weights:
        shape = tuple(v.shape)
        if v.path.endswith("scale"):
            val = 1.0 + 0.1 * rng.standard_normal(shape)
        elif len(shape) > 1:
            val = rng.standard_normal(shape) * np.sqrt(2.0 / np.prod(shape[:-1]))
        else:
            val = 0.1 * rng.standard_normal(shape)
        v.assign(val.astype("float32"))
    return model


def _model_output(model, backend, x, labels):
    if backend == "torch":
        import torch

        with torch.no_grad():
            out = model.eval()(torch.as_tensor(x)).numpy()
    else:
        out = np.asarray(model(x, training=False))
    return out[np.arange(len(labels)), labels]


def _mean_abs_rel_diff(ig, ixg):
    """Spec 3.6: mean|IG - IxG| / (mean|IG| + 1e-7)."""
    return np.mean(np.abs(ig - ixg)) / (np.mean(np.abs(ig)) + 1e-7)


def _arch(name, bias, backend, size):
    fn = getattr(X, name if bias else "x_" + name)
    return _randomize(fn(7, framework=FW[backend], width=1 / 16, input_size=size), backend)


def _check_xg_equals_ig(model, backend, size, labels=(1, 4)):
    x = np.random.default_rng(3).standard_normal((2, 3, size, size)).astype(np.float32)
    if backend != "torch":
        x = np.ascontiguousarray(x.transpose(0, 2, 3, 1))
    labels = np.array(labels)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", X.NonHomogeneousWarning)
        xg = bxg.attribute(model, x, labels, method="XG")
    ig = bxg.attribute(model, x, labels, method="IG", steps=128, rule="gausslegendre")
    f = _model_output(model, backend, x, labels)
    f0 = _model_output(model, backend, np.zeros_like(x), labels)
    return xg, ig, f, f0


def _assert_exact(xg, ig, f, f0):
    assert np.max(np.abs(xg - ig)) <= 1e-4 * np.max(np.abs(ig))
    np.testing.assert_allclose(f0, 0.0, atol=1e-6)
    gap = xg.reshape(len(f), -1).sum(1) - (f - f0)
    # float precision of a sum of many terms: relative to the sum of their magnitudes
    scale = np.abs(xg).reshape(len(f), -1).sum(1) + np.abs(f)
    assert np.all(np.abs(gap) <= 1e-5 * scale)
    assert _mean_abs_rel_diff(ig, xg) < 1e-4


# --- XG = IG on X-models; not on their biased counterparts ----------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_xg_equals_ig_on_x_cnn_and_differs_with_bias(backend):
    w_model, conv = build_cnn(backend, seed=2, bias=False)
    xg, ig, f, f0 = _check_xg_equals_ig(w_model, backend, 8)
    _assert_exact(xg, ig, f, f0)
    b_model, _ = build_cnn(backend, seed=2, bias=True)
    xg_b, ig_b, _, _ = _check_xg_equals_ig(b_model, backend, 8)
    assert _mean_abs_rel_diff(ig_b, xg_b) > 0.05


@pytest.mark.parametrize("backend", BACKENDS)
def test_x_vgg16_small(backend):
    xg, ig, f, f0 = _check_xg_equals_ig(_arch("vgg16", False, backend, 32), backend, 32)
    _assert_exact(xg, ig, f, f0)


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch,size", [("vgg16", 32), ("fixup_resnet50", 32), ("alexnet", 64)])
def test_regular_architectures_differ(backend, arch, size):
    xg, ig, _, _ = _check_xg_equals_ig(_arch(arch, True, backend, size), backend, size)
    assert _mean_abs_rel_diff(ig, xg) > 0.05


@pytest.mark.slow
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch,size", [("fixup_resnet50", 32), ("alexnet", 64)])
def test_x_architectures_exact(backend, arch, size):
    xg, ig, f, f0 = _check_xg_equals_ig(_arch(arch, False, backend, size), backend, size)
    _assert_exact(xg, ig, f, f0)


@needs_torch
def test_x_fixup_resnet50_small_torch():
    xg, ig, f, f0 = _check_xg_equals_ig(_arch("fixup_resnet50", False, "torch", 32), "torch", 32)
    _assert_exact(xg, ig, f, f0)


# --- check_homogeneous ------------------------------------------------------------------
@needs_torch
def test_scan_flags_each_kind_torch():
    import torch
    from torch import nn

    class Scalar(nn.Module):  # Fixup-style learned scalar bias
        def __init__(self):
            super().__init__()
            self.bias1a = nn.Parameter(torch.zeros(1))

        def forward(self, x):
            return x + self.bias1a

    class Normalize(nn.Module):  # input normalisation inside the model
        def __init__(self):
            super().__init__()
            self.register_buffer("mean", torch.full((1, 4), 0.5))

        def forward(self, x):
            return x - self.mean

    def kinds(*layers):
        m = nn.Sequential(nn.Linear(4, 4, bias=False), *layers, nn.Linear(4, 3, bias=False))
        return {(o.layer, o.kind) for o in X.check_homogeneous(m).offenders}

    assert kinds(nn.ReLU()) == set()
    assert kinds(nn.LeakyReLU(), nn.PReLU(), nn.Dropout(), nn.Identity()) == set()
    assert ("0", "bias") in {(o.layer, o.kind) for o in X.check_homogeneous(
        nn.Sequential(nn.Linear(4, 3))).offenders}
    assert kinds(nn.BatchNorm1d(4)) == {("1", "normalization")}
    assert kinds(nn.LayerNorm(4)) == {("1", "normalization")}
    for act in (nn.GELU(), nn.SiLU(), nn.Sigmoid(), nn.Tanh(), nn.ELU(), nn.Softmax(dim=1), nn.ReLU6()):
        assert kinds(act) == {("1", "activation")}, act
    assert kinds(Scalar()) == {("1.bias1a", "bias")}
    assert kinds(Normalize()) == {("1.mean", "offset")}
    # a final softmax is stripped by the backend: not an offence
    assert X.check_homogeneous(nn.Sequential(nn.Linear(4, 3, bias=False), nn.Softmax(1))).homogeneous


@needs_tf
def test_scan_flags_each_kind_keras():
    import keras
    from boundary_xg.backends.tensorflow.xdnn import ScalarBias

    L = keras.layers

    def kinds(*layers):
        m = keras.Sequential([keras.Input((4,)), L.Dense(4, use_bias=False), *layers,
                              L.Dense(3, use_bias=False)])
        return {o.kind for o in X.check_homogeneous(m).offenders}

    assert kinds(L.ReLU(), L.LeakyReLU(), L.Dropout(0.1)) == set()
    assert kinds(L.Dense(4)) == {"bias"}
    assert kinds(L.BatchNormalization()) == {"normalization"}
    assert kinds(L.LayerNormalization()) == {"normalization"}
    for act in ("gelu", "silu", "sigmoid", "tanh", "elu", "softmax"):
        assert kinds(L.Activation(act)) == {"activation"}, act
    assert kinds(L.Dense(4, use_bias=False, activation="tanh")) == {"activation"}
    assert kinds(L.ReLU(max_value=6.0)) == {"activation"}
    assert kinds(ScalarBias()) == {"bias"}
    assert kinds(L.Rescaling(1.0, offset=-0.5)) == {"offset"}


@needs_torch
def test_numerical_check_catches_functional_activation_and_keeps_model():
    import torch
    from torch import nn

    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 8, bias=False)
            self.b = nn.Linear(8, 3, bias=False)

        def forward(self, x):
            return self.b(torch.nn.functional.gelu(self.a(x)))

    m = Hidden().train()
    before = {k: v.clone() for k, v in m.state_dict().items()}
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    report = X.check_homogeneous(m, x)
    assert report.offenders == [] and report.max_rel_error > 1e-2 and not report.homogeneous
    assert "NOT homogeneous" in str(report)
    assert m.training and all(torch.equal(before[k], v) for k, v in m.state_dict().items())


@pytest.mark.parametrize("backend", BACKENDS)
def test_x_models_pass_check(backend):
    for name, size in (("x_alexnet", 64), ("x_vgg16", 32), ("x_fixup_resnet50", 32)):
        x = np.random.default_rng(0).random((2, 3, size, size)).astype(np.float32)
        if backend != "torch":
            x = x.transpose(0, 2, 3, 1)
        m = _randomize(getattr(X, name)(5, framework=FW[backend], width=1 / 16, input_size=size), backend)
        report = X.check_homogeneous(m, x)
        assert report.homogeneous and report.max_rel_error < 1e-5, (name, str(report))
        reg = _randomize(getattr(X, name[2:])(5, framework=FW[backend], width=1 / 16, input_size=size),
                         backend)
        report = X.check_homogeneous(reg, x)  # the regular variant: flagged, and numerically off
        assert report.offenders and report.max_rel_error > 1e-3, (name, str(report))
    cnn = X.x_cnn(framework=FW[backend])
    assert X.check_homogeneous(cnn, np.random.default_rng(0).random(
        (2, 1, 8, 8) if backend == "torch" else (2, 8, 8, 1)).astype(np.float32)).homogeneous
    assert not X.check_homogeneous(X.cnn(framework=FW[backend])).homogeneous


# --- strip_bias -------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("arch,size", [("alexnet", 64), ("vgg16", 32), ("fixup_resnet50", 32), ("cnn", 8)])
def test_strip_bias_gives_x_dnn_and_keeps_original(backend, arch, size):
    if arch == "cnn":
        m = _randomize(X.cnn(framework=FW[backend]), backend)
    else:
        m = _arch(arch, True, backend, size)
    n_before = len(X.check_homogeneous(m).offenders)
    weights_before = _weights(m, backend)
    with warnings.catch_warnings():
        warnings.simplefilter("error", X.NonHomogeneousWarning)
        s = X.strip_bias(m)
    cin = 1 if arch == "cnn" else 3
    x = np.random.default_rng(0).random((2, cin, size, size)).astype(np.float32)
    if backend != "torch":
        x = x.transpose(0, 2, 3, 1)
    report = X.check_homogeneous(s, x)
    assert report.homogeneous, str(report)
    assert s.xdnn_unfixable == ()
    assert len(X.check_homogeneous(m).offenders) == n_before > 0
    after = _weights(m, backend)
    assert all(np.array_equal(weights_before[k], after[k]) for k in weights_before)


def _weights(m, backend):
    if backend == "torch":
        return {k: v.detach().numpy().copy() for k, v in m.state_dict().items()}
    return {v.path: v.numpy().copy() for v in m.weights}


@needs_torch
def test_strip_bias_reports_unfixable_layers():
    from torch import nn

    m = nn.Sequential(nn.Linear(4, 4), nn.BatchNorm1d(4), nn.Tanh(), nn.Linear(4, 2))
    with pytest.warns(X.NonHomogeneousWarning, match="BatchNorm1d|normalization"):
        s = X.strip_bias(m)
    assert {o.kind for o in s.xdnn_unfixable} == {"normalization", "activation"}
    assert s[0].bias is None and m[0].bias is not None


# --- BA("XG") warns; BA("IG", exact=True) ----------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_xg_warns_once_on_non_homogeneous(backend):
    model, conv = build_cnn(backend, seed=0, bias=True)
    x = conv(np.random.default_rng(0).standard_normal((2, 3, 8, 8)).astype(np.float32))
    with pytest.warns(X.NonHomogeneousWarning, match="conv1|0 \\(bias\\)"):
        bxg.BA("XG").attribute(model, x, [0, 1])
    with warnings.catch_warnings():
        warnings.simplefilter("error", X.NonHomogeneousWarning)
        bxg.BA("XG").attribute(model, x, [0, 1])  # second call on the same model: silent
        xmodel, _ = build_cnn(backend, seed=0, bias=False)
        bxg.BA("XG").attribute(xmodel, x, [0, 1])


@pytest.mark.parametrize("backend", BACKENDS)
def test_ig_exact_one_pass(backend, caplog):
    model, conv = build_cnn(backend, seed=1, bias=False)
    x = conv(np.random.default_rng(1).standard_normal((3, 3, 8, 8)).astype(np.float32))
    labels = np.array([0, 2, 4])
    with caplog.at_level(logging.INFO, logger="boundary_xg"):
        attr, gap = bxg.BA("IG", exact=True).attribute(model, x, labels, return_gap=True)
    assert any("exact=True" in r.getMessage() for r in caplog.records)
    ig = bxg.attribute(model, x, labels, method="IG", steps=128)
    assert np.max(np.abs(attr - ig)) <= 1e-4 * np.max(np.abs(ig))
    assert np.max(np.abs(gap)) < 1e-4


@pytest.mark.parametrize("backend", BACKENDS)
def test_ig_exact_refuses_non_homogeneous(backend):
    model, conv = build_cnn(backend, seed=1, bias=True)
    x = conv(np.random.default_rng(1).standard_normal((2, 3, 8, 8)).astype(np.float32))
    with pytest.raises(bxg.MethodError, match="conv1|0 \\(bias\\)"):
        bxg.attribute(model, x, [0, 1], method="IG", exact=True)
    xmodel, _ = build_cnn(backend, seed=1, bias=False)
    with pytest.raises(bxg.InputError, match="zero baseline"):
        bxg.attribute(xmodel, x, [0, 1], method="IG", exact=True, baseline=0.5)
    with pytest.raises(bxg.InputError, match="exact"):
        bxg.BA("IG", exact="yes")


@needs_torch
def test_ig_exact_refuses_functional_nonlinearity():
    import torch
    from torch import nn

    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.a = nn.Linear(4, 8, bias=False)
            self.b = nn.Linear(8, 3, bias=False)

        def forward(self, x):
            return self.b(torch.tanh(self.a(x)))

    x = np.random.default_rng(0).standard_normal((2, 4)).astype(np.float32)
    with pytest.raises(bxg.MethodError, match="not nonnegatively homogeneous"):
        bxg.attribute(Hidden(), x, [0, 1], method="IG", exact=True)


# --- checkpoints ------------------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("arch,layout", [
    ("x_alexnet", "module."), ("alexnet", "features.module."), ("x_vgg16", "module."),
    ("vgg16", "features.module."), ("x_fixup_resnet50", "module."), ("fixup_resnet50", "module."),
])
def test_load_checkpoint_key_mapping(tmp_path, arch, layout):
    """A synthetic checkpoint laid out as the paper's training scripts save them (spec 3.4)."""
    import torch

    src = _randomize(getattr(X, arch)(5, width=1 / 16), "torch", seed=4)
    opt = torch.optim.SGD(src.parameters(), lr=0.1, momentum=0.9, weight_decay=1e-4)
    for p in src.parameters():
        p.grad = torch.ones_like(p)
    opt.step()  # the optimizer's state (momentum buffers) is saved next to the weights
    state = {k: v.clone() for k, v in src.state_dict().items()}
    if layout == "module.":  # DataParallel around the whole model
        saved = {"module." + k: v for k, v in state.items()}
    else:  # DataParallel around `features` only
        saved = {("features.module." + k[len("features."):] if k.startswith("features.") else k): v
                 for k, v in state.items()}
    assert any(k.startswith(layout) for k in saved)
    path = tmp_path / f"{arch}_model_best.pth.tar"
    torch.save({"epoch": 90, "arch": arch, "state_dict": saved, "best_acc1": torch.tensor(56.0),
                "optimizer": opt.state_dict()}, path)
    dst = getattr(X, arch)(5, width=1 / 16)
    assert not all(torch.equal(v, state[k]) for k, v in dst.state_dict().items())
    X.load_checkpoint(dst, str(path))
    for k, v in dst.state_dict().items():
        assert torch.equal(v, state[k]), k


def test_map_checkpoint_keys_keeps_keys_the_model_has():
    sd = {"module.features.0.weight": 1, "features.module.3.weight": 2, "module.fc.bias": 3,
          "wrapper.module.weight": 4}
    assert X.map_checkpoint_keys(sd) == {"features.0.weight": 1, "features.3.weight": 2,
                                         "fc.bias": 3, "wrapper.weight": 4}
    assert X.map_checkpoint_keys(sd, model_keys=["wrapper.module.weight"])["wrapper.module.weight"] == 4
    # drop_bias: bias entries the model lacks are skipped, others kept
    out = X.map_checkpoint_keys(sd, model_keys=["features.0.weight", "features.3.weight"], drop_bias=True)
    assert out == {"features.0.weight": 1, "features.3.weight": 2, "wrapper.weight": 4}


@needs_torch
def test_load_checkpoint_bias_mismatch():
    import torch

    regular = _randomize(X.vgg16(5, width=1 / 16), "torch")
    xm = X.x_vgg16(5, width=1 / 16)
    with pytest.raises(bxg.InputError, match="drop_bias"):
        X.load_checkpoint(xm, {"state_dict": regular.state_dict()})
    X.load_checkpoint(xm, {"state_dict": regular.state_dict()}, drop_bias=True)
    assert torch.equal(xm.features[0].weight, regular.features[0].weight)
    with pytest.raises(bxg.InputError, match="does not exist"):
        X.load_checkpoint(xm, "/nonexistent/ckpt.pth")


# --- priors and training --------------------------------------------------------------------
def _gini_np(v):
    v = np.ravel(v).astype(np.float64)
    return 0.5 * np.mean(np.abs(v[:, None] - v[None, :])) / np.mean(v)


@pytest.mark.parametrize("backend", BACKENDS)
def test_prior_values_match_numpy(backend):
    from boundary_xg.backends import get_backend

    B = get_backend(backend)
    a = np.random.default_rng(0).standard_normal((3, 2, 5, 4)).astype(np.float32)
    t = B.asarray(a)
    assert abs(float(B.to_numpy(X.mean_abs_gini(t))) - _gini_np(np.abs(a).mean(0))) < 1e-5
    assert abs(float(B.to_numpy(X.gini_prior(t))) + _gini_np(np.abs(a).mean(0))) < 1e-5
    layout = "NCHW"
    tv = (np.abs(np.diff(a, axis=2)).sum() + np.abs(np.diff(a, axis=3)).sum()) / 3
    assert abs(float(B.to_numpy(X.total_variation(t, layout=layout))) - tv) < 1e-4


@needs_both
def test_prior_gradient_through_xgradient_torch_equals_tf_persistent_tape():
    """Double back-propagation: d Gini(XG) / d weights, same weights in both frameworks."""
    import tensorflow as tf
    import torch
    from boundary_xg.testing import models as tm

    w = tm.cnn_weights(seed=5, bias=False)
    x = np.random.default_rng(5).random((4, 3, 8, 8)).astype(np.float32)
    labels = np.array([0, 1, 2, 3])

    tmodel = tm.torch_cnn(w)
    attr = X.xgradient_for_training(tmodel, torch.as_tensor(x), torch.as_tensor(labels))
    loss = X.gini_prior(attr)
    (g_torch,) = torch.autograd.grad(loss, [tmodel[9].weight])

    kmodel = tm.keras_cnn(w)
    xk = tf.constant(tm.nchw_to_nhwc(x))
    with tf.GradientTape(persistent=True) as tape:
        attr_k = X.xgradient_for_training(kmodel, xk, tf.constant(labels))
        loss_k = X.gini_prior(attr_k)
    g_tf = tape.gradient(loss_k, kmodel.get_layer("fc2").kernel)
    del tape
    assert abs(float(loss.detach()) - float(loss_k)) < 1e-5
    g_t = g_torch.numpy().T
    np.testing.assert_allclose(np.asarray(g_tf), g_t, atol=1e-5 * np.abs(g_t).max() + 1e-8)
    assert np.abs(g_t).max() > 0


@needs_torch
@pytest.mark.parametrize("prior,lam", [("gini", 0.3), ("tv", 0.01)])
def test_prior_training_moves_attributions_in_the_priors_direction(prior, lam):
    """Gini prior: sparser attributions (higher Gini); TV prior: smoother (lower TV).

    Measured with NumPy formulas on held-out digits, with accuracy kept above chance by far.
    """
    import torch
    from sklearn.datasets import load_digits

    digits = load_digits()
    x = torch.as_tensor(digits.images[:600, None] / 16.0, dtype=torch.float32)
    y = torch.as_tensor(digits.target[:600])
    xv, yv = torch.as_tensor(digits.images[1200:1400, None] / 16.0, dtype=torch.float32), digits.target[1200:1400]
    penalty = {"gini": X.gini_prior, "tv": X.total_variation}[prior]

    def train(lam):
        model = X.x_cnn(10, seed=0)
        opt = torch.optim.Adam(model.parameters(), lr=1e-2)
        for _ in range(40):
            opt.zero_grad()
            loss = torch.nn.functional.cross_entropy(model(x), y)
            if lam:
                loss = loss + lam * penalty(X.xgradient_for_training(model, x, y))
            loss.backward()
            opt.step()
        model.eval()
        with torch.no_grad():
            acc = float((model(xv).argmax(1).numpy() == yv).mean())
        attr = bxg.attribute(model, xv.numpy(), yv, method="XG")
        tv = (np.abs(np.diff(attr, axis=2)).sum() + np.abs(np.diff(attr, axis=3)).sum()) / len(attr)
        return acc, _gini_np(np.abs(attr).mean(0)), tv

    acc0, gini0, tv0 = train(0.0)
    acc1, gini1, tv1 = train(lam)
    if prior == "gini":
        assert gini1 > gini0 + 0.02, (gini0, gini1)
    else:
        assert tv1 < 0.8 * tv0, (tv0, tv1)
    assert min(acc0, acc1) > 0.6, (acc0, acc1)


# --- architectures against independent references (spec 3.3) ------------------------------
@needs_torch
@pytest.mark.parametrize("arch", ["alexnet", "vgg16"])
def test_torch_architectures_are_torchvisions(arch):
    """Regular AlexNet/VGG16 are torchvision's modules; the X-variants lack exactly the biases.

    Built at full size on the meta device (no memory, no weights): torchvision is the oracle
    for the layer list, kernel sizes, strides, paddings, pooling, dropout and key layout.
    """
    torchvision = pytest.importorskip("torchvision")
    import torch

    with torch.device("meta"):
        ours, ref, xm = getattr(X, arch)(), getattr(torchvision.models, arch)(), getattr(X, "x_" + arch)()
        out = xm(torch.empty(2, 3, 224, 224))
    for part in ("features", "avgpool", "classifier"):
        assert repr(getattr(ours, part)) == repr(getattr(ref, part)), part
    shapes = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == shapes
    no_bias = {k: s for k, s in shapes.items() if not k.endswith(".bias")}
    assert {k: tuple(v.shape) for k, v in xm.state_dict().items()} == no_bias
    n_conv, n_fc = (5, 3) if arch == "alexnet" else (13, 3)
    assert sum(isinstance(m, torch.nn.Conv2d) for m in xm.modules()) == n_conv
    assert sum(isinstance(m, torch.nn.Linear) for m in xm.modules()) == n_fc
    assert tuple(out.shape) == (2, 1000)


@needs_torch
def test_torch_fixup_resnet50_layout():
    """Fixup-ResNet-50: torchvision's ResNet-50 convolutions (v1.5 strides), no normalisation,
    the 16 x 7 + 2 Fixup scalars and an fc bias; the X-variant has none of these scalars."""
    torchvision = pytest.importorskip("torchvision")
    import torch
    from torch import nn

    with torch.device("meta"):
        ref, reg, xm = torchvision.models.resnet50(), X.fixup_resnet50(), X.x_fixup_resnet50()
        out = xm(torch.empty(2, 3, 224, 224))
    ref_convs = {n.replace("downsample.0", "downsample"): repr(m)
                 for n, m in ref.named_modules() if isinstance(m, nn.Conv2d)}
    for model in (reg, xm):
        convs = {n: repr(m) for n, m in model.named_modules() if isinstance(m, nn.Conv2d)}
        assert convs == ref_convs
        from boundary_xg.backends.torch import xdnn as torch_xdnn

        assert not any(isinstance(m, torch_xdnn._NORMS) for m in model.modules())
        assert repr(model.maxpool) == repr(ref.maxpool)
    scalars = {n for n, p in reg.named_parameters() if p.dim() == 1 and p.numel() == 1}
    expected = {"bias1", "bias2"} | {
        f"layer{s}.{b}.{name}" for s, blocks in zip((1, 2, 3, 4), (3, 4, 6, 3)) for b in range(blocks)
        for name in ("bias1a", "bias1b", "bias2a", "bias2b", "bias3a", "bias3b", "scale")}
    assert scalars == expected and len(expected) == 16 * 7 + 2
    assert reg.fc.bias is not None and tuple(reg.fc.weight.shape) == (1000, 2048)
    assert xm.fc.bias is None and not any(p.numel() == 1 for p in xm.parameters())
    assert {k for k in reg.state_dict() if k not in expected} == set(xm.state_dict()) | {"fc.bias"}
    assert tuple(out.shape) == (2, 1000)


def _torch_to_keras(tm, km, arch):
    """Copy a PyTorch model's weights into the Keras model of the same architecture."""
    sd = {k: v.detach().numpy() for k, v in tm.state_dict().items()}
    names = {}
    if arch in ("alexnet", "vgg16", "cnn"):
        convs = [k[:-7] for k in sd if k.startswith("features.") and k.endswith(".weight")]
        fcs = [k[:-7] for k in sd if k.startswith("classifier.") and k.endswith(".weight")]
        names.update({f"conv{i}": n for i, n in enumerate(convs, 1)})
        names.update({f"fc{i}": n for i, n in enumerate(fcs, 1)})
    copied = set()
    for lay in km.layers:
        if not lay.weights:
            continue
        dotted = lay.name.replace("_", ".", 2) if lay.name.startswith("layer") else lay.name
        base = names.get(lay.name, dotted)
        vals = []
        for v in lay.weights:
            leaf = v.path.split("/")[-1]
            if leaf == "kernel":
                key = base + ".weight"
                w = sd[key]
                if w.ndim == 4:
                    w = w.transpose(2, 3, 1, 0)
                else:
                    w = w.T
                    if lay.name == "fc1" and arch != "fixup_resnet50":
                        # torch flattens (C, S, S), Keras (S, S, C)
                        s = {"alexnet": 6, "vgg16": 7, "cnn": 2}[arch]
                        w = w.reshape(-1, s, s, w.shape[1]).transpose(1, 2, 0, 3).reshape(-1, w.shape[1])
            elif base + "." + leaf in sd:
                key = base + "." + leaf
                w = sd[key]
            else:  # ScalarBias / Scale: one learned scalar
                key = base
                w = sd[key]
            copied.add(key)
            vals.append(w.reshape(tuple(v.shape)))
        lay.set_weights(vals)
    assert copied == set(sd), set(sd) ^ copied


@needs_both
@pytest.mark.parametrize("bias", [False, True], ids=["x", "regular"])
@pytest.mark.parametrize("arch,size", [("alexnet", 64), ("vgg16", 32), ("fixup_resnet50", 32), ("cnn", 8)])
def test_keras_architectures_compute_the_torch_function(arch, size, bias):
    """The Keras build is the PyTorch network: same weights (permuted), same logits.

    PyTorch is the oracle for paddings, pooling, Fixup's scalar placement and the
    adaptive average pooling of the Keras side.
    """
    import torch

    if arch == "cnn":
        tm = _randomize(getattr(X, "cnn" if bias else "x_cnn")(7, seed=0), "torch")
        km = getattr(X, "cnn" if bias else "x_cnn")(7, framework="keras", input_size=size)
        cin = 1
    else:
        tm = _arch(arch, bias, "torch", size)
        km = getattr(X, arch if bias else "x_" + arch)(7, framework="keras", width=1 / 16, input_size=size)
        cin = 3
    assert km.count_params() == sum(p.numel() for p in tm.parameters())
    _torch_to_keras(tm, km, arch)
    x = np.random.default_rng(0).random((2, cin, size, size)).astype(np.float32)
    with torch.no_grad():
        want = tm.eval()(torch.as_tensor(x)).numpy()
    got = np.asarray(km(x.transpose(0, 2, 3, 1), training=False))
    assert np.abs(want).max() > 0
    np.testing.assert_allclose(got, want, atol=1e-4 * np.abs(want).max())


@pytest.mark.parametrize("backend", BACKENDS)
def test_fixup_scalar_biases_are_flagged_by_name(backend):
    """Every Fixup scalar bias and the fc bias is an offence; ``scale`` is not (homogeneous)."""
    reg = X.fixup_resnet50(5, framework=FW[backend], width=1 / 16, input_size=32)
    found = {o.layer for o in X.check_homogeneous(reg).offenders}
    assert all(o.kind == "bias" for o in X.check_homogeneous(reg).offenders)
    scalars = ["bias1a", "bias1b", "bias2a", "bias2b", "bias3a", "bias3b"]
    blocks = [(s, b) for s, n in zip((1, 2, 3, 4), (3, 4, 6, 3)) for b in range(n)]
    if backend == "torch":
        want = {"bias1", "bias2", "fc"} | {f"layer{s}.{b}.{n}" for s, b in blocks for n in scalars}
    else:
        want = {"bias1/bias", "bias2/bias", "fc"} | {
            f"layer{s}_{b}_{n}/bias" for s, b in blocks for n in scalars}
    assert found == want
    assert len(want) == 16 * 6 + 3
    assert X.check_homogeneous(X.x_fixup_resnet50(5, framework=FW[backend], width=1 / 16,
                                                  input_size=32)).offenders == []


# --- the numerical check against a NumPy oracle ----------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_numerical_check_value_matches_numpy(backend):
    """max_a max|F(a x) - a F(x)| / (a max|F(x)|), from the model's own outputs in NumPy."""
    model, conv = build_cnn(backend, seed=6, bias=True)
    x = conv(np.random.default_rng(6).standard_normal((3, 3, 8, 8)).astype(np.float32))
    scales = (0.5, 2.0, 3.7)
    fx = _logits(model, backend, x)
    worst = max(np.abs(_logits(model, backend, a * x) - a * fx).max() / a for a in scales)
    want = worst / np.abs(fx).max()
    report = X.check_homogeneous(model, x, scales=scales)
    assert want > 1e-2 and not report.homogeneous
    assert abs(report.max_rel_error - want) <= 1e-4 * want
    assert "worst relative error" in str(report) and "bias" in str(report)
    # a = 1 only: trivially satisfied, whatever the biases (float rounding of another batch size)
    assert X.check_homogeneous(model, x, scales=(1.0,)).max_rel_error < 1e-6


def _logits(model, backend, x):
    if backend == "torch":
        import torch

        with torch.no_grad():
            return model(torch.as_tensor(x)).numpy()
    return np.asarray(model(x, training=False))


@needs_tf
def test_numerical_check_catches_hidden_nonlinearity_keras():
    """A Lambda layer hides tanh from the static scan; F(a x) = a F(x) exposes it."""
    import keras

    L = keras.layers
    m = keras.Sequential([keras.Input((4,)), L.Dense(8, use_bias=False), L.Lambda(keras.ops.tanh),
                          L.Dense(3, use_bias=False)])
    x = np.random.default_rng(0).standard_normal((3, 4)).astype(np.float32)
    report = X.check_homogeneous(m, x)
    assert report.offenders == [] and report.max_rel_error > 1e-2 and not report.homogeneous
    ok = keras.Sequential([keras.Input((4,)), L.Dense(8, use_bias=False), L.ReLU(),
                           L.Dense(3, use_bias=False)])
    assert X.check_homogeneous(ok, x).max_rel_error < 1e-6


@needs_tf
def test_strip_bias_reports_unfixable_layers_keras():
    import keras

    L = keras.layers
    m = keras.Sequential([keras.Input((4,)), L.Dense(4, name="d1"), L.BatchNormalization(name="bn"),
                          L.Dense(4, activation="tanh", name="d2"), L.Dense(2, name="d3")])
    with pytest.warns(X.NonHomogeneousWarning, match="bn"):
        s = X.strip_bias(m)
    assert {(o.layer, o.kind) for o in s.xdnn_unfixable} == {("bn", "normalization"), ("d2", "activation")}
    assert not any(lay.use_bias for lay in s.layers if isinstance(lay, L.Dense))
    assert all(lay.use_bias for lay in m.layers if isinstance(lay, L.Dense))
    np.testing.assert_array_equal(s.get_layer("d1").kernel.numpy(), m.get_layer("d1").kernel.numpy())


@pytest.mark.parametrize("backend", BACKENDS)
def test_xg_equals_ig_on_xdnn_x_cnn(backend):
    """The toolkit's own X-CNN (1x8x8, the digits demo's) is exact too; its biased twin is not."""
    x = np.random.default_rng(8).random((3, 1, 8, 8)).astype(np.float32)
    if backend != "torch":
        x = x.transpose(0, 2, 3, 1)
    labels = np.array([0, 3, 9])
    for bias in (False, True):
        m = _randomize(getattr(X, "cnn" if bias else "x_cnn")(framework=FW[backend], seed=0), backend)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", X.NonHomogeneousWarning)
            xg = bxg.attribute(m, x, labels, method="XG")
        ig = bxg.attribute(m, x, labels, method="IG", steps=128)
        d = _mean_abs_rel_diff(ig, xg)
        if bias:
            assert d > 0.05
        else:
            assert np.max(np.abs(xg - ig)) <= 1e-4 * np.max(np.abs(ig)) and d < 1e-4


@needs_torch
def test_ig_exact_runs_one_pass():
    """exact=True sends N rows through the backward pass (plus a few checks), not steps * N."""
    import torch

    model, _ = build_cnn("torch", seed=1, bias=False)
    rows = []
    handle = model.register_forward_hook(lambda mod, inp, out: rows.append(inp[0].shape[0]))
    x = np.random.default_rng(1).standard_normal((16, 3, 8, 8)).astype(np.float32)
    try:
        exact = bxg.attribute(model, x, np.arange(16) % 5, method="IG", exact=True, steps=128)
        n_exact = sum(rows)
        rows.clear()
        full = bxg.attribute(model, x, np.arange(16) % 5, method="IG", steps=128)
        n_full = sum(rows)
    finally:
        handle.remove()
    assert n_full >= 128 * 16 and n_exact <= 2 * 16 + 16, (n_exact, n_full)
    np.testing.assert_allclose(exact, full, atol=1e-4 * np.abs(full).max())
    assert isinstance(torch.as_tensor(exact), torch.Tensor)
