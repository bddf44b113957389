"""The embedded demo: explain a few test digits with every registered method.

``boundary-xg demo`` (or :func:`run_demo`) loads the embedded digit classifiers
(:mod:`boundary_xg.demo_models`), explains the first test digits with the
methods the registry marks for the demo (:data:`DEMO_METHODS`: SM, IG, SG, XG,
DeepLIFT, the layer methods GradCAM (default layer: the activation after the
second convolution, 4x4, upsampled) and FullGrad, the boundary methods
BSM/BIG/BSG/BDT, and the reference-based path methods IG_Uniform, IG_SG, AGI and
LPI (background: the last 100 test digits)), and writes into the output folder:

- ``grid.png``: rows are digits, columns the image and each method's heatmap
  (boundary methods note their distance to the boundary point);
- ``index.html``: the grid with the figures (accuracy, completeness gaps,
  boundary distances, XG vs IG on the X-model, seconds per method, and the
  evaluation metrics of every method: DiffID and the insertion and deletion
  areas, with a random attribution map as the reference);
- ``summary.json``: the same figures, machine-readable.

XG runs on the bias-free X-model (where it equals IG from zero); the other
methods on the regular model.
"""

from __future__ import annotations

import html
import json
import os
import time
import warnings
from typing import Any, Dict, List

import numpy as np

from .api import method_names

#: methods shown, in column order: those the registry marks for the demo (``in_demo``),
#: in the order of README's table
DEMO_METHODS = tuple(method_names(demo=True))
#: evaluation metrics of every method (boundary_xg.metrics): name -> options
DEMO_METRICS: Dict[str, Dict[str, Any]] = {"diffid": {}, "insertion": {"steps": 16}, "deletion": {"steps": 16}}
#: lighter settings than the defaults, so the demo stays well under a minute on 2 cores
DEMO_OPTIONS: Dict[str, Dict[str, Any]] = {
    "IG": {"steps": 32}, "BIG": {"steps": 32},
    "SG": {"num_samples": 32, "seed": 0}, "BSG": {"num_samples": 32, "seed": 0},
    "BSM": {"seed": 0}, "BDT": {"seed": 0},
    "IG_Uniform": {"seed": 0}, "IG_SG": {"seed": 0}, "LPI": {"seed": 0},
}
#: background rows for the methods that draw references from a data set (LPI, EG):
#: the last test digits
DEMO_BACKGROUND = 100


def _options(spec: Any, wanted: Dict[str, Any], background: Any = None) -> Dict[str, Any]:
    """The demo options the method takes (a method may lack one, e.g. while it is being written)."""
    allowed = set(spec.defaults)
    opts = {k: v for k, v in wanted.items() if k in allowed}
    if "background" in allowed and background is not None:
        opts["background"] = background
    if "bounds" in allowed:
        opts["bounds"] = (0.0, 1.0)  # digit pixels lie in [0, 1]
    if "progress" in allowed:
        opts["progress"] = False
    return opts


def _split(out: Any, gap: bool, dis: bool):
    """``(attr, gap or None, distances or None)`` from a method's result tuple ``(attr[, gap][, dis])``."""
    if not (gap or dis):
        return out, None, None
    out = tuple(out)
    attr, rest = out[0], list(out[1:])
    g = rest.pop(0) if gap else None
    d = rest.pop(0) if dis else None
    return attr, g, d


def _rel_diff(a: np.ndarray, b: np.ndarray) -> float:
    """Mean over examples of ``||a - b||_1 / ||b||_1``."""
    n = a.shape[0]
    num = np.abs(a - b).reshape(n, -1).sum(1)
    den = np.abs(b).reshape(n, -1).sum(1)
    return float(np.mean(num / np.maximum(den, 1e-12)))


