"""Shared pieces of the layer methods (GradCAM, FullGrad): layouts, chunks, the layer option.

Written over the backend interface; the spatial axes follow ``B.image_layout``
(``NCHW``: channels on axis 1, ``NHWC``: on axis 3), so the methods are written
once for both frameworks.
"""

from __future__ import annotations

import weakref
from typing import Any, Callable, Dict, Optional, Tuple

from ..backends import Backend
from ..errors import InputError
from ..ops import resolve_batch_size, row_chunks


def channel_axis(B: Backend) -> int:
    """The channel axis of an image batch in the backend's layout."""
    return 1 if B.image_layout == "NCHW" else 3


def spatial_size(B: Backend, t: Any) -> Tuple[int, int]:
    """``(H, W)`` of a 4-D batch in the backend's layout."""
    shape = B.shape(t)
    return (shape[2], shape[3]) if B.image_layout == "NCHW" else (shape[1], shape[2])


def as_map(B: Backend, t: Any) -> Any:
    """``(N, H, W)`` to one map per example: ``(N, 1, H, W)`` (NCHW) or ``(N, H, W, 1)`` (NHWC)."""
    _, h, w = B.shape(t)  # the batch may be unknown while a compiled step is traced
    return B.reshape(t, (-1, 1, h, w) if B.image_layout == "NCHW" else (-1, h, w, 1))


def channel_sum(B: Backend, t: Any) -> Any:
    """Sum over the channels of a 4-D batch, as one map per example (see :func:`as_map`)."""
    return as_map(B, B.sum(t, axis=channel_axis(B)))


def by_chunks(B: Backend, x: Any, labels: Any, batch_size: Optional[int],
              run: Callable[[Any, Any], Tuple[Any, ...]]) -> Tuple[Any, ...]:
    """``run(x_chunk, labels_chunk) -> tuple of (n, ...) tensors`` over chunks of rows, concatenated."""
    bs = resolve_batch_size(batch_size)
    n = B.shape(x)[0]
    if n <= bs:
        return run(x, labels)
    parts = [run(x[a:b], labels[a:b]) for a, b in row_chunks(n, bs)]
    return tuple(B.concat([p[k] for p in parts]) for k in range(len(parts[0])))


def check_image_batch(B: Backend, x: Any, method: str) -> None:
    """Layer methods explain image models: ``x`` must be a 4-D batch."""
    if len(B.shape(x)) != 4:
        raise InputError(
            f"{method} explains image models: x has shape {B.shape(x)}; expected a 4-D batch "
            f"({B.image_layout})."
        )


# model -> {(weights fingerprint, example shape): default layer}; the choice runs the
# model once, which is a third of the method's own cost on a small batch
_DEFAULTS: "weakref.WeakKeyDictionary[Any, Dict[Any, Any]]" = weakref.WeakKeyDictionary()


def prepare_layer(B: Backend, model: Any, x: Any, options: Dict[str, Any]) -> None:
    """The front end's hook of a layer method: ``options["layer"]`` becomes a layer handle.

    ``None`` becomes the backend's default layer (the output of the last block
    with spatial extent, see :meth:`~boundary_xg.backends.Backend.default_layer`);
    a name, index or layer object is looked up in the model.

    Raises:
        InputError: the model has no such layer (the message lists the names);
            ``x`` is not a 4-D image batch.
    """
    check_image_batch(B, x, "a layer method")
    layer = options.get("layer")
    if layer is not None:
        options["layer"] = B.resolve_layer(model, layer)
        return
    key = (B.fingerprint(model), B.shape(x)[1:])
    try:
        cache = _DEFAULTS.setdefault(model, {})
    except TypeError:  # not weak-referenceable: choose every time
        cache = {}
    if key not in cache:
        cache[key] = B.default_layer(model, x[:1])
    options["layer"] = cache[key]
