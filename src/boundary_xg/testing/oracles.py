"""Closed-form attributions of analytic models: oracles no backend wrote.

For a linear classifier ``F(x) = W x + b`` the gradient of class ``y`` is the row
``W[y]`` everywhere, so Saliency is ``W[y]``, Input x Gradient and X-Gradient are
``x * W[y]``, and Integrated Gradients is ``(x - baseline) * W[y]`` exactly, for
every quadrature rule whose weights sum to one.
"""

from __future__ import annotations

import numpy as np


def linear_saliency(weight: np.ndarray, labels: np.ndarray, shape) -> np.ndarray:
    """Saliency of ``F(x) = W flatten(x) + b``: ``W[y]`` reshaped to the input ``shape``."""
    return weight[np.asarray(labels)].reshape(shape)


def linear_integrated_gradients(weight, labels, x, baseline) -> np.ndarray:
    """Exact IG of a linear model: ``(x - baseline) * W[y]``."""
    x = np.asarray(x)
    return (x - np.asarray(baseline)) * linear_saliency(weight, labels, x.shape)


def linear_box_distance(weight: np.ndarray, bias: np.ndarray, x: np.ndarray, labels: np.ndarray,
                        lo: float = -np.inf, hi: float = np.inf) -> np.ndarray:
    """Exact L2 distance to the nearest decision boundary of ``F(x) = W x + b`` inside a box.

    For each class ``j != y``: ``min ||d||`` s.t. ``(W_j - W_y) . d >= F_y(x) - F_j(x)``
    and ``lo <= x + d <= hi``, whose minimiser is ``clip(lambda a, lo - x, hi - x)``
    (KKT) with the smallest feasible ``lambda``, found in float64 by a bisection
    of 200 steps on ``lambda``; ``inf`` where the box allows no class. The
    distance is the minimum over ``j``. ``x`` ``(N, D)``, labels ``(N,)``; ``lo``, ``hi``
    scalars or ``(D,)``.
    """
    W = np.asarray(weight, np.float64)
    b = np.asarray(bias, np.float64)
    x = np.asarray(x, np.float64)
    out = np.full(len(x), np.inf)
    for i, (xi, yi) in enumerate(zip(x, labels)):
        s = W @ xi + b
        for j in range(W.shape[0]):
            if j == yi:
                continue
            a, need = W[j] - W[yi], s[yi] - s[j]
            dlo, dhi = lo - xi, hi - xi
            if need <= 0:
                out[i] = 0.0
                continue
            top = np.where(a > 0, dhi, np.where(a < 0, dlo, 0.0))
            if np.sum(np.where(a != 0, a * top, 0.0)) < need:
                continue
            lam_lo, lam_hi = 0.0, need / (a @ a)
            while a @ np.clip(lam_hi * a, dlo, dhi) < need:
                lam_hi *= 2.0
            for _ in range(200):
                mid = 0.5 * (lam_lo + lam_hi)
                if a @ np.clip(mid * a, dlo, dhi) >= need:
                    lam_hi = mid
                else:
                    lam_lo = mid
            out[i] = min(out[i], float(np.linalg.norm(np.clip(lam_hi * a, dlo, dhi))))
    return out
