"""Readers: every kind of ``data`` a dataset run accepts, cut into shards in dataset order.

A shard is ``size`` consecutive examples (the last one may be shorter); shard
``k`` holds examples ``k*size .. (k+1)*size - 1``. Readers that can seek (arrays,
``.npy`` files, map-style torch datasets, DataLoaders over them, image folders)
read only the shards asked for; the others (iterable torch datasets, tf.data
pipelines) are read through in order and the shards not asked for are dropped
unconverted. Only one shard is held in memory at a time.

No framework is imported here: a framework's dataset objects are recognised and
described by its backend (capability ``"datasets"``, a
:class:`~boundary_xg.backends._data.DataPlan`), its tensors converted by
:func:`boundary_xg.backends.to_numpy`.
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from ._lib import InputError, backends

log = logging.getLogger("boundary_xg.runs")


@dataclass
class Shard:
    """One shard read from the data.

    Attributes:
        index: shard number ``k``; ``start`` its first example's position.
        x: ``(n, ...)`` float32 inputs in the model's layout; rows of ``skipped``
            examples are zeros and are not explained.
        labels: ``(n,)`` int64 classes from the data, or None (then the predictions).
        names: one name per example (file paths of an image folder) or None.
        skipped: ``{row: reason}`` of examples that could not be read.
    """

    index: int
    start: int
    x: np.ndarray
    labels: Optional[np.ndarray]
    names: Optional[List[str]] = None
    skipped: Dict[int, str] = field(default_factory=dict)


def to_numpy(v: Any) -> np.ndarray:
    """A tensor of any registered backend, or an array-like, as a NumPy array (on the host)."""
    if isinstance(v, np.ndarray):
        return v
    return backends.to_numpy(v)


def _is_tensor(v: Any) -> bool:
    """A tensor (or array) of a registered backend: kept as it is, converted per shard."""
    owner = backends.framework_of(v)
    return owner is not None and backends.get_backend(owner).is_tensor(v)


def _split_item(item: Any) -> Tuple[Any, Any]:
    """``(x, label)`` from a dataset element: ``x``, ``(x, y)``, ``[x, y]`` or ``{"x"/"image", "label"/"y"}``."""
    if isinstance(item, dict):
        x = next((item[k] for k in ("x", "image", "images", "input", "inputs") if k in item), None)
        y = next((item[k] for k in ("label", "labels", "y", "target", "targets") if k in item), None)
        if x is None:
            raise InputError(f"data yields dicts with keys {sorted(item)}; expected an 'x' or 'image' key.")
        return x, y
    if isinstance(item, (tuple, list)):
        if len(item) == 2:
            return item[0], item[1]
        if len(item) == 1:
            return item[0], None
        raise InputError(
            f"data yields tuples of {len(item)} items; expected x or (x, label)."
        )
    return item, None


def _labels_array(y: Any, n: int, where: str) -> Optional[np.ndarray]:
    if y is None:
        return None
    arr = to_numpy(y)
    if arr.ndim == 2 and arr.shape[1] > 1:  # one-hot
        arr = arr.argmax(axis=1)
    arr = arr.reshape(-1) if arr.ndim else np.full(n, arr)
    if arr.shape[0] != n:
        raise InputError(f"{where}: {arr.shape[0]} labels for {n} examples; expected one class per example.")
    if arr.dtype.kind == "f" and not np.all(arr == np.round(arr)):
        raise InputError(f"{where}: labels hold non-integer values; expected class indices.")
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{where}: labels have dtype {arr.dtype}; expected class indices.")
    return arr.astype(np.int64)


def _stack(xs: Sequence[np.ndarray], first: int) -> np.ndarray:
    """Stack examples, naming the first one whose shape differs."""
    shape = xs[0].shape
    for i, a in enumerate(xs):
        if a.shape != shape:
            raise InputError(
                f"the data yielded an example of shape {a.shape} at position {first + i}, but earlier "
                f"examples have shape {shape}; every example must have the same shape."
            )
    return np.stack(xs)


def _as_inputs(x: Any, where: str) -> np.ndarray:
    arr = to_numpy(x)
    if arr.dtype.kind not in "biuf":
        raise InputError(f"{where}: inputs have dtype {arr.dtype}; expected numbers.")
    return np.ascontiguousarray(arr, dtype=np.float32)


class Reader:
    """The protocol: ``length`` (None when unknown until read), ``describe()``, ``shards()``."""

    length: Optional[int] = None
    kind = "data"

    def describe(self) -> Dict[str, Any]:
        """What identifies the data in ``run.json`` (its kind, length and where it comes from)."""
        return {"kind": self.kind, "length": self.length}

    def shards(self, size: int, wanted: Callable[[int], bool]) -> Iterator[Shard]:
        """The shards ``k`` with ``wanted(k)``, in order."""
        raise NotImplementedError


class SeekableReader(Reader):
    """A reader that reads any range of examples directly."""

    def read(self, start: int, stop: int) -> Shard:
        raise NotImplementedError

    def shards(self, size: int, wanted: Callable[[int], bool]) -> Iterator[Shard]:
        for k in range(-(-self.length // size)):
            if wanted(k):
                sh = self.read(k * size, min(self.length, (k + 1) * size))
                sh.index = k
                yield sh


class ArrayReader(SeekableReader):
    """A NumPy array (or memory map, or tensor) of inputs, with optional labels."""

    kind = "array"

    def __init__(self, x: Any, labels: Any = None, source: Optional[str] = None):
        if getattr(x, "ndim", None) is None or x.ndim < 2:
            raise InputError(
                f"data has shape {getattr(x, 'shape', None)}; expected a batch-first array (N, ...) "
                "in the model's layout."
            )
        self.x, self.y, self.source = x, labels, source
        self.length = int(x.shape[0])
        if labels is not None:
            ny = int(np.shape(labels)[0]) if np.ndim(labels) else None
            if ny != self.length:
                raise InputError(f"data=(x, labels): x has {self.length} examples but labels has {ny}.")

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update({"shape": [int(s) for s in self.x.shape], "labels": self.y is not None})
        if self.source:
            d["path"] = os.path.abspath(self.source)
        # the first rows (up to 16 MB) and the labels identify the data without reading all of it
        row = max(1, int(np.prod(self.x.shape[1:])) * 4)
        sha = hashlib.sha256(np.ascontiguousarray(to_numpy(self.x[: max(1, (16 << 20) // row)]),
                                                  dtype=np.float32).tobytes())
        if self.y is not None:
            sha.update(np.ascontiguousarray(to_numpy(self.y)).tobytes())
        d["sha256"] = sha.hexdigest()
        return d

    def read(self, start: int, stop: int) -> Shard:
        where = f"data[{start}:{stop}]"
        labels = None if self.y is None else _labels_array(self.y[start:stop], stop - start, where)
        if self.source is not None:
            # a fresh map per shard: the pages read are unmapped with it, so the
            # process's resident memory does not grow with the file
            mapped = np.load(self.source, mmap_mode="r", allow_pickle=False)
            x = np.array(mapped[start:stop], dtype=np.float32)  # a copy: nothing keeps the map alive
            del mapped
        else:
            x = self.x[start:stop]
        return Shard(0, start, _as_inputs(x, where), labels)


class MapDatasetReader(SeekableReader):
    """A map-style dataset (``len`` and ``dataset[i]``), optionally through the user's loader."""

    def __init__(self, plan: Any):
        self.dataset, self.read_range, self.kind = plan.dataset, plan.read_range, plan.name
        self.length = int(plan.length)

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d["class"] = type(self.dataset).__name__
        return d

    def read(self, start: int, stop: int) -> Shard:
        if self.read_range is not None:
            return self._read_batches(start, stop)
        items = [_split_item(self.dataset[i]) for i in range(start, stop)]
        return self._collate(items, start)

    def _collate(self, items: List[Tuple[Any, Any]], start: int) -> Shard:
        xs = [_as_inputs(x, f"dataset[{start + i}]") for i, (x, _) in enumerate(items)]
        ys = [y for _, y in items]
        labels = None
        if any(y is not None for y in ys):
            if any(y is None for y in ys):
                raise InputError(f"dataset[{start}:{start + len(items)}]: some examples have labels and some do not.")
            labels = _labels_array(np.stack([to_numpy(y) for y in ys]), len(ys),
                                   f"dataset[{start}:{start + len(items)}]")
        return Shard(0, start, _stack(xs, start), labels)

    def _read_batches(self, start: int, stop: int) -> Shard:
        # the user's loader settings (workers, collate) over this shard's indices only
        xs, ys = [], []
        for batch in self.read_range(start, stop):
            x, y = _split_item(batch)
            xs.append(_as_inputs(x, f"dataset[{start}:{stop}]"))
            ys.append(y)
        x = np.concatenate(xs)
        labels = None if ys[0] is None else _labels_array(
            np.concatenate([to_numpy(y) for y in ys]), len(x), f"dataset[{start}:{stop}]")
        return Shard(0, start, x, labels)


