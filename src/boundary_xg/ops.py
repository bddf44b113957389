"""Composites written once over the backend primitives.

The work of every gradient method is a set of rows (an example at a path step, an
example with one noise draw, ...). Rows are processed in chunks of
``batch_size`` model inputs: one forward and one backward per chunk, with the
per-row results summed back into per-example accumulators on the device. The
Python loop runs over chunks only, never over examples, and nothing inside it
reads a value back to the host.
"""

from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

from . import _progress
from .backends import Backend

#: rows (model inputs) per forward/backward when the user gives no batch_size
DEFAULT_BATCH_ROWS = 256

#: on a CPU, at most ``B.cpu_chunk_elements`` input elements per chunk by default
#: (2**19 for torch: the small CNN of the tests at 3x32x32 runs about 40% slower
#: per example at 256 rows than at 170, resnet18 at 3x64x64 is fastest at 32-64
#: rows; 2**20 for TensorFlow, whose kernels keep gaining at larger batches)
#: ... but large images still get a few rows per chunk, up to this many elements
#: (resnet18 at 3x224x224: 29 ms per example at 8 rows, 33 at 3, 36 at 1)
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


def label_scores(B: Backend, f: Callable, z: Any, labels: Any) -> Any:
    """Each row's logit of its label: ``f(z)[n, labels[n]]``, shape ``(R,)``."""
    return B.take_along_axis(f(z), labels)


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
