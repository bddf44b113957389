"""Composites written once over the backend primitives.

The work of every gradient method is a set of rows (an example at a path step, an
example with one noise draw, ...). Rows are processed in chunks of
``batch_size`` model inputs: one forward and one backward per chunk, with the
per-row results summed back into per-example accumulators on the device. The
Python loop runs over chunks only, never over examples, and nothing inside it
reads a value back to the host.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Iterator, Optional, Sequence, Tuple

from . import _progress
from .backends import Backend

#: rows (model inputs) per forward/backward when the user gives no batch_size
DEFAULT_BATCH_ROWS = 256

#: on a CPU, at most ``B.cpu_chunk_elements`` input elements per chunk by default
#: (2**19 for torch: the small CNN of the tests at 3x32x32 runs about 40% slower
#: per example at 256 rows than at 170, resnet18 at 3x64x64 is fastest at 32-64
#: rows; 2**20 for TensorFlow, whose kernels keep gaining at larger batches)
#: ... but large images still get a few rows per chunk, up to this many elements
#: (a few rows per chunk are faster per example than one; bench/gradient_methods.py)
CPU_CHUNK_ELEMENTS_LARGE = 2 ** 22


def row_chunks(total: int, batch_size: int, progress: Optional[str] = None) -> Iterator[Tuple[int, int]]:
    """Yield ``(start, stop)`` covering ``range(total)`` in pieces of ``batch_size``.

    With ``progress`` (a description, e.g. ``"IG"``), each finished piece counts
    ``stop - start`` rows on a progress bar, drawn on a terminal once the loop has
    run a second (:mod:`boundary_xg._progress`); counting reads nothing back from
    the device.
    """
    bar = _progress.bar(total, progress) if progress else None
    try:
        for start in range(0, total, batch_size):
            stop = min(total, start + batch_size)
            yield start, stop
            if bar is not None:
                bar.update(stop - start)
    finally:
        if bar is not None:
            bar.close()


def resolve_batch_size(batch_size: Optional[int]) -> int:
    """The user's ``batch_size`` if given, else :data:`DEFAULT_BATCH_ROWS`."""
    return DEFAULT_BATCH_ROWS if batch_size is None else int(batch_size)


