"""DeepLIFT with the Rescale rule (Shrikumar, Greenside, Kundaje, "Learning Important
Features Through Propagating Activation Differences", ICML 2017).

``DeepLIFT_i = m_i * (x_i - x'_i)``, where the multipliers ``m`` are the gradient
of the label's logit with every nonlinearity's local derivative replaced by
``(g(u) - g(u')) / (u - u')`` between the input ``x`` and the baseline ``x'``.
Summation-to-delta holds: ``sum_i DeepLIFT_i = F_y(x) - F_y(x')``.

The algorithm is written once; the one framework-specific part, intercepting the
nonlinearities, is the backend capability ``B.deeplift_grad`` (see
``backends/_torch_rescale.py`` and ``backends/_tf_rescale.py`` for the rules,
max pooling included). Input and baseline run as one doubled batch: one forward
and one backward over ``2 N`` rows, in chunks of ``batch_size`` rows.
"""

from __future__ import annotations

from typing import Any, Callable, Optional

from ..backends import Backend
from ..ops import resolve_batch_size, row_chunks
from .integrated_gradients import completeness_gap


def deeplift(
    B: Backend,
    f: Callable,
    x: Any,
    labels: Any,
    *,
    baseline: Any,
    batch_size: Optional[int] = None,
    return_gap: bool = False,
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
        batch_size: model rows per forward/backward (default: :func:`~boundary_xg.ops.default_batch_size`); each chunk
            holds ``batch_size // 2`` examples and their baselines (at least 1).
        return_gap: also return the summation-to-delta gap per example,
            ``sum(attr) - (F_y(x) - F_y(baseline))``, shape ``(N,)``.

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
    if n <= per_chunk:
        mult = B.deeplift_grad(f, x, baseline, labels)
    else:
        mult = B.concat([
            B.deeplift_grad(f, x[a:b], baseline[a:b], labels[a:b]) for a, b in row_chunks(n, per_chunk)
        ])
    attr = mult * (x - baseline)
    if not return_gap:
        return attr
    return attr, completeness_gap(B, f, attr, x, baseline, labels, batch_size)
