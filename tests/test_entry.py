"""The front door (``boundary_xg._entry``): races, odd models and odd calls.

Oracles: the same call run serially / outside inference mode / on an equivalent
single-output or out-of-place model; the model's own state before the call; the
caller's arrays before the call.
"""

from __future__ import annotations

import threading

import numpy as np
import pytest

from conftest import keras_dtype_policy, needs_tf, needs_torch

import boundary_xg as bxg
from boundary_xg.errors import InputError


# --- torch models -----------------------------------------------------------------------
def _bn_dropout_cnn():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(), nn.Dropout(0.5),
        nn.Conv2d(16, 16, 3, padding=1), nn.BatchNorm2d(16), nn.ReLU(),
        nn.Flatten(), nn.Linear(16 * 16 * 16, 5),
    )
    with torch.no_grad():
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.3, 0.3)
                m.running_var.uniform_(0.5, 1.5)
    return model.train()


def _state(model):
    flags = [m.training for m in model.modules()]
    bufs = {k: v.detach().clone() for k, v in model.state_dict().items()}
    return flags, bufs


def _same_state(model, state):
    import torch

    flags, bufs = state
    assert [m.training for m in model.modules()] == flags
    now = model.state_dict()
    assert all(torch.equal(now[k], v) for k, v in bufs.items())


@needs_torch
def test_concurrent_calls_on_a_train_mode_model_equal_the_serial_result():
    import torch

    model = _bn_dropout_cnn()
    xs = [torch.randn(4, 3, 16, 16, generator=torch.Generator().manual_seed(i)) for i in range(4)]
    before = _state(model)
    serial = [bxg.attribute(model, x, [0, 1, 2, 3], method="IG", steps=8) for x in xs]
    _same_state(model, before)
    results = {}
    errors = []

    def work(i):
        try:
            for rep in range(3):
                results[(i, rep)] = bxg.attribute(model, xs[i], [0, 1, 2, 3], method="IG", steps=8)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    for (i, _), got in results.items():
        assert torch.equal(got, serial[i])
    _same_state(model, before)


@needs_torch
def test_in_place_model_leaves_the_callers_arrays_alone_and_works():
    import torch
    from torch import nn

    torch.manual_seed(0)
    head = nn.Sequential(nn.Flatten(), nn.Linear(12, 3))
    inplace = nn.Sequential(nn.ReLU(inplace=True), head).eval()
    plain = nn.Sequential(nn.ReLU(), head).eval()
    x = np.random.default_rng(0).standard_normal((4, 12)).astype(np.float32)
    kept = x.copy()
    for method in ("SM", "IG", "SG", "DeepLIFT"):
        opts = {"seed": 0} if method == "SG" else {}
        got = bxg.attribute(inplace, x, [0, 1, 2, 0], method=method, **opts)
        want = bxg.attribute(plain, x, [0, 1, 2, 0], method=method, **opts)
        np.testing.assert_array_equal(x, kept)
        np.testing.assert_allclose(got, want, rtol=1e-6, atol=1e-7)
    xt = torch.as_tensor(kept.copy())
    bxg.attribute(inplace, xt, None, method="IG")
    assert torch.equal(xt, torch.as_tensor(kept))


@needs_torch
def test_as_is_mode_keeps_batch_norm_statistics():
    model = _bn_dropout_cnn()
    model[3].p = 0.0  # dropout off: the check is about batch norm
    before = _state(model)
    import torch

    x = torch.randn(4, 3, 16, 16)
    for method in ("SM", "IG"):
        bxg.attribute(model, x, [0, 1, 2, 3], method=method, model_mode="as_is")
        _same_state(model, before)


