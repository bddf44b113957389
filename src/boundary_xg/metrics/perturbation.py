"""Batched forwards of perturbed images: the engine under every perturbation metric.

Each perturbation metric evaluates the model on many perturbed copies of each
example (DiffID 19, insertion/deletion ``steps + 1``, the KPM family 16 per
test). All of them are one pattern::

    image[row] = where(rank[row] < count[row], a[row], b[row])

``rank`` is a per-example ranking of the pixels (or elements) computed once from
the attributions by a stable sort and a scatter (the sort order turned into each
pixel's rank), ``count`` how many of them a row takes from ``a`` (the rest come
from ``b``), and ``a``/``b`` the example and its baseline (blurred image,
constant, mean) in some order. The rows of every example, for every
ratio/step/test, form one flat list that runs through the model in chunks of
``batch_size``; each chunk is a handful of device ops (gathers, one comparison,
one select) and one forward, compiled as one function where the backend
compiles (``tf.function``). No per-ratio Python work and nothing read back to the
host inside the loop: the scores of all rows are concatenated on the device and
copied to the host once.
"""

from __future__ import annotations

import math
from typing import Any, Callable, Optional, Sequence, Tuple

import numpy as np

from ..backends import Backend
from ..errors import InputError
from ..ops import row_chunks
from ._inputs import Call, Layout, progress_bar

#: columns of the score rows: the label's logit, its softmax probability, top-1 hit (0/1)
LOGIT, PROBABILITY, ACCURACY = 0, 1, 2
SCORE_COLUMNS = {"logit": LOGIT, "probability": PROBABILITY, "accuracy": ACCURACY}


# --- attributions to per-pixel keys and ranks ----------------------------------------------
def _tail(t: Any) -> Tuple[int, ...]:
    """One example's shape of ``t`` (static also inside a compiled function)."""
    return tuple(int(d) for d in t.shape[1:])


def pixel_values(B: Backend, lay: Layout, a: Any, how: str) -> Any:
    """Per-pixel values ``(N, P)`` of attributions ``a`` (like ``x`` or one map per example).

    ``how``: ``"sum"`` (signed channel sum), ``"abs_sum"`` (sum of ``|a|`` over the
    channels: the re-calibration code's ranking), ``"mean"`` (signed channel mean:
    the X-DNN code's), ``"abs_mean"`` (``|mean|``).
    """
    is_map = _tail(a) != tuple(lay.shape[1:]) or lay.channel_axis is None
    if how == "abs_sum":
        a = B.abs(a)
    if is_map:
        v = a
    else:
        v = B.sum(a, axis=lay.channel_axis)
        if how in ("mean", "abs_mean"):
            v = v / float(lay.channels)
    if how == "abs_mean":
        v = B.abs(v)
    return B.reshape(v, (-1, lay.pixels))


def ranks(B: Backend, key: Any, descending: bool) -> Any:
    """Rank of each pixel of each row of ``key`` ``(N, P)``: 0 is the first in the order.

    Stable: equal keys keep the pixel order (row-major over the spatial axes), the
    same in every framework and layout. One sort and one scatter on the device: the
    order, then its inverse permutation.
    """
    k = (key * -1.0 if descending else key) + 0.0  # + 0.0: -0.0 and 0.0 form one tie class
    return B.invert_permutation(B.argsort(k, axis=1))


def _int32(B: Backend, t: Any) -> Any:
    """``t`` as int32 (ranks: half the memory and traffic of int64)."""
    return B.cast(t, B.asarray(np.zeros((1,), np.int32), like=t))


def element_ranks(B: Backend, lay: Layout, pixel_rank: Any) -> Any:
    """Element ranks ``rank * C + c`` shaped like ``x`` from pixel ranks ``(N, P)``.

    A pixel's channels sit next to each other in the element order, in channel
    order, so a cut at any element count splits at most one pixel.
    """
    r = B.reshape(pixel_rank, (-1,) + lay.map_shape(1)[1:])
    if lay.channel_axis is None or lay.channels == 1:
        return r
    c = B.cast(B.reshape(B.arange(0, lay.channels, like=r), lay.channel_shape()), r)
    return r * lay.channels + c


