"""Path integration over a grid of references x steps, with attribution re-calibration.

Yang, Akhtar, Wen, Shah, Mian, "Re-calibrating Feature Attributions for Model
Interpretation", ICLR 2023. Every reference-based path method of the package
(IG_Uniform, IG_SG, IG_SQ, LPI, and IG with ``recalibrate=``) runs on
:func:`grid_attribution`: for each example ``x`` with references ``r_1 .. r_M``
and the quadrature rule's nodes and weights ``(alpha_s, w_s)``, ``s = 1 .. k``,
the gradient of the explained scalar is taken at every point

    x_{m,s} = r_m + alpha_s (x - r_m)        (the full M x k grid)

and combined as

* ``recalibrate=None`` (plain path integration, the mean over references of IG):
  ``A = 1/M sum_m (x - r_m) * G_m`` with ``G_m = sum_s w_s g(x_{m,s})``; with
  ``square=True`` (IG-SQ) ``A = 1/M sum_m (x - r_m) * G_m ** 2``;
* ``recalibrate="valid_ip"`` (valid interpolation points): every point is a
  reference of its own, ``c_{m,s} = w_s g(x_{m,s}) * (x - x_{m,s})``, and
  ``A = sum c [c >= 0] / max(1, #{c >= 0})`` per feature (IG-SQ: ``c ** 2`` in the sum);
* ``recalibrate="valid_ref"`` (valid references): ``a_m = (x - r_m) * G_m`` (the
  IG of reference ``m``), and ``A = sum a [a >= 0] / max(1, #{a >= 0})`` per
  feature (IG-SQ: ``a ** 2`` in the sum).

Exact zeros count as valid, as in the paper's code. Re-calibrated attributions
are non-negative and cost no pass more than the plain method.

``pairing="rec"`` reproduces the reference code's sample layout instead of the
full grid (docs/recalibration.md, "pairing"): sample ``j = 0 .. kM-1`` of an example uses reference
``j mod M`` at ``alpha = linspace(0, 1, k)[j mod k]`` (``{1}`` for ``k = 1``),
weight ``1/k``, and the group ``b = j // k`` of ``k`` consecutive samples is
paired with reference ``r_b`` in the plain and ``valid_ref`` sums. At ``k = 5,
M = 10`` those 50 passes visit 9 distinct points; it is there to compare with
the paper's numbers, not as a default.

The rows of the grid are batched into the batch dimension, in chunks of at
most ``batch_size`` model inputs made of whole groups of ``k`` rows (one
reference's path), so the per-reference sums ``G_m`` are finished inside the
chunk: no accumulator of size ``N x M x ...`` is ever made. References may be
drawn per block of examples (:data:`REF_BLOCK_ELEMENTS`), so drawn references
need no more memory than that either, and their draws do not depend on
``batch_size``.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Tuple, Union

from ..backends import Backend
from ..errors import InputError
from ..ops import (
    compiled_label_grad, expand_rows, forward_scores, objective_of, objective_scores, predict,
    resolve_batch_size,
)
from .quadrature import quadrature
from .registry import int_at_least, one_of, optional, positive_float, register_checks

#: the re-calibration modes (``recalibrate=``) and reference pairings (``pairing=``)
RECALIBRATE_MODES = ("valid_ip", "valid_ref")
PAIRINGS = ("full", "rec")

# options shared by the re-calibration methods (IG, EG, BIG and the reference methods)
register_checks({
    "recalibrate": optional(one_of("recalibrate", RECALIBRATE_MODES)),
    "pairing": one_of("pairing", PAIRINGS),
    "num_references": optional(int_at_least("num_references", 1)),
    "num_classes": optional(int_at_least("num_classes", 1)),
    "num_clusters": optional(int_at_least("num_clusters", 1)),
    "step_size": positive_float("step_size", optional=True),
})

#: at most this many reference elements exist at once when references are drawn
#: (examples are processed in blocks of ``REF_BLOCK_ELEMENTS // (M * example size)``)
REF_BLOCK_ELEMENTS = 2 ** 25

#: a source of references: a tensor ``(M, ...)`` shared by all examples, ``(N, M, ...)``
#: one set per example, or ``draw(n0, n1) -> (n1 - n0, M, ...)`` for examples n0..n1-1
References = Union[Any, Callable[[int, int], Any]]


def rec_nodes(steps: int) -> Tuple[list, list]:
    """The reference code's nodes and weights: ``linspace(0, 1, k)`` (``[1.0]`` for ``k = 1``), ``1/k`` each."""
    k = int(steps)
    alphas = [1.0] if k == 1 else [i / (k - 1) for i in range(k)]
    return alphas, [1.0 / k] * k


