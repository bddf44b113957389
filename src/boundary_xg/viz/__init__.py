"""Heatmaps of attributions (NumPy + matplotlib + scipy, imported when a picture is drawn).

- :class:`HeatmapVisualizer`: TruLens' API, a drop-in for the seed's snippet::

      from boundary_xg.viz import HeatmapVisualizer
      mask_viz = HeatmapVisualizer(blur=7, normalization_type="signed_max")
      _ = mask_viz(attr, img, overlay_opacity=0.5, fig=fig, return_tiled=False)

- :func:`heatmap`: one example on one axes, with sign selection and outlier clipping.
- :func:`compare`: several methods side by side on a model; :func:`plot_grid` for
  attributions you already have.
- :func:`plot_metric_curves`, :func:`plot_kpm_family`, :func:`plot_randomization`:
  figures of :mod:`boundary_xg.metrics` results (insertion/deletion and other
  curves, the KPM family, the sanity-check grid).

Inputs may be NCHW or NHWC, NumPy or torch / TensorFlow tensors.
"""

from ._arrays import NORMALIZATIONS, normalize, tile
from .grid import Column, Comparison, compare, is_boundary_method, plot_grid, predicted_labels
from .heatmap import HeatmapVisualizer, heatmap, legend
from .metrics import plot_kpm_family, plot_metric_curves, plot_randomization

__all__ = [
    "HeatmapVisualizer",
    "heatmap",
    "legend",
    "compare",
    "plot_grid",
    "Column",
    "Comparison",
    "NORMALIZATIONS",
    "normalize",
    "tile",
    "is_boundary_method",
    "predicted_labels",
    "plot_metric_curves",
    "plot_kpm_family",
    "plot_randomization",
]