# --- the rankings, each one compiled function where the backend compiles --------------------
# The plain arguments (layout, options) come first, bound when compiled (see run_rows).
def diffid_ranks(B: Backend, lay_key: tuple, how: str, negate: bool, a: Any) -> Any:
    """``(2N, ...)`` int32 element ranks like ``x``: ascending importance (rows ``0..N-1``:
    what insertion replaces first) then descending (what deletion replaces first).

    Both orders come from one sort of ``2N`` rows (the keys and their negatives):
    one sort and one scatter call instead of two of each."""
    lay = Layout(*lay_key)
    key = pixel_values(B, lay, a, how)
    if negate:
        key = key * -1.0
    return _int32(B, element_ranks(B, lay, ranks(B, B.concat([key, key * -1.0]), descending=False)))


def curve_ranks(B: Backend, lay_key: tuple, how: str, negate: bool, a: Any) -> Any:
    """``(N, P)`` pixel ranks, 0 the most important (insertion and deletion)."""
    key = pixel_values(B, Layout(*lay_key), a, how)
    return _int32(B, ranks(B, key * -1.0 if negate else key, descending=True))


def keep_remove_ranks(B: Backend, lay_key: tuple, tests: tuple, a: Any) -> Tuple[Any, Any]:
    """Pixel ranks ``(T N, P)`` and positive counts ``n+`` ``(T N,)`` of the keep/remove
    tests ``tests`` (``(mode, order)`` pairs), test-major.

    Every test's key is made ascending (keep: ``-P``, the largest first; remove: ``P`` with
    the non-positive pixels at ``+inf``, last), so all tests rank in one sort and one
    scatter of ``T N`` rows."""
    m = pixel_values(B, Layout(*lay_key), a, "mean")
    maps = {"positive": m, "negative": m * -1.0, "absolute": B.abs(m)}
    keys, counts = [], []
    one = B.arange(0, 1, like=m)  # int64
    for mode, order in tests:
        pos = B.maximum(maps[order], maps[order] * 0.0)   # P = max(map, 0)
        positive = B.not_equal(pos, pos * 0.0)
        if mode == "keep":  # the k largest of P stay sharp
            keys.append(pos * -1.0)
        else:  # the k smallest positive ones stay sharp (non-positive pixels rank last)
            keys.append(B.where(positive, pos, pos * 0.0 + np.inf))
        counts.append(B.sum(B.cast(positive, one), axis=1))
    return _int32(B, ranks(B, B.concat(keys), descending=False)), B.concat(counts)


# --- baselines -----------------------------------------------------------------------------
def _reflect(i: int, n: int) -> int:
    """Index ``i`` folded into ``[0, n)`` by mirror reflection at the edges (edge not repeated)."""
    if n == 1:
        return 0
    period = 2 * (n - 1)
    m = i % period
    return m if m < n else period - m


def blur_matrix(n: int, kernel_size: int, sigma: float) -> np.ndarray:
    """``(n, n)`` matrix of a 1-D Gaussian blur with reflect padding: ``out = M @ in``.

    Weights ``exp(-(u - c)^2 / (2 sigma^2))`` for ``u = 0..kernel_size-1`` around the
    centre ``c``, normalised to sum 1; positions outside the signal are mirrored
    back into it (as ``torch.nn.functional.pad(mode="reflect")``, repeatedly where
    the kernel is wider than the signal).
    """
    c = (kernel_size - 1) // 2
    u = np.arange(kernel_size, dtype=np.float64)
    g = np.exp(-((u - c) ** 2) / (2.0 * sigma ** 2))
    g /= g.sum()
    m = np.zeros((n, n), np.float64)
    for i in range(n):
        for k in range(kernel_size):
            m[i, _reflect(i + k - c, n)] += g[k]
    return m


