"""DeepLIFT with the Rescale rule (Shrikumar, Greenside, Kundaje, "Learning Important
Features Through Propagating Activation Differences", ICML 2017).

``DeepLIFT_i = m_i * (x_i - x'_i)``, where the multipliers ``m`` are the gradient
of the label's logit with every nonlinearity's local derivative replaced by
``(g(u) - g(u')) / (u - u')`` between the input ``x`` and the baseline ``x'``.
Summation-to-delta holds: ``sum_i DeepLIFT_i = F_y(x) - F_y(x')``.

The algorithm is written once; the one framework-specific part, intercepting the
nonlinearities, is the backend capability ``B.deeplift_grad`` (see
``backends/torch/rescale.py`` and ``backends/tensorflow/rescale.py`` for the rules,
max pooling included). Per chunk of examples: one forward pass of the baselines,
one forward and one backward pass of the inputs. A baseline shared by all rows
(zeros, a scalar, one example: the usual case) runs as one row.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np

from ..backends import Backend
from ..ops import resolve_batch_size, row_chunks
from .integrated_gradients import completeness_gap
from .registry import MethodSpec, register


def _shared(B: Backend, f: Callable, baseline: Any, n: int) -> bool:
    """Whether every row of ``baseline`` is the same (its pass then runs one row).

    One host read per call, not per chunk. On a CPU the test runs in NumPy (cheaper
    than a few eager TensorFlow ops), and per-example baselines (BDT's boundary
    points) are told apart by their first and last rows alone.
    """
    if n < 2:
        return False
    if not B.on_accelerator(baseline):
        try:
            arr = B.to_numpy(baseline)
        except TypeError:  # a dtype NumPy lacks (torch bfloat16): compare on the device
            arr = None
        if arr is not None:
            return bool(np.array_equal(arr[0], arr[-1]) and (arr == arr[:1]).all())
    return bool(B.to_numpy(B.jit(_rows_equal, f, B)(baseline)))


def _rows_equal(B: Backend, baseline: Any) -> Any:
    """A boolean scalar tensor: every row of ``baseline`` equals the first."""
    return B.max(B.abs(baseline - baseline[:1])) <= 0


def deeplift(
    B: Backend,
    f: Callable,
    x: Any,
    labels: Any,
    *,
    baseline: Any,
    batch_size: Optional[int] = None,
    return_gap: bool = False,
    shared_baseline: Optional[bool] = None,
) -> Any:
    """DeepLIFT (Rescale) attributions of each example's label logit.

    Use it for a one-pass attribution relative to a reference that, unlike plain
    gradients, satisfies summation-to-delta; it is the base of boundary DeepLIFT
    (BDT), which takes the boundary point as the baseline.

    Args:
        B: the backend; f: the inference-mode logits function.
        x: inputs ``(N, ...)`` in the model's layout.
        labels: ``(N,)`` integer classes explained.
        baseline: tensor shaped like ``x`` (the API turns None into zeros and
            broadcasts scalars and arrays).
        batch_size: model rows per chunk (default:
            :func:`~boundary_xg.ops.default_batch_size`); each chunk holds
            ``batch_size // 2`` examples and their baselines (at least 1), the
            memory of one doubled batch, which the backends fall back to for
            models whose two passes differ.
        return_gap: also return the summation-to-delta gap per example,
            ``sum(attr) - (F_y(x) - F_y(baseline))``, shape ``(N,)``.
        shared_baseline: True where the caller knows every row of ``baseline`` is
            the same (the front end sets it for None, scalars and one example);
            None checks the values.

    Returns:
        Attributions shaped like ``x`` (multipliers times ``x - baseline``), or
        ``(attributions, gap)``.

    Raises:
        MethodError: the model uses a nonlinearity the Rescale rule does not
            cover (a softmax inside the network), named in the message.

    Example:
        >>> attr = bxg.attribute(model, x, labels, method="DeepLIFT", baseline=0.0)
    """
    per_chunk = max(1, resolve_batch_size(batch_size) // 2)
    n = B.shape(x)[0]
    shared = n > 1 if shared_baseline else _shared(B, f, baseline, n)

    def base(a: int, b: int) -> Any:
        return baseline[:1] if shared else baseline[a:b]

    if n <= per_chunk:
        attr = B.deeplift_grad(f, x, base(0, n), labels, times_delta=True)
    else:
        attr = B.concat([
            B.deeplift_grad(f, x[a:b], base(a, b), labels[a:b], times_delta=True)
            for a, b in row_chunks(n, per_chunk)
        ])
    if not return_gap:
        return attr
    return attr, completeness_gap(B, f, attr, x, baseline, labels, batch_size)


def check_model(B: Backend, model: Any, x: Any, options: Dict[str, Any]) -> None:
    """The front end's pre-check of DeepLIFT and BDT, before any forward pass.

    Raises:
        MethodError: the backend's Rescale rule cannot see inside the model (a
            TorchScript module in PyTorch): refused before any work, where BDT
            would otherwise run its boundary search first.
    """
    B.check_deeplift_model(model)


register(MethodSpec(
    name="deeplift", short="DeepLIFT", func=deeplift, defaults={"baseline": None},
    aliases=("deep_lift", "dl", "rescale"), uses_baseline=True, supports_gap=True, needs=("deeplift",),
    # at most: a baseline forward and an input forward+backward cost less than the
    # doubled batch's two rows (a shared baseline costs one row)
    passes=lambda o: 2, prepare=check_model, objectives=("logit",),
    summary="DeepLIFT Rescale, PyTorch **and** Keras; reused/in-place ReLUs and functional `F.relu` "
            "handled; `baseline`, `return_gap`",
    cost="1 + a baseline forward (none for a shared baseline)", in_demo=True,
    paper="Shrikumar et al., *Learning Important Features Through Propagating Activation "
          "Differences*, ICML 2017",
))
