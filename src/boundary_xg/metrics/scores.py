"""Per-example scores of attributions: completeness, sparseness (Gini), and the X-DNN
paper's mean absolute relative difference between two attribution arrays."""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ._inputs import check_progress, metric_call, prepare_attributions
from .results import MetricResult

#: the X-DNN code's epsilon in the denominator of the relative difference
MARD_EPS = 1e-7


def completeness(model: Any, x: Any, labels: Any = None, attributions: Any = None, *, baseline: Any = None,
                 batch_size: Optional[int] = None, progress: Optional[bool] = None, backend: Optional[str] = None,
                 output: Any = None) -> MetricResult:
    """Completeness gap of path attributions: ``sum(A) - (F_y(x) - F_y(baseline))`` per example.

    When to use: Integrated Gradients, DeepLIFT, BIG (with its boundary points as
    ``baseline``) and other methods with the completeness axiom should have a gap
    near 0; a large gap says too few steps or a wrong baseline.

    Args:
        model, x, labels, attributions: as for :func:`~boundary_xg.metrics.diffid`
            (attributions shaped like ``x``).
        baseline: the path's start: None (zeros), a number, or an array
            broadcastable to ``x`` (BIG: the boundary points).
        batch_size, backend, output: as for :func:`~boundary_xg.metrics.diffid`;
        progress: accepted for a uniform signature (two forwards need no bar).

    Returns:
        :class:`MetricResult`: ``per_example`` the absolute gap ``|gap|``, ``value``
        its mean (lower is better); ``details``: ``gap`` (signed), ``relative``
        (``|gap| / |F_y(x) - F_y(baseline)|``), ``difference`` (``F_y(x) - F_y(baseline)``).
        Cost: 2 forwards per example.
    """
    from .._entry import prepare_baseline
    from ..ops import predict

    check_progress(progress)
    with metric_call(model, x, labels, attributions, backend=backend, output=output,
                     batch_size=batch_size) as c:
        B = c.B
        if tuple(B.shape(c.attributions)) != tuple(c.layout.shape):
            raise InputError(f"attributions has shape {tuple(B.shape(c.attributions))}; completeness needs "
                             f"attributions shaped like x {tuple(c.layout.shape)}.")
        base = prepare_baseline(B, baseline, c.x)
        both = B.concat([c.x, base])
        logits = predict(B, c.f, both, c.batch_size)
        ly = B.take_along_axis(logits, B.concat([c.labels, c.labels]))
        axes = tuple(range(1, len(c.layout.shape)))
        total = B.sum(c.attributions, axis=axes)
        out = np.asarray(B.to_numpy(B.concat([B.reshape(ly, (2, -1)), B.reshape(total, (1, -1))])), np.float64)
    diff = out[0] - out[1]
    gap = out[2] - diff
    with np.errstate(divide="ignore", invalid="ignore"):
        rel = np.abs(gap) / np.abs(diff)
    per = np.abs(gap)
    return MetricResult(name="completeness", value=np.float64(per.mean()), per_example=per,
                        higher_is_better=False, details={"gap": gap, "relative": rel, "difference": diff})


