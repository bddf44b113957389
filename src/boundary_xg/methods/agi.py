"""AGI: Adversarial Gradient Integration (Pan, Li, Zhu, "Explaining Deep Neural Network
Models with Adversarial Gradient Integration", IJCAI 2021), with attribution re-calibration.

For each example ``x`` (label ``y``) and each of ``T`` target classes ``t != y``,
an iterative, accumulated L-infinity attack walks from ``x`` towards class ``t``
within the box ``bounds``::

    p_0 = x,    p_s = clip(p_{s-1} + step_size * sign(grad F_t(p_{s-1})), bounds)

and the gradient of the explained scalar ``Phi_y`` (the label's logit by default)
is integrated along that path, left Riemann sums::

    c_{t,s} = grad Phi_y(p_{s-1}) * (p_{s-1} - p_s),     AGI(x) = sum_t sum_s c_{t,s}

so ``sum(AGI) ~ sum_t (Phi_y(x) - Phi_y(p_{t,K}))``. The targets are the ``T``
classes with the highest logits at ``x`` other than the label (``targets="top"``,
the default: the classes the model finds closest), or ``T`` classes drawn
uniformly among the others (``targets="random"``, with ``seed``, as the paper
samples them); the label is never among them. ``recalibrate="valid_ip"``
averages the non-negative ``c_{t,s}`` per feature, ``"valid_ref"`` the
non-negative per-target sums ``a_t = sum_s c_{t,s}`` (Yang et al., ICLR 2023).

Each step evaluates two rows per (example, target) at the same point: one for
the attack's gradient of ``F_t`` and one for the label's gradient; all rows are
batched in chunks of ``batch_size``. Cost: ``2 * steps * T`` passes plus one
forward per input (100 passes at the defaults steps = 5, T = 10).

Differences from the re-calibration code's AGI (docs/recalibration.md): steps accumulate
(its steps restart from the clean image), every forward sees the model's input
space (its attack step fed unnormalised pixels), the label is never a target
(its sampler could return it, and never chose the last two classes), and the
label's gradient is taken where the step starts (the paper's rule).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from ..backends import Backend
from ..errors import InputError
from ..ops import objective_of, objective_scores, predict, resolve_batch_size, row_chunks, forward_scores
from ..search.pipeline import prepare_bounds
from .recalibration import REF_BLOCK_ELEMENTS, add_valid, check_gap_options
from .registry import MethodSpec, register

#: target classes when ``num_classes`` is not given (the reference code's top_k = bg_size = 10),
#: at most the number of other classes
DEFAULT_NUM_CLASSES = 10
#: default step as a fraction of the box width ``high - low`` (the reference code's 0.05 on pixels in [0, 1])
DEFAULT_STEP_FRACTION = 0.05
TARGETS = ("top", "random")


def agi(
    B: Backend, f: Callable, x: Any, labels: Any, *, num_classes: Optional[int] = None,
    steps: int = 5, step_size: Optional[float] = None, bounds: Any = None, targets: str = "top",
    seed: Optional[int] = None, recalibrate: Optional[str] = None,
    batch_size: Optional[int] = None, return_gap: bool = False,
) -> Any:
    """Adversarial Gradient Integration (module docstring), shaped like ``x``.

    Args:
        B: the backend; f: the logits function (its objective is explained).
        x: inputs ``(N, ...)``; labels: ``(N,)`` class indices.
        num_classes: ``T``, target classes per example (default ``min(10, C - 1)``).
        steps: attack steps per target (default 5).
        step_size: the L-infinity step in input units; None (default) is 0.05 of
            the box width ``high - low`` (per element, so per channel for
            per-channel bounds: 0.05 of the pixel range, as in the paper's code).
        bounds: ``(low, high)`` tensors broadcastable to one example, or None
            (then ``step_size`` is needed and steps are not clipped).
        targets: ``"top"`` (default) or ``"random"``.
        seed: seed of the random targets.
        recalibrate: None, ``"valid_ip"`` or ``"valid_ref"``.
        batch_size: model inputs per forward/backward.
        return_gap: also return ``sum(attr) - sum_t (Phi(x) - Phi(p_{t,K}))``, ``(N,)``
            (one forward of the end points).

    Returns:
        Attributions shaped like ``x``, or ``(attributions, gap)``.

    Raises:
        InputError: ``num_classes`` larger than the number of other classes.
    """
    check_gap_options(return_gap, recalibrate, "AGI")
    bs = resolve_batch_size(batch_size)
    shape = B.shape(x)
    n, nd, example = shape[0], len(shape), tuple(shape[1:])
    logits_x = predict(B, f, x, bs)
    classes = B.shape(logits_x)[1]
    if classes < 2:
        raise InputError("AGI attacks towards other classes; the model has a single output.")
    t_count = min(DEFAULT_NUM_CLASSES, classes - 1) if num_classes is None else int(num_classes)
    if t_count > classes - 1:
        raise InputError(
            f"num_classes={num_classes}: the model has {classes} classes, so at most {classes - 1} "
            "targets other than the label."
        )
    if targets == "random":
        f32 = B.asarray([0.0], like=x, dtype="float32")
        keys = B.uniform(B.rng(seed, like=x), (n, classes), like=f32)
    else:
        keys = logits_x
    target = _top_others(B, keys, labels, t_count)  # (N * T,), example-major
    lo, hi = bounds if bounds is not None else (None, None)
    eps = step_size if step_size is not None else DEFAULT_STEP_FRACTION * (hi - lo)
    step = B.jit(_agi_grad, f, B, f)
    per_row = 1
    for d in example:
        per_row *= int(d)
    block = max(1, REF_BLOCK_ELEMENTS // max(1, t_count * per_row))
    half = max(1, bs // 2)  # pairs per chunk: two rows each
    acc = B.zeros_like(x)
    cnt = B.zeros_like(x) if recalibrate is not None else None
    ends = []
    for n0 in range(0, n, block):
        n1 = min(n, n0 + block)
        pairs = (n1 - n0) * t_count
        pidx = B.arange(0, pairs, like=x)
        pex = n0 + pidx // t_count  # global example of each pair
        tcls = B.gather(target, n0 * t_count + pidx)
        ycls = B.gather(labels, pex)
        pts = B.gather(x, pex)
        chunks = list(row_chunks(pairs, half))
        sums = [None] * len(chunks)  # valid_ref: per-(example, target) sums over steps
        for _ in range(int(steps)):
            moved = []
            for i, (p0, p1) in enumerate(chunks):
                cur, k = pts[p0:p1], p1 - p0
                rows = B.arange(0, 2 * k, like=x)
                _, g = step(B.concat([cur, cur]), B.concat([tcls[p0:p1], ycls[p0:p1]]), rows < k)
                nxt = cur + eps * B.sign(g[:k])
                if bounds is not None:
                    nxt = B.minimum(B.maximum(nxt, lo), hi)
                c = g[k:] * (cur - nxt)
                if recalibrate == "valid_ip":
                    acc, cnt = add_valid(B, acc, cnt, pex[p0:p1], c, False)
                elif recalibrate == "valid_ref":
                    sums[i] = c if sums[i] is None else sums[i] + c
                else:
                    acc = B.index_add(acc, pex[p0:p1], c)
                moved.append(nxt)
            pts = moved[0] if len(moved) == 1 else B.concat(moved)
        if recalibrate == "valid_ref" and int(steps) > 0:
            for (p0, p1), a in zip(chunks, sums):
                acc, cnt = add_valid(B, acc, cnt, pex[p0:p1], a, False)
        if return_gap:
            ends.append(B.index_add(B.zeros_like(logits_x[:, 0]), pex, forward_scores(B, f, pts, ycls, bs)))
    attr = acc if recalibrate is None else acc / B.maximum(cnt, B.zeros_like(cnt) + 1.0)
    if not return_gap:
        return attr
    fx = objective_scores(B, logits_x, labels, objective_of(f))
    end_sum = ends[0]
    for e in ends[1:]:
        end_sum = end_sum + e
    gap = B.sum(attr, axis=tuple(range(1, nd))) - (t_count * fx - end_sum)
    return attr, gap


def _agi_grad(B: Backend, f: Callable, z: Any, cls: Any, attack: Any):
    """Gradients of ``F_cls`` (attack rows) or the explained scalar of ``cls`` (label rows)."""
    objective = objective_of(f)

    def scores(u: Any) -> Any:
        logits = f(u)
        return B.where(attack, B.take_along_axis(logits, cls), objective_scores(B, logits, cls, objective))
    return B.value_and_grad(scores, z)


def _top_others(B: Backend, scores: Any, labels: Any, count: int) -> Any:
    """The ``count`` classes of highest ``scores`` other than each row's label, ``(N * count,)``."""
    classes = B.shape(scores)[1]
    neg = B.zeros_like(scores) - float("inf")
    s = B.where(B.one_hot(labels, classes, like=scores) > 0, neg, scores)
    picks = []
    for _ in range(count):  # a loop over the targets, not the examples; no host sync
        i = B.argmax(s, axis=1)
        picks.append(B.reshape(i, (-1, 1)))
        s = B.where(B.one_hot(i, classes, like=scores) > 0, neg, s)
    return B.reshape(B.concat(picks, axis=1), (-1,))


def prepare_agi(B: Backend, model: Any, x: Any, options: Dict[str, Any]) -> None:
    """The front end's pre-check of AGI: the box and the step (converted in place).

    Raises:
        InputError: neither ``bounds`` nor ``step_size`` (the default step is a
            fraction of the box), infinite bounds without ``step_size``, or
            bounds that do not contain ``x``.
    """
    bounds, step_size = options.get("bounds"), options.get("step_size")
    if bounds is None:
        if step_size is None:
            raise InputError(
                "AGI needs bounds=(low, high): its attack steps stay in that box and its default "
                f"step is {DEFAULT_STEP_FRACTION} of the box width (e.g. bounds=(0, 1) for pixels, "
                "or per-channel arrays for normalised images). Without a box, pass an absolute "
                "step_size= (steps are then not clipped)."
            )
        return
    lo, hi = prepare_bounds(B, bounds, x)
    if step_size is None and not (B.all_finite(lo) and B.all_finite(hi)):
        raise InputError(
            "AGI: the default step is a fraction of the box width, and bounds=(low, high) is not "
            "finite; pass finite bounds or an absolute step_size=."
        )
    options["bounds"] = (lo, hi)


def _check_targets(v: Any) -> None:
    if v not in TARGETS:
        raise InputError(f"targets={v!r}: expected one of {list(TARGETS)}.")


register(MethodSpec(
    name="adversarial_gradient_integration", short="AGI", func=agi,
    defaults={"num_classes": None, "steps": 5, "step_size": None, "bounds": None, "targets": "top",
              "seed": None},
    aliases=("agi_method",), supports_gap=True, recalibrate=True, prepare=prepare_agi,
    passes=lambda o: 2 * int(o["steps"]) * int(o.get("num_classes") or DEFAULT_NUM_CLASSES),
    checks={"targets": _check_targets},
    summary=('label gradient integrated along accumulated L-inf PGD paths towards `num_classes` (10, at '
             'most C - 1) other classes (`targets="top"`: the highest other logits, or `"random"`), '
             '`steps` (5), `step_size` (0.05 of the box width), `bounds` (needed unless `step_size` is '
             'given), `recalibrate`, `return_gap`'),
    cost='2 x steps x num_classes + a forward', in_demo=True,
    paper="Pan, Li, Zhu, Explaining Deep Neural Network Models with Adversarial Gradient "
          "Integration, IJCAI 2021",
))