class StreamReader(Reader):
    """Data that can only be read in order: batches or single examples, cut into shards here."""

    def __init__(self, batches: Callable[[], Iterator[Tuple[Any, Any]]], kind: str, length: Optional[int],
                 batched: bool, info: Dict[str, Any]):
        self._batches, self.kind, self.length, self.batched, self.info = batches, kind, length, batched, info

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update(self.info)
        return d

    def shards(self, size: int, wanted: Callable[[int], bool]) -> Iterator[Shard]:
        xs: List[np.ndarray] = []
        ys: List[Any] = []
        held, pos, k = 0, 0, 0
        for item in self._batches():
            x, y = _split_item(item)
            if self.batched:
                n = int(np.shape(x)[0]) if np.ndim(x) else 1
            else:
                n = 1
            offset = 0
            while offset < n:
                take = min(n - offset, size - held)
                if wanted(k):
                    xb = to_numpy(x)
                    xb = xb[offset:offset + take] if self.batched else xb[None]
                    xs.append(_as_inputs(xb, f"data[{pos}:{pos + take}]"))
                    if y is None:
                        ys.append(None)
                    else:
                        yb = to_numpy(y)
                        ys.append(yb[offset:offset + take] if self.batched else yb[None])
                held += take
                offset += take
                pos += take
                if held == size:
                    if wanted(k):
                        yield self._shard(k, pos - held, xs, ys)
                    xs, ys, held, k = [], [], 0, k + 1
        if held:
            if wanted(k):
                yield self._shard(k, pos - held, xs, ys)
        self.length = pos

    @staticmethod
    def _shard(k: int, start: int, xs: List[np.ndarray], ys: List[Any]) -> Shard:
        shapes = [a.shape[1:] for a in xs]
        for s in shapes:
            if s != shapes[0]:
                raise InputError(
                    f"the data yielded examples of shape {s} near position {start}, but earlier examples "
                    f"of the same shard have shape {shapes[0]}; every example must have the same shape."
                )
        x = np.concatenate(xs)
        labels = None
        if any(y is not None for y in ys):
            if any(y is None for y in ys):
                raise InputError(f"data[{start}:{start + len(x)}]: some examples have labels and some do not.")
            labels = _labels_array(np.concatenate([np.asarray(y) for y in ys]), len(x),
                                   f"data[{start}:{start + len(x)}]")
        return Shard(k, start, x, labels)


