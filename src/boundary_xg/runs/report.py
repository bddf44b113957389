"""``report.html`` of a run: the summary and metric table, the metrics' mean curves, boundary
distances, example heatmaps.

Figures are PNGs embedded in the page (one self-contained file); without
matplotlib the page has the tables only.
"""

from __future__ import annotations

import base64
import html
import io
import logging
import os
from typing import Any, Dict, List

import numpy as np

from . import folder as fs
from ._lib import backends

log = logging.getLogger("boundary_xg.runs")
EXAMPLES_SHOWN = 8


def _png(fig: Any) -> str:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", metadata={"Software": None})
    return base64.b64encode(buf.getvalue()).decode("ascii")


def _fmt(v: float) -> str:
    return "n/a" if not np.isfinite(v) else f"{v:.4g}"


def summary_rows(cols: Dict[str, List[Any]], methods: List[str]) -> List[List[str]]:
    """``[[method, column, mean over explained examples], ...]`` of the gaps and metrics."""
    rows = []
    for m in methods:
        for name, vals in cols.items():
            if name.endswith(f"_{m}"):
                a = np.asarray(vals, dtype=np.float64)
                quantity = name[: -len(m) - 1]
                if quantity == "gap":
                    rows.append([m, "mean |completeness gap|", _fmt(np.nanmean(np.abs(a)) if np.isfinite(a).any()
                                                                    else np.nan)])
                else:
                    rows.append([m, quantity, _fmt(np.nanmean(a) if np.isfinite(a).any() else np.nan)])
    return rows


#: the ordinate by the metric's ``score`` option (insertion, deletion)
_Y_LABELS = {"probability": "mean probability of the label", "logit": "mean logit of the label",
             "accuracy": "fraction still classified as the label"}


def curve_figures(curves: Any, methods: List[str], cols: Dict[str, List[Any]]) -> List[str]:
    """One figure per curve metric: every method's mean curve, the metric's mean value in the legend.

    Drawn by :func:`boundary_xg.viz.plot_metric_curves` (the figures of ``boundary-xg
    explain --metrics``) into a detached ``Figure``. The legend's number is the mean
    of the table's ``<metric>_<METHOD>`` column, which for insertion and deletion is
    the area under the mean curve. Returns ``<h3>``/``<img class="curve">`` HTML
    parts (none without matplotlib or curves).
    """
    if curves is None or not curves.names():
        return []
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return []
    from ..metrics.results import MetricResult
    from ..viz import plot_metric_curves
    from .curves import trapezoid

    parts = []
    for metric in curves.names():
        means, counts = curves.means(metric), curves.counts(metric)
        info = curves.metrics[metric]
        results = {}
        for m in [m for m in methods if m in means] + [m for m in means if m not in methods]:
            x, y = means[m]
            col = np.asarray(cols.get(f"{metric}_{m}", []), np.float64)
            value = np.nanmean(col) if np.isfinite(col).any() else trapezoid(y, x)
            results[f"{m}, {counts[m]} ex."] = MetricResult(
                name=metric, value=np.float64(value), per_example=col, curve=y, fractions=x,
                higher_is_better=info.get("higher_is_better"))
        better = {True: "; higher is better", False: "; lower is better"}.get(info.get("higher_is_better"), "")
        fig = Figure(figsize=(5.5, 3.4), dpi=100)
        ax = fig.subplots()
        plot_metric_curves(results, ax=ax, title=f"{metric}: mean curve per method{better}")
        ax.title.set_fontsize(10)
        if info.get("score") in _Y_LABELS:
            ax.set_ylabel(_Y_LABELS[info["score"]])
        fig.tight_layout()
        parts.append(f'<h3>{html.escape(metric)}</h3><img class="curve" alt="{html.escape(metric)} curves" '
                     f'src="data:image/png;base64,{_png(fig)}">')
    return parts