def sparseness(model: Any, x: Any, labels: Any = None, attributions: Any = None, *,
               progress: Optional[bool] = None, backend: Optional[str] = None, output: Any = None) -> MetricResult:
    """Sparseness: the Gini index of ``|A|`` per example (Chalasani et al., ICML 2020).

    ``G = sum_k (2k - n - 1) a_(k) / (n sum_k a_(k))`` over the ``n`` elements
    sorted ascending: 0 when all elements are equal, ``1 - 1/n`` when one holds
    everything (higher is sparser). No model call beyond the checks of every metric
    (``progress`` is accepted for a uniform signature).

    Returns:
        :class:`MetricResult`: ``per_example`` the Gini index (NaN for an all-zero
        attribution), ``value`` their mean over the others.
    """
    check_progress(progress)
    with metric_call(model, x, labels, attributions, backend=backend, output=output) as c:
        B = c.B
        n = c.layout.shape[0]
        a = B.reshape(B.abs(c.attributions), (n, -1))
        m = B.shape(a)[1]
        srt = B.sort(a, axis=1)
        w = B.constant(2.0 * np.arange(1, m + 1) - m - 1, like=a)
        num = B.sum(srt * B.reshape(w, (1, m)), axis=1)
        den = B.sum(a, axis=1) * float(m)
        out = np.asarray(B.to_numpy(B.concat([num, den])), np.float64).reshape(2, n)
    with np.errstate(divide="ignore", invalid="ignore"):
        gini = np.where(out[1] > 0, out[0] / out[1], np.nan)
    value = np.nanmean(gini) if np.any(np.isfinite(gini)) else np.nan
    return MetricResult(name="sparseness", value=np.float64(value), per_example=gini, higher_is_better=True,
                        details={"elements": m})


def mean_absolute_relative_difference(model: Any, x: Any, labels: Any = None, attributions: Any = None, *,
                                      reference: Any = "IxG", reference_options: Optional[dict] = None,
                                      progress: Optional[bool] = None, backend: Optional[str] = None,
                                      output: Any = None) -> MetricResult:
    """The X-DNN paper's distance between two attribution arrays (spec section 3.6).

    ``D = mean|A - R| / (mean|A| + 1e-7)`` with the means over all elements; the
    paper compares Integrated Gradients (``A``) with Input x Gradient (``R``), which
    agree exactly on bias-free (X-) networks.

    Args:
        model, x, labels, attributions: as for :func:`~boundary_xg.metrics.diffid`
            (``A``, shaped like ``x``).
        reference: ``R``: an array or tensor shaped like ``attributions``, or a
            method name computed on ``model`` (default ``"IxG"``, the paper's).
        reference_options: options of the reference method.
        progress, backend, output: as for :func:`~boundary_xg.metrics.diffid`.

    Returns:
        :class:`MetricResult`: ``per_example`` ``D`` of each example (lower is
        closer), ``value`` their mean; ``details["pooled"]`` ``D`` with the means
        over the whole batch (the paper's per-batch value, which it averages over
        batches of 16 and prints in percent).
    """
    check_progress(progress)
    if isinstance(reference, str):
        from ..api import attribute

        from ..errors import MethodError
        from ..methods.registry import lookup

        try:
            lookup(reference)
        except MethodError as err:
            raise InputError(f"reference={reference!r} is neither an array nor a known method; {err}") from err
        ref = attribute(model, x, labels, method=reference, backend=backend, output=output,
                        **dict(reference_options or {}))
    else:
        if reference_options:
            raise InputError("reference_options goes with a method name as reference.")
        ref = reference
    with metric_call(model, x, labels, attributions, backend=backend, output=output) as c:
        B = c.B
        n = c.layout.shape[0]
        r = prepare_attributions(B, model, ref, c.x, c.layout, name="reference")
        if tuple(B.shape(r)) != tuple(B.shape(c.attributions)):
            raise InputError(f"reference has shape {tuple(B.shape(r))} but attributions has "
                             f"{tuple(B.shape(c.attributions))}; they must match.")
        a = B.reshape(c.attributions, (n, -1))
        diff = B.sum(B.abs(a - B.reshape(r, (n, -1))), axis=1)
        mag = B.sum(B.abs(a), axis=1)
        out = np.asarray(B.to_numpy(B.concat([diff, mag])), np.float64).reshape(2, n)
        m = B.shape(a)[1]
    per = (out[0] / m) / (out[1] / m + MARD_EPS)
    pooled = (out[0].sum() / (n * m)) / (out[1].sum() / (n * m) + MARD_EPS)
    return MetricResult(name="mean_absolute_relative_difference", value=np.float64(per.mean()),
                        per_example=per, higher_is_better=False,
                        details={"pooled": np.float64(pooled),
                                 "reference": reference if isinstance(reference, str) else "array"})