@needs_torch
def test_xgradient_for_training_keeps_its_graph_and_the_statistics():
    import torch

    model = _bn_dropout_cnn()
    model[3].p = 0.0
    before = _state(model)
    x = torch.randn(4, 3, 16, 16)
    from boundary_xg.xdnn import xgradient_for_training

    attr = xgradient_for_training(model, x, torch.tensor([0, 1, 2, 3]))
    attr.abs().sum().backward()  # double back-propagation through the restored buffers
    assert model[0].weight.grad is not None and torch.isfinite(model[0].weight.grad).all()
    _same_state(model, before)


@needs_torch
def test_inside_inference_mode_gradient_methods_work():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 8), nn.Tanh(), nn.Linear(8, 3)).eval()
    x = torch.randn(3, 6)
    want = {m: bxg.attribute(model, x, [0, 1, 2], method=m) for m in ("SM", "IG", "DeepLIFT", "XG")}
    with torch.inference_mode():
        xi = torch.randn(3, 6) * 0 + x  # an inference tensor
        for m, w in want.items():
            got = bxg.attribute(model, xi, [0, 1, 2], method=m)
            assert torch.allclose(got, w, atol=1e-6), m
        res = bxg.find_boundary(model, xi, None, attacks=[bxg.PGD(eps=[0.5, 2.0], steps=5)])
        assert res.points.shape == x.shape


@needs_torch
def test_x_on_another_device_is_named():
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 3)).eval()
    x = torch.empty(2, 4, device="meta")
    with pytest.raises(InputError, match=r"x is on device meta but the model is on cpu"):
        bxg.attribute(model, x, [0, 1], method="SM")
    with pytest.raises(InputError, match=r"x is on device meta"):
        bxg.find_boundary(model, x, [0, 1])


# --- several outputs --------------------------------------------------------------------
@needs_torch
@pytest.mark.parametrize("kind", ["tuple", "dict"])
def test_torch_several_outputs_need_and_take_output(kind):
    import torch
    from torch import nn

    torch.manual_seed(0)
    single = nn.Sequential(nn.Linear(5, 8), nn.ReLU(), nn.Linear(8, 3)).eval()

    class Two(nn.Module):
        def __init__(self):
            super().__init__()
            self.net = single

        def forward(self, x):
            logits = self.net(x)
            return (x.sum(1), logits) if kind == "tuple" else {"aux": x.sum(1), "logits": logits}

    model = Two().eval()
    x = torch.randn(3, 5)
    with pytest.raises(InputError, match="output="):
        bxg.attribute(model, x, [0, 1, 2], method="IG")
    pick = 1 if kind == "tuple" else "logits"
    for method in ("IG", "DeepLIFT", "SG"):
        opts = {"seed": 0} if method == "SG" else {}
        got = bxg.attribute(model, x, [0, 1, 2], method=method, output=pick, **opts)
        want = bxg.attribute(single, x, [0, 1, 2], method=method, **opts)
        assert torch.allclose(got, want, atol=1e-6), method
    got = bxg.BA("SM").attribute(model, x, None, output=lambda out: out[pick])
    assert torch.allclose(got, bxg.attribute(single, x, None, method="SM"))
    with pytest.raises(InputError, match="output=7"):
        bxg.attribute(model, x, [0, 1, 2], method="SM", output=7)


@needs_tf
def test_keras_two_outputs_take_output():
    import keras

    keras.utils.set_random_seed(0)
    inp = keras.Input((6,))
    h = keras.layers.Dense(8, activation="relu")(inp)
    logits = keras.layers.Dense(3)(h)
    aux = keras.layers.Dense(2)(h)
    model = keras.Model(inp, [aux, logits])
    single = keras.Model(inp, logits)
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    with pytest.raises(InputError, match="output="):
        bxg.attribute(model, x, [0, 1, 2, 0], method="IG")
    got = bxg.attribute(model, x, [0, 1, 2, 0], method="IG", output=1)
    np.testing.assert_allclose(got, bxg.attribute(single, x, [0, 1, 2, 0], method="IG"), rtol=1e-5, atol=1e-6)


