"""DiffID: insertion minus deletion at fixed ratios (Yang et al., "Re-calibrating Feature
Attributions for Model Interpretation", ICLR 2023; spec section 4.16).

For each ratio ``r`` (default 0.1, ..., 0.9) and each example two perturbed images
are evaluated: **insertion** replaces the ``floor(E r)`` *least* important of the
``E = C H W`` elements (the most important ``1 - r`` stay), **deletion** the
``floor(E r)`` *most* important. Importance is the channel sum of ``|A|`` (the
paper's per-image min-max scaling does not change the order and is left out);
a pixel's channels tie and sit next to each other in the order, so a cut may split
one pixel. Replaced elements take the mean of the elements kept (one value per
image, different for insertion and deletion). The score is the label's logit in
the perturbed image divided by its logit in the clean image (and, always
reported too, top-1 accuracy against the labels); ``DiffID_r = Ins_r - Del_r``,
higher is better. Cost: ``1 + 2 len(ratios)`` forwards per example (19).
"""

from __future__ import annotations

import math
from typing import Any, Optional, Sequence

import numpy as np

from ._inputs import check_blur, check_choice, check_progress, check_ratios, metric_call
from .perturbation import (
    ACCURACY, LOGIT, PROBABILITY, check_baseline, diffid_ranks, layout_key, masked_chunk, mean_kept_chunk,
    resolve_baseline, run_rows,
)
from .results import MetricResult

#: the paper's ratios, generated as the paper's code does (step * 0.1, with its float artefacts)
DEFAULT_RATIOS = tuple(k * 0.1 for k in range(1, 10))
SCORES = ("logit_ratio", "accuracy", "probability_ratio", "probability", "logit")
ORDERS = ("abs", "positive", "negative")
#: blur of baseline="blur": kernel size and sigma in pixels (RISE's insertion blur)
DEFAULT_BLUR = (11, 1.1)


def _values(out: np.ndarray, col: int, ratio: bool) -> np.ndarray:
    """``(N, S-1)`` scores of the perturbed rows (divided by the clean row's for a ratio)."""
    v = out[:, 1:, col]
    if ratio:
        with np.errstate(divide="ignore", invalid="ignore"):
            v = v / out[:, :1, col]
    return v


