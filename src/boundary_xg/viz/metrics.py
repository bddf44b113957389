"""Figures of evaluation metrics: curves (insertion, deletion, DiffID, sensitivity-n), the
KPM family, and the randomisation check's grid. They read the NumPy fields of
:class:`~boundary_xg.metrics.MetricResult` and import matplotlib when they draw."""

from __future__ import annotations

from typing import Any, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError

#: axis labels of each curve metric: (x label, y label)
_AXES = {
    "insertion": ("fraction of pixels inserted", "score of the label"),
    "deletion": ("fraction of pixels deleted", "score of the label"),
    "diffid": ("ratio of elements replaced", "insertion - deletion"),
    "sensitivity_n": ("masking probability", "Pearson correlation"),
    "randomization_check": ("layers randomised", "Spearman correlation"),
    "kpm": ("fraction of pixels kept", "logit of the label"),
    "knm": ("fraction of pixels kept", "logit of the label"),
    "kam": ("fraction of pixels kept", "accuracy"),
    "ram": ("fraction of pixels kept", "accuracy"),
    "rpm": ("fraction of pixels kept", "logit of the label"),
    "rnm": ("fraction of pixels kept", "logit of the label"),
}


def _figure(fig: Any, output_file: Optional[str], size) -> Any:
    if fig is not None:
        return fig
    if output_file is not None:  # a detached figure: nothing left open in pyplot
        from matplotlib.figure import Figure

        return Figure(figsize=size, dpi=100)
    import matplotlib.pyplot as plt

    return plt.figure(figsize=size, dpi=100)


def _as_mapping(results: Any) -> Mapping[str, Any]:
    if hasattr(results, "curve"):
        return {results.name: results}
    if isinstance(results, Mapping):
        return results
    raise InputError("results: expected a MetricResult or a dict {label: MetricResult}.")


def plot_metric_curves(results: Any, ax: Any = None, title: Optional[str] = None,
                       output_file: Optional[str] = None) -> Any:
    """Plot the mean curve of one or several results of the same metric, the area in the legend.

    Args:
        results: a :class:`~boundary_xg.metrics.MetricResult` with a curve, or
            ``{label: result}`` (e.g. one per method).
        ax: a matplotlib axes to draw on (None: a new figure).
        title: the axes' title (default the metric's name).
        output_file: save the figure there.

    Returns:
        The figure.

    Raises:
        InputError: a result without a curve.

    Example:
        >>> viz.plot_metric_curves({"IG": metrics.insertion(m, x, y, ig),
        ...                         "random": metrics.insertion(m, x, y, rnd)})
    """
    res = _as_mapping(results)
    if not res:
        raise InputError("results is empty.")
    fig = ax.figure if ax is not None else _figure(None, output_file, (5.0, 3.6))
    if ax is None:
        ax = fig.subplots()
    names = set()
    for label, r in res.items():
        if getattr(r, "curve", None) is None:
            raise InputError(f"results[{label!r}] ({getattr(r, 'name', '?')}) has no curve to plot.")
        names.add(r.name)
        x = r.fractions if r.fractions is not None else np.arange(len(r.curve))
        ax.plot(x, r.curve, marker="o" if len(r.curve) <= 20 else None, ms=3,
                label=f"{label} (area {float(r.value):.3g})")
    name = sorted(names)[0]
    xl, yl = _AXES.get(name, ("", name))
    ax.set_xlabel(xl)
    ax.set_ylabel(yl)
    if name == "randomization_check":
        first = next(iter(res.values()))
        ax.set_xticks(range(len(first.curve)))
        ax.set_xticklabels(first.details.get("stages", []), rotation=45, ha="right", fontsize=7)
    ax.set_title(title if title is not None else " / ".join(sorted(names)))
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.tight_layout()
    if output_file is not None:
        fig.savefig(output_file)
    return fig


def plot_kpm_family(families: Mapping[str, Any], tests: Sequence[str] = ("kpm", "knm", "kam", "ram"),
                    fig: Any = None, output_file: Optional[str] = None) -> Any:
    """One panel per keep/remove test, one curve per method.

    Args:
        families: ``{method label: {test: MetricResult}}`` (e.g. from
            :func:`~boundary_xg.metrics.kpm_family`), or one such ``{test: result}`` dict.
        tests: the panels (default KPM, KNM, KAM, RAM).
        fig, output_file: draw into ``fig``; save there.

    Returns:
        The figure.
    """
    if families and all(hasattr(v, "curve") for v in families.values()):
        families = {"": families}
    fig = _figure(fig, output_file, (3.4 * len(tests), 3.2))
    axes = fig.subplots(1, len(tests), squeeze=False)[0]
    for ax, test in zip(axes, tests):
        found = {label or test: fam[test] for label, fam in families.items() if test in fam}
        if not found:
            raise InputError(f"no result for test {test!r} in families.")
        best = "higher" if next(iter(found.values())).higher_is_better else "lower"
        plot_metric_curves(found, ax=ax, title=f"{test.upper()} ({best} is better)")
        ax.set_xscale("log")
    fig.tight_layout()
    if output_file is not None:
        fig.savefig(output_file)
    return fig


def plot_randomization(result: Any, x: Any, examples: Optional[int] = None, layout: Optional[str] = None,
                       fig: Any = None, output_file: Optional[str] = None) -> Any:
    """The randomisation check's grid: one row per example, the image, then the attributions
    at every stage (original model, then each layer randomised), the Spearman correlation
    with the original map under each panel.

    Args:
        result: from :func:`~boundary_xg.metrics.randomization_check` (with its attributions kept).
        x: the inputs it explained, in the model's layout.
        examples: how many rows (default all, at most 8).
        layout, fig, output_file: as for :func:`~boundary_xg.viz.plot_grid`.

    Returns:
        The figure.
    """
    from ._arrays import to_numpy
    from .grid import Column, plot_grid

    attrs = result.details.get("attributions")
    if attrs is None:
        raise InputError("result holds no attributions: run randomization_check with keep_attributions=True.")
    x = to_numpy(x, "x")
    k = min(len(x), 8) if examples is None else int(examples)
    rho = result.details["spearman"]
    cols = [Column(stage, np.abs(a[:k]), [f"rho={rho[i, s]:.2f}" for i in range(k)])
            for s, (stage, a) in enumerate(zip(result.details["stages"], attrs))]
    return plot_grid(x[:k], cols, fig=fig, output_file=output_file, layout=layout,
                     normalization_type="magnitude_max")
