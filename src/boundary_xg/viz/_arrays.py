"""Array preparation for the heatmaps: conversion, layout, channel reduction, normalisation.

Pure NumPy (scipy for the blur, imported when a blur is asked for). Tensors of
PyTorch or TensorFlow are recognised by their type's module name, so no
framework is imported here; they are converted to NumPy once, at the entry.
"""

from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

from ..api import to_numpy as backend_to_numpy
from ..errors import InputError

#: normalisation type -> colour scale kind: "signed" (zero at the centre of a
#: diverging map, range [-1, 1]), "centered" (zero at 0.5 of a diverging map,
#: range [0, 1]), "magnitude" (zero at the bottom of a sequential map) or "01".
NORMALIZATIONS = {
    "unsigned_max": "signed",
    "unsigned_max_positive_centered": "centered",
    "magnitude_max": "magnitude",
    "magnitude_sum": "magnitude",
    "signed_max": "signed",
    "signed_max_positive_centered": "centered",
    "signed_sum": "signed",
    "01": "01",
    "unnormalized": "signed",
}

_CHANNELS = (1, 3, 4)
_TINY = 1e-12


def to_numpy(a: Any, name: str = "attributions") -> np.ndarray:
    """``a`` as a float NumPy array; torch / TF tensors are converted without importing a framework.

    Raises:
        InputError: ``a`` is not numeric or holds NaN / infinity.
    """
    arr = backend_to_numpy(a)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{name} has dtype {arr.dtype}; expected a numeric array or tensor.")
    arr = arr.astype(np.float64)
    if not np.all(np.isfinite(arr)):
        raise InputError(f"{name} contains NaN or infinity; expected finite values.")
    return arr


def channel_axis(shape: Tuple[int, ...], layout: Optional[str] = None) -> int:
    """The channel axis (1 or 3) of a 4-D batch, from ``layout`` or from the shape.

    A size of 1 or 3 marks the channel axis (then 4, for RGBA); when both axis 1
    and axis 3 could be channels (e.g. ``(N, 3, 3, 3)``), channels-first wins
    unless ``layout`` says otherwise.
    """
    if layout is not None:
        key = str(layout).upper()
        if key not in ("NCHW", "NHWC"):
            raise InputError(f"layout={layout!r}: expected 'NCHW', 'NHWC' or None.")
        return 1 if key == "NCHW" else 3
    for sizes in ((1, 3), (4,)):  # grey / RGB first: 4 is also a common small height
        if shape[1] in sizes:
            return 1
        if shape[3] in sizes:
            return 3
    # neither axis looks like colour channels: take the smaller as channels
    return 1 if shape[1] <= shape[3] else 3


def as_nhwc(a: Any, name: str = "attributions", layout: Optional[str] = None) -> np.ndarray:
    """A batch ``(N, H, W, C)`` from NCHW / NHWC batches, one example, or one map.

    Accepted shapes: ``(N, C, H, W)`` or ``(N, H, W, C)`` (a batch); ``(C, H, W)``
    or ``(H, W, C)`` with C in (1, 3, 4) (one example); ``(H, W)`` (one map).

    Raises:
        InputError: any other number of axes.
    """
    arr = to_numpy(a, name)
    if arr.ndim == 2:
        return arr[None, :, :, None]
    if arr.ndim == 3:
        if layout is None and arr.shape[0] not in _CHANNELS and arr.shape[2] not in _CHANNELS:
            raise InputError(
                f"{name} has shape {arr.shape}: a 3-D array is read as one example (C, H, W) or "
                "(H, W, C) with C in (1, 3, 4); for a batch of maps pass (N, 1, H, W)."
            )
        arr = arr[None]
    if arr.ndim != 4:
        raise InputError(
            f"{name} has shape {arr.shape}; expected (N, C, H, W), (N, H, W, C), one example "
            "(C, H, W) / (H, W, C), or one map (H, W)."
        )
    if channel_axis(arr.shape, layout) == 1:
        arr = np.transpose(arr, (0, 2, 3, 1))
    return np.ascontiguousarray(arr)


def reduce_channels(a: np.ndarray) -> np.ndarray:
    """``(N, H, W, C) -> (N, H, W)`` by the **sum** over channels.

    The sum (not the mean) keeps the total of the map equal to the total of the
    attribution, so completeness still reads off the heatmap.
    """
    return a.sum(axis=-1)


def resize_maps(maps: np.ndarray, size: Tuple[int, int]) -> np.ndarray:
    """Bilinear resize of each map of ``(N, h, w)`` to ``(N, *size)``.

    Half-pixel centres (PyTorch's ``align_corners=False``, TensorFlow's default),
    so a layer method's map at its layer's resolution (GradCAM's
    ``upsample=False``) overlays the image it explains.
    """
    n, h, w = maps.shape
    if (h, w) == tuple(size):
        return maps

    def grid(src: int, dst: int):
        c = np.clip((np.arange(dst) + 0.5) * src / dst - 0.5, 0, src - 1)
        lo = np.floor(c).astype(np.int64)
        return lo, np.minimum(lo + 1, src - 1), c - lo

    r0, r1, tr = grid(h, size[0])
    c0, c1, tc = grid(w, size[1])
    rows = maps[:, r0] * (1 - tr)[None, :, None] + maps[:, r1] * tr[None, :, None]
    return rows[:, :, c0] * (1 - tc) + rows[:, :, c1] * tc


