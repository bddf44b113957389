"""Heatmaps of attributions: the TruLens-style ``HeatmapVisualizer`` and a one-example ``heatmap``.

matplotlib (and scipy, for the blur) are imported inside the functions, so
``import boundary_xg.viz`` costs nothing until a picture is drawn.

Colours: a fixed colour range, so that zero is the same colour in every panel
and every call (TruLens rescaled the colour map to each image's data range, so
zero drifted). Signed normalisations use a diverging map (``bwr``: negative
blue, zero white, positive red); magnitudes a sequential map starting at white.
Over an image, a colour's opacity grows with the attribution's magnitude, so a
zero attribution leaves the image untinted in every panel, on dark and light
pixels alike; :func:`legend` draws the key (red, blue, untinted) under a figure.
"""

from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ..errors import InputError
from ._arrays import (
    NORMALIZATIONS,
    as_nhwc,
    blur_maps,
    color_range,
    grid_shape,
    minmax_image,
    normalize,
    reduce_channels,
    resize_maps,
    tile,
)

#: default colour map per colour-scale kind (see ``_arrays.NORMALIZATIONS``)
DEFAULT_CMAPS = {"signed": "bwr", "centered": "bwr", "magnitude": "Reds", "01": "viridis"}
SIGNS = ("all", "positive", "negative", "absolute")


def _cmap(name: Any):
    import matplotlib

    return matplotlib.colormaps[name] if isinstance(name, str) else name


