"""The command line: ``boundary-xg`` (also ``python -m boundary_xg``).

Commands:

- ``demo [--out DIR] [--backend torch|tensorflow] [-n N]``: explain a few embedded
  test digits with every registered method; write ``grid.png``, ``index.html``
  and ``summary.json``; print a summary table.
- ``explain --model SPEC --images PATH... [--method BIG] [--layer NAME] [--labels ...]
  [--metrics diffid,insertion,deletion] [--out DIR]``: explain your own model (a
  ``.keras`` file, a TorchScript file or ``module:callable``) on PNG/JPEG files or a
  ``.npy`` batch; write ``attributions.npy``, ``heatmaps.png`` and ``index.html``
  (with ``--metrics``: the metric values, also in ``metrics.json`` and printed).
- ``evaluate --model SPEC --data DIR|FILE.npy --methods IG,BIG --out RUN [--resume]``:
  explain (and evaluate with ``--metrics``) a whole dataset into a resumable run
  folder (see ``docs/datasets.md``); works under ``torchrun -m boundary_xg evaluate``.
- ``backends``: which frameworks import, their versions and devices.

Errors print one line with the fix and exit with status 1 (2 for bad usage);
``--debug`` shows the traceback instead (and TensorFlow's start-up log, which is
otherwise silenced while the framework is imported).
"""

from __future__ import annotations

import argparse
import importlib.util
import json
import os
import sys
import warnings
from typing import List, Optional, Sequence

from .errors import first_line

EXIT_ERROR = 1

#: ``explain --help``'s description: what a method costs, so a long run is expected
EXPLAIN_TIME_GUIDE = (
    "Time: a method costs about its passes per image (forward+backward): SM, IxG, XG, GradCAM 1; "
    "DeepLIFT 2; IG --option steps (50); SG and EG --option num_samples (50); BSM/BIG/BSG/BDT "
    "the boundary search (at most ~100 passes) plus their base method's, so the default BIG "
    "about 150. Measured: resnet18 at 224 px, BIG on one image took 35 s of CPU time on one "
    "core (113 s wall on a loaded, shared 2-core machine); the 8x8 digits take milliseconds. "
    "On a terminal a progress bar shows the passes done and the time left."
)


def _size(text: str):
    parts = text.replace("x", ",").split(",")
    try:
        vals = [int(p) for p in parts if p.strip()]
    except ValueError:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected H or H,W (integers)") from None
    if len(vals) == 1:
        vals = vals * 2
    if len(vals) != 2 or min(vals) < 1:
        raise argparse.ArgumentTypeError(f"--size {text!r}: expected H or H,W (positive integers)")
    return tuple(vals)


def _option(text: str):
    key, sep, value = text.partition("=")
    if not sep or not key:
        raise argparse.ArgumentTypeError(f"--option {text!r}: expected NAME=VALUE, e.g. steps=64")
    try:
        parsed = json.loads(value)
    except ValueError:
        parsed = value  # a plain string, e.g. rule=riemann_left
    return key, parsed