def run_demo(out_dir: str = "demo_out", backend: str = "torch", n: int = 6,
             methods=DEMO_METHODS) -> Dict[str, Any]:
    """Run the demo and write ``grid.png``, ``index.html`` and ``summary.json`` into ``out_dir``.

    Args:
        out_dir: output folder (created).
        backend: ``"torch"`` or ``"tensorflow"``.
        n: number of test digits explained (1..360).
        methods: method names; those not registered are skipped.

    Returns:
        The summary (also in ``summary.json``): accuracies, per-method rows
        (seconds, completeness gap, distances), XG-vs-IG differences, file paths.

    Raises:
        InputError: an unknown backend or a bad ``n``.
        BackendNotAvailableError: the framework is not installed.
    """
    from .api import attribute, image_layout, method_info, use_framework
    from .demo_models import load_digit_model, load_digit_test_set
    from .errors import InputError, MethodError
    from .viz import Column, is_boundary_method, plot_grid, predicted_labels

    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= 360:
        raise InputError(f"n={n!r}: expected an integer in [1, 360].")
    fw = use_framework(backend)  # checks the name and that the framework is installed; imports it
    t_start = time.perf_counter()
    layout = image_layout(fw)
    x_all, y_all = load_digit_test_set(layout)
    models = {"regular": load_digit_model(fw, "regular"), "x": load_digit_model(fw, "x")}
    acc = {k: float(np.mean(predicted_labels(m, x_all) == y_all)) for k, m in models.items()}
    x, y = x_all[:n], y_all[:n]
    preds = predicted_labels(models["regular"], x)

    rows: List[Dict[str, Any]] = []
    columns: List[Column] = []
    skipped: List[str] = []
    attrs: Dict[str, np.ndarray] = {}
    for name in methods:
        try:
            spec = method_info(name)
        except MethodError:
            skipped.append(name)
            continue
        which = "x" if spec.short == "XG" else "regular"
        boundary = is_boundary_method(spec)
        opts = _options(spec, DEMO_OPTIONS.get(spec.short, {}), x_all[-DEMO_BACKGROUND:])
        if spec.supports_gap:
            opts["return_gap"] = True
        if boundary:
            opts["return_dis"] = True
        t0 = time.perf_counter()
        try:
            with warnings.catch_warnings():
                # a boundary search that misses an example warns; the table reports it
                warnings.simplefilter("ignore")
                out = attribute(models[which], x, y, method=name, **opts)
        except MethodError:  # e.g. BDT registered while its base DeepLIFT is not
            skipped.append(name)
            continue
        sec = time.perf_counter() - t0
        attr, gap, dis = _split(out, spec.supports_gap, boundary)
        attr = np.asarray(attr)
        attrs[spec.short] = attr
        row: Dict[str, Any] = {"method": spec.short, "model": which, "seconds": sec}
        if gap is not None:
            gap = np.asarray(gap).reshape(-1)
            total = np.abs(attr.reshape(n, -1).sum(1))
            row["gap_mean_abs"] = float(np.mean(np.abs(gap)))
            row["gap_relative"] = float(np.mean(np.abs(gap)) / max(float(np.mean(total)), 1e-12))
        notes = None
        if dis is not None:
            dis = np.asarray(dis, dtype=np.float64).reshape(-1)
            found = np.isfinite(dis)
            row["found"] = int(found.sum())
            row["distance_mean"] = float(dis[found].mean()) if found.any() else None
            row["distances"] = [float(d) if np.isfinite(d) else None for d in dis]
            notes = [f"d={d:.2f}" if np.isfinite(d) else "not found" for d in dis]
        row.update(_metric_values(models[which], x, y, attr))
        title = "XG (X-model)" if spec.short == "XG" else spec.short
        columns.append(Column(title, attr, notes))
        rows.append(row)

    # X-Gradient equals IG from zero on the bias-free model, and not on the regular one
    xg_ig = {}
    if "XG" in attrs:
        ig_x = attribute(models["x"], x, y, method="IG", steps=32)
        xg_ig["x_model"] = _rel_diff(attrs["XG"], ig_x)
        if "IG" in attrs:
            ixg = attribute(models["regular"], x, y, method="IxG")
            xg_ig["regular_model"] = _rel_diff(ixg, attrs["IG"])

    # the reference: a random attribution map (standard normal, seed 0) on the regular model
    rnd = np.random.default_rng(0).standard_normal(x.shape).astype(np.float32)
    random_row = _metric_values(models["regular"], x, y, rnd)

    os.makedirs(out_dir, exist_ok=True)
    grid_path = os.path.join(out_dir, "grid.png")
    row_titles = [f"label {a}, pred {b}" for a, b in zip(y, preds)]
    plot_grid(x, columns, row_titles, output_file=grid_path, overlay_opacity=0.6)
    summary = {
        "backend": fw, "examples": n, "test_digits": int(len(y_all)),
        "accuracy": acc, "methods": rows, "skipped": skipped,
        "xg_vs_ig_relative_l1": xg_ig,
        "metrics_random": random_row,
        "total_seconds": time.perf_counter() - t_start,
        "files": {"grid": grid_path, "html": os.path.join(out_dir, "index.html"),
                  "summary": os.path.join(out_dir, "summary.json")},
    }
    with open(summary["files"]["summary"], "w") as fh:
        json.dump(summary, fh, indent=2)
    with open(summary["files"]["html"], "w") as fh:
        fh.write(render_html(summary))
    return summary


def _metric_values(model: Any, x: np.ndarray, y: np.ndarray, attr: np.ndarray) -> Dict[str, float]:
    """The value of each metric of :data:`DEMO_METRICS` for attributions ``attr``."""
    from . import metrics

    return {name: float(getattr(metrics, name)(model, x, y, attr, progress=False, **opts).value)
            for name, opts in DEMO_METRICS.items()}


def _fmt(v: Any, spec: str = ".3g") -> str:
    return "-" if v is None else format(v, spec)


def table_rows(summary: Dict[str, Any]) -> List[List[str]]:
    """The per-method table: header row then one row per method, as strings."""
    out = [["method", "model", "seconds", "mean |gap|", "gap / |sum attr|", "found", "mean distance",
            "DiffID", "insertion", "deletion"]]
    n = summary["examples"]
    for r in summary["methods"]:
        out.append([
            r["method"], r["model"], f"{r['seconds']:.2f}", _fmt(r.get("gap_mean_abs")),
            _fmt(r.get("gap_relative")),
            f"{r['found']}/{n}" if "found" in r else "-", _fmt(r.get("distance_mean")),
        ] + [_fmt(r.get(m)) for m in DEMO_METRICS])
    rnd = summary.get("metrics_random")
    if rnd:
        out.append(["random", "regular", "-", "-", "-", "-", "-"] + [_fmt(rnd.get(m)) for m in DEMO_METRICS])
    return out


