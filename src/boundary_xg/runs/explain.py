"""``explain_dataset``: every method (and metric) over a whole dataset, shard by shard.

The loop reads one shard (``batch_size`` examples), runs the boundary search
once for it when any boundary method is asked for (BSM, BIG, BSG and BDT then
share its points), runs each method through :func:`boundary_xg.attribute`,
evaluates the metrics, and writes the shard's files atomically before reading
the next one, so memory is bounded by one shard and a killed run loses at most
the shard it was working on.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import sys
import time
import warnings
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import folder as fs
from . import metrics_adapter
from .curves import record_curves
from ._lib import (
    backends,
    AlreadyMisclassifiedWarning, BoundaryNotFoundWarning, InputError, MethodError, attribute,
    find_boundary, method_info, package_version, predicted_labels,
)
from .distributed import Processes
from .readers import Reader, Shard, make_reader, to_numpy

log = logging.getLogger("boundary_xg.runs")

#: options of the boundary variants that the run sets itself (one search per shard)
_RUN_SEARCH_OPTIONS = ("boundary_points", "attacks", "bounds", "return_dis", "progress")


def shard_seed(seed: int, k: int) -> int:
    """The seed of shard ``k``: the same on every rank and every resume, different per shard."""
    return int(np.random.SeedSequence([int(seed), int(k)]).generate_state(1)[0] % (2 ** 31))


def _methods(methods: Any, options: Optional[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """``{short name: options}`` from a list of names or a dict of per-method options."""
    if isinstance(methods, str):
        methods = [m.strip() for m in methods.split(",") if m.strip()]
    items = list(methods.items()) if isinstance(methods, Mapping) else [(m, {}) for m in methods]
    if not items:
        raise InputError("methods is empty; name at least one method, e.g. methods=['IG'].")
    shared = dict(options or {})
    out: Dict[str, Dict[str, Any]] = {}
    used = set()
    for name, opts in items:
        info = method_info(name)
        short = info["short"]
        if short in out:
            raise InputError(f"methods names {short} twice.")
        allowed = set(info["defaults"]) | {"batch_size", "model_mode"}
        merged = {k: v for k, v in shared.items() if k in allowed}
        used |= set(merged)
        merged.update(dict(opts or {}))
        bad = [k for k in merged if k in _RUN_SEARCH_OPTIONS or k in ("return_gap", "backend")]
        if bad:
            raise InputError(
                f"{short}: option {bad[0]!r} is set by the run (one boundary search per shard, shared by "
                "the boundary methods; gaps are always recorded); pass attacks=/bounds=/boundary= to "
                "explain_dataset instead."
            )
        from ._lib import BA

        BA(short, **merged)  # checks every option now, before any work
        out[short] = merged
    unused = sorted(set(shared) - used)
    if unused:
        raise MethodError(f"options {unused} are taken by none of the methods {list(out)}.")
    return out


def _resolved(methods: Dict[str, Dict[str, Any]]) -> Dict[str, Dict[str, Any]]:
    """Every option of every method, defaults included (the run's own search options left out)."""
    out = {}
    for m, opts in methods.items():
        full = {k: v for k, v in method_info(m)["defaults"].items() if k not in _RUN_SEARCH_OPTIONS}
        full.update(opts)
        out[m] = full
    return out


def _metrics(metrics: Any, metric_options: Optional[Mapping[str, Any]]) -> Dict[str, Dict[str, Any]]:
    if metrics is None:
        return {}
    if isinstance(metrics, str):
        metrics = [m.strip() for m in metrics.split(",") if m.strip()]
    names = list(metrics)
    out = {}
    for name in names:
        metrics_adapter.resolve(name)  # unavailable / unknown: a clear error now
        out[str(name).lower()] = dict((metric_options or {}).get(name, {}))
    return out


def _model_fingerprint(model: Any) -> Dict[str, Any]:
    """The model's class, framework and a SHA-256 of its weights (names and values)."""
    sha = hashlib.sha256()
    root = (type(model).__module__ or "").split(".")[0]
    framework = backends.framework_of(model)
    if framework is not None:
        for k, v in backends.get_backend(framework).named_weights(model):
            sha.update(k.encode())
            sha.update(np.ascontiguousarray(to_numpy(v)).tobytes())
    return {"class": f"{root}.{type(model).__name__}", "framework": framework, "weights_sha256": sha.hexdigest()}


def _versions(framework: str) -> Dict[str, str]:
    """The versions that made the numbers: the package, NumPy, Python and the model's framework."""
    v = {"boundary_xg": package_version(), "numpy": np.__version__,
         "python": ".".join(map(str, sys.version_info[:3]))}
    roots = backends.identity(framework).roots if framework in backends.names() else ()
    for name in roots:
        mod = sys.modules.get(name)
        if mod is not None:
            v[name] = str(getattr(mod, "__version__", "?"))
    return v


class _Boundary:
    """Boundary points given by the user: a ``find_boundary`` result, an array, or an earlier run."""

    def __init__(self, given: Any):
        self.distances = self.found = None
        if isinstance(given, (str, os.PathLike)):
            from .load import load_run

            run = load_run(os.fspath(given))
            self.points = run.boundary_points()
            self.describe = {"run": os.path.abspath(os.fspath(given))}
        elif hasattr(given, "points") and hasattr(given, "distances"):
            self.points = to_numpy(given.points)
            self.distances = to_numpy(given.distances).astype(np.float64)
            self.found = to_numpy(given.found).astype(bool)
            self.describe = {"find_boundary_result": True}
        else:
            self.points = to_numpy(given)
            self.describe = {"array": True}
        self.describe["sha256"] = hashlib.sha256(np.ascontiguousarray(
            np.asarray(self.points[: min(len(self.points), 64)])).tobytes()).hexdigest()

    def rows(self, start: int, stop: int, keep: np.ndarray, x: np.ndarray):
        if stop > len(self.points):
            raise InputError(f"boundary holds {len(self.points)} points but the data has more examples "
                             f"(at least {stop}); pass one point per example.")
        pts = np.asarray(self.points[start:stop], dtype=np.float32)[keep]
        if pts.shape != x.shape:
            raise InputError(f"boundary points of shape {pts.shape[1:]} do not match the examples' "
                             f"shape {x.shape[1:]}.")
        if self.distances is not None:
            d = self.distances[start:stop][keep]
            f = self.found[start:stop][keep]
        else:
            d = np.sqrt(((pts.astype(np.float64) - x) ** 2).reshape(len(x), -1).sum(axis=1))
            f = d > 0
        return pts, d, f


def _float_list(a: np.ndarray) -> List[Optional[float]]:
    return [float(v) for v in np.asarray(a, dtype=np.float64)]


class _ShardWork:
    """Everything that explains one shard and writes its files."""

    def __init__(self, model: Any, out: str, methods: Dict[str, Dict[str, Any]],
                 metrics: Dict[str, Dict[str, Any]], seed: int, attacks: Any, bounds: Any,
                 given: Optional[_Boundary], durable: bool = False):
        self.model, self.out, self.methods, self.metrics = model, out, methods, metrics
        self.durable = durable
        self.seed, self.attacks, self.bounds, self.given = seed, attacks, bounds, given
        self.info = {m: method_info(m) for m in methods}
        self.boundary = any(i["boundary"] for i in self.info.values())
        self.metric_funcs = {name: metrics_adapter.resolve(name) for name in metrics}

    def run(self, sh: Shard) -> None:
        n = len(sh.x)
        keep = np.ones(n, bool)
        keep[list(sh.skipped)] = False
        x = sh.x[keep]
        rows: Dict[str, Any] = {"index": list(range(sh.start, sh.start + n))}
        if sh.names is not None:
            rows["name"] = list(sh.names)
        seed_k = shard_seed(self.seed, sh.index)
        pred_all = np.full(n, -1, np.int64)
        if len(x):
            try:
                pred_all[keep] = predicted_labels(self.model, x)
            except Exception as err:  # the framework's message, with what the data gave
                first = (str(err).strip().splitlines() or [type(err).__name__])[0]
                raise InputError(f"the data's examples of shape {x.shape[1:]} do not fit the model "
                                 f"({type(err).__name__}: {first}); a run passes examples as the data "
                                 "gives them, in the model's layout.") from err
        label_all = sh.labels.copy() if sh.labels is not None else pred_all.copy()
        y = label_all[keep]
        rows["label"] = label_all.tolist()
        rows["prediction"] = pred_all.tolist()
        if sh.skipped or sh.names is not None:
            rows["error"] = [sh.skipped.get(i, "") for i in range(n)]
        points = None
        if self.boundary:
            dist_all, found_all = np.full(n, np.nan), np.zeros(n, bool)
            points_all = np.full(sh.x.shape, np.nan, np.float32)
            if len(x):
                if self.given is not None:
                    points, d, f = self.given.rows(sh.start, sh.start + n, keep, x)
                else:
                    with warnings.catch_warnings():
                        # counted in the table (found flag, distance 0), not warned per shard
                        warnings.simplefilter("ignore", BoundaryNotFoundWarning)
                        warnings.simplefilter("ignore", AlreadyMisclassifiedWarning)
                        res = find_boundary(self.model, x, y, attacks=self.attacks, bounds=self.bounds,
                                            seed=seed_k, progress=False)
                    points = np.asarray(res.points, dtype=np.float32)
                    d, f = np.asarray(res.distances, np.float64), np.asarray(res.found, bool)
                points_all[keep], dist_all[keep], found_all[keep] = points, d, f
            rows["boundary_distance"] = _float_list(dist_all)
            rows["boundary_found"] = found_all.tolist()
        arrays: Dict[str, np.ndarray] = {}
        curve_entries: Dict[str, Dict[str, Dict[str, Any]]] = {}  # {metric: {method: sums of the curves}}
        for m, opts in self.methods.items():
            info = self.info[m]
            o = dict(opts)
            if "seed" in info["defaults"] and not info["boundary"]:
                o["seed"] = shard_seed(o.get("seed", self.seed), sh.index)
            if info["boundary"]:
                o["boundary_points"] = points
            full = np.full(sh.x.shape, np.nan, np.float32)
            gap_all = np.full(n, np.nan)
            if len(x):
                if info["gap"]:
                    a, gap = attribute(self.model, x, y, method=m, return_gap=True, **o)
                    gap_all[keep] = np.asarray(gap, np.float64).reshape(-1)
                else:
                    a = attribute(self.model, x, y, method=m, **o)
                full[keep] = np.asarray(a, np.float32)
            arrays[m] = full
            if info["gap"]:
                rows[f"gap_{m}"] = _float_list(gap_all)
            for name, mopts in self.metrics.items():
                vals = np.full(n, np.nan)
                if len(x):
                    vals[keep], entry = metrics_adapter.evaluate(self.metric_funcs[name], name, self.model, x, y,
                                                                 full[keep], mopts)
                    if entry is not None:
                        curve_entries.setdefault(name, {})[m] = entry
                rows[f"{name}_{m}"] = _float_list(vals)
        for m, a in arrays.items():
            fs.save_array(os.path.join(fs.method_dir(self.out, m), fs.shard_name(sh.index, "npy")), a,
                          self.durable)
        if self.boundary:
            fs.save_array(os.path.join(fs.points_dir(self.out), fs.shard_name(sh.index, "npy")), points_all,
                          self.durable)
        record = {"shard": sh.index, "start": sh.start, "n": n, "shape": list(sh.x.shape[1:]), "rows": rows}
        if curve_entries:  # in the record, so the curves are complete exactly when the shard is
            record["curves"] = record_curves(curve_entries)
        # last: its presence marks the shard complete
        fs.save_json(os.path.join(fs.examples_dir(self.out), fs.shard_name(sh.index, "json")), record,
                     self.durable)


class _Progress:
    """A tqdm bar (images/s, ETA) on a terminal; one log line per shard otherwise."""

    def __init__(self, progress: Optional[bool], total: Optional[int], rank: int, world: int):
        self.bar = None
        self.prefix = f"rank {rank}/{world}: " if world > 1 else ""
        if progress is not False and (progress or sys.stderr.isatty()):
            try:
                from tqdm.auto import tqdm

                self.bar = tqdm(total=total, unit="img", desc=f"{self.prefix}explaining", dynamic_ncols=True)
            except ImportError:  # tqdm is optional
                self.bar = None
        self.t0 = time.perf_counter()
        self.done = 0

    def shard(self, sh: Shard, seconds: float, total_shards: Optional[int]) -> None:
        n = len(sh.x)
        self.done += n
        if self.bar is not None:
            self.bar.update(n)
            return
        of = f"/{total_shards}" if total_shards else ""
        rate = n / seconds if seconds > 0 else float("inf")
        skipped = f", {len(sh.skipped)} skipped" if sh.skipped else ""
        log.info("%sshard %d%s (examples %d-%d) done in %.2f s, %.1f img/s%s", self.prefix, sh.index + 1,
                 of, sh.start, sh.start + n - 1, seconds, rate, skipped)

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def explain_dataset(
    model: Any,
    data: Any,
    methods: Union[Sequence[str], Mapping[str, Mapping[str, Any]], str] = ("IG",),
    metrics: Optional[Union[Sequence[str], str]] = None,
    out: str = "run",
    *,
    batch_size: int = 64,
    options: Optional[Mapping[str, Any]] = None,
    metric_options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    attacks: Any = None,
    bounds: Any = None,
    boundary: Any = None,
    seed: int = 0,
    resume: bool = False,
    overwrite: bool = False,
    progress: Optional[bool] = None,
    on_error: str = "skip",
    size: Optional[Tuple[int, int]] = None,
    grayscale: bool = False,
    mean: Optional[Sequence[float]] = None,
    std: Optional[Sequence[float]] = None,
    report: bool = True,
    durable: bool = False,
    timeout_s: float = 24 * 3600,
):
    """Explain (and evaluate) a whole dataset, writing a resumable run folder as it goes.

    Streams ``data`` one shard of ``batch_size`` examples at a time (memory is
    bounded by a shard, not the dataset), runs every method on it (the boundary
    search once per shard, shared by BSM/BIG/BSG/BDT), the metrics, and writes
    the shard's files atomically. Under ``torchrun --nproc-per-node N`` every
    rank explains the shards ``k`` with ``k % N == rank`` on its own device
    (move the model there first) and rank 0 writes the table and the report
    once all ranks are done. See ``docs/datasets.md`` for the folder's layout.

    Args:
        model: a ``torch.nn.Module`` or a Keras 3 model (inputs in its own layout).
        data: a NumPy array ``(N, ...)``, a pair ``(x, labels)``, a ``.npy`` file
            (memory-mapped), a torch ``Dataset`` (items ``x`` or ``(x, label)``) or
            ``DataLoader`` (not shuffled), a ``tf.data.Dataset`` (batched or not), or
            a folder of images (files: no labels; class subfolders: labels, as
            torchvision's ``ImageFolder``) read with ``size``/``grayscale``/``mean``/
            ``std`` like ``boundary-xg explain``. Without labels the predictions are explained.
        methods: method names (``["IG", "BIG"]``) or ``{"IG": {"steps": 64}, ...}``.
        metrics: metric names of :mod:`boundary_xg.metrics` (e.g. ``["diffid"]``),
            each called as ``metric(model, x, labels, attributions, **metric_options[name])``
            per shard; the table keeps their per-example values and, for curve
            metrics (insertion, deletion, ...), each shard's record keeps the sum of
            the curves, so ``run.curves(name)`` and the report give the mean curves.
        out: the run folder.
        batch_size: examples per shard (one ``.npy`` file per method), which is
            also the batch each method is called on (default 64). Model inputs
            per pass are a method option: ``options={"batch_size": 512}``.
        options: options given to every method that takes them (``steps``, ...).
        metric_options: ``{metric name: options}``.
        attacks, bounds: the boundary search's settings (see ``find_boundary``).
        boundary: saved boundary points to use instead of searching: a
            ``find_boundary`` result or an array over the whole dataset, or the
            folder of an earlier run that searched.
        seed: the run's seed (default 0); shard ``k`` uses a seed derived from
            ``(seed, k)``, so results do not depend on the number of processes.
        resume: continue a run of the same arguments in ``out`` (complete shards are kept).
        overwrite: replace a run of other arguments in ``out``.
        progress: a tqdm bar (True), log lines per shard (False), or a bar only
            when stderr is a terminal (None, default).
        on_error: image folders: ``"skip"`` an unreadable image (logged with its
            path, its row in the table says why, its attributions are NaN) or
            ``"raise"``.
        report: write ``report.html`` (needs matplotlib for its figures).
        durable: ``fsync`` every file before renaming it into place, so complete
            shards also survive a power loss or an OS crash (about 10 ms per file);
            without it (default) files are still atomic against killed processes.
        timeout_s: how long ranks wait for each other (a process group started here).

    Returns:
        The finished run, as :func:`load_run` gives it.

    Raises:
        InputError: bad data, shapes, options or boundary points (the message
            names the shard or file); RunConflictError: ``out`` holds another run
            (or this one without ``resume``); RunFailedError: another rank failed.

    Example:
        >>> run = bxg.explain_dataset(model, (x, y), methods=["IG", "BIG"], out="runs/digits")
        >>> run.attributions("IG")[:10], run.table["boundary_distance"]
    """
    from .load import load_run

    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise InputError(f"batch_size={batch_size!r}: expected an integer >= 1 (examples per shard).")
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)):
        raise InputError(f"seed={seed!r}: expected an integer (a run is reproducible by construction).")
    meths = _methods(methods, options)
    mets = _metrics(metrics, metric_options)
    reader = make_reader(data, backends.framework_of(model), size=size, grayscale=grayscale, mean=mean, std=std,
                         on_error=on_error)
    if reader.length == 0:
        raise InputError("data has no examples.")
    given = _Boundary(boundary) if boundary is not None else None
    work = _ShardWork(model, out, meths, mets, int(seed), attacks, bounds, given, bool(durable))
    config = {
        "format": 1,
        "methods": fs.jsonable(meths),
        "options": fs.jsonable(_resolved(meths)),
        "metrics": fs.jsonable(mets),
        "data": fs.jsonable(reader.describe()),
        "model": _model_fingerprint(model),
        "batch_size": batch_size,
        "seed": int(seed),
        "search": ({"attacks": fs.jsonable(attacks), "bounds": fs.jsonable(bounds),
                    "given": None if given is None else given.describe} if work.boundary else None),
        "versions": _versions(backends.framework_of(model)),
    }
    procs = Processes()
    procs.start(timeout_s)
    try:
        return _run(procs, reader, work, config, out, batch_size, resume, overwrite, progress, report,
                    load_run)
    finally:
        procs.close()


