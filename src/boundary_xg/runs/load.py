"""``load_run(DIR)``: a finished (or partial) run folder as Python objects."""

from __future__ import annotations

import os
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from . import folder as fs
from ._lib import InputError


class ShardedArray:
    """The shards of one method as one read-only array in dataset order.

    Each shard is a memory-mapped ``.npy`` file; indexing (``a[i]``, ``a[10:20]``,
    ``a[[3, 7]]``, ``a[:, 0]``) reads only the shards it touches, and
    ``np.asarray(a)`` loads everything. ``len``, ``shape``, ``dtype``, ``ndim``
    behave as for a NumPy array.
    """

    def __init__(self, files: Sequence[str]):
        if not files:
            raise InputError("no shards to read.")
        self.files = list(files)
        self.parts = [np.load(f, mmap_mode="r", allow_pickle=False) for f in self.files]
        self.starts = np.cumsum([0] + [len(p) for p in self.parts])
        self.shape = (int(self.starts[-1]),) + tuple(self.parts[0].shape[1:])
        self.dtype = self.parts[0].dtype
        self.ndim = len(self.shape)

    def __len__(self) -> int:
        return self.shape[0]

    def __repr__(self) -> str:
        return f"ShardedArray(shape={self.shape}, dtype={self.dtype}, shards={len(self.parts)})"

    def __array__(self, dtype: Any = None, copy: Any = None) -> np.ndarray:
        out = np.concatenate(self.parts) if len(self.parts) > 1 else np.array(self.parts[0])
        return out if dtype is None else out.astype(dtype)

    def _rows(self, idx: np.ndarray) -> np.ndarray:
        if idx.size and (idx.min() < -len(self) or idx.max() >= len(self)):
            raise IndexError(f"index out of range for {len(self)} examples")
        idx = np.where(idx < 0, idx + len(self), idx)
        which = np.searchsorted(self.starts, idx, side="right") - 1
        out = np.empty((idx.size,) + self.shape[1:], self.dtype)
        for s in np.unique(which):
            sel = which == s
            out[sel] = self.parts[s][idx[sel] - self.starts[s]]
        return out

    def __getitem__(self, key: Any) -> Any:
        rest: tuple = ()
        if isinstance(key, tuple):
            key, rest = key[0], key[1:]
        if isinstance(key, (int, np.integer)):
            out = self._rows(np.asarray([key]))[0]
        elif isinstance(key, slice):
            out = self._rows(np.arange(len(self))[key])
        else:
            arr = np.asarray(key)
            if arr.dtype == bool:
                arr = np.nonzero(arr)[0]
            out = self._rows(arr.astype(np.int64))
        return out[(slice(None),) + rest] if rest and not isinstance(key, (int, np.integer)) else (
            out[rest] if rest else out)

    def __iter__(self):
        for p in self.parts:
            yield from p


