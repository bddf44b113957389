"""The run folder: its layout, atomic writes, and the check that a folder holds *this* run.

Layout (every file opens without boundary_xg)::

    RUN/run.json                       the arguments (every method option, defaults included),
                                       the versions, the seed
    RUN/attributions/<METHOD>/00000.npy  one shard: examples [k*S, (k+1)*S), float32, model layout
    RUN/boundary/points/00000.npy      the boundary points shared by BSM/BIG/BSG/BDT (when any ran)
    RUN/examples/00000.json            the shard's per-example numbers (and, for curve metrics,
                                       each method's sum of curves); written last, so its
                                       presence marks the shard complete
    RUN/table.csv | table.parquet      every example's numbers, in dataset order (rank 0, at the end)
    RUN/report.html                    metric table, metric curves, distances, example heatmaps
    RUN/failed/rank-R.txt              why a rank stopped (removed when a run starts)

Every file is written to a temporary name in its folder and renamed into place
(``os.replace`` is atomic on POSIX and Windows), so a killed process leaves
either the complete file or none; temporaries of a killed process are removed
when the run starts again.
"""

from __future__ import annotations

import json
import math
import os
import shutil
from typing import Any, Dict, Iterable, List, Optional

import numpy as np

from ._lib import InputError

RUN_FILE = "run.json"
SHARD_DIGITS = 5
#: the parts of ``run.json`` that must match for a run to continue in a folder
ARGUMENT_KEYS = ("methods", "options", "metrics", "data", "model", "batch_size", "seed", "search", "format")


class RunConflictError(InputError):
    """The output folder holds a different run (other arguments), or a run that was not asked to resume."""


class RunFailedError(RuntimeError):
    """A rank of a multi-process run failed; the message names it and its error."""


def shard_name(k: int, ext: str) -> str:
    return f"{k:0{SHARD_DIGITS}d}.{ext}"


def method_dir(out: str, method: str) -> str:
    return os.path.join(out, "attributions", method)


def points_dir(out: str) -> str:
    return os.path.join(out, "boundary", "points")


def examples_dir(out: str) -> str:
    return os.path.join(out, "examples")


def _fsync_dir(path: str) -> None:
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:  # e.g. Windows: directories cannot be opened
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def atomic_write(path: str, write: Any, binary: bool = True, durable: bool = False) -> None:
    """Write ``path`` through ``write(fileobj)`` into a temporary file, then rename it into place.

    The rename alone makes the write safe against a killed process (SIGKILL, out of
    memory): the file is complete or absent. ``durable`` also flushes the file and
    its folder to the disk (``fsync``) first, which survives a power loss or an
    operating-system crash at about 10 ms per file on a common disk.
    """
    folder = os.path.dirname(path)
    os.makedirs(folder, exist_ok=True)
    tmp = os.path.join(folder, f".{os.path.basename(path)}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb" if binary else "w", **({} if binary else {"encoding": "utf-8"})) as fh:
            write(fh)
            if durable:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(tmp, path)
    except BaseException:
        if os.path.exists(tmp):
            os.remove(tmp)
        raise
    if durable:
        _fsync_dir(folder)


def save_array(path: str, arr: np.ndarray, durable: bool = False) -> None:
    """``np.save`` atomically (no pickle: plain ``.npy``, memory-mappable)."""
    atomic_write(path, lambda fh: np.save(fh, np.ascontiguousarray(arr), allow_pickle=False), durable=durable)


def save_json(path: str, obj: Any, durable: bool = False) -> None:
    atomic_write(path, lambda fh: json.dump(obj, fh, indent=1, sort_keys=False, allow_nan=True), binary=False,
                 durable=durable)


def load_json(path: str) -> Any:
    with open(path, encoding="utf-8") as fh:
        return json.load(fh)


def jsonable(v: Any) -> Any:
    """Options as plain JSON: dataclasses (PGD, CW) as ``{"type", **fields}``, arrays as lists."""
    import dataclasses

    if dataclasses.is_dataclass(v) and not isinstance(v, type):
        return {"type": type(v).__name__, **{f.name: jsonable(getattr(v, f.name)) for f in dataclasses.fields(v)}}
    if isinstance(v, dict):
        return {str(k): jsonable(val) for k, val in v.items()}
    if isinstance(v, (list, tuple)):
        return [jsonable(a) for a in v]
    if isinstance(v, np.ndarray) or hasattr(v, "shape") and hasattr(v, "dtype"):
        from .readers import to_numpy

        return jsonable(to_numpy(v).tolist())
    if isinstance(v, (np.integer,)):
        return int(v)
    if isinstance(v, (np.floating, float)):
        f = float(v)
        return f if math.isfinite(f) else repr(f)
    if v is None or isinstance(v, (bool, int, str)):
        return v
    return repr(v)