# --- dtypes, backend= and the first forward -------------------------------------------------
@needs_tf
def test_keras_bfloat16_model_returns_the_callers_dtype():
    import keras

    keras.utils.set_random_seed(0)
    with keras_dtype_policy("bfloat16"):
        model = keras.Sequential([keras.Input((6,)), keras.layers.Dense(8, activation="relu"),
                                  keras.layers.Dense(3)])
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    for method in ("SM", "IG"):
        out = bxg.attribute(model, x, [0, 1, 2, 0], method=method)
        assert out.dtype == np.float32, (method, out.dtype)
    assert bxg.attribute(model, x.astype(np.float64), [0, 1, 2, 0], method="SM").dtype == np.float64


@needs_torch
def test_backend_that_does_not_fit_the_model_is_named():
    import torch
    from torch import nn

    model = nn.Linear(4, 3)
    with pytest.raises(InputError, match=r"backend='tensorflow' does not fit the model.*backend='torch'"):
        bxg.attribute(model, torch.randn(2, 4), [0, 1], method="SM", backend="tensorflow")


@needs_torch
def test_first_forward_errors_say_what_is_wrong():
    import torch
    from torch import nn

    model = nn.Sequential(nn.Linear(4, 3)).eval()
    with pytest.raises(InputError, match=r"x has dtype float64 but the model computes in float32") as info:
        bxg.attribute(model, torch.randn(2, 4, dtype=torch.float64), [0, 1], method="SM")
    assert "layout" not in str(info.value) and isinstance(info.value.__cause__, RuntimeError)

    class Boom(Exception):
        pass

    class Buggy(nn.Module):
        def __init__(self):
            super().__init__()
            self.lin = nn.Linear(4, 3)

        def forward(self, x):
            raise Boom("a bug inside the model")

    with pytest.raises(Boom, match="a bug inside the model"):
        bxg.attribute(Buggy(), torch.randn(2, 4), [0, 1], method="SM")
    # a shape the model cannot take still gets the layout hint
    with pytest.raises(InputError, match="batch-first"):
        bxg.attribute(model, torch.randn(2, 5), [0, 1], method="SM")


@pytest.mark.slow  # two framework imports in a subprocess: ~30 s on a loaded 2-core machine
@needs_torch
@needs_tf
def test_importing_both_frameworks_imports_torchs_lazy_parts_first():
    """torch imports torch._dynamo on first need; after TensorFlow that import can crash."""
    import subprocess
    import sys

    code = ("import sys; from boundary_xg.backends import import_frameworks; "
            "import_frameworks(('torch', 'tensorflow')); "
            "print('torch._dynamo' in sys.modules, 'tensorflow' in sys.modules)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    assert r.stdout.split() == ["True", "True"], r.stdout


@needs_torch
def test_public_predict_goes_through_the_front_door():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(4, 3)).eval()
    x = np.random.default_rng(0).standard_normal((5, 4)).astype(np.float32)
    with torch.no_grad():
        want = model(torch.as_tensor(x)).numpy()
    np.testing.assert_allclose(bxg.predict(model, x), want, rtol=1e-6)
    with pytest.raises(InputError, match="x is on device meta"):
        bxg.predict(model, torch.empty(2, 4, device="meta"))


