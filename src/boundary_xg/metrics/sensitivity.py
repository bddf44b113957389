"""Sensitivity-n (Ancona, Ceolini, Oztireli, Gross, "Towards better understanding of
gradient-based attribution methods for Deep Neural Networks", ICLR 2018), with the
re-calibration code's sampling (spec section 4.16).

For each ratio ``q`` and ``num_masks`` random pixel masks drawn Bernoulli(``q``)
per pixel (shared by the channels), the masked pixels are replaced by a
reference; ``S`` is the sum of the attribution map over the masked pixels and
``Delta = F_y(x) - F_y(x_ref)`` the change of the label's logit. A method whose
attributions add up to the output changes has ``S`` and ``Delta`` correlated: the
score is their Pearson correlation over the masks, per example and ratio
(examples where either is constant are left out of the means, as in the code).

The reference lives in the **model's input space**: ``"zero"`` (0 in that space,
e.g. the mean colour of normalised images), a number, an array, or ``"uniform"``
noise drawn within ``bounds`` given in that space (default each image's own
min..max). The re-calibration code drew ``U[0, 1)`` pixel-space noise into
normalised inputs; that is not reproduced. Cost: ``1 + len(ratios) * num_masks``
forwards per example (91).
"""

from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ..errors import InputError
from ._inputs import check_choice, check_int, check_progress, check_ratios, check_seed, metric_call, progress_bar
from .diffid import DEFAULT_RATIOS
from .perturbation import SCORE_COLUMNS, check_baseline, pixel_values, resolve_baseline, score_rows
from .results import MetricResult
from ..ops import row_chunks

REDUCE = ("sum", "abs")


def _pearson(s: np.ndarray, d: np.ndarray) -> np.ndarray:
    """Pearson correlation along the last axis; NaN where either side is constant."""
    s = s - s.mean(axis=-1, keepdims=True)
    d = d - d.mean(axis=-1, keepdims=True)
    den = np.sqrt((s * s).sum(-1) * (d * d).sum(-1))
    with np.errstate(divide="ignore", invalid="ignore"):
        r = (s * d).sum(-1) / den
    return np.where(den > 0, r, np.nan)


def _masks(seed: int, example: int, probs: np.ndarray, pixels: int) -> np.ndarray:
    """``(len(probs), pixels)`` Bernoulli masks of one example (True: replaced), from NumPy.

    Seeded per example, so the masks do not depend on the batch size or the
    framework: the same weights give the same numbers in PyTorch and Keras.
    """
    u = np.random.default_rng([int(seed), int(example)]).random((len(probs), pixels), dtype=np.float32)
    return u < probs[:, None].astype(np.float32)


def _mask_chunk(B, f, x_src, ex, ref_rows, mask, labels, tail, probability):
    """Scores of rows ``where(mask, reference, x)`` with an explicit per-row pixel mask
    (``tail``: one row's shape of the mask, broadcast over the channels)."""
    xr = B.gather(x_src, ex)
    return score_rows(B, f(B.select(B.reshape(mask, (-1,) + tail), ref_rows, xr)), labels, probability)


