"""Keep and remove tests of the X-DNN paper (Hesse, Schaub-Meyer, Roth, "Fast Axiomatic
Attribution for Neural Networks", NeurIPS 2021; spec section 3.6): KPM, KNM, KAM, RAM.

Masked pixels are replaced by a blurred copy of the image (a Gaussian of
kernel 51 with the paper code's width: ``exp(-((u - c) / (2 * 41))^2)``, i.e.
sigma = 41 sqrt(2) pixels; reflect padding). Per image, the attribution's
channel **mean** gives a map; ``positive`` uses it as is, ``negative`` negated,
``absolute`` its magnitude; ``P = max(map, 0)`` has ``n+`` positive pixels. At
16 fractions ``p = geomspace(0.01, 1, 16)``, ``k = floor(min(p H W, n+))`` pixels
stay sharp: **keep** the ``k`` largest of ``P``, **remove** the ``k`` smallest
*positive* ones (so every non-positive pixel and the most important positive
ones are blurred). Scores: the label's raw logit for the positive and negative
orders, top-1 accuracy for the absolute order; the area is ``np.trapz`` over the
16 fractions (x-extent 0.99).

=====  ==================  ===========================
name   test                better
=====  ==================  ===========================
KPM    keep positive       higher
KNM    keep negative       lower
KAM    keep absolute       higher
RAM    remove absolute     lower
=====  ==================  ===========================

Cost: 16 forwards per example per test; :func:`kpm_family` runs all six tests
(the four above, remove-positive and remove-negative) as the paper's script
does, 96 forwards per example in one stream of batches.
"""

from __future__ import annotations

from typing import Any, Dict, Optional, Sequence

import numpy as np

from ..errors import InputError
from ._inputs import check_blur, check_choice, check_progress, metric_call
from .curves import _trapz
from .perturbation import (
    SCORE_COLUMNS, check_baseline, keep_remove_ranks, layout_key, masked_chunk, resolve_baseline, run_rows,
)
from .results import MetricResult

#: the paper's fractions of pixels kept sharp
FRACTIONS = np.geomspace(0.01, 1.0, 16)
#: the paper code's blur: kernel 51, sigma 41 in a formula that makes the Gaussian sqrt(2) wider
DEFAULT_BLUR = (51, 41.0 * np.sqrt(2.0))
#: test name -> (keep or remove, ranking order, paper's score, higher is better)
TESTS: Dict[str, tuple] = {
    "kpm": ("keep", "positive", "logit", True),
    "knm": ("keep", "negative", "logit", False),
    "kam": ("keep", "absolute", "accuracy", True),
    "ram": ("remove", "absolute", "accuracy", False),
    "rpm": ("remove", "positive", "logit", False),
    "rnm": ("remove", "negative", "logit", True),
}
SCORES = ("paper", "logit", "probability", "accuracy")


def _check_fractions(fractions: Any) -> np.ndarray:
    try:
        fr = np.asarray(fractions, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError) as err:
        raise InputError(f"fractions={fractions!r}: expected numbers in (0, 1].") from err
    if fr.size < 2 or not np.all(np.isfinite(fr)) or np.any(fr <= 0) or np.any(fr > 1):
        raise InputError(f"fractions={fractions!r}: expected at least two numbers in (0, 1].")
    return fr


