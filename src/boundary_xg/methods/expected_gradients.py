"""Expected Gradients (Erion, Janizek, Sturmfels, Lundberg, Lee, "Improving performance
of deep learning models with axiomatic attribution priors and expected gradients",
Nature Machine Intelligence 2021).

IG averaged over baselines drawn from a background distribution, estimated by
Monte Carlo with one random point on the path per sample::

    EG(x) = E_{r ~ background, a ~ U(0, 1)} [ (x - r) * grad F_y(r + a (x - r)) ]

Each of the ``num_samples`` samples of an example draws its own reference (with
replacement, uniformly from the ``background`` rows) and its own ``a``: unlike the
FAA and REC reference code (docs/recalibration.md), examples never share a reference or an
``a``, and every reference is paired with its own gradient. All ``N * num_samples``
rows are batched into the batch dimension, in chunks of ``batch_size``. The random
draws are made once up front (in float32), so results repeat for the same ``seed`` whatever
``batch_size`` is.

Completeness holds in expectation: ``E[sum(attr)] = F_y(x) - E_r[F_y(r)]``.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

from ..backends import Backend, foreign_tensor
from ..errors import InputError
from ..ops import (
    compiled_label_grad, expand_rows, forward_scores, objective_of, objective_scores,
    resolve_batch_size, row_chunks,
)
from .recalibration import add_valid, check_gap_options
from .registry import MethodSpec, register


def expected_gradients(
    B: Backend,
    f: Callable,
    x: Any,
    labels: Any,
    *,
    background: Any,
    num_samples: int = 50,
    seed: Optional[int] = None,
    batch_size: Optional[int] = None,
    return_gap: bool = False,
    recalibrate: Optional[str] = None,
) -> Any:
    """Expected Gradients of each example's label logit, shaped like ``x``.

    Args:
        B: the backend; f: the inference-mode logits function.
        x: inputs ``(N, ...)``; labels: ``(N,)`` class indices.
        background: reference inputs ``(M, ...)`` (same example shape as ``x``,
            converted by the front end), e.g. a sample of the training set.
        num_samples: (reference, path point) draws per example (default 50).
        seed: seed of the generator drawing references and path points (None:
            fresh randomness).
        batch_size: model inputs per forward/backward (default: :func:`~boundary_xg.ops.default_batch_size`).
        return_gap: also return ``sum(attr) - (F_y(x) - mean_j F_y(r_j))`` per
            example, ``(N,)``, over the references ``r_j`` drawn for it; its
            expectation over the path points is zero (one extra forward per row).
        recalibrate: None (default), ``"valid_ip"`` or ``"valid_ref"``: attribution
            re-calibration (Yang et al., ICLR 2023) at the same passes. Each sample is
            its own reference ``r_j`` with one path point ``x_j`` (a one-node rule,
            weight 1): ``valid_ip`` averages the non-negative terms
            ``g(x_j) * (x - x_j)``, ``valid_ref`` those of ``g(x_j) * (x - r_j)``,
            per feature. Non-negative output.

    Returns:
        Tensor shaped like ``x``, or ``(attributions, gap)``.
    """
    check_gap_options(return_gap, recalibrate, "EG")
    bs = resolve_batch_size(batch_size)
    shape = B.shape(x)
    n, s, nd = shape[0], int(num_samples), len(shape)
    m = B.shape(background)[0]
    rng = B.rng(seed, like=x)
    total = n * s
    rows_all = B.arange(0, total, like=x)
    # The draws are made in float32 whatever x's dtype: a float16/bfloat16 uniform
    # (8-11 bits) would reach only some of the references of a large background, and
    # the same seed gives the same draws for every input dtype.
    f32 = B.asarray([0.0], like=x, dtype="float32")
    # Float -> int casts truncate; "% m" maps the rare u * m that rounds up to m back in range.
    ref_index = B.cast(B.uniform(rng, (total,), like=f32) * m, like=rows_all) % m
    alphas = B.cast(B.uniform(rng, (total,), like=f32), like=x)
    step = compiled_label_grad(B, f)
    acc = B.zeros_like(x)
    cnt = B.zeros_like(x) if recalibrate is not None else None
    ref_scores = B.zeros_like(B.sum(x, axis=tuple(range(1, nd)))) if return_gap else None
    for lo, hi in row_chunks(total, bs, progress="expected gradients"):
        rows = rows_all[lo:hi]
        ex = rows // s
        refs = B.gather(background, B.gather(ref_index, rows))
        y = B.gather(labels, ex)
        delta = B.gather(x, ex) - refs
        a = expand_rows(B, B.gather(alphas, rows), nd)
        _, g = step(refs + a * delta, y)
        if recalibrate == "valid_ip":  # x - x_j = (1 - a)(x - r_j)
            acc, cnt = add_valid(B, acc, cnt, ex, (1.0 - a) * delta * g, False)
        elif recalibrate == "valid_ref":
            acc, cnt = add_valid(B, acc, cnt, ex, delta * g, False)
        else:
            acc = B.index_add(acc, ex, delta * g)
        if return_gap:
            ref_scores = B.index_add(ref_scores, ex, objective_scores(B, B.forward(f, refs), y, objective_of(f)))
    if recalibrate is not None:
        return acc / B.maximum(cnt, B.zeros_like(cnt) + 1.0)
    attr = acc / s
    if not return_gap:
        return attr
    fx = forward_scores(B, f, x, labels, bs)
    gap = B.sum(attr, axis=tuple(range(1, nd))) - (fx - ref_scores / s)
    return attr, gap


def prepare_background(B: Backend, model: Any, x: Any, options: Dict[str, Any]) -> None:
    """The front end's conversion of EG's ``background`` (in place in ``options``).

    Args:
        B: the backend; model: the user's model; x: the converted input ``(N, ...)``.
        options: EG's options; ``background`` (NumPy or a tensor of the model's
            framework, ``(M, ...)`` with ``x``'s example shape) becomes a tensor
            with ``x``'s dtype and device.

    Raises:
        InputError: background missing, of another framework, of the wrong shape,
            empty, or not finite.
    """
    options["background"] = convert_background(B, options.get("background"), x, "EG")


def convert_background(B: Backend, bg: Any, x: Any, method: str) -> Any:
    """``background`` (NumPy or a tensor, ``(M, ...)``) as a tensor with ``x``'s dtype and device.

    Raises:
        InputError: ``bg`` missing (the message names ``method``), of another
            framework, of the wrong shape, empty, or not finite.
    """
    if bg is None:
        raise InputError(
            f"{method} needs background=: reference inputs (M, ...) with x's example shape, e.g. a "
            "random sample of training inputs (NumPy or a tensor of the model's framework)."
        )
    root = foreign_tensor(bg, B)
    if root is not None:
        raise InputError(f"background is a {root} tensor but the model runs on the {B.name} backend.")
    if B.is_tensor(bg):
        bt = B.asarray(bg, like=x)
    else:
        import numpy as np

        arr = np.asarray(bg)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"background has dtype {arr.dtype}; expected a numeric array.")
        bt = B.asarray(arr, like=x)
    bt = B.cast(bt, x)
    bshape, xshape = B.shape(bt), B.shape(x)
    if len(bshape) != len(xshape) or tuple(bshape[1:]) != tuple(xshape[1:]):
        raise InputError(
            f"background has shape {bshape}; expected (M,) + x's example shape {tuple(xshape[1:])}, "
            "batch first in the model's layout."
        )
    if bshape[0] == 0:
        raise InputError("background has no rows (its first axis has length 0).")
    if not B.all_finite(bt):
        raise InputError("background contains NaN or infinity; expected finite values.")
    return bt


register(MethodSpec(
    name="expected_gradients", short="EG", func=expected_gradients,
    defaults={"background": None, "num_samples": 50, "seed": None},
    aliases=("expectedgradients", "expgrad"), supports_gap=True,
    passes=lambda o: int(o["num_samples"]), prepare=prepare_background, recalibrate=True,
    summary="Expected Gradients; `background` set, `num_samples`, `seed`; each example draws its "
            "own references and points on the path (reproducible at any batch size and dtype); "
            "with a one-row background it is Monte-Carlo IG",
    cost="`num_samples`",
    paper="Erion et al., *Improving performance of deep learning models with axiomatic "
          "attribution priors and expected gradients*, Nature Machine Intelligence 2021",
))