def method_help() -> str:
    """``--method``'s help: every registered method's short name, from the registry."""
    from .api import method_names

    names = ", ".join(method_names())
    return f"method name: {names} (case-insensitive; readable names work too; default BIG)"


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of ``boundary-xg``."""
    p = argparse.ArgumentParser(
        prog="boundary-xg",
        description="Boundary attributions and X-Gradient for PyTorch and TensorFlow/Keras models.",
    )
    p.add_argument("--debug", action="store_true", help="show tracebacks on errors")
    sub = p.add_subparsers(dest="command", metavar="COMMAND")

    d = sub.add_parser("demo", help="explain embedded test digits with every method; write a page")
    d.add_argument("--out", default="demo_out", help="output folder (default: demo_out)")
    d.add_argument("--backend", default=None, choices=["torch", "tensorflow"],
                   help="framework to run on (default: torch when installed, else tensorflow)")
    d.add_argument("-n", "--examples", type=int, default=6, help="number of digits (default 6)")
    d.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    e = sub.add_parser("explain", help="explain your own model on your images",
                       description=EXPLAIN_TIME_GUIDE)
    e.add_argument("--model", required=True,
                   help="a .keras file, a TorchScript file, or module:callable returning a model")
    e.add_argument("--weights", help="with module:callable: a torch state dict or Keras weights file")
    e.add_argument("--images", nargs="+", required=True, metavar="PATH",
                   help="PNG/JPEG files, or one .npy batch in the model's layout")
    e.add_argument("--method", default="BIG", help=method_help())
    e.add_argument("--layer", metavar="NAME",
                   help="the layer a layer method (GradCAM) explains: a dotted module name (PyTorch, "
                        "e.g. layer4) or a layer name or index (Keras); default: the output of the "
                        "last block with spatial extent")
    e.add_argument("--labels", nargs="+", type=int, help="classes to explain (default: predicted)")
    e.add_argument("--out", default="explain_out", help="output folder (default: explain_out)")
    e.add_argument("--mean", nargs="+", type=float, help="per-channel mean subtracted from the images")
    e.add_argument("--std", nargs="+", type=float, help="per-channel std the images are divided by")
    e.add_argument("--size", type=_size, help="resize image files to H,W (or H for square)")
    e.add_argument("--grayscale", action="store_true", help="read image files as one channel")
    e.add_argument("--option", action="append", type=_option, default=[], metavar="NAME=VALUE",
                   help="a method option, e.g. --option steps=64 (repeatable). Boundary search: "
                        "bounds=[lo,hi], attacks=PGD,CW or 'attacks=PGD(eps=[0.5,1],steps=20),CW' "
                        "(or a preset: default, reference), eps=0.5 (PGD's radius), refine=12; "
                        "EG: background=bg.npy; IG: baseline=0.5 or baseline=b.npy")
    e.add_argument("--blur", type=float, default=0.0, help="heatmap Gaussian blur sigma in pixels")
    e.add_argument("--metrics", metavar="NAMES",
                   help="comma-separated evaluation metrics of boundary_xg.metrics, e.g. diffid,insertion,deletion "
                        "(printed per image, written to metrics.json and index.html)")
    e.add_argument("--threads", type=int, metavar="N",
                   help="CPU threads per op (default: OMP_NUM_THREADS if set, else the cores not busy "
                        "by the load average, at least 1: threads waiting for busy cores made "
                        "boundary methods 2-16x slower on a loaded machine)")
    e.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)

    add_evaluate_parser(sub)

    b = sub.add_parser("backends", help="which frameworks import, their versions and devices")
    b.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)
    return p


def _check_out(path: str) -> None:
    """Check, before any work, that the ``--out`` folder can be made and written.

    Nothing is created here: the folder is made when the results are written. It
    must be a writable folder, or not exist yet below a writable folder.
    """
    from .model_io import CLIError

    target = os.path.abspath(path)
    existing = target
    while not os.path.exists(existing):
        parent = os.path.dirname(existing)
        if parent == existing:
            break
        existing = parent
    if existing == target and not os.path.isdir(existing):
        raise CLIError(f"--out {path!r} is a file, not a folder; pass a folder for the results "
                       f"(made if missing), e.g. --out {os.path.splitext(path)[0]}_out.")
    if not os.path.isdir(existing):
        why = f"{existing!r} is not a folder"
    elif not os.access(existing, os.W_OK | os.X_OK):
        why = f"no permission to write in {existing!r}"
    else:
        return
    raise CLIError(f"--out {path!r} cannot be written ({why}); pass a folder you can write to "
                   "with --out DIR.")


def add_evaluate_parser(sub) -> None:
    """``boundary-xg evaluate``: the dataset run's arguments (model and preprocessing as ``explain``)."""
    v = sub.add_parser("evaluate", help="explain and evaluate a whole dataset into a resumable run folder")
    v.add_argument("--model", required=True,
                   help="a .keras file, a TorchScript file, or module:callable returning a model")
    v.add_argument("--weights", help="with module:callable: a torch state dict or Keras weights file")
    v.add_argument("--data", required=True, metavar="DIR|FILE.npy",
                   help="a folder of images (class subfolders give labels) or a .npy batch in the model's layout")
    v.add_argument("--labels", metavar="FILE.npy", help="with a .npy batch: its class indices (default: predicted)")
    v.add_argument("--methods", default="IG", help="comma-separated methods, e.g. IG,BIG (default IG)")
    v.add_argument("--metrics", help="comma-separated metrics of boundary_xg.metrics, e.g. diffid")
    v.add_argument("--out", required=True, help="the run folder")
    v.add_argument("--resume", action="store_true", help="continue the run in --out (same arguments)")
    v.add_argument("--overwrite", action="store_true", help="replace a run with other arguments in --out")
    v.add_argument("--batch-size", type=int, default=64, help="examples per shard and per call (default 64)")
    v.add_argument("--seed", type=int, default=0, help="the run's seed (default 0)")
    for flag, kw in _PREPROCESSING:
        v.add_argument(flag, **kw)
    v.add_argument("--on-error", choices=["skip", "raise"], default="skip",
                   help="an unreadable image: skip it (logged, NaN row) or stop (default skip)")
    v.add_argument("--option", action="append", type=_option, default=[], metavar="[METHOD.]NAME=VALUE",
                   help="a method option for every method that takes it (steps=16) or one (IG.steps=16); "
                        "bounds=[lo,hi] sets the boundary search's bounds")
    v.add_argument("--device", default="auto",
                   help="torch models: 'auto' (cuda:LOCAL_RANK when CUDA is available, else cpu) or a device")
    v.add_argument("--no-report", action="store_true", help="do not write report.html")
    v.add_argument("--durable", action="store_true",
                   help="fsync every file (complete shards survive a power loss; ~10 ms per file)")
    v.add_argument("--debug", action="store_true", default=argparse.SUPPRESS, help=argparse.SUPPRESS)


