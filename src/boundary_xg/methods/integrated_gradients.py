"""Integrated Gradients (Sundararajan, Taly, Yan, "Axiomatic Attribution for Deep
Networks", ICML 2017).

``IG_i = (x_i - x'_i) * sum_s w_s * d F_y / d x_i (x' + alpha_s (x - x'))``, with
nodes and weights from :mod:`boundary_xg.methods.quadrature` (weights sum to one).
All ``N * steps`` path points are batched into the batch dimension, in chunks of
``batch_size`` model inputs.
"""

from __future__ import annotations

import logging
import numbers
from typing import Any, Callable, Dict, Optional

from ..backends import Backend
from ..errors import InputError, MethodError
from ..ops import forward_scores, gradients_at, path_gradients
from .quadrature import RULES, quadrature
from .recalibration import check_gap_options, single_reference_grid
from .registry import MethodSpec, one_of, register

logger = logging.getLogger(__name__)


def integrated_gradients(
    B: Backend,
    f: Callable,
    x: Any,
    labels: Any,
    *,
    baseline: Any,
    steps: int = 50,
    rule: str = "gausslegendre",
    batch_size: Optional[int] = None,
    return_gap: bool = False,
    exact: bool = False,
    recalibrate: Optional[str] = None,
) -> Any:
    """Integrated Gradients from ``baseline`` to ``x``.

    Args:
        x: inputs ``(N, ...)``; labels: ``(N,)`` class indices.
        baseline: tensor shaped like ``x`` (the API broadcasts scalars and arrays).
        steps: number of quadrature nodes (default 50).
        rule: quadrature rule (default ``"gausslegendre"``), see
            :func:`~boundary_xg.methods.quadrature.quadrature`.
        batch_size: model inputs per forward/backward (default: :func:`~boundary_xg.ops.default_batch_size`).
        return_gap: also return the completeness gap per example,
            ``sum(attr) - (F_y(x) - F_y(baseline))``, shape ``(N,)``.
        exact: the model is an X-DNN (certified by the front end's
            :func:`prepare_exact`) and ``baseline`` is zero: compute IG in one pass
            as X-Gradient ``x * grad F_y(x)``, exact for such models (Hesse et al.,
            NeurIPS 2021). ``steps`` and ``rule`` are then unused.
        recalibrate: None (default), ``"valid_ip"`` or ``"valid_ref"``: attribution
            re-calibration (Yang et al., ICLR 2023) at the same ``steps`` passes, see
            :mod:`boundary_xg.methods.recalibration` (with one reference,
            ``"valid_ref"`` is ``max(IG, 0)``). Non-negative output.

    Returns:
        Attributions shaped like ``x``, or ``(attributions, gap)``.

    Raises:
        MethodError: ``exact=True`` and ``F(a x) != a F(x)`` on the first examples
            (e.g. an activation applied functionally that the layer scan cannot see).
        InputError: ``recalibrate`` with ``exact=True`` or ``return_gap=True``.
    """
    if recalibrate is not None:
        check_gap_options(return_gap, recalibrate, "IG")
        if exact:
            raise InputError(
                "IG: recalibrate= needs the gradients along the path; exact=True computes IG in "
                "one pass without them. Use exact=False."
            )
        return single_reference_grid(B, f, x, labels, baseline, steps=steps, rule=rule,
                                     recalibrate=recalibrate, batch_size=batch_size)
    if exact:
        attr = _exact_ig(B, f, x, labels, batch_size)
    else:
        alphas, weights = quadrature(rule, steps)
        delta = x - baseline
        attr = delta * path_gradients(B, f, baseline, delta, labels, alphas, weights, batch_size)
    if not return_gap:
        return attr
    return attr, completeness_gap(B, f, attr, x, baseline, labels, batch_size)


def completeness_gap(
    B: Backend, f: Callable, attr: Any, x: Any, baseline: Any, labels: Any,
    batch_size: Optional[int] = None,
) -> Any:
    """``sum(attr_n) - (Phi(x_n) - Phi(baseline_n))`` per example, shape ``(N,)``, with
    ``Phi`` the explained scalar (the label's logit unless ``objective=`` says otherwise)."""
    n = B.shape(x)[0]
    ends = forward_scores(B, f, B.concat([x, baseline]), B.concat([labels, labels]), batch_size)
    axes = tuple(range(1, len(B.shape(x))))
    return B.sum(attr, axis=axes) - (ends[:n] - ends[n:])