def _check_opacity(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not 0 <= v <= 1:
        raise InputError(f"overlay_opacity={v!r}: expected a number in [0, 1].")
    return float(v)


def _check_blur(v: Any) -> float:
    if isinstance(v, bool) or not isinstance(v, (int, float, np.number)) or not np.isfinite(v) or v < 0:
        raise InputError(f"blur={v!r}: expected a finite number >= 0 (Gaussian sigma in pixels).")
    return float(v)


def _coarser(maps: np.ndarray, img: np.ndarray) -> bool:
    """True for maps ``(N, h, w)`` smaller than the images ``(N, H, W, C)`` in both axes."""
    return (maps.shape[0] == img.shape[0] and maps.shape[1:3] != img.shape[1:3]
            and maps.shape[1] <= img.shape[1] and maps.shape[2] <= img.shape[2])


def strength(maps: np.ndarray, vmin: float, vmax: float, kind: str) -> np.ndarray:
    """How far each value lies from the scale's neutral point, in [0, 1] (``(N, H, W)``).

    Signed scales: ``|a| / max(|vmin|, |vmax|)``; centred ones (zero at 0.5):
    ``|a - 0.5| * 2``; magnitudes: ``a / vmax``. ``01`` has no neutral point: 1.
    """
    if kind == "signed":
        return np.clip(np.abs(maps) / max(abs(vmin), abs(vmax)), 0.0, 1.0)
    if kind == "centered":
        return np.clip(np.abs(maps - 0.5) * 2.0, 0.0, 1.0)
    if kind == "magnitude":
        return np.clip(maps / vmax, 0.0, 1.0)
    return np.ones_like(maps)


def blend(img: np.ndarray, heat: np.ndarray, weight: np.ndarray, opacity: float) -> np.ndarray:
    """The heatmap over the image, its opacity growing with the attribution's strength.

    ``out = (1 - w) * image + w * colour`` with ``w = opacity * weight`` per pixel:
    a zero attribution leaves the image as it is (on black and white pixels alike),
    the strongest shows its colour at ``opacity``. (A uniform blend, TruLens', turns
    zero grey on black pixels and white on white ones.)
    """
    w = opacity * weight[..., None]
    return (1.0 - w) * img + w * heat


def colorize(maps: np.ndarray, vmin: float, vmax: float, cmap: Any) -> np.ndarray:
    """RGB ``(..., 3)`` in [0, 1] of ``maps`` through ``cmap`` over the fixed range ``[vmin, vmax]``."""
    scaled = np.clip((maps - vmin) / (vmax - vmin), 0.0, 1.0)
    return _cmap(cmap)(scaled)[..., :3]


class HeatmapVisualizer:
    """Attribution heatmaps overlaid on their images, with TruLens' API.

    Drop-in for ``trulens.visualizations.HeatmapVisualizer`` (which no longer
    imports on Python 3.11+)::

        from boundary_xg.viz import HeatmapVisualizer
        mask_viz = HeatmapVisualizer(blur=7, normalization_type="signed_max")
        fig = plt.figure(figsize=(10, 10))
        _ = mask_viz(attr, img, overlay_opacity=0.5, fig=fig, return_tiled=False)

    Steps, per example: channels summed (so the map's total is the attribution's
    total), Gaussian blur with std ``blur`` pixels, normalisation (see
    :func:`boundary_xg.viz._arrays.normalize` for the nine types), colours over
    a fixed range (zero always the same colour), the image min-max scaled to
    [0, 1] and the colours laid over it with an opacity that grows with the
    attribution's magnitude, up to ``overlay_opacity``: a zero attribution leaves
    the image as it is in every panel (:func:`blend`).

    Args:
        overlay_opacity: weight of the strongest attribution's colour over the
            image, in [0, 1] (0.5); weaker ones are laid on more thinly, zero not at all.
        normalization_type: one of ``unsigned_max``, ``unsigned_max_positive_centered``,
            ``magnitude_max``, ``magnitude_sum``, ``signed_max`` (default),
            ``signed_max_positive_centered``, ``signed_sum``, ``01``, ``unnormalized``.
        blur: Gaussian sigma in pixels (0 = none; TruLens' default of 10 would
            wash out small images, so the default here is 0).
        cmap: a matplotlib colour map or its name; None picks ``bwr`` for signed
            types, ``Reds`` for magnitudes, ``viridis`` for ``01``.
        layout: ``"NCHW"``, ``"NHWC"`` or None to read the layout from the shapes.

    Raises:
        InputError: an unknown normalisation type, a negative blur, an opacity
            outside [0, 1].
    """

    def __init__(
        self,
        overlay_opacity: float = 0.5,
        normalization_type: str = "signed_max",
        blur: float = 0.0,
        cmap: Any = None,
        layout: Optional[str] = None,
    ):
        if normalization_type not in NORMALIZATIONS:
            raise InputError(
                f"normalization_type={normalization_type!r}: expected one of {list(NORMALIZATIONS)}."
            )
        self.overlay_opacity = _check_opacity(overlay_opacity)
        self.normalization_type = normalization_type
        self.blur = _check_blur(blur)
        self.cmap = cmap
        self.layout = layout

    def process(self, attributions: Any, normalization_type: Optional[str] = None,
                blur: Optional[float] = None) -> np.ndarray:
        """The normalised maps ``(N, H, W)``: channels summed, blurred, normalised.

        Args:
            attributions: ``(N, C, H, W)`` or ``(N, H, W, C)``, NumPy or a tensor.
        """
        t = normalization_type or self.normalization_type
        b = self.blur if blur is None else _check_blur(blur)
        maps = reduce_channels(as_nhwc(attributions, "attributions", self.layout))
        return normalize(blur_maps(maps, b), t)

    def __call__(
        self,
        attributions: Any,
        x: Any = None,
        output_file: Optional[str] = None,
        imshow: bool = True,
        fig: Any = None,
        return_tiled: bool = False,
        overlay_opacity: Optional[float] = None,
        normalization_type: Optional[str] = None,
        blur: Optional[float] = None,
        cmap: Any = None,
    ) -> np.ndarray:
        """Overlay the heatmaps of ``attributions`` on the images ``x`` and draw them.

        Args:
            attributions: ``(N, C, H, W)`` or ``(N, H, W, C)`` (one example or one
                ``(H, W)`` map also work), NumPy or a torch / TF tensor.
            x: the images, same layout and size (None: heatmaps alone); smaller
                maps (a layer's resolution) are resized bilinearly to them. Show the
                un-normalised image (e.g. ``x * std + mean``); it is min-max scaled.
            output_file: save the drawn figure there (PNG, PDF, ...).
            imshow: draw the result (into ``fig``, or a new pyplot figure).
            fig: a matplotlib figure to draw into; the batch is laid out as a
                near-square grid of panels.
            return_tiled: return one tiled mosaic instead of a batch.
            overlay_opacity, normalization_type, blur, cmap: override the
                constructor's values for this call.

        Returns:
            The overlays in [0, 1]: ``(N, H, W, 3)``, or with ``return_tiled`` one
            ``(rows * H, cols * W, 3)`` mosaic (rows x cols the near-square grid,
            empty cells white).

        Raises:
            InputError: shapes that are not images, ``x`` of a different size.
        """
        t = normalization_type or self.normalization_type
        if t not in NORMALIZATIONS:
            raise InputError(f"normalization_type={t!r}: expected one of {list(NORMALIZATIONS)}.")
        opacity = self.overlay_opacity if overlay_opacity is None else _check_opacity(overlay_opacity)
        maps = self.process(attributions, t, blur)
        img = None if x is None else minmax_image(as_nhwc(x, "x", self.layout))
        if img is not None and _coarser(maps, img):
            maps = resize_maps(maps, img.shape[1:3])  # one map per example at a layer's resolution
        vmin, vmax, kind = color_range(maps, t)
        heat = colorize(maps, vmin, vmax, cmap or self.cmap or DEFAULT_CMAPS[kind])
        if img is not None:
            if img.shape[:3] != heat.shape[:3]:
                raise InputError(
                    f"x holds {img.shape[0]} images of {img.shape[1]}x{img.shape[2]} but the "
                    f"attributions {heat.shape[0]} maps of {heat.shape[1]}x{heat.shape[2]}; "
                    "pass the images that were explained, in the same layout."
                )
            out = blend(img, heat, strength(maps, vmin, vmax, kind), opacity)
        else:
            out = heat
        if fig is not None or output_file is not None or imshow:
            self._draw(out, fig, output_file, imshow)
        return tile(out) if return_tiled else out

    @staticmethod
    def _draw(out: np.ndarray, fig: Any, output_file: Optional[str], imshow: bool) -> None:
        own = fig is None
        if own:
            if imshow:
                import matplotlib.pyplot as plt

                fig = plt.figure()
            else:  # only a file is wanted: no pyplot figure that would linger
                from matplotlib.figure import Figure

                fig = Figure()
        rows, cols = grid_shape(out.shape[0])
        for i in range(out.shape[0]):
            ax = fig.add_subplot(rows, cols, i + 1)
            ax.imshow(out[i], interpolation="nearest")
            ax.set_axis_off()
        if output_file is not None:
            fig.savefig(output_file, bbox_inches="tight")


def heatmap(
    attr: Any,
    image: Any = None,
    ax: Any = None,
    sign: str = "all",
    outlier_perc: float = 2.0,
    cmap: Any = None,
    overlay_opacity: float = 0.5,
    blur: float = 0.0,
    layout: Optional[str] = None,
    colorbar: bool = False,
    title: Optional[str] = None,
) -> np.ndarray:
    """Draw the heatmap of one example's attribution, optionally over its image.

    The channels are summed; the scale is the ``100 - outlier_perc`` percentile
    of the magnitudes, so a few extreme pixels do not wash out the rest; values
    beyond it are clipped.

    Args:
        attr: one example, ``(C, H, W)``, ``(H, W, C)``, ``(H, W)`` or a batch of one.
        image: the image, same size (None: the heatmap alone; a smaller map is
            resized bilinearly to it); min-max scaled.
        ax: matplotlib axes to draw into (None: the current axes).
        sign: ``"all"`` (signed, diverging ``bwr``, range [-1, 1]), ``"positive"``
            (positive part, ``Reds``), ``"negative"`` (magnitude of the negative
            part, ``Blues``) or ``"absolute"`` (``|a|``, ``Greens``); the last three
            over [0, 1].
        outlier_perc: percent of the largest magnitudes clipped (2.0).
        cmap: override the colour map.
        overlay_opacity: weight of the heatmap over the image (0.5).
        blur: Gaussian sigma in pixels before scaling (0).
        layout: "NCHW"/"NHWC"-style hint for ambiguous shapes, or None.
        colorbar: add a colour bar; title: the axes title.

    Returns:
        The scaled map ``(H, W)``, in [-1, 1] for ``sign="all"``, else [0, 1].

    Raises:
        InputError: more than one example, an unknown ``sign``, ``outlier_perc``
            outside [0, 100).
    """
    if sign not in SIGNS:
        raise InputError(f"sign={sign!r}: expected one of {list(SIGNS)}.")
    if isinstance(outlier_perc, bool) or not isinstance(outlier_perc, (int, float, np.number)) \
            or not 0 <= outlier_perc < 100:
        raise InputError(f"outlier_perc={outlier_perc!r}: expected a number in [0, 100).")
    a = as_nhwc(attr, "attr", layout)
    if a.shape[0] != 1:
        raise InputError(
            f"attr holds {a.shape[0]} examples; heatmap draws one (use HeatmapVisualizer or "
            "compare for a batch)."
        )
    m = blur_maps(reduce_channels(a), _check_blur(blur))
    shown = None if image is None else as_nhwc(image, "image", layout)
    if shown is not None and _coarser(m, shown):  # a map at a layer's resolution overlays its image
        m = resize_maps(m, shown.shape[1:3])
    m = m[0]
    if sign == "positive":
        m = np.maximum(m, 0.0)
    elif sign == "negative":
        m = np.maximum(-m, 0.0)
    elif sign == "absolute":
        m = np.abs(m)
    mags = np.abs(m)
    scale = float(np.percentile(mags, 100.0 - outlier_perc)) if mags.size else 0.0
    if scale <= 1e-12:
        scale = float(mags.max()) if mags.size and mags.max() > 1e-12 else 1.0
    lo = -1.0 if sign == "all" else 0.0
    scaled = np.clip(m / scale, lo, 1.0)
    default = {"all": "bwr", "positive": "Reds", "negative": "Blues", "absolute": "Greens"}[sign]
    cm = cmap or default
    rgb = colorize(scaled, lo, 1.0, cm)
    if image is not None:
        img = minmax_image(as_nhwc(image, "image", layout))
        if img.shape[0] != 1 or img.shape[1:3] != rgb.shape[:2]:
            raise InputError(
                f"image of shape {img.shape[1:3]} does not match attr's {rgb.shape[:2]}; pass the "
                "one image that was explained."
            )
        opacity = _check_opacity(overlay_opacity)
        rgb = blend(img[0], rgb, np.abs(scaled), opacity)
    if ax is None:
        import matplotlib.pyplot as plt

        ax = plt.gca()
    ax.imshow(rgb, interpolation="nearest")
    ax.set_axis_off()
    if title is not None:
        ax.set_title(title)
    if colorbar:
        import matplotlib.cm
        import matplotlib.colors

        sm = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(lo, 1.0), _cmap(cm))
        ax.figure.colorbar(sm, ax=ax, fraction=0.046, pad=0.04)
    return scaled