#: preprocessing flags of image files, as ``explain`` reads them
_PREPROCESSING = (
    ("--mean", {"nargs": "+", "type": float, "help": "per-channel mean subtracted from the images"}),
    ("--std", {"nargs": "+", "type": float, "help": "per-channel std the images are divided by"}),
    ("--size", {"type": _size, "help": "resize image files to H,W (or H for square)"}),
    ("--grayscale", {"action": "store_true", "help": "read image files as one channel"}),
)


def cmd_evaluate(args) -> int:
    """``boundary-xg evaluate``."""
    import logging

    import numpy as np

    from .api import method_info
    from .frameworks import claim_device, framework_for_file, image_layout, place_model
    from .model_io import CLIError, import_quietly, load_model, pixel_bounds
    from .runs import explain_dataset

    from . import cli_checks

    _check_out(args.out)  # before any work, as explain and demo
    cli_checks.check_model_spec(args.model, args.weights)
    methods = {method_info(m.strip()).short: {} for m in args.methods.split(",") if m.strip()}
    shared, bounds = {}, None
    for key, value in args.option:
        if key == "bounds":
            bounds = value
            continue
        name, dot, opt = key.partition(".")
        if dot:
            short = method_info(name).short
            if short not in methods:
                raise CLIError(f"--option {key}: {short} is not among --methods {list(methods)}.")
            methods[short][opt] = value
        else:
            shared[key] = value
    if not sys.stderr.isatty():  # one log line per shard instead of a progress bar
        handler = logging.StreamHandler(sys.stderr)
        handler.setFormatter(logging.Formatter("boundary-xg: %(message)s"))
        logger = logging.getLogger("boundary_xg.runs")
        logger.addHandler(handler)
        logger.setLevel(logging.INFO)
    local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
    file_fw = framework_for_file(args.model) if os.path.isfile(args.model) else None
    if "LOCAL_RANK" in os.environ and file_fw is not None:
        # before the model is built: a framework that takes every GPU it sees (TensorFlow)
        # is kept on this process's own one
        import_quietly([file_fw])
        claim_device(file_fw, local_rank)
    model, fw = load_model(args.model, args.weights)
    model = place_model(model, args.device, local_rank)
    data = args.data
    from_files = os.path.isdir(data)
    if not from_files and not data.lower().endswith(".npy"):
        raise CLIError(f"--data {data!r}: expected a folder of images or a .npy file.")
    if not os.path.exists(data):
        raise CLIError(f"--data {data!r} not found.")
    if args.labels:
        if from_files:
            raise CLIError("--labels goes with a .npy batch; a folder's labels are its class subfolders.")
        data = (data, np.load(args.labels, allow_pickle=False))
    boundary = any(method_info(m).boundary for m in methods)
    if boundary and bounds is None and from_files:
        # image files hold pixels in [0, 1]: search among real images, as explain does
        c = 1 if args.grayscale else 3
        dummy = np.zeros((1, c, 1, 1) if image_layout(fw) == "NCHW" else (1, 1, 1, c), np.float32)
        bounds = pixel_bounds(dummy, fw, args.mean, args.std)
    run = explain_dataset(
        model, data, methods=methods, metrics=args.metrics, out=args.out, batch_size=args.batch_size,
        options=shared, bounds=bounds, seed=args.seed, resume=args.resume, overwrite=args.overwrite,
        on_error=args.on_error, size=args.size, grayscale=args.grayscale, mean=args.mean, std=args.std,
        report=not args.no_report, durable=args.durable,
    )
    if int(os.environ.get("RANK", "0") or 0) == 0:
        table = "table.parquet" if os.path.exists(os.path.join(args.out, "table.parquet")) else "table.csv"
        print(f"wrote {args.out}: attributions of {', '.join(run.methods)} "
              f"({run.attributions(run.methods[0]).shape[0]} examples), {table}, run.json, "
              f"{'' if args.no_report else 'report.html'}".rstrip(", "))
    return 0