def format_table(summary: Dict[str, Any]) -> str:
    """The summary as plain text (what ``boundary-xg demo`` prints)."""
    rows = table_rows(summary)
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    acc = summary["accuracy"]
    head = [
        f"boundary-xg demo ({summary['backend']}): {summary['examples']} test digits explained; "
        f"accuracy on {summary['test_digits']} held-out digits: regular {acc['regular']:.3f}, "
        f"X-model {acc['x']:.3f}",
    ]
    tail = []
    xi = summary["xg_vs_ig_relative_l1"]
    if "x_model" in xi:
        msg = f"XG vs IG (relative L1): X-model {xi['x_model']:.2e}"
        if "regular_model" in xi:
            msg += f", regular model (x*grad vs IG) {xi['regular_model']:.2f}"
        tail.append(msg)
    if summary["skipped"]:
        tail.append("not registered, skipped: " + ", ".join(summary["skipped"]))
    tail.append(f"wrote {summary['files']['html']} and {summary['files']['grid']} "
                f"({summary['total_seconds']:.1f} s)")
    return "\n".join(head + [""] + lines + [""] + tail)


def render_html(summary: Dict[str, Any]) -> str:
    """A self-contained page showing the grid and the figures."""
    esc = html.escape
    rows = table_rows(summary)
    thead = "".join(f"<th>{esc(c)}</th>" for c in rows[0])
    tbody = "\n".join("<tr>" + "".join(f"<td>{esc(c)}</td>" for c in r) + "</tr>" for r in rows[1:])
    acc = summary["accuracy"]
    xi = summary["xg_vs_ig_relative_l1"]
    xg = ""
    if "x_model" in xi:
        xg = (f"<li>X-Gradient vs Integrated Gradients (relative L1 difference): "
              f"<b>{xi['x_model']:.2e}</b> on the bias-free X-model")
        if "regular_model" in xi:
            xg += f", {xi['regular_model']:.2f} for x&middot;grad vs IG on the regular model"
        xg += "</li>"
    dist = []
    for r in summary["methods"]:
        if "distances" in r:
            ds = ", ".join("not found" if d is None else f"{d:.3f}" for d in r["distances"])
            dist.append(f"<li>{esc(r['method'])}: {ds}</li>")
    skipped = ""
    if summary["skipped"]:
        skipped = f"<p>Not registered in this install, skipped: {esc(', '.join(summary['skipped']))}.</p>"
    return f"""<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>boundary_xg demo</title>
<style>body{{font-family:sans-serif;max-width:1100px;margin:2em auto;padding:0 1em}}
table{{border-collapse:collapse}}td,th{{border:1px solid #ccc;padding:4px 8px;text-align:right}}
td:first-child,th:first-child{{text-align:left}}img{{max-width:100%}}</style></head>
<body>
<h1>boundary_xg demo</h1>
<p>Backend <b>{esc(summary['backend'])}</b>; {summary['examples']} held-out handwritten digits (8x8)
explained by the embedded classifiers. Red: evidence for the label, blue: against; each panel is
normalised on its own (signed max). XG runs on the bias-free X-model, the others on the regular model.</p>
<img src="grid.png" alt="attribution grid">
<h2>Figures</h2>
<ul>
<li>Accuracy on {summary['test_digits']} held-out digits: regular model <b>{acc['regular']:.3f}</b>,
X-model <b>{acc['x']:.3f}</b></li>
{xg}
</ul>
<table><thead><tr>{thead}</tr></thead><tbody>
{tbody}
</tbody></table>
<p>Evaluation metrics (boundary_xg.metrics, docs/metrics.md), each averaged over the digits shown:
<b>DiffID</b> (higher is better): insertion minus deletion at ratios 0.1..0.9 of the pixels, ranked
by |attribution|, replaced by the mean of the pixels kept, scored by the label's logit ratio (the
re-calibration paper's conventions), the mean over the ratios; <b>insertion</b> (higher is better) and
<b>deletion</b> (lower is better): areas under RISE's curves of the label's probability as the
top-ranked pixels are put into a blurred image or replaced by zeros (16 steps). The row "random" is
a random attribution map, for reference.</p>
<p>gap: completeness gap sum(attr) - (F(x) - F(baseline)) per example, for path methods and DeepLIFT
(the baseline of BIG and BDT is the boundary point); for FullGrad the residual of its full-gradient
decomposition, sum(x grad_x) + sum over layers of sum(bias grad_bias) - F(x).</p>
{'<h2>Boundary distances (L2, per digit)</h2><ul>' + ''.join(dist) + '</ul>' if dist else ''}
{skipped}
<p>Total time {summary['total_seconds']:.1f} s.</p>
</body></html>
"""