def check_gap_options(return_gap: bool, recalibrate: Optional[str], method: str, square: bool = False) -> None:
    """Refuse ``return_gap=True`` where completeness is not what the output claims.

    Raises:
        InputError: with ``recalibrate`` (re-calibrated attributions keep only the
            non-negative terms) or for a squared method.
    """
    if return_gap and (recalibrate is not None or square):
        why = "keep only non-negative terms" if recalibrate is not None else "square the gradients"
        raise InputError(
            f"{method}: return_gap=True reports sum(attr) - (F(x) - F(reference)), but these "
            f"attributions {why} and do not sum to that difference; drop return_gap or recalibrate."
        )


def grid_attribution(
    B: Backend,
    f: Callable,
    x: Any,
    labels: Any,
    references: References,
    *,
    num_references: int,
    steps: int,
    rule: str = "gausslegendre",
    pairing: str = "full",
    recalibrate: Optional[str] = None,
    square: bool = False,
    batch_size: Optional[int] = None,
    return_gap: bool = False,
    block_examples: Optional[int] = None,
) -> Any:
    """Path integration from ``M`` references to each example over ``k`` steps (module docstring).

    Args:
        B: the backend; f: the logits function (its objective is explained).
        x: inputs ``(N, ...)``; labels: ``(N,)``.
        references: ``(M, ...)`` shared, ``(N, M, ...)`` per example, or a callable
            ``draw(n0, n1)`` returning ``(n1 - n0, M, ...)`` for examples ``n0 .. n1-1``
            (called once per block of examples, in order).
        num_references: ``M``.
        steps: ``k``, the nodes per path (``pairing="rec"``: samples per group).
        rule: quadrature rule (:func:`~boundary_xg.methods.quadrature.quadrature`);
            unused with ``pairing="rec"``.
        pairing: ``"full"`` (every reference at every node) or ``"rec"``.
        recalibrate: None, ``"valid_ip"`` or ``"valid_ref"``.
        square: IG-SQ's squared combination.
        batch_size: model inputs per forward/backward.
        return_gap: also return ``sum(attr) - (Phi(x) - mean_m Phi(r_m))`` per
            example ``(N,)`` (one forward of the references).
        block_examples: examples per block (default: from :data:`REF_BLOCK_ELEMENTS`).

    Returns:
        Attributions shaped like ``x``, or ``(attributions, gap)``.
    """
    bs = resolve_batch_size(batch_size)
    shape = B.shape(x)
    n, nd = shape[0], len(shape)
    m, k = int(num_references), int(steps)
    alphas, weights = rec_nodes(k) if pairing == "rec" else quadrature(rule, k)
    a_t, w_t = B.constant(alphas, like=x), B.constant(weights, like=x)
    ip_coef = B.constant([w * (1.0 - a) for a, w in zip(alphas, weights)], like=x)
    per_row = 1
    for d in shape[1:]:
        per_row *= int(d)
    shared = not callable(references) and len(B.shape(references)) == nd
    if block_examples is None:
        block_examples = n if shared else max(1, REF_BLOCK_ELEMENTS // max(1, m * per_row))
    step = compiled_label_grad(B, f)
    acc = B.zeros_like(x)
    cnt = B.zeros_like(x) if recalibrate is not None else None
    ref_scores = []
    for n0 in range(0, n, block_examples):
        n1 = min(n, n0 + block_examples)
        if callable(references):
            refs = references(n0, n1)
        elif shared:
            refs = references
        else:
            refs = references[n0:n1]
        # flat (rows, ...) references; row of (example e, reference r): r (shared) or e * M + r
        flat = refs if shared else B.reshape(refs, (-1,) + tuple(shape[1:]))
        xb, yb = x[n0:n1], labels[n0:n1]
        nb = n1 - n0
        for g0, g1, r0, r1 in _chunks(nb * m, k, bs):
            rows = B.arange(r0, r1, like=x)
            ex, j = rows // (m * k), rows % (m * k)
            ref, st = (j // k, j % k) if pairing == "full" else (j % m, j % k)
            r_rows = B.gather(flat, ref if shared else ex * m + ref)
            x_rows = B.gather(xb, ex)
            diff = x_rows - r_rows
            _, g = step(r_rows + expand_rows(B, B.gather(a_t, st), nd) * diff, B.gather(yb, ex))
            if recalibrate == "valid_ip":
                # c = w_s g * (x - x_{m,s}), x - x_{m,s} = (1 - alpha_s)(x - r_m): exactly 0 at
                # alpha = 1 (a valid point)
                c = g * diff * expand_rows(B, B.gather(ip_coef, st), nd)
                acc, cnt = add_valid(B, acc, cnt, n0 + ex, c, square)
                continue
            wg = g * expand_rows(B, B.gather(w_t, st), nd)
            # the sums G over each group's k rows: within this chunk (whole groups), or,
            # when batch_size < k, over the chunks of the one group [g0, g0 + 1)
            if r1 - r0 == (g1 - g0) * k:
                gsum = B.sum(B.reshape(wg, (g1 - g0, k) + tuple(shape[1:])), axis=1)
            else:
                part = B.sum(wg, axis=0)
                gsum = part if r0 == g0 * k else gsum + part
                if r1 < g1 * k:
                    continue
                gsum = B.reshape(gsum, (1,) + tuple(shape[1:]))
            groups = B.arange(g0, g1, like=x)
            gex, gref = groups // m, groups % m  # group b of an example pairs with r_b
            d = B.gather(xb, gex) - B.gather(flat, gref if shared else gex * m + gref)
            a = d * gsum
            if recalibrate == "valid_ref":
                acc, cnt = add_valid(B, acc, cnt, n0 + gex, a, square)
            else:
                acc = B.index_add(acc, n0 + gex, d * gsum * gsum if square else a)
        if return_gap:
            ref_scores.append(_reference_scores(B, f, flat, yb, m, shared, bs))
    attr = acc / m if recalibrate is None else acc / B.maximum(cnt, B.zeros_like(cnt) + 1.0)
    if not return_gap:
        return attr
    fx = forward_scores(B, f, x, labels, bs)
    gap = B.sum(attr, axis=tuple(range(1, nd))) - (fx - B.concat(ref_scores))
    return attr, gap


def _chunks(groups: int, k: int, bs: int) -> Iterator[Tuple[int, int, int, int]]:
    """``(g0, g1, r0, r1)``: rows ``[r0, r1)`` of groups ``[g0, g1)`` (``k`` rows per group).

    With ``bs >= k`` each chunk holds ``bs // k`` whole groups; else each group is
    split into chunks of ``bs`` rows (``g1 = g0 + 1``).
    """
    if bs >= k:
        per = bs // k
        for g0 in range(0, groups, per):
            g1 = min(groups, g0 + per)
            yield g0, g1, g0 * k, g1 * k
        return
    for g in range(groups):
        for r0 in range(g * k, (g + 1) * k, bs):
            yield g, g + 1, r0, min((g + 1) * k, r0 + bs)


def add_valid(B: Backend, acc: Any, cnt: Any, index: Any, c: Any, square: bool) -> Tuple[Any, Any]:
    """Add the valid (``c >= 0``) terms of rows ``c`` (squared for IG-SQ) and their count."""
    # max(c, 0) as (c + |c|) / 2, exact in floating point (c + c = 2c; c + |c| = 0 for c < 0),
    # and the count as a cast of the mask: three and two cheap kernels, where where() and
    # its zero tensors cost about three times as much on a CPU
    pos = (c + B.abs(c)) * 0.5
    acc = B.index_add(acc, index, pos * pos if square else pos)
    cnt = B.index_add(cnt, index, B.cast(c >= 0, c))
    return acc, cnt


def _reference_scores(B: Backend, f: Callable, flat: Any, yb: Any, m: int, shared: bool, bs: int) -> Any:
    """``mean_m Phi_y(r_m)`` per example of the block, ``(nb,)``: one forward of the references."""
    nb = B.shape(yb)[0]
    logits = predict(B, f, flat, bs)  # (M, C) shared or (nb * M, C)
    rows = B.arange(0, nb * m, like=yb)
    if shared:
        logits = B.gather(logits, rows % m)
    scores = objective_scores(B, logits, B.gather(yb, rows // m), objective_of(f))
    return B.sum(B.reshape(scores, (nb, m)), axis=1) / m


def single_reference_grid(
    B: Backend, f: Callable, x: Any, labels: Any, baseline: Any, *, steps: int, rule: str,
    recalibrate: str, batch_size: Optional[int] = None,
) -> Any:
    """IG from one baseline per example (``(N, ...)``) with ``recalibrate`` (IG, BIG)."""
    shape = B.shape(x)
    refs = B.reshape(baseline, (shape[0], 1) + tuple(shape[1:]))
    return grid_attribution(B, f, x, labels, refs, num_references=1, steps=steps, rule=rule,
                            recalibrate=recalibrate, batch_size=batch_size)