def keep_remove(model: Any, x: Any, labels: Any, attributions: Any, tests: Sequence[str], *,
                fractions: Any = FRACTIONS, baseline: Any = "blur", blur: Any = DEFAULT_BLUR,
                score: str = "paper", batch_size: Optional[int] = None, progress: Optional[bool] = None,
                backend: Optional[str] = None, output: Any = None) -> Dict[str, MetricResult]:
    """Several keep/remove tests in one stream of batches: ``{test: MetricResult}``."""
    for t in tests:
        check_choice("tests", t, tuple(TESTS))
    fr = _check_fractions(fractions)
    check_baseline(baseline)
    blur = check_blur(blur)
    check_choice("score", score, SCORES)
    check_progress(progress)
    tests = list(dict.fromkeys(tests))
    with metric_call(model, x, labels, attributions, backend=backend, output=output,
                     batch_size=batch_size) as c:
        B, lay = c.B, c.layout
        n, hw, s, t = lay.shape[0], lay.pixels, len(fr), len(tests)
        rank_src, n_pos = B.jit(keep_remove_ranks, c.f, B, layout_key(lay), tuple(TESTS[name][:2] for name in tests))(
            c.attributions)  # test-major rows
        # k = floor(min(p HW, n+)) = min(floor(p HW), n+) as n+ is an integer; the chunk takes the min
        cap = np.floor(fr * hw).astype(np.int64)
        ex = np.repeat(np.arange(n), t * s)                 # rows: example, test, fraction
        test_of = np.tile(np.repeat(np.arange(t), s), n)
        idx = np.stack([ex, test_of * n + ex, np.tile(cap, n * t)])
        base = resolve_baseline(c, baseline, blur)
        out = run_rows(c, masked_chunk, (c.x, base, rank_src, n_pos, c.labels), idx, False,
                       score == "probability", progress, "keep/remove")
    out = out.reshape(n, t, s, 3)
    results = {}
    for j, name in enumerate(tests):
        _, order, paper_score, better = TESTS[name]
        sc = paper_score if score == "paper" else score
        curves = out[:, j, :, SCORE_COLUMNS[sc]]
        per_example = _trapz(curves, fr)
        results[name] = MetricResult(
            name=name, value=np.float64(per_example.mean()), per_example=per_example,
            curve=curves.mean(axis=0), fractions=fr.copy(), per_example_curves=curves, higher_is_better=better,
            details={"test": TESTS[name][0], "order": order, "score": sc,
                     "baseline": baseline if isinstance(baseline, (str, int, float)) else "array"},
        )
    return results


_COMMON_DOC = """
    Args:
        model, x, labels, attributions: as for :func:`~boundary_xg.metrics.diffid`.
        fractions: fractions of the pixels kept sharp (default the paper's
            ``geomspace(0.01, 1, 16)``); the area is the trapezoid rule over them.
        baseline: the replacement of masked pixels: ``"blur"`` (default, the paper's),
            ``"zero"``, ``"mean"``, a number or an array broadcastable to ``x``.
        blur: ``(kernel_size, sigma)`` of the Gaussian in pixels (default the paper
            code's ``(51, 41 sqrt 2)``).
        score: ``"paper"`` (logit for positive/negative orders, accuracy for the
            absolute one), or ``"logit"``, ``"probability"``, ``"accuracy"`` for all.
        batch_size, progress, backend, output: as for :func:`~boundary_xg.metrics.diffid`.

    Returns:
        :class:`MetricResult`: ``value`` the mean area, ``per_example`` each
        example's area, ``curve`` the mean score at each fraction.
"""


def _named(test: str, summary: str):
    def metric(model: Any, x: Any, labels: Any = None, attributions: Any = None, **options: Any) -> MetricResult:
        return keep_remove(model, x, labels, attributions, [test], **options)[test]

    metric.__name__ = metric.__qualname__ = test
    metric.__doc__ = summary + "\n" + _COMMON_DOC
    return metric


kpm = _named("kpm", "KPM, keep positive mask: the most positive pixels kept sharp, the rest blurred; "
                    "area of the label's logit (higher is better). 16 forwards per example.")
knm = _named("knm", "KNM, keep negative mask: the most negative pixels kept sharp; area of the "
                    "label's logit (lower is better). 16 forwards per example.")
kam = _named("kam", "KAM, keep absolute mask: the pixels of largest |mean attribution| kept sharp; "
                    "area of top-1 accuracy (higher is better). 16 forwards per example.")
ram = _named("ram", "RAM, remove absolute mask: the pixels of largest |mean attribution| blurred "
                    "(only the least important positive ones stay sharp); area of top-1 accuracy "
                    "(lower is better). 16 forwards per example.")


def kpm_family(model: Any, x: Any, labels: Any = None, attributions: Any = None, *,
               tests: Sequence[str] = ("kpm", "knm", "kam", "ram", "rpm", "rnm"),
               **options: Any) -> Dict[str, MetricResult]:
    """All keep/remove tests of the X-DNN paper's script in one stream of batches.

    KPM, KNM, KAM, RAM and the script's unreported remove-positive (``rpm``, lower is
    better) and remove-negative (``rnm``) tests: 96 forwards per example, as the
    paper's script. Options as for :func:`kpm`.

    Returns:
        ``{test name: MetricResult}`` in the order of ``tests``.

    Example:
        >>> fam = bxg.metrics.kpm_family(model, x, y, attr)
        >>> fam["kpm"].value, fam["ram"].value
    """
    return keep_remove(model, x, labels, attributions, tests, **options)