def diffid(model: Any, x: Any, labels: Any = None, attributions: Any = None, *,
           ratios: Sequence[float] = DEFAULT_RATIOS, score: str = "logit_ratio", order: str = "abs",
           baseline: Any = "mean_kept", blur: Any = DEFAULT_BLUR, batch_size: Optional[int] = None,
           progress: Optional[bool] = None, backend: Optional[str] = None, output: Any = None) -> MetricResult:
    """DiffID (insertion minus deletion) of ``attributions`` for ``model`` at ``x``.

    When to use: to compare attribution methods by how much of the model's evidence
    their top-ranked elements carry, with the re-calibration paper's conventions.

    Args:
        model: a ``torch.nn.Module`` or a Keras 3 model.
        x: ``(N, ...)`` inputs in the model's layout, NumPy or a native tensor.
        labels: class indices ``(N,)`` or one-hot (the paper: ground truth); None: predicted.
        attributions: like ``x``, or one map per example (``(N, 1, H, W)`` NCHW,
            ``(N, H, W, 1)`` NHWC, or ``(N, H, W)``).
        ratios: fractions of elements replaced, each in (0, 1) (default 0.1..0.9).
        score: ``"logit_ratio"`` (the paper: ``F_y(x') / F_y(x)``, unstable where
            ``F_y(x)`` is near 0), ``"accuracy"`` (the paper's other table),
            ``"probability_ratio"``, ``"probability"`` (softmax of the label) or
            ``"logit"``.
        order: importance of a pixel: ``"abs"`` (the paper: sum of ``|A|`` over the
            channels, so the sign of ``A`` does not matter), ``"positive"`` (signed
            sum, most positive first) or ``"negative"``.
        baseline: the replacement: ``"mean_kept"`` (the paper: mean of the elements
            kept), ``"mean"`` (mean of the image), ``"blur"``, ``"zero"``, a number
            or an array broadcastable to ``x``.
        blur: ``(kernel_size, sigma)`` of ``baseline="blur"`` (Gaussian, reflect padding).
        batch_size: model inputs per forward (default: :func:`~boundary_xg.ops.default_batch_size`).
        progress: a progress bar (None: on a terminal); backend, output: as for ``attribute``.

    Returns:
        :class:`MetricResult`: ``value`` the mean of ``DiffID_r`` over the ratios (an
        area with the ratios' step), ``curve`` the per-ratio ``DiffID_r`` (the
        paper's printed row), ``per_example`` each example's mean over ratios;
        ``details``: ``insertion``/``deletion`` curves of ``score``, their
        ``(N, S)`` per-example curves, ``paper`` (both of the paper's scores:
        ``{"accuracy": {...}, "logit_ratio": {...}}`` with insertion, deletion
        and diffid rows), ``counts`` (elements replaced per ratio).

    Raises:
        InputError: attributions of the wrong shape, NaN, ratios outside (0, 1),
            an empty batch, a bad option (each naming the argument).

    Example:
        >>> res = bxg.metrics.diffid(model, x, y, bxg.attribute(model, x, y, method="IG"))
        >>> res.value, res.curve
    """
    ratios = check_ratios(ratios)
    check_choice("score", score, SCORES)
    check_choice("order", order, ORDERS)
    check_baseline(baseline, extra=("mean_kept",))
    blur = check_blur(blur)
    check_progress(progress)
    with metric_call(model, x, labels, attributions, backend=backend, output=output,
                     batch_size=batch_size) as c:
        B, lay = c.B, c.layout
        n, k = lay.shape[0], len(ratios)
        counts = [int(math.floor(lay.elements * r)) for r in ratios]
        per = 1 + 2 * k  # rows per example: clean, insertions, deletions
        ex = np.repeat(np.arange(n), per)
        which = np.tile(np.array([0] * (1 + k) + [1] * k), n)
        idx = np.stack([ex, ex + n * which, np.tile(np.array([0] + counts + counts), n)])
        prob = score.startswith("prob")
        how = "abs_sum" if order == "abs" else "sum"
        # insertion replaces the least important first (rank rows 0..n-1), deletion the most important
        rank_src = B.jit(diffid_ranks, c.f, B, layout_key(lay), how, order == "negative")(c.attributions)
        if isinstance(baseline, str) and baseline == "mean_kept":
            out = run_rows(c, mean_kept_chunk, (c.x, rank_src, c.labels), idx, True, prob, progress, "diffid")
        else:
            base = resolve_baseline(c, baseline, blur)
            out = run_rows(c, masked_chunk, (base, c.x, rank_src, None, c.labels), idx, True, prob, progress,
                           "diffid")
    out = out.reshape(n, per, 3)

    def table(col: int, ratio: bool):
        v = _values(out, col, ratio)
        ins, dele = v[:, :k], v[:, k:]
        return ins, dele, ins - dele

    col = {"logit_ratio": LOGIT, "logit": LOGIT, "accuracy": ACCURACY, "probability_ratio": PROBABILITY,
           "probability": PROBABILITY}[score]
    ins, dele, diff = table(col, score.endswith("_ratio"))
    paper = {}
    for name, (cl, rt) in {"accuracy": (ACCURACY, False), "logit_ratio": (LOGIT, True)}.items():
        i, d, df = table(cl, rt)
        paper[name] = {"insertion": i.mean(0), "deletion": d.mean(0), "diffid": df.mean(0)}
    curve = diff.mean(axis=0)
    per_example = diff.mean(axis=1)
    return MetricResult(
        name="diffid", value=np.float64(curve.mean()), per_example=per_example, curve=curve,
        fractions=np.asarray(ratios, np.float64), per_example_curves=diff, higher_is_better=True,
        details={"insertion": ins.mean(0), "deletion": dele.mean(0), "insertion_curves": ins,
                 "deletion_curves": dele, "paper": paper, "counts": np.asarray(counts),
                 "score": score, "order": order,
                 "baseline": baseline if isinstance(baseline, (str, int, float)) else "array"},
    )