def default_batch_size(B: Backend, x: Any) -> int:
    """Rows per chunk when the user gives no ``batch_size``, for inputs like ``x`` ``(N, ...)``.

    :data:`DEFAULT_BATCH_ROWS` (256) on an accelerator. On a CPU, as many rows as
    fit in the backend's ``cpu_chunk_elements`` input elements (torch 2**19: 170
    rows of 3x32x32, 42 of 3x64x64; TensorFlow 2**20: 256 and 85), at most 256;
    where that is fewer than 8 rows, 8 rows as long as they fit in
    :data:`CPU_CHUNK_ELEMENTS_LARGE` elements (8 rows of 3x224x224, 5 of
    3x512x512), at least one row.
    """
    if B.on_accelerator(x):
        return DEFAULT_BATCH_ROWS
    per_row = 1
    for d in B.shape(x)[1:]:
        per_row *= int(d)
    per_row = max(1, per_row)
    rows = B.cpu_chunk_elements // per_row
    if rows < 8:
        rows = min(8, CPU_CHUNK_ELEMENTS_LARGE // per_row)
    return max(1, min(DEFAULT_BATCH_ROWS, rows))


def expand_rows(B: Backend, v: Any, ndim: int) -> Any:
    """Reshape a per-row vector ``(R,)`` to ``(R, 1, ..., 1)`` with ``ndim`` axes."""
    return B.reshape(v, (-1,) + (1,) * (ndim - 1))


# --- the explained scalar ("objective") ---------------------------------------------------
#: the scalars a gradient method can explain (``objective=``)
OBJECTIVES = ("logit", "log_prob", "contrastive")


def objective_scores(B: Backend, logits: Any, labels: Any, objective: str = "logit") -> Any:
    """Each row's explained scalar from its logits ``(R, C)`` and label ``(R,)``: shape ``(R,)``.

    * ``"logit"``: ``F_y`` (the default of every method);
    * ``"log_prob"``: ``log softmax(F)_y = F_y - logsumexp(F)``;
    * ``"contrastive"``: ``F_y - sum_{j != y} w_j F_j`` with ``w`` the softmax over
      the other classes' logits only (Wang & Wang, "Why Not Other Classes?",
      NeurIPS 2022). The weights are not detached: the gradient also flows
      through them, as in the paper and the re-calibration code.

    Differentiable in ``logits``; written with fixed-shape operations only (no
    boolean indexing), so it runs inside compiled steps.
    """
    own = B.take_along_axis(logits, labels)
    if objective == "logit":
        return own
    if objective == "log_prob":
        return own - B.logsumexp(logits, axis=1)
    if objective != "contrastive":
        raise ValueError(f"unknown objective {objective!r}")
    # the class count from the static shape: inside a compiled step the batch size may be
    # unknown (None), which B.shape refuses
    is_label = B.one_hot(labels, int(logits.shape[-1]), like=logits) > 0
    # the label's entry becomes -inf: its weight exp(-inf) = 0, and where() passes it
    # no gradient; shifted by the other classes' max (softmax is shift-invariant, so the
    # shift carries no gradient) so that exp never overflows
    others = B.where(is_label, B.zeros_like(logits) - float("inf"), logits)
    shift = B.stop_gradient(B.reshape(B.max(others, axis=1), (-1, 1)))
    e = B.exp(others - shift)
    w = e / B.reshape(B.sum(e, axis=1), (-1, 1))
    return own - B.sum(B.where(is_label, B.zeros_like(logits), w * logits), axis=1)


class _Objective:
    """The model's logits function ``f`` explaining another scalar than the label's logit.

    Called like ``f`` (it returns the logits: the boundary search and label
    prediction see the model as it is); :func:`label_scores` and the backends'
    layer capture read :attr:`objective` / call :meth:`score` to pick each row's
    explained scalar. It holds ``f`` weakly: it is cached per ``f`` (so that
    compiled steps keyed on it are reused), and must not keep ``f`` alive.
    """

    def __init__(self, B: Backend, f: Callable, objective: str):
        self._B = B
        self._ref = _weak_or_strong(f)
        self.objective = objective

    @property
    def __wrapped__(self) -> Callable:
        return self._ref()

    def __call__(self, z: Any) -> Any:
        return self._ref()(z)

    def score(self, logits: Any, labels: Any) -> Any:
        """Each row's explained scalar ``(R,)`` from its logits and labels."""
        return objective_scores(self._B, logits, labels, self.objective)


def _weak_or_strong(obj: Any) -> Callable[[], Any]:
    try:
        return weakref.ref(obj)
    except TypeError:
        return lambda: obj


_OBJECTIVE_FNS: "weakref.WeakKeyDictionary[Any, Dict[str, _Objective]]" = weakref.WeakKeyDictionary()


def with_objective(B: Backend, f: Callable, objective: str = "logit") -> Callable:
    """``f`` explaining ``objective`` (one of :data:`OBJECTIVES`); ``f`` itself for ``"logit"``.

    The result is cached per ``f`` and objective, so compiled steps keyed on it
    (``B.jit``) are compiled once per model, as for the plain logits.
    """
    if objective == "logit":
        return f
    try:
        per_f = _OBJECTIVE_FNS.setdefault(f, {})
    except TypeError:  # f cannot be weakly referenced or hashed: no caching
        return _Objective(B, f, objective)
    if objective not in per_f:
        per_f[objective] = _Objective(B, f, objective)
    return per_f[objective]


def objective_of(f: Callable) -> str:
    """The objective ``f`` explains (``"logit"`` unless made by :func:`with_objective`)."""
    return getattr(f, "objective", "logit")


def label_scores(B: Backend, f: Callable, z: Any, labels: Any, objective: Optional[str] = None) -> Any:
    """Each row's explained scalar at ``z``, shape ``(R,)``: the logit of its label
    ``f(z)[n, labels[n]]`` unless ``f`` (or ``objective``) says otherwise
    (:func:`objective_scores`). The one place where every gradient method's scalar is made."""
    return objective_scores(B, f(z), labels, objective or objective_of(f))


def forward_scores(B: Backend, f: Callable, z: Any, labels: Any, batch_size: Optional[int] = None) -> Any:
    """:func:`label_scores` without recording gradients, in chunks (completeness gaps)."""
    return objective_scores(B, predict(B, f, z, batch_size), labels, objective_of(f))


def label_grad(B: Backend, f: Callable, create_graph: bool, z: Any, labels: Any) -> Tuple[Any, Any]:
    """``(scores, d scores / dz)`` for a chunk of rows; the hot step of every method."""
    return B.value_and_grad(lambda u: label_scores(B, f, u, labels), z, create_graph)


def compiled_label_grad(B: Backend, f: Callable, create_graph: bool = False) -> Callable:
    """:func:`label_grad` bound to ``f``, compiled where the backend says it is faster."""
    return B.jit(label_grad, f, B, f, create_graph)


def predict(B: Backend, f: Callable, x: Any, batch_size: Optional[int] = None) -> Any:
    """Logits ``(N, C)`` of ``x`` in chunks, without recording gradients."""
    bs = resolve_batch_size(batch_size)
    n = B.shape(x)[0]
    if n <= bs:
        return B.forward(f, x)
    return B.concat([B.forward(f, x[a:b]) for a, b in row_chunks(n, bs)])


def gradients_at(
    B: Backend,
    f: Callable,
    x: Any,
    labels: Any,
    batch_size: Optional[int] = None,
    create_graph: bool = False,
) -> Tuple[Any, Any]:
    """Gradient of each example's label logit at ``x``: ``(scores (N,), grads like x)``."""
    bs = resolve_batch_size(batch_size)
    step = compiled_label_grad(B, f, create_graph) if not create_graph else (
        lambda z, y: label_grad(B, f, True, z, y)
    )
    n = B.shape(x)[0]
    if n <= bs:
        return step(x, labels)
    scores, grads = [], []
    for a, b in row_chunks(n, bs):
        s, g = step(x[a:b], labels[a:b])
        scores.append(s)
        grads.append(g)
    return B.concat(scores), B.concat(grads)


def path_gradients(
    B: Backend,
    f: Callable,
    start: Any,
    delta: Any,
    labels: Any,
    alphas: Sequence[float],
    weights: Sequence[float],
    batch_size: Optional[int] = None,
) -> Any:
    """Weighted sum of gradients along straight paths, batched over (example, step).

    Computes ``sum_s weights[s] * grad F_y(start + alphas[s] * delta)`` for every
    example, shape like ``start``. Row ``r`` of the flattened ``(N * S)`` grid is
    example ``r // S`` at step ``r % S``; chunks of ``batch_size`` rows run as one
    forward and backward each.
    """
    bs = resolve_batch_size(batch_size)
    shape = B.shape(start)
    n, s = shape[0], len(alphas)
    a = B.constant(alphas, like=start)
    w = B.constant(weights, like=start)
    step = compiled_label_grad(B, f)
    acc = B.zeros_like(start)
    for lo, hi in row_chunks(n * s, bs, progress="path gradients"):
        rows = B.arange(lo, hi, like=start)
        ex, st = rows // s, rows % s
        pts = B.gather(start, ex) + expand_rows(B, B.gather(a, st), len(shape)) * B.gather(delta, ex)
        _, g = step(pts, B.gather(labels, ex))
        acc = B.index_add(acc, ex, g * expand_rows(B, B.gather(w, st), len(shape)))
    return acc


def per_example_range(B: Backend, x: Any) -> Any:
    """``max(x_n) - min(x_n)`` over all but the batch axis, shape ``(N,)``."""
    axes = tuple(range(1, len(B.shape(x))))
    return B.max(x, axis=axes) - B.min(x, axis=axes)
