"""Argument checks and conversion shared by every metric.

A metric call goes through the package's one front door (:mod:`boundary_xg._entry`):
the backend from the model, ``x`` converted once onto the model's device, the
model's lock and inference-mode session (the model is put back exactly as it was,
also after an error), the labels checked against the model's classes. This module
adds what only metrics take: the attributions (shaped like ``x`` or one map per
example, finite) and the metric options (ratios in (0, 1), counts, choices), each
checked with an error that names the argument.
"""

from __future__ import annotations

import contextlib
import math
import numbers
import sys
from dataclasses import dataclass
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

import numpy as np

from .._entry import (
    check_device, check_output_option, entry, prepare_labels, prepare_x, probe, resolve_backend,
    select_output,
)
from ..backends import Backend, foreign_tensor
from ..errors import InputError
from ..ops import DEFAULT_BATCH_ROWS, default_batch_size


# --- the layout of x ---------------------------------------------------------------------
@dataclass(frozen=True)
class Layout:
    """Where the channels of ``x`` are and how many pixels it has.

    Inputs with 4 or more axes are images in the backend's layout (channel axis 1
    for NCHW, the last for NHWC); inputs with 2 or 3 axes (``(N, D)`` features,
    ``(N, H, W)`` one-channel images) have no channel axis: every element is a
    pixel of its own. Pixels are numbered in row-major order of the spatial axes,
    the same in both layouts, so rankings (and their tie-breaks) agree between
    frameworks.
    """

    shape: Tuple[int, ...]          # x's shape
    channel_axis: Optional[int]     # None: no channel axis
    spatial: Tuple[int, ...]        # the spatial sizes, in order
    channels: int

    @property
    def pixels(self) -> int:
        return int(np.prod(self.spatial)) if self.spatial else 1

    @property
    def elements(self) -> int:
        return self.pixels * self.channels

    def map_shape(self, rows: int) -> Tuple[int, ...]:
        """Shape of a per-pixel tensor that broadcasts against ``rows`` rows of ``x``."""
        tail = list(self.spatial)
        if self.channel_axis is not None:
            tail.insert(self.channel_axis - 1, 1)
        return (rows,) + tuple(tail)

    def channel_shape(self) -> Tuple[int, ...]:
        """Shape of a per-channel tensor that broadcasts against one row of ``x``."""
        shape = [1] * len(self.shape)
        if self.channel_axis is not None:
            shape[self.channel_axis] = self.channels
        return tuple(shape)


def layout_of(B: Backend, shape: Tuple[int, ...]) -> Layout:
    """The :class:`Layout` of inputs of ``shape`` on backend ``B``."""
    nd = len(shape)
    if nd >= 4:
        ch = 1 if B.image_layout == "NCHW" else nd - 1
        spatial = tuple(int(shape[i]) for i in range(1, nd) if i != ch)
        return Layout(tuple(shape), ch, spatial, int(shape[ch]))
    return Layout(tuple(shape), None, tuple(int(s) for s in shape[1:]), 1)


# --- the call ------------------------------------------------------------------------------
@dataclass
class Call:
    """Everything a metric computes with, converted and checked.

    Attributes:
        B: the backend; model: the caller's model; f: its inference-mode logits
        function; x: ``(N, ...)`` on the model's device; labels: ``(N,)`` int64;
        attributions: like ``x`` or ``layout.map_shape(N)`` (None when the metric
        takes none); layout: :class:`Layout`; batch_size: rows per forward;
        num_classes: the model's outputs.
    """

    B: Backend
    model: Any
    f: Callable
    x: Any
    labels: Any
    attributions: Any
    layout: Layout
    batch_size: int
    num_classes: int
    kind: str
    np_dtype: Any


@contextlib.contextmanager
def metric_call(model: Any, x: Any, labels: Any, attributions: Any, *, backend: Optional[str] = None,
                output: Any = None, batch_size: Optional[int] = None,
                need_attributions: bool = True) -> Iterator[Call]:
    """Check and convert a metric's arguments; yield a :class:`Call` inside the model's session.

    Options must be checked before this (a bad option costs no model call). The
    session runs the model with inference semantics and restores every flag on
    exit, also after an error.

    Raises:
        InputError, LabelError: naming the argument at fault.
    """
    check_output_option(output)
    check_int("batch_size", batch_size, 1, optional=True)
    B = resolve_backend(model, x, backend)
    with entry(B, model):
        xt, kind, np_dtype = prepare_x(B, model, x)
        lay = layout_of(B, B.shape(xt))
        at = prepare_attributions(B, model, attributions, xt, lay) if need_attributions else None
        bs = batch_size if batch_size is not None else metric_batch_size(B, xt)
        with B.session(model, mode="eval") as f:
            f = select_output(f, output)
            num_classes = probe(B, model, f, xt)
            y = prepare_labels(B, f, labels, xt, num_classes, bs)
            yield Call(B, model, f, xt, y, at, lay, int(bs), int(num_classes), kind, np_dtype)