def clean_temporaries(out: str) -> None:
    """Remove the temporary files a killed process left behind."""
    for dirpath, _, names in os.walk(out):
        for n in names:
            if n.startswith(".") and ".tmp-" in n:
                try:
                    os.remove(os.path.join(dirpath, n))
                except OSError:
                    pass


def shard_complete(out: str, k: int, methods: Iterable[str], boundary: bool) -> bool:
    """Whether shard ``k`` is complete: its examples file (written last) and every array exist."""
    if not os.path.exists(os.path.join(examples_dir(out), shard_name(k, "json"))):
        return False
    need = [os.path.join(method_dir(out, m), shard_name(k, "npy")) for m in methods]
    if boundary:
        need.append(os.path.join(points_dir(out), shard_name(k, "npy")))
    return all(os.path.exists(p) for p in need)


def _differences(old: Dict[str, Any], new: Dict[str, Any]) -> List[str]:
    keys = [k for k in ARGUMENT_KEYS if old.get(k) != new.get(k)]
    return keys


def prepare_folder(out: str, config: Dict[str, Any], resume: bool, overwrite: bool) -> None:
    """Make ``out`` ready for the run ``config``: new, resumed, or overwritten.

    Raises:
        RunConflictError: ``out`` holds a run with other arguments (and not
            ``overwrite``), or the same run while ``resume`` is False.
    """
    path = os.path.join(out, RUN_FILE)
    if os.path.isdir(out) and os.path.exists(path):
        try:
            old = load_json(path)
        except (OSError, ValueError):
            old = {}
        diff = _differences(old, config)
        if overwrite:
            remove_run(out)
        elif diff:
            raise RunConflictError(
                f"out={out!r} holds a run with other arguments ({', '.join(diff)} differ); pass "
                "overwrite=True (--overwrite) to replace it, or choose another folder."
            )
        elif not resume:
            raise RunConflictError(
                f"out={out!r} already holds this run; pass resume=True (--resume) to continue it "
                "(complete shards are kept) or overwrite=True (--overwrite) to start again."
            )
    elif os.path.isdir(out) and os.listdir(out) and not overwrite:
        known = {"attributions", "examples", "boundary", "failed"}
        if not set(os.listdir(out)) <= known:
            raise RunConflictError(
                f"out={out!r} is a folder that holds other files and no run.json; choose an empty or "
                "new folder, or pass overwrite=True (--overwrite)."
            )
    os.makedirs(out, exist_ok=True)
    clean_temporaries(out)
    shutil.rmtree(os.path.join(out, "failed"), ignore_errors=True)
    save_json(path, config)


def remove_run(out: str) -> None:
    """Delete the files of a run (only those a run writes) from ``out``."""
    for d in ("attributions", "boundary", "examples", "failed"):
        shutil.rmtree(os.path.join(out, d), ignore_errors=True)
    for f in (RUN_FILE, "table.csv", "table.parquet", "report.html"):
        p = os.path.join(out, f)
        if os.path.exists(p):
            os.remove(p)


def record_failure(out: str, rank: int, message: str) -> None:
    """Leave ``failed/rank-R.txt`` so the other ranks stop after their current shard."""
    try:
        atomic_write(os.path.join(out, "failed", f"rank-{rank}.txt"), lambda fh: fh.write(message),
                     binary=False)
    except OSError:
        pass


def failures(out: str) -> Dict[int, str]:
    """``{rank: message}`` of the ranks that recorded a failure."""
    d = os.path.join(out, "failed")
    found: Dict[int, str] = {}
    if not os.path.isdir(d):
        return found
    for n in os.listdir(d):
        if n.startswith("rank-") and n.endswith(".txt"):
            try:
                with open(os.path.join(d, n), encoding="utf-8") as fh:
                    found[int(n[5:-4])] = fh.read().strip()
            except (OSError, ValueError):
                continue
    return found


def count_shards(out: str) -> Optional[int]:
    d = examples_dir(out)
    if not os.path.isdir(d):
        return 0
    return len([n for n in os.listdir(d) if n.endswith(".json") and not n.startswith(".")])
