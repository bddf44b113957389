"""SmoothGrad and its variants (Smilkov et al., "SmoothGrad: removing noise by
adding noise", 2017; VarGrad: Adebayo et al., 2018).

``num_samples`` noisy copies of every example are batched into the batch
dimension. The noise std is ``sigma * (max(x_n) - min(x_n))`` per example, as in
the SmoothGrad paper (a fraction of each input's range, not of the batch's), or
the absolute ``sigma_abs``. Noise comes from a generator seeded with ``seed`` on
the model's device: results repeat for the same seed and ``batch_size``.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..backends import Backend
from ..ops import compiled_label_grad, expand_rows, per_example_range, resolve_batch_size, row_chunks
from .registry import MethodSpec, one_of, register

VARIANTS = ("smoothgrad", "smoothgrad_sq", "vargrad")


def smoothgrad(
    B: Backend,
    f: Callable,
    x: Any,
    labels: Any,
    *,
    num_samples: int = 50,
    sigma: float = 0.15,
    sigma_abs: Optional[float] = None,
    variant: str = "smoothgrad",
    seed: Optional[int] = None,
    batch_size: Optional[int] = None,
) -> Any:
    """Average (or mean square, or variance) of label-logit gradients under Gaussian noise.

    Args:
        x: inputs ``(N, ...)``; labels: ``(N,)`` class indices.
        num_samples: noisy copies per example (default 50).
        sigma: noise std as a fraction of each example's value range (default 0.15).
        sigma_abs: absolute noise std in input units; overrides ``sigma`` (the
            boundary-attribution reference uses 0.15 absolute).
        variant: ``"smoothgrad"`` (mean gradient), ``"smoothgrad_sq"`` (mean squared
            gradient) or ``"vargrad"`` (variance of the gradient).
        seed: seed of the noise generator (None: fresh randomness).
        batch_size: model inputs per forward/backward (default: :func:`~boundary_xg.ops.default_batch_size`).

    Returns:
        Tensor shaped like ``x``.
    """
    bs = resolve_batch_size(batch_size)
    shape = B.shape(x)
    n, s, nd = shape[0], int(num_samples), len(shape)
    if sigma_abs is None:
        std = float(sigma) * per_example_range(B, x)
    else:
        std = B.constant([float(sigma_abs)] * n, like=x)
    rng = B.rng(seed, like=x)
    step = compiled_label_grad(B, f)
    squares = variant != "smoothgrad"
    acc = B.zeros_like(x)
    acc_sq = B.zeros_like(x) if squares else None
    for lo, hi in row_chunks(n * s, bs, progress="noisy gradients"):
        ex = B.arange(lo, hi, like=x) // s
        noise = B.normal(rng, (hi - lo,) + shape[1:], like=x) * expand_rows(B, B.gather(std, ex), nd)
        _, g = step(B.gather(x, ex) + noise, B.gather(labels, ex))
        if variant != "smoothgrad_sq":
            acc = B.index_add(acc, ex, g)
        if squares:
            acc_sq = B.index_add(acc_sq, ex, g * g)
    mean = acc / s
    if variant == "smoothgrad":
        return mean
    if variant == "smoothgrad_sq":
        return acc_sq / s
    return acc_sq / s - mean * mean


register(MethodSpec(
    name="smoothgrad", short="SG", func=smoothgrad,
    defaults={"num_samples": 50, "sigma": 0.15, "sigma_abs": None, "variant": "smoothgrad", "seed": None},
    aliases=("smooth_grad", "smoothgradient"),
    passes=lambda o: int(o["num_samples"]), checks={"variant": one_of("variant", VARIANTS)},
    summary="SmoothGrad; `num_samples` (50), `sigma` (0.15 of each input's range) or `sigma_abs`, "
            "`variant` (`smoothgrad`, `smoothgrad_sq`, `vargrad`), `seed`",
    cost="`num_samples`", in_demo=True,
    paper="Smilkov et al., *SmoothGrad*, 2017; Adebayo et al., 2018 (VarGrad)",
))