class ImageFolderReader(SeekableReader):
    """A folder of images, read with the command line's preprocessing.

    Files directly in the folder have no labels (the predictions are explained);
    a folder of class subfolders (torchvision's ``ImageFolder`` convention) gives
    each image the index of its subfolder in sorted order. Files are taken in
    sorted order, so the dataset order is the same on every machine.
    """

    kind = "image_folder"

    def __init__(self, root: str, framework: str, size: Optional[Tuple[int, int]] = None,
                 grayscale: bool = False, mean: Optional[Sequence[float]] = None,
                 std: Optional[Sequence[float]] = None, on_error: str = "skip"):
        from ..model_io import IMAGE_EXT

        if on_error not in ("skip", "raise"):
            raise InputError(f"on_error={on_error!r}: expected 'skip' or 'raise'.")
        self.root, self.framework, self.on_error = os.path.abspath(root), framework, on_error
        self.prep = {"size": list(size) if size else None, "grayscale": bool(grayscale),
                     "mean": None if mean is None else [float(v) for v in np.ravel(mean)],
                     "std": None if std is None else [float(v) for v in np.ravel(std)]}
        entries = sorted(os.listdir(self.root))
        subdirs = [e for e in entries if os.path.isdir(os.path.join(self.root, e)) and not e.startswith(".")]
        self.classes: Optional[List[str]] = None
        files: List[Tuple[str, Optional[int]]] = []
        if subdirs:
            self.classes = subdirs
            for c, d in enumerate(subdirs):
                for dirpath, dirnames, names in os.walk(os.path.join(self.root, d)):
                    dirnames.sort()
                    files += [(os.path.join(dirpath, f), c) for f in sorted(names)
                              if f.lower().endswith(IMAGE_EXT)]
        else:
            files = [(os.path.join(self.root, f), None) for f in entries if f.lower().endswith(IMAGE_EXT)]
        if not files:
            raise InputError(f"data={root!r}: the folder holds no image files ({', '.join(IMAGE_EXT)}).")
        self.files = files
        self.length = len(files)
        self._shape: Optional[Tuple[int, ...]] = None

    def describe(self) -> Dict[str, Any]:
        d = super().describe()
        d.update({"path": self.root, "classes": self.classes, "preprocessing": self.prep,
                  "on_error": self.on_error})
        return d

    def _load(self, path: str) -> np.ndarray:
        from ..model_io import load_images

        p = self.prep
        x, _, _ = load_images([path], self.framework, tuple(p["size"]) if p["size"] else None,
                              p["grayscale"], p["mean"], p["std"])
        return x[0]

    def read(self, start: int, stop: int) -> Shard:
        from ..model_io import CLIError

        arrs: List[Optional[np.ndarray]] = []
        skipped: Dict[int, str] = {}
        for i in range(start, stop):
            path = self.files[i][0]
            try:
                a = self._load(path)
            except (CLIError, OSError) as err:
                if self.on_error == "raise":
                    raise InputError(f"could not read image {path!r} ({err}); pass on_error='skip' "
                                     "(--on-error skip) to skip unreadable images.") from err
                log.warning("skipping unreadable image %s (%s)", path, err)
                skipped[i - start], a = f"unreadable: {err}", None
            if a is not None:
                if self._shape is None:
                    self._shape = a.shape
                elif a.shape != self._shape:
                    raise InputError(
                        f"image {path!r} has shape {a.shape} after preprocessing but earlier images have "
                        f"{self._shape}; pass size=(H, W) (--size H,W) to resize every image."
                    )
            arrs.append(a)
        if self._shape is None:  # the whole shard unreadable: no shape known yet
            good = next((j for j in range(len(self.files)) if j not in range(start, stop)), None)
            self._shape = self._load(self.files[good][0]).shape if good is not None else (1,)
        x = np.stack([a if a is not None else np.zeros(self._shape, np.float32) for a in arrs])
        labels = None
        if self.classes is not None:
            labels = np.asarray([c for _, c in self.files[start:stop]], np.int64)
        names = [os.path.relpath(p, self.root) for p, _ in self.files[start:stop]]
        return Shard(0, start, x, labels, names, skipped)