def blur(B: Backend, lay: Layout, x: Any, kernel_size: int, sigma: float) -> Any:
    """``x`` blurred over its two spatial axes by a separable Gaussian (two matrix products)."""
    if len(lay.spatial) != 2:
        raise InputError(
            f"baseline='blur' needs images with two spatial axes; x has shape {tuple(lay.shape)}. "
            "Pass another baseline ('zero', 'mean', a number or an array)."
        )
    h, w = lay.spatial
    mh = B.asarray(blur_matrix(h, kernel_size, sigma), like=x)
    mw = B.asarray(blur_matrix(w, kernel_size, sigma), like=x)
    letters = {"NCHW": "nchw", "NHWC": "nhwc"}
    src = letters["NCHW" if lay.channel_axis == 1 else "NHWC"] if lay.channel_axis is not None else "nhw"
    dst = src.replace("h", "i").replace("w", "j")
    return B.einsum(f"{src},ih,jw->{dst}", x, mh, mw)


#: baseline names every perturbation metric understands (DiffID adds "mean_kept")
BASELINES = ("blur", "zero", "mean")


def resolve_baseline(c: Call, baseline: Any, blur_spec: Tuple[int, float]) -> Any:
    """The replacement values as a tensor like ``x``.

    ``"blur"``: ``x`` blurred (``blur_spec = (kernel_size, sigma)``); ``"zero"``:
    zeros; ``"mean"``: each example's mean over all its elements; a number: that
    constant; an array or tensor broadcastable to ``x``: itself.
    """
    B, x = c.B, c.x
    if isinstance(baseline, str):
        if baseline == "blur":
            return blur(B, c.layout, x, *blur_spec)
        if baseline == "zero":
            return B.zeros_like(x)
        if baseline == "mean":
            axes = tuple(range(1, len(c.layout.shape)))
            m = B.sum(x, axis=axes) / float(c.layout.elements)
            return B.zeros_like(x) + B.reshape(m, (-1,) + (1,) * (len(c.layout.shape) - 1))
    from .._entry import prepare_baseline

    return prepare_baseline(B, baseline, x)


def check_baseline(baseline: Any, extra: Sequence[str] = (), name: str = "baseline") -> None:
    """Raise for a baseline name that is not known (numbers and arrays are checked later)."""
    if isinstance(baseline, str) and baseline not in tuple(BASELINES) + tuple(extra):
        raise InputError(f"{name}={baseline!r}: expected one of {list(BASELINES) + list(extra)}, a number, "
                         "or an array broadcastable to x.")
    if baseline is None:
        raise InputError(f"{name}=None: expected one of {list(BASELINES) + list(extra)}, a number, or an array.")


# --- the chunk functions (compiled per model where the backend compiles) ---------------------
# Shapes come in as a Python tuple ``tail`` (one example's shape of the ranks or masks), not
# from the tensors: a compiled function sees it as a constant, so a retrace for new batch
# sizes never loses the shapes (TensorFlow relaxes the shapes of tensor arguments).
def _rows(B: Backend, v: Any, tail: Tuple[int, ...]) -> Any:
    """Per-row ``(R,)`` -> ``(R, 1, ..., 1)`` against rows of one example's shape ``tail``."""
    return B.reshape(v, (-1,) + (1,) * len(tail))


def score_rows(B: Backend, logits: Any, labels: Any, probability: bool = True) -> Any:
    """``(R, 3)``: each row's label logit, its softmax probability (0 unless ``probability``:
    a log-sum-exp per row costs as much as the rest of the scores), and 1.0 where the
    label is top-1."""
    ly = B.take_along_axis(logits, labels)
    p = B.exp(ly - B.logsumexp(logits, axis=1)) if probability else ly * 0.0
    # top-1 as "the label's logit is the largest": one reduction, no argmax and compare
    acc = B.cast(ly >= B.max(logits, axis=1), ly)
    return B.concat([B.reshape(v, (-1, 1)) for v in (ly, p, acc)], axis=1)


