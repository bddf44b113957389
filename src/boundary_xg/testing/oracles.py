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
