"""DeepLIFT's 0/0 fallbacks are scale-free, 16-bit safe and never silently wrong.

Oracles: summation-to-delta (``sum(attr) = F(x) - F(x')``, computed by the model
itself), scale invariance of a ReLU network without biases' influence
(``DeepLIFT(c x, c x') = c DeepLIFT(x, x')`` for a positively homogeneous net),
and the finiteness of a float16 result.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import keras_dtype_policy, needs_tf, needs_torch

import boundary_xg as bxg
from boundary_xg.errors import MethodError


def _logit_delta(model, x, b, y):
    import torch

    with torch.no_grad():
        idx = torch.arange(x.shape[0])
        return (model(x)[idx, y] - model(b)[idx, y]).double()


@needs_torch
@pytest.mark.parametrize("dtype", ["float32", "float64"])
def test_mobilenet_v2_random_init_summation_to_delta(dtype):
    """Random init: activations ~1e-9, below the old absolute 1e-10 threshold's reach (was 2.6 %)."""
    import torch
    torchvision = pytest.importorskip("torchvision")

    dt = getattr(torch, dtype)
    torch.manual_seed(0)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval().to(dt)
    x, b = torch.randn(4, 3, 64, 64, dtype=dt), torch.randn(4, 3, 64, 64, dtype=dt)
    y = torch.tensor([1, 2, 3, 4])
    _, gap = bxg.attribute(model, x, y, method="DeepLIFT", baseline=b, return_gap=True)
    rel = (gap.double() / _logit_delta(model, x, b, y)).abs().max().item()
    assert rel <= 1e-4, rel


@needs_torch
def test_resnet18_float64_scale_invariance():
    """ReLU nets are positively homogeneous in (x, x') jointly up to biases; with the
    biases scaled too (BatchNorm in eval mode: shift scaled by c) every activation
    scales by c, so the attributions must scale by c exactly (was 0.88 relative off)."""
    import torch
    torchvision = pytest.importorskip("torchvision")

    torch.manual_seed(0)
    model = torchvision.models.resnet18(num_classes=10).double().eval()
    x = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    b = torch.randn(2, 3, 32, 32, dtype=torch.float64)
    y = torch.tensor([3, 7])
    c = 1e-9
    a1 = bxg.attribute(model, x, y, method="DeepLIFT", baseline=b)
    a2 = bxg.attribute(model, c * x, y, method="DeepLIFT", baseline=c * b)
    rel = ((a2 - c * a1).abs().max() / (c * a1).abs().max()).item()
    assert rel <= 1e-6, rel


def _torch_small_cnn(dtype):
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(
        nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 8, 3, padding=1), nn.SiLU(), nn.Flatten(), nn.Linear(8 * 4 * 4, 5),
    )
    with torch.no_grad():  # non-trivial running statistics
        model[1].running_mean.uniform_(-0.2, 0.2)
        model[1].running_var.uniform_(0.5, 1.5)
    return model.eval().to(dtype)


@needs_torch
def test_torch_float16_deeplift_finite_with_summation():
    import torch

    model = _torch_small_cnn(torch.float16)
    rng = np.random.default_rng(0)
    x = rng.standard_normal((6, 3, 8, 8)).astype(np.float32)
    b = (0.5 * rng.standard_normal((6, 3, 8, 8))).astype(np.float32)
    y = np.arange(6) % 5
    attr, gap = bxg.attribute(model, x, y, method="DeepLIFT", baseline=b, return_gap=True)
    assert np.isfinite(attr).all()
    delta = _logit_delta(model, torch.as_tensor(x).half(), torch.as_tensor(b).half(), torch.as_tensor(y)).numpy()
    # float16: eps ~1e-3 per operation, a few dozen operations per logit
    assert np.all(np.abs(gap) <= 2e-2 * np.maximum(np.abs(delta), 1.0)), (gap, delta)


@needs_torch
def test_torch_float16_bdt_finite():
    import torch

    model = _torch_small_cnn(torch.float16)
    x = np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)
    attr = bxg.BA("BDT").attribute(model, x, None, seed=0)
    assert np.isfinite(attr).all()


@needs_tf
def test_keras_float16_deeplift_finite_with_summation():
    import keras

    keras.utils.set_random_seed(0)
    with keras_dtype_policy("float16"):
        model = keras.Sequential([
            keras.Input((8, 8, 3)),
            keras.layers.Conv2D(8, 3, padding="same"),
            keras.layers.BatchNormalization(),
            keras.layers.ReLU(),
            keras.layers.MaxPooling2D(2),
            keras.layers.Conv2D(8, 3, padding="same", activation="relu"),
            keras.layers.Flatten(),
            keras.layers.Dense(5),
        ])
    bn = model.layers[1]
    rng = np.random.default_rng(0)
    bn.moving_mean.assign(rng.uniform(-0.2, 0.2, 8).astype(np.float16))
    bn.moving_variance.assign(rng.uniform(0.5, 1.5, 8).astype(np.float16))
    x = rng.standard_normal((6, 8, 8, 3)).astype(np.float32)
    b = (0.5 * rng.standard_normal((6, 8, 8, 3))).astype(np.float32)
    y = np.arange(6) % 5
    attr, gap = bxg.attribute(model, x, y, method="DeepLIFT", baseline=b, return_gap=True)
    assert np.isfinite(attr).all()
    fx = np.asarray(model(x.astype(np.float16), training=False), np.float64)[np.arange(6), y]
    fb = np.asarray(model(b.astype(np.float16), training=False), np.float64)[np.arange(6), y]
    assert np.all(np.abs(gap) <= 2e-2 * np.maximum(np.abs(fx - fb), 1.0)), (gap, fx - fb)


