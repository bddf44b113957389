"""X-Gradient vs IG(128) on the same X-model, and the cost of training with a prior (CPU).

Prints, for a small X-VGG16 (width 1/8, 32x32 input, batch 8) in PyTorch:

* the time of XG (one pass) and of IG with 128 Gauss-Legendre steps, and their
  ratio (the paper: "about 100x less computation"), plus the largest relative
  difference of the two attributions (an X-DNN: about float precision);
* the paper's mean absolute relative difference between IG(128) and Input x
  Gradient (spec 3.6, in %) on that X-VGG16 and on the regular VGG16 with the
  same weights plus random biases (the paper: 0.4% vs 97.8% on ImageNet);
* the time of a training step of the small X-CNN on 8x8 inputs with and without
  the Gini prior on X-Gradient (double back-propagation), and the overhead ratio.

Run: ``python bench/xgradient.py`` (under 2 minutes; medians of a few repeats).
"""

from __future__ import annotations

import time
import warnings

import numpy as np
import torch

import boundary_xg as bxg
from boundary_xg import xdnn


def median_time(fn, repeats: int = 5) -> float:
    """Median wall time of ``fn()`` in seconds, after one warm-up call."""
    fn()
    times = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return float(np.median(times))


def bench_attribution() -> None:
    torch.manual_seed(0)
    model = xdnn.x_vgg16(10, width=1 / 8).eval()
    with torch.no_grad():  # Fixup-free, but give every layer a non-trivial scale
        for p in model.parameters():
            p.normal_(0, float(np.sqrt(2.0 / np.prod(p.shape[1:]))))
    x = torch.randn(8, 3, 32, 32)
    labels = torch.arange(8) % 10
    xg = bxg.BA("XG")
    ig = bxg.BA("IG", steps=128, rule="gausslegendre", batch_size=256)
    t_xg = median_time(lambda: xg.attribute(model, x, labels))
    t_ig = median_time(lambda: ig.attribute(model, x, labels), repeats=3)
    a, b = xg.attribute(model, x, labels), ig.attribute(model, x, labels)
    rel = float((a - b).abs().max() / b.abs().max())
    print(f"X-VGG16 (width 1/8, 32x32, batch 8), CPU, {torch.get_num_threads()} threads")
    print(f"  XG       {t_xg * 1e3:8.1f} ms")
    print(f"  IG(128)  {t_ig * 1e3:8.1f} ms")
    print(f"  ratio IG/XG = {t_ig / t_xg:.0f}x   max |XG - IG| / max |IG| = {rel:.1e}")

    # the paper's mean absolute relative difference (spec 3.6), X-model vs regular model
    regular = xdnn.vgg16(10, width=1 / 8).eval()
    with torch.no_grad():
        own = dict(model.named_parameters())
        for name, p in regular.named_parameters():
            p.copy_(own[name] if name in own else 0.1 * torch.randn_like(p))

    def mard(m) -> float:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", xdnn.NonHomogeneousWarning)
            ixg = xg.attribute(m, x, labels)
        igm = ig.attribute(m, x, labels)
        return float(100 * (igm - ixg).abs().mean() / (igm.abs().mean() + 1e-7))

    print(f"  mean abs. rel. diff. IG(128) vs IxG: X-VGG16 {mard(model):.2g}%   "
          f"VGG16 (biases) {mard(regular):.3g}%")


def bench_training_step() -> None:
    torch.manual_seed(0)
    model = xdnn.x_cnn(10)
    opt = torch.optim.SGD(model.parameters(), lr=1e-3)
    x = torch.rand(64, 1, 8, 8)
    y = torch.arange(64) % 10

    def step(lam: float) -> None:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        if lam:
            loss = loss + lam * xdnn.gini_prior(xdnn.xgradient_for_training(model, x, y))
        opt.zero_grad()
        loss.backward()
        opt.step()

    t_plain = median_time(lambda: step(0.0), repeats=20)
    t_prior = median_time(lambda: step(0.1), repeats=20)
    print("X-CNN training step (batch 64, 8x8), CPU")
    print(f"  without prior {t_plain * 1e3:7.2f} ms")
    print(f"  with prior    {t_prior * 1e3:7.2f} ms   overhead {t_prior / t_plain:.2f}x")


if __name__ == "__main__":
    bench_attribution()
    bench_training_step()