def cmd_demo(args) -> int:
    """``boundary-xg demo``."""
    from . import cli_checks

    _check_out(args.out)
    backend = cli_checks.demo_backend(args.backend)  # one framework is enough: the installed one
    from .demo import format_table, run_demo

    # the demo's models are tiny: one thread per op beats several threads that
    # wait on each other (figures in docs/cli.md, "Threads"); set before the
    # framework is imported, and a user's own setting wins
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(var, "1")
    from .model_io import import_quietly

    import_quietly([backend])
    summary = run_demo(args.out, backend=backend, n=args.examples)
    print(format_table(summary))
    return 0


def cmd_explain(args) -> int:
    """``boundary-xg explain``."""
    import numpy as np

    from .api import attribute, method_info
    from . import cli_checks as checks
    from .frameworks import image_layout
    from .model_io import import_quietly, load_images, load_model, pixel_bounds
    from .viz import Column, is_boundary_method, plot_grid, predicted_labels

    # everything that needs no model first (names, option values, files), then the
    # API's input checks on one example, then the predictions and the method
    spec = method_info(args.method)  # a bad name fails before a framework is imported
    metric_funcs = _metric_funcs(args.metrics)
    options = checks.method_options(spec, args.option, args.layer)
    checks.set_cpu_threads(checks.cpu_threads(args.threads))
    _check_out(args.out)
    known_fw = checks.check_model_spec(args.model, args.weights)
    from_files, _ = checks.check_images(args.images, args.size, args.grayscale, args.labels,
                                        args.mean, args.std)
    if known_fw:
        import_quietly([known_fw])
    model, fw = load_model(args.model, args.weights)
    x, shown, names = load_images(args.images, fw, args.size, args.grayscale, args.mean, args.std)
    checks.check_inputs(model, x, fw, args, from_files)
    checks.bounds_for_layout(options, fw)
    checks.check_bounds(model, x, options)
    preds = predicted_labels(model, x)
    labels = preds if args.labels is None else np.asarray(args.labels, dtype=np.int64)
    if args.labels is not None and len(labels) == 1 and len(x) > 1:
        labels = np.full(len(x), labels[0], dtype=np.int64)
    boundary = is_boundary_method(spec)
    if boundary:
        options["return_dis"] = True
    if from_files and "bounds" in spec.defaults and "bounds" not in options:
        # image files hold pixels in [0, 1]: keep the boundary search, AGI's attack and
        # IG_Uniform's references among real images, per channel after --mean/--std
        # (a .npy batch: --option bounds=[lo,hi])
        options["bounds"] = pixel_bounds(x, fw, args.mean, args.std)
    out = attribute(model, x, labels, method=args.method, **options)
    attr, dis = (out[0], out[-1]) if boundary else (out, None)
    attr = np.asarray(attr)
    os.makedirs(args.out, exist_ok=True)
    np.save(os.path.join(args.out, "attributions.npy"), attr)
    notes = None
    if dis is not None:
        dis = np.asarray(dis, dtype=np.float64).reshape(-1)
        np.save(os.path.join(args.out, "distances.npy"), dis)
        notes = [f"d={d:.3g}" if np.isfinite(d) else "not found" for d in dis]
    rows = [f"{n[:18]}\nlabel {a}, pred {b}" for n, a, b in zip(names, labels, preds)]
    png = os.path.join(args.out, "heatmaps.png")
    plot_grid(shown, [Column(spec.short, attr, notes)], rows, output_file=png,
              blur=args.blur, layout=image_layout(fw))
    results = {}
    for mname, func in metric_funcs.items():
        if mname == "randomization_check":  # computes its own attributions with the method
            method_opts = {k: v for k, v in options.items() if k not in ("return_dis",)}
            results[mname] = func(model, x, labels, method=args.method, progress=False, **method_opts)
        else:
            results[mname] = func(model, x, labels, attr)
    for i, name in enumerate(names):
        extra = "" if notes is None else f"  {notes[i]}"
        for mname, res in results.items():
            extra += f"  {mname} {float(res.per_example[i]):.4g}"
        print(f"{name}: label {labels[i]}, predicted {preds[i]}{extra}")
    for mname, res in results.items():
        better = {True: ", higher is better", False: ", lower is better"}.get(res.higher_is_better, "")
        print(f"{mname}: {float(res.value):.4g} (mean over {len(res.per_example)} images{better})")
    written = [os.path.join(args.out, "attributions.npy"), png]
    if results:
        written.append(_write_metrics(args.out, results))
    written.append(_write_explain_page(args.out, spec.short, names, labels, preds, notes, results))
    print(f"wrote {written[0]} {tuple(attr.shape)}, " + ", ".join(written[1:]))
    return 0