def _figures(out: str, reader: Any, batch_size: int, methods: List[str], cols: Dict[str, List[Any]],
             layout: str) -> List[str]:
    try:
        from matplotlib.figure import Figure
    except ImportError:
        return []
    parts = []
    if "boundary_distance" in cols:
        d = np.asarray(cols["boundary_distance"], np.float64)
        d = np.sort(d[np.isfinite(d)])
        if d.size:
            fig = Figure(figsize=(5, 3), dpi=100)
            ax = fig.subplots()
            ax.plot(d, np.arange(1, d.size + 1) / len(cols["boundary_distance"]))
            ax.set_xlabel("L2 distance to the boundary point")
            ax.set_ylabel("fraction of examples")
            ax.set_title("boundary distances (cumulative)")
            fig.tight_layout()
            parts.append(f'<h2>Boundary distances</h2><img src="data:image/png;base64,{_png(fig)}">')
    try:
        from ..viz import Column, plot_grid

        first = next(iter(reader.shards(batch_size, lambda k: k == 0)), None)
        if first is not None:
            n = min(EXAMPLES_SHOWN, len(first.x))
            shown = [Column(m, np.nan_to_num(np.load(os.path.join(fs.method_dir(out, m), fs.shard_name(0, "npy")),
                                                     allow_pickle=False)[:n])) for m in methods]
            titles = [f"#{i} label {cols['label'][i]}, pred {cols['prediction'][i]}" for i in range(n)]
            fig = plot_grid(first.x[:n], shown, titles, output_file=None, layout=layout,
                            fig=Figure(figsize=(1.7 * (1 + len(methods)), 1.7 * n + 0.4), dpi=80))
            parts.append(f'<h2>Examples</h2><img src="data:image/png;base64,{_png(fig)}">')
    except Exception as err:  # a picture must never fail a finished run
        log.warning("report: no example heatmaps (%s: %s)", type(err).__name__, err)
    return parts


def write_report(out: str, reader: Any, batch_size: int, methods: List[str], cols: Dict[str, List[Any]],
                 curves: Any = None) -> str:
    """Write ``out/report.html``; return its path.

    ``curves``: the run's :class:`~.curves.CurveSums` (default: read from the shards' records).
    """
    if curves is None:
        from .curves import from_records, read_records

        curves = from_records(read_records(out))
    config = fs.load_json(os.path.join(out, fs.RUN_FILE))
    n = len(cols.get("index", []))
    labels, preds = np.asarray(cols["label"]), np.asarray(cols["prediction"])
    explained = preds >= 0
    facts = [["examples", str(n)], ["explained", str(int(explained.sum()))],
             ["accuracy (prediction = label)", _fmt(float(np.mean(labels[explained] == preds[explained]))
                                                    if explained.any() else np.nan)]]
    if "boundary_found" in cols:
        found = np.asarray(cols["boundary_found"], bool)
        d = np.asarray(cols["boundary_distance"], np.float64)
        facts += [["boundary point found", f"{int(found.sum())} of {n}"],
                  ["median boundary distance (found)", _fmt(float(np.median(d[found])) if found.any() else np.nan)]]
    fw = config.get("model", {}).get("framework")
    layout = backends.identity(fw).image_layout if fw in backends.names() else "NHWC"
    table = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td></tr>" for a, b in facts)
    mrows = summary_rows(cols, methods)
    mtable = "".join(f"<tr><td>{html.escape(a)}</td><td>{html.escape(b)}</td><td>{html.escape(c)}</td></tr>"
                     for a, b, c in mrows)
    try:
        cfigs = curve_figures(curves, methods, cols)
    except Exception as err:  # a picture must never fail a finished run
        log.warning("report: no metric curves (%s: %s)", type(err).__name__, err)
        cfigs = []
    figs = _figures(out, reader, batch_size, methods, cols, layout)
    opts = html.escape(str(config.get("methods")))
    page = f"""<!doctype html>
<html><head><meta charset="utf-8"><title>boundary_xg run</title>
<style>body{{font-family:sans-serif;margin:2em}}td,th{{padding:2px 10px;border-bottom:1px solid #ddd}}</style>
</head><body>
<h1>boundary_xg run</h1>
<p>Methods and options: <code>{opts}</code>; seed {config.get('seed')}; {config.get('batch_size')} examples
per shard; data: <code>{html.escape(str(config.get('data', {}).get('kind')))}</code>.</p>
<table>{table}</table>
<h2>Methods (means over explained examples)</h2>
<table><tr><th>method</th><th>quantity</th><th>mean</th></tr>{mtable}</table>
{'<h2>Metric curves (means over explained examples)</h2>' + ''.join(cfigs) if cfigs else ''}
{''.join(figs)}
<p>Per-example numbers: <code>table.csv</code> / <code>table.parquet</code>; arrays: <code>attributions/</code>;
open with <code>boundary_xg.load_run</code>.</p>
</body></html>
"""
    path = os.path.join(out, "report.html")
    fs.atomic_write(path, lambda fh: fh.write(page), binary=False)
    return path
