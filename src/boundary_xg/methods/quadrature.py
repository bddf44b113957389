"""Quadrature rules for path integrals over alpha in [0, 1].

Every rule returns nodes and weights whose weights sum to one, so a constant
gradient is integrated exactly. This differs from Captum's ``riemann_trapezoid``
(weights sum to (n-1)/n, spec section 1.2); that behaviour is available under
the explicit name ``"captum_trapezoid"`` for reproducing numbers of code built
on Captum (e.g. the boundary-attribution reference at n = 10 scales by 0.9).
Computed once in plain Python/NumPy: no tensor work.
"""

from __future__ import annotations

from typing import List, Tuple

import numpy as np

from ..errors import InputError

RULES = (
    "gausslegendre",
    "riemann_left",
    "riemann_right",
    "riemann_middle",
    "riemann_trapezoid",
    "captum_trapezoid",
)


def quadrature(rule: str, steps: int) -> Tuple[List[float], List[float]]:
    """Nodes ``alpha_s`` in [0, 1] and weights ``w_s`` of a rule with ``steps`` nodes.

    Args:
        rule: one of :data:`RULES`. ``"gausslegendre"`` (default of IG) is exact for
            polynomials of degree ``2 * steps - 1``; the Riemann rules place nodes at
            the left ends, right ends or midpoints of ``steps`` equal cells;
            ``"riemann_trapezoid"`` is the trapezoid rule on ``linspace(0, 1, steps)``
            (cells of ``1 / (steps - 1)``, half weights at the ends);
            ``"captum_trapezoid"`` reproduces Captum's trapezoid weights.
        steps: number of nodes, >= 1 (>= 2 for the trapezoid rules).

    Returns:
        ``(alphas, weights)``, two lists of ``steps`` floats.

    Raises:
        InputError: unknown rule, or too few steps for the rule.
    """
    if rule not in RULES:
        raise InputError(f"rule={rule!r} is not a quadrature rule; use one of {list(RULES)}.")
    n = int(steps)
    if n < 1 or (rule.endswith("trapezoid") and n < 2):
        least = 2 if rule.endswith("trapezoid") else 1
        raise InputError(f"steps={steps!r}: rule {rule!r} needs steps >= {least}.")
    if rule == "gausslegendre":
        t, w = np.polynomial.legendre.leggauss(n)
        return list(0.5 * (t + 1.0)), list(0.5 * w)
    if rule == "riemann_left":
        return list(np.arange(n) / n), [1.0 / n] * n
    if rule == "riemann_right":
        return list(np.arange(1, n + 1) / n), [1.0 / n] * n
    if rule == "riemann_middle":
        return list((np.arange(n) + 0.5) / n), [1.0 / n] * n
    alphas = list(np.linspace(0.0, 1.0, n))
    cell = 1.0 / (n - 1) if rule == "riemann_trapezoid" else 1.0 / n
    weights = [cell] * n
    weights[0] /= 2.0
    weights[-1] /= 2.0
    return alphas, weights