def sensitivity_n(model: Any, x: Any, labels: Any = None, attributions: Any = None, *,
                  ratios: Sequence[float] = DEFAULT_RATIOS, num_masks: int = 10, baseline: Any = "zero",
                  bounds: Any = None, reduce: str = "sum", score: str = "logit", seed: Optional[int] = 0,
                  batch_size: Optional[int] = None, progress: Optional[bool] = None,
                  backend: Optional[str] = None, output: Any = None) -> MetricResult:
    """Sensitivity-n: correlation of masked attribution sums with the output changes they cause.

    When to use: to check that attributions add up like the model's output
    changes (higher is better; 1 for a linear model and exact attributions).

    Args:
        model, x, labels, attributions: as for :func:`~boundary_xg.metrics.diffid`.
        ratios: Bernoulli probabilities of a pixel being masked, each in (0, 1)
            (default 0.1..0.9).
        num_masks: masks per ratio and example (default 10).
        baseline: the reference of masked pixels in the model's input space:
            ``"zero"`` (default), ``"uniform"`` (noise within ``bounds``, drawn on the
            device from ``seed``: the same for a seed, not between frameworks),
            ``"mean"``, ``"blur"``, a number or an array broadcastable to ``x``.
        bounds: ``(low, high)`` of ``"uniform"`` (numbers or arrays broadcastable to
            ``x``); None: each example's min and max.
        reduce: the attribution map: ``"sum"`` (signed channel sum, default) or
            ``"abs"`` (sum of ``|A|``; the re-calibration code runs both).
        score: ``"logit"`` (default) or ``"probability"`` of the label.
        seed: seeds the masks (NumPy, per example: independent of ``batch_size``
            and of the framework) and the uniform noise.
        batch_size, progress, backend, output: as for :func:`~boundary_xg.metrics.diffid`.

    Returns:
        :class:`MetricResult`: ``curve`` the mean correlation per ratio (NaNs left
        out), ``value`` its mean, ``per_example`` each example's mean over the
        ratios; ``details["correlations"]`` ``(N, len(ratios))``, ``details["sums"]``
        and ``details["deltas"]`` ``(N, len(ratios), num_masks)``.

    Raises:
        InputError: as for :func:`~boundary_xg.metrics.diffid`.
    """
    ratios = check_ratios(ratios)
    check_int("num_masks", num_masks, 2)
    check_baseline(baseline, extra=("uniform",))
    check_choice("reduce", reduce, REDUCE)
    check_choice("score", score, ("logit", "probability"))
    check_seed(seed)
    check_progress(progress)
    if seed is None:
        seed = int(np.random.SeedSequence().generate_state(1)[0])
    with metric_call(model, x, labels, attributions, backend=backend, output=output,
                     batch_size=batch_size) as c:
        B, lay = c.B, c.layout
        n, p = lay.shape[0], lay.pixels
        amap = B.to_numpy(pixel_values(B, lay, c.attributions, "abs_sum" if reduce == "abs" else "sum"))
        amap = np.asarray(amap, np.float64)
        uniform = isinstance(baseline, str) and baseline == "uniform"
        if uniform:
            low, span = _uniform_box(c, bounds)
            rng = B.rng(seed, c.x)
        else:
            if bounds is not None:
                raise InputError("bounds= goes with baseline='uniform'; drop it or pass baseline='uniform'.")
            ref = resolve_baseline(c, baseline, (11, 1.1))
        probs = np.repeat(np.asarray(ratios, np.float32), num_masks)
        m = len(probs)
        per = 1 + m  # rows per example: the clean image, then the masked ones
        total = n * per
        step = B.jit(_mask_chunk, c.f, B, c.f)
        tail = tuple(int(d) for d in lay.map_shape(1)[1:])
        sums = np.zeros((n, m))
        outs = []
        cache: dict = {}
        bar = progress_bar(progress, total, "sensitivity-n")
        try:
            with B.no_grad():  # forwards only: no autograd graph kept (torch)
                for lo, hi in row_chunks(total, c.batch_size):
                    # the masks come from NumPy (reproducible across frameworks), one upload per chunk
                    rows = np.arange(lo, hi)
                    ex, j = rows // per, rows % per
                    mask = np.zeros((hi - lo, p), bool)
                    for e in np.unique(ex):
                        if e not in cache:  # each example's masks once, also across chunks
                            cache = {e: _masks(seed, e, probs, p)}
                            sums[e] = cache[e] @ amap[e]
                        sel = (ex == e) & (j > 0)
                        mask[sel] = cache[e][j[sel] - 1]
                    ex_t = B.asarray(ex.astype(np.int64), like=c.x)
                    if uniform:
                        shape = (hi - lo,) + tuple(lay.shape[1:])
                        ref_rows = B.uniform(rng, shape, like=c.x) * B.gather(span, ex_t) + B.gather(low, ex_t)
                    else:
                        ref_rows = B.gather(ref, ex_t)
                    outs.append(step(c.x, ex_t, ref_rows, B.asarray(mask, like=c.x), B.gather(c.labels, ex_t),
                                     tail, score == "probability"))
                    bar.update(hi - lo)
        finally:
            bar.close()
        out = np.asarray(B.to_numpy(B.concat(outs) if len(outs) > 1 else outs[0]), np.float64)
    col = SCORE_COLUMNS[score]
    out = out[:, col].reshape(n, per)
    deltas = (out[:, :1] - out[:, 1:]).reshape(n, len(ratios), num_masks)
    sums = sums.reshape(n, len(ratios), num_masks)
    corr = _pearson(sums, deltas)
    with np.errstate(invalid="ignore"), _quiet():
        curve = np.nanmean(corr, axis=0)
        per_example = np.nanmean(corr, axis=1)
        value = np.nanmean(curve)
    return MetricResult(
        name="sensitivity_n", value=np.float64(value), per_example=per_example, curve=curve,
        fractions=np.asarray(ratios, np.float64), per_example_curves=corr, higher_is_better=True,
        details={"correlations": corr, "sums": sums, "deltas": deltas, "std": np.nanstd(corr, axis=0),
                 "reduce": reduce, "score": score, "seed": seed,
                 "baseline": baseline if isinstance(baseline, (str, int, float)) else "array"},
    )


class _quiet:
    """Silence NumPy's 'mean of empty slice' for all-NaN columns (they stay NaN)."""

    def __enter__(self):
        import warnings

        self._w = warnings.catch_warnings()
        self._w.__enter__()
        warnings.simplefilter("ignore", RuntimeWarning)

    def __exit__(self, *exc):
        self._w.__exit__(*exc)


def _uniform_box(c: Any, bounds: Any):
    """``(low, high - low)`` of the uniform reference, tensors like ``x``."""
    from .._entry import prepare_baseline

    B, x = c.B, c.x
    if bounds is None:  # each example's own range in the model's input space
        axes = tuple(range(1, len(c.layout.shape)))
        shape = (-1,) + (1,) * (len(c.layout.shape) - 1)
        low = B.zeros_like(x) + B.reshape(B.min(x, axis=axes), shape)
        high = B.zeros_like(x) + B.reshape(B.max(x, axis=axes), shape)
        return low, high - low
    try:
        lo, hi = bounds
    except (TypeError, ValueError) as err:
        raise InputError(f"bounds={bounds!r}: expected (low, high), numbers or arrays broadcastable to x.") from err
    try:
        low, high = prepare_baseline(B, lo, x), prepare_baseline(B, hi, x)
    except InputError as err:
        raise InputError(f"bounds: {err}") from err
    return low, high - low