#: per colour-scale kind: (ticks, their labels) of the legend
_LEGEND_TICKS = {
    "signed": ((-1.0, 0.0, 1.0), ("against the label", "0: image untinted", "for the label")),
    "centered": ((0.0, 0.5, 1.0), ("against the label", "0: image untinted", "for the label")),
    "magnitude": ((0.0, 1.0), ("0: image untinted", "largest |attribution|")),
    "01": ((0.0, 1.0), ("smallest", "largest")),
}


def legend(fig: Any, normalization_type: str = "signed_max", cmap: Any = None, rect: Any = None) -> Any:
    """Draw the key of the heatmaps' colours as a horizontal colour bar in ``fig``.

    Signed scales read "against the label" (blue), "0: image untinted" and "for the
    label" (red); each panel is scaled to its own largest magnitude, so the key
    gives meanings, not values.

    Args:
        fig: the matplotlib figure.
        normalization_type: the heatmaps' normalisation (picks the scale and map).
        cmap: the colour map used (None: the default for the normalisation).
        rect: ``[left, bottom, width, height]`` of the bar in figure coordinates
            (default: centred along the bottom edge).

    Returns:
        The colour bar's axes.
    """
    import matplotlib.cm
    import matplotlib.colors

    if normalization_type not in NORMALIZATIONS:
        raise InputError(f"normalization_type={normalization_type!r}: expected one of {list(NORMALIZATIONS)}.")
    kind = NORMALIZATIONS[normalization_type]
    ticks, labels = _LEGEND_TICKS[kind]
    lo, hi = (-1.0, 1.0) if kind == "signed" else (0.0, 1.0)
    cax = fig.add_axes(rect or [0.25, 0.035, 0.5, 0.03])
    sm = matplotlib.cm.ScalarMappable(matplotlib.colors.Normalize(lo, hi), _cmap(cmap or DEFAULT_CMAPS[kind]))
    bar = fig.colorbar(sm, cax=cax, orientation="horizontal", ticks=list(ticks))
    texts = bar.ax.set_xticklabels(list(labels), fontsize=7)
    # the end labels sit inside the bar's extent, so a narrow figure does not cut them off
    texts[0].set_horizontalalignment("left")
    texts[-1].set_horizontalalignment("right")
    bar.outline.set_linewidth(0.5)
    return cax