def _run(procs: Processes, reader: Reader, work: _ShardWork, config: Dict[str, Any], out: str,
         batch_size: int, resume: bool, overwrite: bool, progress: Optional[bool], report: bool, load_run):
    args = {k: config[k] for k in fs.ARGUMENT_KEYS}
    digest = hashlib.sha256(json.dumps(args, sort_keys=True, default=str).encode()).hexdigest()
    if len(set(procs.gather(digest))) > 1:
        raise InputError("the ranks were started with different arguments (methods, data, model or "
                         "options differ between processes); start every rank with the same command.")
    problem, failure = None, None
    if procs.rank == 0:
        try:
            fs.prepare_folder(out, config, resume, overwrite)
        except fs.RunConflictError as err:
            problem = str(err)
        except Exception as err:  # e.g. no permission: the other ranks must not wait for rank 0
            failure, problem = err, f"rank 0 could not prepare {out!r}: {type(err).__name__}: {err}"
    problem = procs.broadcast(problem)
    if failure is not None:
        raise failure
    if problem:
        raise (fs.RunFailedError if problem.startswith("rank 0 could not") else fs.RunConflictError)(problem)

    methods = list(work.methods)
    total_shards = None if reader.length is None else -(-reader.length // batch_size)

    def wanted(k: int) -> bool:
        return k % procs.world == procs.rank and not fs.shard_complete(out, k, methods, work.boundary)

    mine = None
    if total_shards is not None:
        mine = sum(min(batch_size, reader.length - k * batch_size) for k in range(total_shards) if wanted(k))
    bar = _Progress(progress, mine, procs.rank, procs.world)
    error: Optional[BaseException] = None
    try:
        for sh in reader.shards(batch_size, wanted):
            stopped = {r: m for r, m in fs.failures(out).items() if r != procs.rank}
            if stopped:
                r, m = sorted(stopped.items())[0]
                raise fs.RunFailedError(f"rank {r} failed, so rank {procs.rank} stopped: {m}")
            t0 = time.perf_counter()
            try:
                work.run(sh)
            except InputError as err:
                raise type(err)(f"shard {sh.index} (examples {sh.start}-{sh.start + len(sh.x) - 1}): {err}") \
                    from err
            bar.shard(sh, time.perf_counter() - t0, total_shards)
    except BaseException as err:  # every failure, Ctrl-C included: the other ranks must not wait forever
        error = err
        if procs.distributed and not isinstance(err, fs.RunFailedError):
            fs.record_failure(out, procs.rank, f"{type(err).__name__}: {err}")
    finally:
        bar.close()
    statuses = procs.gather((None if error is None else f"{type(error).__name__}: {error}", reader.length))
    if error is not None:
        raise error
    failed = [(r, s[0]) for r, s in enumerate(statuses) if s[0]]
    if failed:
        r, m = failed[0]
        raise fs.RunFailedError(f"rank {r} failed: {m}")
    length = max((s[1] for s in statuses if s[1] is not None), default=reader.length)
    if not length:
        raise InputError("data has no examples (the dataset yielded nothing).")
    if procs.rank == 0:
        from .table import finish

        finish(out, reader, length, batch_size, methods, work.boundary, report)
    procs.gather(None)  # every rank returns once the table is written
    return load_run(out)