def make_reader(data: Any, framework: str, *, size=None, grayscale: bool = False, mean=None, std=None,
                on_error: str = "skip") -> Reader:
    """The reader for ``data`` (see :func:`boundary_xg.explain_dataset` for the kinds accepted).

    Raises:
        InputError: an unsupported kind of data, a shuffled DataLoader, a missing path.
    """
    labels = None
    if isinstance(data, tuple) and len(data) == 2 and isinstance(data[0], (str, os.PathLike)):
        data, labels = data  # a .npy file and its labels
    if isinstance(data, (str, os.PathLike)):
        path = os.fspath(data)
        if os.path.isdir(path):
            if labels is not None:
                raise InputError(f"data=({path!r}, labels): a folder's labels are its class subfolders; "
                                 "pass the folder alone.")
            return ImageFolderReader(path, framework, size, grayscale, mean, std, on_error)
        if path.lower().endswith(".npy") and os.path.isfile(path):
            try:
                arr = np.load(path, mmap_mode="r", allow_pickle=False)
            except Exception as err:
                raise InputError(f"data={path!r} could not be read as a NumPy array ({err}).") from err
            return ArrayReader(arr, labels, source=path)
        raise InputError(f"data={path!r}: expected a folder of images or a .npy file, and it is neither.")
    if isinstance(data, tuple) and len(data) == 2:
        x, y = data
        return ArrayReader(x if _is_tensor(x) or isinstance(x, np.ndarray) else np.asarray(x),
                           y if y is None or _is_tensor(y) or isinstance(y, np.ndarray) else np.asarray(y))
    if isinstance(data, np.ndarray) or _is_tensor(data):
        return ArrayReader(data)
    plan = backends.data_plan(data)
    if plan is not None:
        if plan.kind == "map":
            return MapDatasetReader(plan)
        return StreamReader(plan.iterate, plan.name, plan.length, plan.batched, plan.info)
    if hasattr(data, "__array__"):
        return ArrayReader(np.asarray(data))
    raise InputError(
        f"data is a {type(data).__name__}; expected a NumPy array, a pair (x, labels), a .npy file, a "
        "folder of images, a torch Dataset or DataLoader, or a tf.data.Dataset."
    )
