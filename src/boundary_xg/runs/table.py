"""The per-example table of a run: gathered from the shards' records, written as Parquet or CSV."""

from __future__ import annotations

import csv
import importlib.util
import io
import os
from typing import Any, Dict, List, Optional

import numpy as np

from . import folder as fs
from ._lib import InputError


def gather_rows(out: str, length: int, batch_size: int, curves: Any = None) -> Dict[str, List[Any]]:
    """Every example's numbers, in dataset order, from ``examples/*.json``.

    ``curves``: a :class:`~.curves.CurveSums` that also adds up the records' curves
    (read in the same pass).

    Raises:
        fs.RunFailedError: a shard is missing (a rank did not finish).
    """
    total = -(-length // batch_size) if length else 0
    cols: Dict[str, List[Any]] = {}
    shape = None
    for k in range(total):
        path = os.path.join(fs.examples_dir(out), fs.shard_name(k, "json"))
        if not os.path.exists(path):
            raise fs.RunFailedError(f"shard {k} of {out!r} is missing after every rank finished; run again "
                                    "with resume=True (--resume) to compute it.")
        rec = fs.load_json(path)
        if shape is None:
            shape = rec["shape"]
        elif rec["shape"] != shape:
            raise InputError(f"shard {k} holds examples of shape {tuple(rec['shape'])} but shard 0 holds "
                             f"{tuple(shape)}; every example of the data must have the same shape.")
        for name, vals in rec["rows"].items():
            cols.setdefault(name, []).extend(vals)
        if curves is not None:
            curves.add(rec)
    return cols


def _cell(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, float):
        return repr(v)  # the shortest text that reads back to the same float
    return str(v)


def write_table(out: str, cols: Dict[str, List[Any]]) -> str:
    """``table.parquet`` when pyarrow is installed, else ``table.csv``; return the file's path."""
    if importlib.util.find_spec("pyarrow") is not None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        path = os.path.join(out, "table.parquet")
        table = pa.table({k: v for k, v in cols.items()})
        fs.atomic_write(path, lambda fh: pq.write_table(table, fh))
        return path
    path = os.path.join(out, "table.csv")
    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    names = list(cols)
    w.writerow(names)
    for row in zip(*(cols[n] for n in names)):
        w.writerow([_cell(v) for v in row])
    fs.atomic_write(path, lambda fh: fh.write(buf.getvalue()), binary=False)
    return path


def read_table(out: str) -> Dict[str, np.ndarray]:
    """The table as ``{column: array}`` (numbers as float64 / int64 / bool, the rest as str)."""
    pq_path, csv_path = os.path.join(out, "table.parquet"), os.path.join(out, "table.csv")
    if os.path.exists(pq_path):
        import pyarrow.parquet as pq

        t = pq.read_table(pq_path)
        return {name: t.column(name).to_numpy() for name in t.column_names}
    if not os.path.exists(csv_path):
        raise InputError(f"{out!r} has no table.csv or table.parquet; the run has not finished.")
    with open(csv_path, encoding="utf-8", newline="") as fh:
        rows = list(csv.reader(fh))
    names, body = rows[0], rows[1:]
    cols: Dict[str, np.ndarray] = {}
    for j, name in enumerate(names):
        vals = [r[j] for r in body]
        cols[name] = _parse(vals)
    return cols


def _parse(vals: List[str]) -> np.ndarray:
    if vals and all(v in ("true", "false") for v in vals):
        return np.asarray([v == "true" for v in vals])
    try:
        ints = [int(v) for v in vals]
        return np.asarray(ints, dtype=np.int64)
    except ValueError:
        pass
    try:
        return np.asarray([float(v) for v in vals], dtype=np.float64)
    except ValueError:
        return np.asarray(vals, dtype=object)


def finish(out: str, reader: Any, length: Optional[int], batch_size: int, methods: List[str],
           boundary: bool, report: bool) -> None:
    """Rank 0, once every shard is written: the table, then the report."""
    from .curves import CurveSums

    sums = CurveSums()
    cols = gather_rows(out, length or 0, batch_size, sums)
    path = write_table(out, cols)
    for name in ("table.csv", "table.parquet"):  # one table: not a stale one of the other format
        other = os.path.join(out, name)
        if other != path and os.path.exists(other):
            os.remove(other)
    if report:
        from .report import write_report

        write_report(out, reader, batch_size, methods, cols, sums)