def metric_batch_size(B: Backend, x: Any) -> int:
    """Rows per forward of a metric when the user gives no ``batch_size``.

    :func:`~boundary_xg.ops.default_batch_size`, except that small inputs on a CPU
    (where it stops at its cap of 256 rows) get 4x as many: a metric's rows are
    forwards only, which keep no activations for a backward pass, and for tiny
    models the fixed cost of each chunk (a compiled call, a few gathers) is then
    spread over more rows (DiffID on the digits CNN: 1.40x -> 1.25x its floor on
    torch, 3.8x -> 1.0-1.7x on TensorFlow). Tiny inputs (under 256 elements a row)
    get up to :data:`METRIC_ROWS_TINY` rows, as long as a chunk holds at most
    2**18 input elements: on the 8x8 digits a forward of 4096 rows costs 15-35 %
    less per row than one of 1024 (both frameworks, one thread). Accelerators keep
    256 rows (their memory is smaller).
    """
    bs = default_batch_size(B, x)
    if not B.on_accelerator(x) and bs == DEFAULT_BATCH_ROWS:
        per_row = max(1, math.prod(int(d) for d in B.shape(x)[1:]))
        return max(4 * bs, min(METRIC_ROWS_TINY, 2 ** 18 // per_row))
    return bs


#: the most rows per forward a metric takes by default (tiny inputs on a CPU)
METRIC_ROWS_TINY = 4096


def prepare_attributions(B: Backend, model: Any, attributions: Any, x: Any, lay: Layout,
                         name: str = "attributions") -> Any:
    """``attributions`` as a tensor in ``x``'s dtype on its device: shaped like ``x``, or one
    map per example (``(N, H, W)``, or with a one-channel axis in the layout's place).

    Raises:
        InputError: missing, a tensor of another framework or device, not numeric,
            a shape that fits neither form, NaN or infinity.
    """
    if attributions is None:
        raise InputError(f"{name} is None; pass the attributions to evaluate, shaped like x "
                         f"{tuple(lay.shape)} or one map per example {lay.map_shape(lay.shape[0])}.")
    if B.is_tensor(attributions):
        check_device(B, model, attributions, name)
        at = B.asarray(attributions)
        if not B.is_floating(at):
            at = B.cast(at, x)
    else:
        root = foreign_tensor(attributions, B)
        if root is not None:
            raise InputError(f"{name} is a {root} tensor but the model runs on the {B.name} backend; "
                             f"pass NumPy or a {B.name} tensor.")
        arr = np.asarray(attributions)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"{name} has dtype {arr.dtype}; expected a numeric array.")
        at = B.asarray(arr, like=x)
    at = B.cast(at, x)
    shape, n = tuple(B.shape(at)), lay.shape[0]
    maps = {tuple(lay.shape), lay.map_shape(n), (n,) + lay.spatial}
    if shape not in maps:
        raise InputError(
            f"{name} has shape {shape}; expected x's shape {tuple(lay.shape)} or one map per example "
            f"{lay.map_shape(n)} (or {(n,) + lay.spatial}), in the model's layout."
        )
    if not B.all_finite(at):
        raise InputError(f"{name} contains NaN or infinity; metrics need finite attributions "
                         "(replace them, e.g. np.nan_to_num, or fix the method that made them).")
    if shape != tuple(lay.shape) and shape != lay.map_shape(n):
        at = B.reshape(at, lay.map_shape(n))
    return at


# --- option checks -----------------------------------------------------------------------
def check_int(name: str, v: Any, least: int, optional: bool = False) -> None:
    if optional and v is None:
        return
    if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < least:
        raise InputError(f"{name}={v!r}: expected an integer >= {least}.")


def check_seed(v: Any) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
        raise InputError(f"seed={v!r}: expected an integer or None.")


def check_choice(name: str, v: Any, choices: Sequence[str]) -> None:
    if not isinstance(v, str) or v not in choices:
        raise InputError(f"{name}={v!r}: expected one of {list(choices)}.")


def check_ratios(ratios: Any, name: str = "ratios") -> Tuple[float, ...]:
    """``ratios`` as a tuple of floats, each strictly between 0 and 1.

    Raises:
        InputError: not a non-empty sequence of finite numbers in (0, 1).
    """
    try:
        vals = tuple(float(r) for r in np.asarray(ratios, dtype=np.float64).reshape(-1))
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}={ratios!r}: expected a sequence of numbers in (0, 1).") from err
    if not vals:
        raise InputError(f"{name} is empty; expected at least one ratio in (0, 1).")
    bad = [r for r in vals if not (math.isfinite(r) and 0.0 < r < 1.0)]
    if bad:
        raise InputError(f"{name}={list(vals)}: every ratio must lie strictly between 0 and 1 "
                         f"({bad[:3]} do not).")
    return vals


def check_blur(blur: Any, name: str = "blur") -> Tuple[int, float]:
    """``(kernel_size, sigma)``: an odd kernel size >= 1 and a sigma > 0 (pixels)."""
    try:
        k, s = blur
    except (TypeError, ValueError) as err:
        raise InputError(f"{name}={blur!r}: expected (kernel_size, sigma), e.g. (11, 1.1).") from err
    if isinstance(k, bool) or not isinstance(k, numbers.Integral) or k < 1 or k % 2 == 0:
        raise InputError(f"{name}={blur!r}: the kernel size must be an odd integer >= 1.")
    if isinstance(s, bool) or not isinstance(s, numbers.Real) or not (math.isfinite(s) and s > 0):
        raise InputError(f"{name}={blur!r}: sigma must be a finite number > 0 (pixels).")
    return int(k), float(s)


# --- progress ------------------------------------------------------------------------------
class _NoBar:
    def update(self, n: int) -> None:
        pass

    def close(self) -> None:
        pass


def progress_bar(progress: Optional[bool], total: int, desc: str) -> Any:
    """A tqdm bar over model inputs when ``progress`` is True, or None and stderr is a
    terminal; otherwise (or without tqdm) an object whose ``update``/``close`` do nothing."""
    if progress is False or (progress is None and not sys.stderr.isatty()):
        return _NoBar()
    try:
        from tqdm.auto import tqdm
    except ImportError:  # tqdm is optional
        return _NoBar()
    return tqdm(total=total, desc=desc, unit="img", leave=False)


def check_progress(progress: Any) -> None:
    if progress is not None and not isinstance(progress, bool):
        raise InputError(f"progress={progress!r}: expected True, False or None (a bar on a terminal).")