@needs_tf
def test_keras_deeplift_in_one_thread_leaves_other_threads_models_alone():
    """DeepLIFT patches Keras functions process-wide while it traces: other threads'
    models (DeepLIFT or not) must still compute their own results. Fresh model
    objects in every call, so that every call traces (and patches) anew."""
    import keras

    def weights(seed):
        keras.utils.set_random_seed(seed)
        return _keras_mlp().get_weights()

    def _keras_mlp(w=None):
        m = keras.Sequential([keras.Input((6,)), keras.layers.Dense(16, activation="relu"),
                              keras.layers.Dense(16), keras.layers.ReLU(), keras.layers.Dense(3)])
        if w is not None:
            m.set_weights(w)
        return m

    ws = [weights(0), weights(1)]
    rng = np.random.default_rng(0)
    x = rng.standard_normal((4, 6)).astype(np.float32)
    b = (0.3 * rng.standard_normal((4, 6))).astype(np.float32)
    jobs = [(0, "DeepLIFT"), (1, "DeepLIFT"), (0, "SM"), (1, "IG"), (0, "IG")]

    def run(k):
        w, meth = jobs[k]
        opts = {} if meth == "SM" else {"baseline": b}
        return bxg.attribute(_keras_mlp(ws[w]), x, [0, 1, 2, 0], method=meth, **opts)

    serial = [run(k) for k in range(len(jobs))]
    results, errors = {}, []

    def work(k):
        try:
            for rep in range(2):
                results[(k, rep)] = run(k)
        except Exception as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(k,)) for k in range(len(jobs))]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors, errors
    for (k, _), got in results.items():
        np.testing.assert_allclose(got, serial[k], rtol=1e-5, atol=1e-6)
    # nothing is left patched
    assert not hasattr(keras.activations.relu, "__wrapped__")
    assert not hasattr(keras.ops.relu, "__wrapped__")


@needs_tf
def test_keras_model_bug_propagates_with_its_type():
    import keras

    class Boom(Exception):
        pass

    class Buggy(keras.Model):
        def __init__(self):
            super().__init__()
            self.dense = keras.layers.Dense(3)

        def call(self, x):
            raise Boom("a bug inside the model")

    with pytest.raises(Boom):
        bxg.attribute(Buggy(), np.zeros((2, 4), np.float32), [0, 1], method="SM")


# --- the per-call checks made cheaper (issue 14/16 follow-up) ---------------------------------
@pytest.mark.parametrize("framework", ["torch", "tensorflow"])
def test_x_finite_in_float64_but_not_in_the_models_float32_is_refused(framework):
    # the NaN check of NumPy input runs on the host array where no conversion happens; a
    # float64 value beyond float32's range becomes inf in the model's dtype and is refused
    from boundary_xg.testing import models as tm

    pytest.importorskip(framework)
    w = tm.cnn_weights(seed=0, size=8, widths=(4, 4), hidden=8, classes=3)
    model = tm.torch_cnn(w) if framework == "torch" else tm.keras_cnn(w)
    shape = (2, 3, 8, 8) if framework == "torch" else (2, 8, 8, 3)
    x = np.zeros(shape, np.float64)
    x[0, 0, 0, 0] = 1e39
    with pytest.raises(InputError, match="NaN or infinity"):
        bxg.attribute(model, x, [0, 1], method="SM")
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(InputError, match="NaN or infinity"):
        bxg.attribute(model, x.astype(np.float32), [0, 1], method="SM")


@needs_torch
def test_mixed_train_and_eval_flags_are_put_back_exactly():
    model = _bn_dropout_cnn().eval()
    model[1].train()  # one batch norm in training mode, the rest in eval mode
    state = _state(model)
    x = np.random.default_rng(0).standard_normal((2, 3, 16, 16)).astype(np.float32)
    for method in ("SM", "FullGrad", "GradCAM"):
        bxg.attribute(model, x, [0, 1], method=method)
        _same_state(model, state)
    model.eval()  # all in eval mode: nothing to switch, still nothing changed
    state = _state(model)
    bxg.attribute(model, x, [0, 1], method="SM")
    _same_state(model, state)


def test_owner_lookup_follows_backend_registration():
    from boundary_xg.backends import BackendIdentity, framework_of, register_backend, unregister_backend

    class Thing:
        pass

    Thing.__module__ = "h14fakefw.models"
    assert framework_of(Thing()) is None  # cached as "no owner"
    register_backend(BackendIdentity(name="h14fake", framework="h14fakefw", roots=("h14fakefw",),
                                     module="h14fakefw", image_layout="NCHW"))
    try:
        assert framework_of(Thing()) == "h14fake"
    finally:
        unregister_backend("h14fake")
    assert framework_of(Thing()) is None