def masked_chunk(B: Backend, f: Callable, tail: Tuple[int, ...], probability: bool, a_src: Any, b_src: Any,
                 rank_src: Any, limit_src: Any, labels_src: Any, idx: Any) -> Any:
    """Scores of rows ``where(rank < count, a, b)``: the shared step of insertion, deletion,
    the KPM family and DiffID with a fixed baseline.

    ``idx`` ``(3, R)``: each row's example, rank row and count; with ``limit_src`` the
    count is at most ``limit_src[rank row]`` (the KPM family's ``n+``). ``tail``: one
    row's shape of the ranks: pixel ranks with a one-channel axis (broadcast over the
    channels) or element ranks like ``x``.
    """
    ex, rr, count = idx[0], idx[1], idx[2]
    if limit_src is not None:
        count = B.minimum(count, B.gather(limit_src, rr))
    r = B.reshape(B.gather(rank_src, rr), (-1,) + tail)
    z = B.select(r < B.cast(_rows(B, count, tail), r), B.gather(a_src, ex), B.gather(b_src, ex))
    return score_rows(B, f(z), B.gather(labels_src, ex), probability)


def mean_kept_chunk(B: Backend, f: Callable, tail: Tuple[int, ...], probability: bool, x_src: Any, rank_src: Any,
                    labels_src: Any, idx: Any) -> Any:
    """Scores of rows where the ``count`` lowest-ranked elements take the mean of the
    elements kept (the re-calibration code's DiffID replacement; one value per row).
    ``idx`` as for :func:`masked_chunk`; ``tail``: one example's shape (element ranks)."""
    ex, rr, count = idx[0], idx[1], idx[2]
    x = B.gather(x_src, ex)
    r = B.reshape(B.gather(rank_src, rr), (-1,) + tail)
    drop = r < B.cast(_rows(B, count, tail), r)
    kept = B.sum(x * (1.0 - B.cast(drop, x)), axis=tuple(range(1, len(tail) + 1)))  # x * 1 or x * 0: exact
    fill = kept / B.cast(count * -1 + math.prod(tail), kept)
    z = B.select(drop, x * 0.0 + _rows(B, fill, tail), x)
    return score_rows(B, f(z), B.gather(labels_src, ex), probability)


def run_rows(c: Call, chunk: Callable, sources: Sequence[Any], idx: np.ndarray, elements: bool,
             probability: bool, progress: Optional[bool], desc: str) -> np.ndarray:
    """Run ``chunk(B, f, tail, probability, *sources, idx[:, lo:hi])`` over all rows in chunks
    of ``batch_size``; the scores ``(R, 3)`` (see :func:`score_rows`) on the host.

    ``idx`` ``(k, R)`` int64 (NumPy): the rows' indices and counts; each chunk uploads
    its slice (one small transfer to the device, nothing read back until the end).
    ``tail`` and ``probability`` are bound when the chunk is compiled, not passed per
    call: each argument of a call costs TensorFlow's dispatch time (tens of us each).
    """
    B = c.B
    idx = np.asarray(idx, dtype=np.int64)
    total = idx.shape[1]
    # the ranks' shape per row: element ranks like x, or pixel ranks broadcast over the channels
    tail = tuple(int(d) for d in (c.layout.shape if elements else c.layout.map_shape(1))[1:])
    step = B.jit(chunk, c.f, B, c.f, tail, bool(probability))
    bar = progress_bar(progress, total, desc)
    outs = []
    try:
        with B.no_grad():  # forwards only: no autograd graph kept (torch)
            for lo, hi in row_chunks(total, c.batch_size):
                rows = B.asarray(np.ascontiguousarray(idx[:, lo:hi]), like=c.x)
                outs.append(step(*sources, rows))
                bar.update(hi - lo)
    finally:
        bar.close()
    return np.asarray(B.to_numpy(outs[0] if len(outs) == 1 else B.concat(outs)), dtype=np.float64)


def layout_key(lay: Layout) -> tuple:
    """``lay`` as a tuple of plain values (an argument a compiled function treats as a constant),
    without the batch size (0), so calls with other numbers of examples reuse the compiled function."""
    return ((0,) + tuple(lay.shape[1:]), lay.channel_axis, tuple(lay.spatial), lay.channels)