class Run:
    """A run folder written by :func:`boundary_xg.explain_dataset`.

    Attributes:
        path: the folder.
        config: the contents of ``run.json`` (arguments, versions, seed).
    """

    def __init__(self, path: str):
        self.path = os.path.abspath(path)
        run_file = os.path.join(self.path, fs.RUN_FILE)
        if not os.path.exists(run_file):
            raise InputError(f"{path!r} holds no run (no {fs.RUN_FILE}); pass the out= folder of explain_dataset.")
        self.config: Dict[str, Any] = fs.load_json(run_file)

    def __repr__(self) -> str:
        return f"Run({self.path!r}, methods={self.methods}, shards={self.complete_shards()})"

    @property
    def methods(self) -> List[str]:
        """The methods' short names, in the order they were given."""
        return list(self.config.get("methods", {}))

    def complete_shards(self) -> int:
        """How many shards are complete, from the start without a gap."""
        k = 0
        while fs.shard_complete(self.path, k, self.methods, self._boundary()):
            k += 1
        return k

    def _boundary(self) -> bool:
        return self.config.get("search") is not None

    def _shards(self, folder: str) -> List[str]:
        files: List[str] = []
        k = 0
        while True:
            p = os.path.join(folder, fs.shard_name(k, "npy"))
            if not os.path.exists(p) or not os.path.exists(
                    os.path.join(fs.examples_dir(self.path), fs.shard_name(k, "json"))):
                break
            files.append(p)
            k += 1
        return files

    def attributions(self, method: str) -> Any:
        """The attributions of ``method`` (its short or readable name) over the dataset, ``(N, ...)``.

        Returns a read-only ``np.memmap`` of one ``.npy`` file when :meth:`consolidate`
        has written it for every complete shard, else a :class:`ShardedArray` that
        presents the memory-mapped shards as one array (no copy, no extra disk).
        """
        name = self._method_name(method)
        files = self._shards(fs.method_dir(self.path, name))
        if not files:
            raise InputError(f"the run in {self.path!r} has no complete shard of {name} yet.")
        whole = self._consolidated(name)
        if os.path.exists(whole):
            arr = np.load(whole, mmap_mode="r", allow_pickle=False)
            if len(arr) == sum(len(np.load(f, mmap_mode="r")) for f in files):
                return arr
        return ShardedArray(files)

    def _consolidated(self, name: str) -> str:
        return os.path.join(fs.method_dir(self.path, name), "all.npy")

    def consolidate(self, methods: Optional[Sequence[str]] = None, chunk: int = 1024) -> List[str]:
        """Write each method's complete shards into one ``.npy`` file (``<method>/all.npy``).

        After this, :meth:`attributions` returns a plain ``np.memmap`` over that file.
        Copies ``chunk`` examples at a time (memory bounded by the chunk), writes a
        temporary file and renames it, so an interrupted call leaves no partial file.
        The shards stay (a resumed run extends them); this doubles the disk used by
        the attributions, which is why a run does not consolidate by itself.

        Args:
            methods: short or readable names; default every method of the run.
            chunk: examples copied per step (default 1024).

        Returns:
            The paths written.
        """
        written: List[str] = []
        for method in (self.methods if methods is None else methods):
            name = self._method_name(method)
            src = ShardedArray(self._shards(fs.method_dir(self.path, name)))
            target = self._consolidated(name)
            tmp = os.path.join(os.path.dirname(target), f".all.npy.tmp-{os.getpid()}")
            out = np.lib.format.open_memmap(tmp, mode="w+", dtype=src.dtype, shape=src.shape)
            for i in range(0, len(src), chunk):
                out[i:i + chunk] = src[i:i + chunk]
            out.flush()
            del out
            os.replace(tmp, target)
            written.append(target)
        return written

    def boundary_points(self) -> ShardedArray:
        """The boundary points the run's boundary methods shared, ``(N, ...)``."""
        files = self._shards(fs.points_dir(self.path))
        if not files:
            raise InputError(f"the run in {self.path!r} has no boundary points (it ran no boundary method).")
        return ShardedArray(files)

    def _method_name(self, method: str) -> str:
        if method in self.methods:
            return method
        low = {m.lower(): m for m in self.methods}
        if str(method).lower() in low:
            return low[str(method).lower()]
        try:
            from ._lib import method_info

            short = method_info(method)["short"]
        except Exception:
            short = None
        if short in self.methods:
            return short
        raise InputError(f"method {method!r} is not in this run; its methods are {self.methods}.")

    def _curve_sums(self) -> Any:
        from .curves import from_records, read_records

        return from_records(read_records(self.path))

    def curve_metrics(self) -> List[str]:
        """The metrics of the run whose curves were kept (insertion, deletion, DiffID, ...)."""
        return self._curve_sums().names()

    def curves(self, metric: str) -> Dict[str, Any]:
        """The mean curve of each method for the curve metric ``metric``, over the complete shards
        (from shard 0 up to the first one missing, as :meth:`attributions`).

        A run keeps, per shard and method, the sum of the examples' curves of every
        metric whose result has a ``.curve`` (``insertion``, ``deletion``, ``diffid``,
        the KPM family, ``sensitivity_n``); the mean is the sum over the shards
        divided by the number of examples (skipped images and NaN points left out).
        For insertion and deletion the area under the mean curve (trapezoid rule)
        equals the mean of the table's ``insertion_<METHOD>`` column.

        Args:
            metric: a metric name of the run (case-insensitive), e.g. ``"insertion"``.

        Returns:
            ``{method: (x, mean_y)}``: ``x`` ``(S,)`` the curve's abscissa (for
            insertion/deletion the fraction of pixels inserted/deleted, ``s / steps``),
            ``mean_y`` ``(S,)`` float64 the mean score (the label's probability by
            default) at each point.

        Raises:
            InputError: the run kept no curve of ``metric`` (not a curve metric, not
                in the run, or a folder written before runs kept curves).

        Example:
            >>> x, y = run.curves("insertion")["IG"]
        """
        sums = self._curve_sums()
        names = sums.names()
        key = {n.lower(): n for n in names}.get(str(metric).lower().replace("-", "_"))
        if key is None:
            asked = list(self.config.get("metrics") or {})
            why = ("it is not a curve metric, or the folder was written before runs kept curves"
                   if str(metric).lower() in asked else f"the run's metrics are {asked}")
            raise InputError(f"the run in {self.path!r} kept no curves of {metric!r} ({why}); curves are kept "
                             f"for {names or 'no metric'}.")
        return sums.means(key)

    @property
    def table(self) -> Any:
        """The per-example table: a pandas DataFrame when pandas is installed, else ``{column: array}``."""
        from .table import read_table

        cols = read_table(self.path)
        try:
            import pandas as pd
        except ImportError:
            return cols
        return pd.DataFrame(cols)


def load_run(path: str) -> Run:
    """Open the run folder ``path`` written by :func:`boundary_xg.explain_dataset`.

    Returns:
        A :class:`Run`: ``.attributions("IG")`` (one array in dataset order over
        memory-mapped shards), ``.table`` (per-example numbers), ``.config``
        (``run.json``), ``.boundary_points()``, ``.curves("insertion")`` (mean
        curve per method of a curve metric).

    Raises:
        InputError: ``path`` holds no run.
    """
    return Run(path)