@needs_torch
def test_smooth_activation_near_equal_points_uses_the_midpoint_derivative():
    """Sigmoid at u ~ u' ~ 1e-9: the float32 ratio cancels to 0; the multiplier must be ~0.25."""
    import torch
    from torch import nn

    lin = nn.Linear(1, 1, bias=False)
    with torch.no_grad():
        lin.weight.fill_(1.0)
    model = nn.Sequential(lin, nn.Sigmoid(), nn.Linear(1, 2)).eval()
    x = torch.tensor([[1.0e-9]])
    b = torch.tensor([[0.5e-9]])
    attr = bxg.attribute(model, x, [0], method="DeepLIFT", baseline=b)
    w_out = model[2].weight[0, 0].item()
    expected = 0.25 * w_out * 5e-10
    assert attr.item() == pytest.approx(expected, rel=1e-3)


@needs_torch
@pytest.mark.parametrize("method", ["DeepLIFT", "BDT"])
@pytest.mark.parametrize("how", ["script", "trace"])
def test_torchscript_is_refused_with_the_fix(method, how):
    import torch
    from torch import nn

    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    x = torch.randn(3, 4)
    scripted = torch.jit.script(eager) if how == "script" else torch.jit.trace(eager, x)
    with pytest.raises(MethodError, match="TorchScript.*eager"):
        bxg.attribute(scripted, x, [0, 1, 2], method=method, seed=0) if method == "BDT" else \
            bxg.attribute(scripted, x, [0, 1, 2], method=method)
    # a gradient method still works on the scripted model and agrees with the eager one
    ig_s = bxg.attribute(scripted, x, [0, 1, 2], method="IG")
    ig_e = bxg.attribute(eager, x, [0, 1, 2], method="IG")
    assert torch.allclose(ig_s, ig_e, atol=1e-6)


@needs_torch
@pytest.mark.parametrize("method", ["DeepLIFT", "BDT"])
def test_torchscript_is_refused_before_any_forward_pass(method):
    # BDT ran its whole boundary search before DeepLIFT refused: the registry's
    # prepare hook now refuses before the probe, the labels and the search
    import torch
    from torch import nn

    class Counting(nn.Module):  # an eager wrapper around a scripted model counts the calls
        def __init__(self, inner):
            super().__init__()
            self.inner, self.calls = inner, 0

        def forward(self, z):
            self.calls += 1
            return self.inner(z)

    torch.manual_seed(0)
    eager = nn.Sequential(nn.Linear(4, 8), nn.ReLU(), nn.Linear(8, 3)).eval()
    model = Counting(torch.jit.script(eager))
    x = torch.randn(3, 4)
    with pytest.raises(MethodError, match="TorchScript.*eager"):
        bxg.attribute(model, x, None, method=method)
    assert model.calls == 0
    with pytest.raises(MethodError, match="TorchScript"):
        bxg.BA("DeepLIFT", use_boundary=True).attribute(model, x, [0, 1, 2], seed=0)
    assert model.calls == 0
    bxg.attribute(model, x, [0, 1, 2], method="SM")  # other methods still run on it
    assert model.calls > 0


@needs_torch
def test_bsg_is_reproducible_with_a_seed():
    import torch
    from torch import nn

    torch.manual_seed(0)
    model = nn.Sequential(nn.Linear(6, 16), nn.ReLU(), nn.Linear(16, 3)).eval()
    x = torch.randn(4, 6)
    ba = bxg.BA("BSG", num_samples=8)
    a1 = ba.attribute(model, x, seed=3)
    a2 = ba.attribute(model, x, seed=3)
    assert torch.equal(a1, a2)
    a3 = ba.attribute(model, x, seed=4)
    assert not torch.equal(a1, a3)


@needs_torch
@pytest.mark.parametrize("act", ["PReLU", "SELU", "CELU", "ELU"])
def test_kinks_at_zero_keep_summation_at_tiny_scale(act):
    """Activations ~1e-9 straddle 0, the kink of PReLU/SELU/CELU(alpha != 1): the
    near-equal fallback must not replace the ratio there by a one-sided slope."""
    import torch
    from torch import nn

    torch.manual_seed(0)
    make = {"PReLU": lambda: nn.PReLU(init=0.2), "SELU": nn.SELU, "CELU": lambda: nn.CELU(0.5),
            "ELU": lambda: nn.ELU(0.3)}[act]
    model = nn.Sequential(nn.Linear(8, 16, bias=False), make(), nn.Linear(16, 16, bias=False), make(),
                          nn.Linear(16, 3, bias=False)).double().eval()
    c = 1e-9
    x, b = c * torch.randn(5, 8, dtype=torch.float64), c * torch.randn(5, 8, dtype=torch.float64)
    y = torch.tensor([0, 1, 2, 0, 1])
    _, gap = bxg.attribute(model, x, y, method="DeepLIFT", baseline=b, return_gap=True)
    rel = (gap / _logit_delta(model, x, b, y)).abs().max().item()
    assert rel <= 1e-6, rel
