"""Side-by-side grids: rows are examples, columns the image and each method's heatmap.

``compare(model, x, labels, methods=[...])`` computes the attributions through the
public API and draws them; ``plot_grid`` draws attributions you already have.
Boundary methods (BSM, BIG, BSG, BDT) are recognised from their registry entry
and called with ``return_dis=True``, so each of their panels also shows the
distance to the boundary point.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Any, Dict, List, Mapping, Optional, Sequence

import numpy as np

from ..errors import InputError, one_call
from ._arrays import as_nhwc, minmax_image, to_numpy
from .heatmap import HeatmapVisualizer, legend as draw_legend


@dataclass
class Column:
    """One column of a grid: a title, attributions ``(N, ...)`` and an optional note per example."""

    title: str
    attributions: Any
    notes: Optional[Sequence[str]] = None


@dataclass
class Comparison:
    """What :func:`compare` computed and drew.

    Attributes:
        fig: the matplotlib figure.
        attributions: method short name -> attributions (NumPy, ``x``'s layout).
        distances: boundary method short name -> L2 distances ``(N,)``.
        predictions: the model's predicted classes at ``x`` ``(N,)``.
        labels: the explained classes ``(N,)``.
        seconds: method short name -> wall-clock seconds of its call.
    """

    fig: Any
    attributions: Dict[str, np.ndarray] = field(default_factory=dict)
    distances: Dict[str, np.ndarray] = field(default_factory=dict)
    predictions: Optional[np.ndarray] = None
    labels: Optional[np.ndarray] = None
    seconds: Dict[str, float] = field(default_factory=dict)


def is_boundary_method(spec: Any) -> bool:
    """True when a registry entry is a boundary method (it reports distances with ``return_dis``)."""
    for name in ("boundary", "is_boundary", "uses_boundary"):
        v = getattr(spec, name, None)
        if isinstance(v, bool):
            return v
    return "return_dis" in dict(getattr(spec, "defaults", {}) or {})


def predicted_labels(model: Any, x: Any, backend: Optional[str] = None) -> np.ndarray:
    """The model's predicted classes ``(N,)`` at ``x`` (batch first, the model's layout)."""
    from ..api import predict

    logits = predict(model, x, backend=backend)
    if hasattr(logits, "detach"):  # a torch tensor (perhaps on a GPU, perhaps bfloat16)
        logits = logits.detach().float().cpu()
    return np.asarray(logits).argmax(axis=1).astype(np.int64)


def plot_grid(
    images: Any,
    columns: Sequence[Any],
    row_titles: Optional[Sequence[str]] = None,
    fig: Any = None,
    output_file: Optional[str] = None,
    normalization_type: str = "signed_max",
    blur: float = 0.0,
    overlay_opacity: float = 0.5,
    cmap: Any = None,
    layout: Optional[str] = None,
    cell_inches: float = 1.7,
    dpi: int = 100,
    legend: bool = True,
) -> Any:
    """Draw a grid: one row per example, the image then one heatmap column per entry of ``columns``.

    Args:
        images: ``(N, C, H, W)`` or ``(N, H, W, C)``, shown min-max scaled.
        columns: :class:`Column` objects or ``(title, attributions[, notes])``
            tuples; ``attributions`` in the layout of ``images``; ``notes`` one
            short string per example shown under the panel (e.g. a distance).
        row_titles: one string per example, shown over its image (e.g. the labels).
        fig: a matplotlib figure to draw into; None makes one (a pyplot figure,
            or a detached one when only ``output_file`` is wanted).
        output_file: save the figure there.
        normalization_type, blur, overlay_opacity, cmap, layout: as in
            :class:`HeatmapVisualizer`.
        cell_inches, dpi: the size of a new figure's panels.
        legend: draw the key of the colours under the grid (red: for the label,
            blue: against it, untinted image: zero; see :func:`~boundary_xg.viz.heatmap.legend`).

    Returns:
        The figure.

    Raises:
        InputError: a column whose attributions do not match the images.
    """
    cols = [c if isinstance(c, Column) else Column(*c) for c in columns]
    img = minmax_image(as_nhwc(images, "images", layout))
    n = img.shape[0]
    viz = HeatmapVisualizer(overlay_opacity, normalization_type, blur, cmap, layout)
    overlays = []
    for c in cols:
        try:
            overlays.append(viz(c.attributions, images, imshow=False))
        except InputError as err:
            raise InputError(f"column {c.title!r}: {err}") from err
        if c.notes is not None and len(c.notes) != n:
            raise InputError(f"column {c.title!r} has {len(c.notes)} notes for {n} examples.")
    if row_titles is not None and len(row_titles) != n:
        raise InputError(f"row_titles has {len(row_titles)} entries for {n} examples.")
    ncols = 1 + len(cols)
    key_inches = 0.65 if legend and cols else 0.0  # room for the colour key under the grid
    size = (cell_inches * ncols, cell_inches * n + 0.4 + key_inches)
    if fig is None:
        if output_file is not None:
            from matplotlib.figure import Figure

            fig = Figure(figsize=size, dpi=dpi)
        else:
            import matplotlib.pyplot as plt

            fig = plt.figure(figsize=size, dpi=dpi)
    axes = fig.subplots(n, ncols, squeeze=False)
    for i in range(n):
        ax = axes[i, 0]
        ax.imshow(img[i], interpolation="nearest")
        ax.set_xticks([])
        ax.set_yticks([])
        if i == 0:
            ax.set_title("image", fontsize=9)
        if row_titles is not None:
            ax.set_ylabel(row_titles[i], fontsize=8)
        for j, c in enumerate(cols):
            ax = axes[i, j + 1]
            ax.imshow(overlays[j][i], interpolation="nearest")
            ax.set_xticks([])
            ax.set_yticks([])
            if i == 0:
                ax.set_title(c.title, fontsize=9)
            if c.notes is not None and c.notes[i]:
                ax.set_xlabel(c.notes[i], fontsize=8)
    if key_inches:
        height = fig.get_figheight()
        fig.tight_layout(rect=(0, key_inches / height, 1, 1))
        width = min(0.8, max(0.45, 3.6 / fig.get_figwidth()))
        draw_legend(fig, normalization_type, cmap,
                    rect=[(1 - width) / 2, 0.3 / height, width, 0.1 / height])
    else:
        fig.tight_layout()
    if output_file is not None:
        fig.savefig(output_file, dpi=dpi)
    return fig


@one_call()  # each warning once per compare, not once per method
def compare(
    model: Any,
    x: Any,
    labels: Any = None,
    methods: Sequence[str] = ("SM", "IG", "SG", "XG"),
    images: Any = None,
    options: Optional[Mapping[str, Mapping[str, Any]]] = None,
    class_names: Optional[Sequence[str]] = None,
    fig: Any = None,
    output_file: Optional[str] = None,
    normalization_type: str = "signed_max",
    blur: float = 0.0,
    overlay_opacity: float = 0.5,
    cmap: Any = None,
    backend: Optional[str] = None,
    legend: bool = True,
) -> Comparison:
    """Explain ``x`` with several methods and draw them side by side.

    Rows are examples; the first column shows the image titled with its label
    and the model's prediction, the others each method's heatmap (signed,
    normalised per panel). Boundary methods also report the L2 distance to the
    boundary point under their panel.

    Args:
        model: a PyTorch or Keras model (see :func:`boundary_xg.attribute`).
        x: inputs ``(N, ...)`` in the model's layout, NumPy or a native tensor.
        labels: classes to explain ``(N,)`` / one-hot, or None for the predictions.
        methods: method names (any name the registry knows, e.g. ``"BIG"``).
        images: what to show under the heatmaps (e.g. the un-normalised ``x``);
            default ``x`` itself.
        options: per-method options, e.g. ``{"IG": {"steps": 32}}``.
        class_names: names to show instead of class indices.
        fig, output_file, normalization_type, blur, overlay_opacity, cmap, legend: as in
            :func:`plot_grid`.
        backend: force the backend ("torch" / "tensorflow").

    Returns:
        A :class:`Comparison` with the figure, the attributions, the distances,
        the predictions and the seconds each method took.

    Raises:
        MethodError: an unknown method name (the message lists the valid ones);
        the errors of :func:`boundary_xg.attribute` for bad inputs.
    """
    from ..api import attribute, method_info

    if isinstance(methods, str):
        methods = [methods]
    specs = [method_info(m) for m in methods]  # fail on a bad name before any work
    options = dict(options or {})
    extra = {} if backend is None else {"backend": backend}
    preds = predicted_labels(model, x, backend)
    y = preds if labels is None else labels
    res = Comparison(fig=None, predictions=preds)
    columns: List[Column] = []
    for name, spec in zip(methods, specs):
        opts = dict(options.get(name, options.get(spec.short, {})))
        opts.update(extra)
        t0 = time.perf_counter()
        if is_boundary_method(spec):
            attr, dis = attribute(model, x, y, method=name, return_dis=True, **opts)
            dis = to_numpy(dis, "distances").reshape(-1)
            res.distances[spec.short] = dis
            notes = [f"d={d:.3g}" for d in dis]
        else:
            attr = attribute(model, x, y, method=name, **opts)
            notes = None
        res.seconds[spec.short] = time.perf_counter() - t0
        res.attributions[spec.short] = to_numpy(attr)
        columns.append(Column(spec.short, res.attributions[spec.short], notes))
    ylab = preds if labels is None else _label_indices(labels, len(preds))
    res.labels = ylab

    def name_of(k: int) -> str:
        return str(class_names[k]) if class_names is not None else str(int(k))

    rows = [f"label {name_of(a)}, pred {name_of(b)}" for a, b in zip(ylab, preds)]
    shown = x if images is None else images
    res.fig = plot_grid(shown, columns, rows, fig=fig, output_file=output_file,
                        normalization_type=normalization_type, blur=blur,
                        overlay_opacity=overlay_opacity, cmap=cmap, legend=legend)
    return res


def _label_indices(labels: Any, n: int) -> np.ndarray:
    arr = to_numpy(labels, "labels")
    if arr.ndim == 0:
        arr = np.full((n,), arr)
    if arr.ndim == 2:
        arr = arr.argmax(axis=1)
    return arr.astype(np.int64).reshape(-1)