#: worst relative error of F(a x) = a F(x) accepted by ``exact=True`` (float32 rounding)
EXACT_RTOL = 1e-4


def _exact_ig(B: Backend, f: Callable, x: Any, labels: Any, batch_size: Optional[int]) -> Any:
    """IG from zero on an X-DNN: one pass, after a numerical check of homogeneity."""
    from ..xdnn.homogeneity import scaling_error

    # The layer scan cannot see activations applied functionally inside forward();
    # F(a x) = a F(x) on a few examples catches them for 2-3 extra forward rows each.
    err = scaling_error(B, f, x[:2], batch_size=batch_size)
    if not err <= EXACT_RTOL:
        raise MethodError(
            f"IG exact=True: the model is not nonnegatively homogeneous on x (worst relative "
            f"error of F(a x) = a F(x) is {err:.2e} > {EXACT_RTOL:g}), so X-Gradient is not IG. "
            "Use exact=False."
        )
    _, g = gradients_at(B, f, x, labels, batch_size)
    logger.info(
        "IG exact=True: model certified nonnegatively homogeneous (an X-DNN); IG from the "
        "zero baseline computed in one pass as X-Gradient x * grad (scaling error %.1e).", err,
    )
    return x * g


def prepare_exact(B: Backend, model: Any, x: Any, options: Dict[str, Any]) -> None:
    """The front end's pre-check of ``IG(exact=True)``: certify the model and the baseline.

    Args:
        B: the backend; model: the user's model; x: the converted input.
        options: IG's options (``exact``, ``baseline``), checked in place.

    Raises:
        InputError: ``exact=True`` with a baseline other than None or 0 (the
            one-pass identity holds for the zero baseline only).
        MethodError: ``exact=True`` on a model the layer scan of
            :func:`boundary_xg.xdnn.check_homogeneous` does not certify; the
            message names the offending layers.
    """
    if not options.get("exact"):
        return
    if options.get("recalibrate") is not None:
        raise InputError(
            "IG: recalibrate= needs the gradients along the path; exact=True computes IG in one "
            "pass without them. Use exact=False."
        )
    baseline = options.get("baseline")
    is_zero = baseline is None or (
        isinstance(baseline, numbers.Real) and not isinstance(baseline, bool) and baseline == 0
    )
    if not is_zero:
        raise InputError(
            "IG exact=True computes IG from the zero baseline (in the model's input space); "
            "pass baseline=None or 0, or use exact=False for another baseline."
        )
    from ..xdnn.homogeneity import static_report

    report = static_report(B, model)
    if report.offenders:
        raise MethodError(
            "IG exact=True needs a nonnegatively homogeneous model (an X-DNN: no biases, no "
            "normalisation layers, ReLU-type activations); these layers break it: "
            f"{report.offender_summary()}. Use exact=False, an X-architecture from "
            "boundary_xg.xdnn, or boundary_xg.xdnn.strip_bias(model) and fine-tune."
        )


register(MethodSpec(
    name="integrated_gradients", short="IG", func=integrated_gradients,
    defaults={"baseline": None, "steps": 50, "rule": "gausslegendre", "exact": False},
    aliases=("integratedgradients", "intgrad"), uses_baseline=True, supports_gap=True,
    passes=lambda o: 1 if o.get("exact") else int(o["steps"]),
    prepare=prepare_exact, checks={"rule": one_of("rule", RULES)}, recalibrate=True,
    summary="Integrated Gradients; `baseline` (None = zeros, scalar, broadcastable array), `steps` "
            "(50), `rule` (`gausslegendre`, `riemann_left/right/middle/trapezoid`, "
            "`captum_trapezoid`), `return_gap`",
    cost="`steps`", in_demo=True,
    paper="Sundararajan et al., *Axiomatic Attribution for Deep Networks*, ICML 2017",
))