def _metric_funcs(text: Optional[str]) -> dict:
    """``{name: function}`` of ``--metrics`` (checked before any work)."""
    if not text:
        return {}
    from .runs import resolve_metric as resolve

    out = {}
    for name in (n.strip() for n in text.split(",")):
        if name:
            func = resolve(name)
            out[func.__name__] = func
    return out


def _write_metrics(out_dir: str, results: dict) -> str:
    """``metrics.json``: each metric's value, per-image values and curve."""
    import numpy as np

    def floats(a):
        return None if a is None else [None if not np.isfinite(v) else float(v) for v in np.ravel(a)]

    data = {name: {"value": floats([r.value])[0], "per_example": floats(r.per_example), "curve": floats(r.curve),
                   "fractions": floats(r.fractions), "higher_is_better": r.higher_is_better}
            for name, r in results.items()}
    path = os.path.join(out_dir, "metrics.json")
    with open(path, "w") as fh:
        json.dump(data, fh, indent=2)
    return path


def _write_explain_page(out_dir, method, names, labels, preds, notes, results) -> str:
    """``index.html``: the heatmaps, one row per image with its metric values, and the curves."""
    import html

    esc = html.escape
    curves = {n: r for n, r in results.items() if r.curve is not None}
    img = ""
    if curves:
        from .viz import plot_metric_curves
        from matplotlib.figure import Figure

        fig = Figure(figsize=(4.2 * len(curves), 3.4), dpi=100)
        axes = fig.subplots(1, len(curves), squeeze=False)[0]
        for ax, (n, r) in zip(axes, curves.items()):
            plot_metric_curves({method: r}, ax=ax, title=n)
        fig.savefig(os.path.join(out_dir, "curves.png"))
        img = '<h2>Curves (mean over the images)</h2><img src="curves.png" alt="metric curves">'
    head = "".join(f"<th>{esc(n)}</th>" for n in ["image", "label", "prediction"] + (["note"] if notes else [])
                   + list(results))
    rows = []
    for i, name in enumerate(names):
        cells = [name, str(labels[i]), str(preds[i])] + ([notes[i]] if notes else [])
        cells += [f"{float(r.per_example[i]):.4g}" for r in results.values()]
        rows.append("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in cells) + "</tr>")
    if results:
        cells = ["mean", "", ""] + ([""] if notes else []) + [f"{float(r.value):.4g}" for r in results.values()]
        rows.append("<tr><th>" + "</th><th>".join(esc(c) for c in cells) + "</th></tr>")
    direction = "".join(
        f"<li>{esc(n)}: {'higher' if r.higher_is_better else 'lower'} is better</li>"
        for n, r in results.items() if r.higher_is_better is not None)
    page = f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>boundary_xg explain: {esc(method)}</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head>
<body>
<h1>{esc(method)} attributions</h1>
<img src="heatmaps.png" alt="heatmaps">
<h2>Images{' and metrics' if results else ''}</h2>
<table><thead><tr>{head}</tr></thead><tbody>
{chr(10).join(rows)}
</tbody></table>
{'<ul>' + direction + '</ul>' if direction else ''}
{img}
<p>Metrics: see docs/metrics.md of boundary_xg for their definitions.</p>
</body></html>
"""
    path = os.path.join(out_dir, "index.html")
    with open(path, "w") as fh:
        fh.write(page)
    return path


def backend_report() -> List[dict]:
    """One entry per registered framework: framework, installed, extra, version, devices, error."""
    from .frameworks import frameworks, runtime_report
    from .model_io import import_quietly

    rows = []
    infos = frameworks()
    try:
        import_quietly([f.name for f in infos])
    except Exception:  # a broken install: its row below says what fails
        pass
    for info in infos:
        row = {"framework": info.name, "installed": info.installed, "extra": info.extra,
               "version": None, "devices": [], "error": None}
        if row["installed"]:
            try:
                row.update(runtime_report(info.name))
            except Exception as err:  # installed but broken: say so, do not crash
                row["error"] = f"{type(err).__name__}: {str(err).strip().splitlines()[0] if str(err).strip() else ''}"
        rows.append(row)
    return rows


def cmd_backends(args) -> int:
    """``boundary-xg backends``."""
    rows = backend_report()
    for r in rows:
        if not r["installed"]:
            print(f"{r['framework']:11s} not installed (pip install '{r['extra']}')")
        elif r["error"]:
            print(f"{r['framework']:11s} installed but fails to import: {r['error']}")
        else:
            print(f"{r['framework']:11s} {r['version']}; devices: {', '.join(r['devices'])}")
    for lib in ("matplotlib", "scipy"):
        ok = importlib.util.find_spec(lib) is not None
        print(f"{lib:11s} {'available' if ok else 'missing (heatmaps need it: pip install boundary_xg[viz])'}")
    return 0 if any(r["installed"] and not r["error"] for r in rows) else EXIT_ERROR




def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run ``boundary-xg`` with ``argv`` (default ``sys.argv[1:]``); return the exit status."""
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    os.environ.setdefault("MPLBACKEND", "Agg")
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    from . import model_io

    model_io.QUIET_IMPORTS = not args.debug

    handlers = {"demo": cmd_demo, "explain": cmd_explain, "backends": cmd_backends, "evaluate": cmd_evaluate}
    with warnings.catch_warnings():
        if not args.debug:
            from .cli_checks import WarningPrinter

            warnings.showwarning = WarningPrinter()  # one line each, once per run
        return _run(handlers[args.command], args)


def _run(handler, args) -> int:
    """Run one command; every failure becomes one line on stderr and an exit status."""
    from .errors import BoundaryXGError
    from .model_io import CLIError

    try:
        return handler(args)
    except (CLIError, BoundaryXGError, FileNotFoundError, PermissionError) as err:
        if args.debug:
            raise
        print(f"boundary-xg: error: {first_line(err)}", file=sys.stderr)
        return EXIT_ERROR
    except ImportError as err:
        if args.debug:
            raise
        from .model_io import install_hint

        print(f"boundary-xg: error: {first_line(err)}; install the missing package "
              f"({install_hint(getattr(err, 'name', None))}).", file=sys.stderr)
        return EXIT_ERROR
    except KeyboardInterrupt:
        print("boundary-xg: interrupted", file=sys.stderr)
        return 130
    except Exception as err:  # an unexpected failure: still one line, the trace with --debug
        if args.debug:
            raise
        print(f"boundary-xg: error: {type(err).__name__}: {first_line(err)} "
              "(run again with --debug for the traceback)", file=sys.stderr)
        return EXIT_ERROR


if __name__ == "__main__":
    sys.exit(main())
