"""Accuracy of DeepLIFT's 0/0 fallbacks on random-init torchvision models (issue 13).

Random initialisation gives activations of order 1e-9, where an absolute
threshold on ``|u - u'|`` used to swap the Rescale ratio for the gradient. This
prints, over several random draws (model, inputs, baseline):

* the summation-to-delta gap of ``mobilenet_v2`` (ReLU6, random baseline),
  ``|sum(attr) - (F(x) - F(x'))| / |F(x) - F(x')|``, in float32 and float64;
* the scale invariance of ``resnet18`` in float64,
  ``max|DeepLIFT(c x, c x') - c DeepLIFT(x, x')| / max|c DeepLIFT(x, x')|``, c = 1e-9.

Run: ``.venv/bin/python bench/deeplift_accuracy.py`` (about a minute on a CPU).
"""

from __future__ import annotations

import torch
import torchvision

import boundary_xg as bxg


def mobilenet_gap(seed: int, dtype: torch.dtype) -> float:
    torch.manual_seed(seed)
    model = torchvision.models.mobilenet_v2(num_classes=10).eval().to(dtype)
    x, b = torch.randn(4, 3, 64, 64, dtype=dtype), torch.randn(4, 3, 64, 64, dtype=dtype)
    y = torch.tensor([1, 2, 3, 4])
    _, gap = bxg.attribute(model, x, y, method="DeepLIFT", baseline=b, return_gap=True)
    with torch.no_grad():
        delta = (model(x)[torch.arange(4), y] - model(b)[torch.arange(4), y]).double()
    return (gap.double() / delta).abs().max().item()


def resnet_scale(seed: int, c: float = 1e-9) -> float:
    torch.manual_seed(seed)
    model = torchvision.models.resnet18(num_classes=10).double().eval()
    x, b = torch.randn(2, 3, 32, 32, dtype=torch.float64), torch.randn(2, 3, 32, 32, dtype=torch.float64)
    y = torch.tensor([3, 7])
    a1 = bxg.attribute(model, x, y, method="DeepLIFT", baseline=b)
    a2 = bxg.attribute(model, c * x, y, method="DeepLIFT", baseline=c * b)
    return ((a2 - c * a1).abs().max() / (c * a1).abs().max()).item()


def main(draws: int = 4) -> None:
    for dtype in (torch.float32, torch.float64):
        gaps = [mobilenet_gap(s, dtype) for s in range(draws)]
        print(f"mobilenet_v2 {str(dtype)[6:]:8s} summation gap / delta: max {max(gaps):.2e} "
              f"over {draws} draws (target 1e-4)")
    scales = [resnet_scale(s) for s in range(draws)]
    print(f"resnet18 float64 scale invariance (c=1e-9): max {max(scales):.2e} over {draws} draws "
          "(target 1e-6)")


if __name__ == "__main__":
    main()