def blur_maps(maps: np.ndarray, sigma: float) -> np.ndarray:
    """Gaussian blur with std ``sigma`` pixels over H and W of each map ``(N, H, W)``; no mixing across N."""
    if not sigma or sigma <= 0:
        return maps
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(maps, sigma=(0.0, float(sigma), float(sigma)), mode="nearest")


def normalize(maps: np.ndarray, normalization_type: str) -> np.ndarray:
    """Normalise each map of ``(N, H, W)`` on its own.

    Types (the TruLens names):

    - ``unsigned_max``: ``a / max|a|`` in [-1, 1], one scale for both signs.
    - ``unsigned_max_positive_centered``: the above mapped to [0, 1], zero at 0.5.
    - ``magnitude_max``: ``|a| / max|a|`` in [0, 1].
    - ``magnitude_sum``: ``|a| / sum|a|`` (sums to 1).
    - ``signed_max``: positives divided by the largest positive value and negatives
      by the magnitude of the most negative one, in [-1, 1], sign kept.
    - ``signed_max_positive_centered``: the above mapped to [0, 1], zero at 0.5.
    - ``signed_sum``: positives scaled to sum to 1, negatives to sum to -1.
    - ``01``: ``(a - min) / (max - min)`` in [0, 1].
    - ``unnormalized``: unchanged.

    A map that is all zeros stays all zeros (mapped to 0.5 by the centred types).

    Raises:
        InputError: an unknown type (the message lists the valid ones).
    """
    if normalization_type not in NORMALIZATIONS:
        raise InputError(
            f"normalization_type={normalization_type!r}: expected one of {list(NORMALIZATIONS)}."
        )
    ax = (1, 2)
    absm = np.abs(maps)
    pos, neg = np.maximum(maps, 0.0), np.minimum(maps, 0.0)

    def safe(d):
        return np.where(d > _TINY, d, 1.0)

    t = normalization_type
    if t in ("unsigned_max", "unsigned_max_positive_centered"):
        out = maps / safe(absm.max(axis=ax, keepdims=True))
    elif t == "magnitude_max":
        return absm / safe(absm.max(axis=ax, keepdims=True))
    elif t == "magnitude_sum":
        return absm / safe(absm.sum(axis=ax, keepdims=True))
    elif t in ("signed_max", "signed_max_positive_centered"):
        out = pos / safe(pos.max(axis=ax, keepdims=True)) + neg / safe(-neg.min(axis=ax, keepdims=True))
    elif t == "signed_sum":
        return pos / safe(pos.sum(axis=ax, keepdims=True)) + neg / safe(-neg.sum(axis=ax, keepdims=True))
    elif t == "01":
        lo, hi = maps.min(axis=ax, keepdims=True), maps.max(axis=ax, keepdims=True)
        return (maps - lo) / safe(hi - lo)
    else:
        return maps.copy()
    if t.endswith("_positive_centered"):
        out = out / 2.0 + 0.5
    return out


def color_range(maps: np.ndarray, normalization_type: str) -> Tuple[float, float, str]:
    """``(vmin, vmax, kind)`` of a fixed colour scale for normalised ``maps``.

    The range does not depend on the data for the max / 01 types, so zero is the
    same colour in every panel and every call. For the sum types and
    ``unnormalized`` (whose values have no fixed bound) it is symmetric about
    zero (``[-m, m]`` or ``[0, m]``, ``m`` the largest magnitude in the batch),
    which still keeps zero at the same colour.
    """
    kind = NORMALIZATIONS[normalization_type]
    if normalization_type in ("signed_sum", "magnitude_sum", "unnormalized"):
        m = float(np.abs(maps).max()) if maps.size else 1.0
        m = m if m > _TINY else 1.0
        return (-m, m, kind) if kind == "signed" else (0.0, m, kind)
    if kind == "signed":
        return -1.0, 1.0, kind
    return 0.0, 1.0, kind


def minmax_image(img: np.ndarray) -> np.ndarray:
    """Each image of ``(N, H, W, C)`` scaled to [0, 1] on its own, as RGB ``(N, H, W, 3)``."""
    ax = (1, 2, 3)
    lo, hi = img.min(axis=ax, keepdims=True), img.max(axis=ax, keepdims=True)
    out = (img - lo) / np.where(hi - lo > _TINY, hi - lo, 1.0)
    if out.shape[-1] == 1:
        out = np.repeat(out, 3, axis=-1)
    elif out.shape[-1] == 4:
        out = out[..., :3]
    elif out.shape[-1] != 3:
        # more channels than colours: show their mean as grey
        out = np.repeat(out.mean(axis=-1, keepdims=True), 3, axis=-1)
    return out


def grid_shape(n: int) -> Tuple[int, int]:
    """``(rows, cols)`` of a near-square grid for ``n`` tiles (cols = ceil(sqrt(n)))."""
    cols = int(np.ceil(np.sqrt(max(n, 1))))
    rows = int(np.ceil(max(n, 1) / cols))
    return rows, cols


def tile(batch: np.ndarray, fill: float = 1.0) -> np.ndarray:
    """Tile ``(N, H, W, ...)`` into one ``(rows*H, cols*W, ...)`` array, row by row; empty cells get ``fill``."""
    n, h, w = batch.shape[:3]
    rows, cols = grid_shape(n)
    rest = batch.shape[3:]
    canvas = np.full((rows * cols, h, w) + rest, fill, dtype=batch.dtype)
    canvas[:n] = batch
    canvas = canvas.reshape((rows, cols, h, w) + rest)
    canvas = np.swapaxes(canvas, 1, 2)
    return canvas.reshape((rows * h, cols * w) + rest)
