"""Heatmaps: rendered with Agg to PNG, then the pixels that matter are checked.

Oracles: hand-built maps whose normalised values are known, the colour map's own
colours for zero / negative / positive, and NumPy transposes for the layouts.
"""

from __future__ import annotations

import subprocess
import sys

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402
import pytest  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402

from boundary_xg.errors import InputError  # noqa: E402
from boundary_xg.viz import NORMALIZATIONS, HeatmapVisualizer, heatmap, normalize, tile  # noqa: E402
from boundary_xg.viz._arrays import as_nhwc, grid_shape  # noqa: E402

from conftest import needs_tf, needs_torch  # noqa: E402


def _png_pixels(fig, path) -> np.ndarray:
    fig.savefig(path, dpi=40)
    return plt.imread(str(path))[..., :3]


def _is_blue(rgb: np.ndarray, tol: float = 0.08) -> np.ndarray:
    return rgb[..., 2] - rgb[..., 0] > tol


def _is_red(rgb: np.ndarray, tol: float = 0.08) -> np.ndarray:
    return rgb[..., 0] - rgb[..., 2] > tol


# --- normalisation ------------------------------------------------------------------
def test_normalization_ranges():
    rng = np.random.default_rng(0)
    m = rng.standard_normal((3, 5, 6))
    m[1] *= 100.0  # per-example scales must not leak across examples
    for t, kind in NORMALIZATIONS.items():
        out = normalize(m, t)
        assert out.shape == m.shape
        if t in ("unsigned_max", "signed_max"):
            assert np.allclose(np.abs(out).max(axis=(1, 2)), 1.0)
            assert np.all(np.sign(out) == np.sign(m))
        if kind == "centered":
            assert out.min() >= 0 and out.max() <= 1
            assert np.all((out > 0.5) == (m > 0))
        if t == "magnitude_max":
            assert np.allclose(out.max(axis=(1, 2)), 1.0) and out.min() >= 0
        if t == "magnitude_sum":
            assert np.allclose(out.sum(axis=(1, 2)), 1.0)
        if t == "signed_sum":
            assert np.allclose(np.where(out > 0, out, 0).sum(axis=(1, 2)), 1.0)
            assert np.allclose(np.where(out < 0, out, 0).sum(axis=(1, 2)), -1.0)
        if t == "01":
            assert np.allclose(out.min(axis=(1, 2)), 0) and np.allclose(out.max(axis=(1, 2)), 1)
    assert np.array_equal(normalize(m, "unnormalized"), m)


def test_signed_max_scales_each_sign_on_its_own_and_unsigned_does_not():
    m = np.array([[[2.0, 1.0], [-8.0, -4.0]]])
    assert np.allclose(normalize(m, "signed_max"), [[[1.0, 0.5], [-1.0, -0.5]]])
    assert np.allclose(normalize(m, "unsigned_max"), [[[0.25, 0.125], [-1.0, -0.5]]])
    assert np.allclose(normalize(m, "signed_max_positive_centered"), [[[1.0, 0.75], [0.0, 0.25]]])


def test_zero_map_stays_zero():
    z = np.zeros((1, 4, 4))
    for t, kind in NORMALIZATIONS.items():
        out = normalize(z, t)
        assert np.all(np.isfinite(out))
        assert np.allclose(out, 0.5 if kind == "centered" else 0.0), t


def test_channels_are_summed_and_layouts_agree():
    a = np.zeros((1, 3, 4, 4))
    a[0, :, 0, 0] = [1.0, 2.0, -3.0]  # sums to zero
    a[0, :, 1, 1] = [1.0, 1.0, 1.0]
    v = HeatmapVisualizer(normalization_type="unnormalized")
    maps = v.process(a)
    assert maps.shape == (1, 4, 4)
    assert maps[0, 0, 0] == 0.0 and maps[0, 1, 1] == 3.0
    nhwc = np.transpose(a, (0, 2, 3, 1))
    assert np.array_equal(v.process(nhwc), maps)
    rgb = v(a, imshow=False)
    assert np.array_equal(v(nhwc, imshow=False), rgb)


def test_blur_is_per_example():
    a = np.zeros((2, 1, 21, 21))
    a[1, 0, 10, 10] = 1.0
    maps = HeatmapVisualizer(blur=1.5, normalization_type="unnormalized").process(a)
    assert np.all(maps[0] == 0)  # no leak from example 1
    assert maps[1, 10, 9] > 0 and maps[1, 10, 10] < 1.0
    assert np.isclose(maps[1].sum(), 1.0, atol=1e-6)  # a Gaussian keeps the total


# --- colours --------------------------------------------------------------------------
def test_positive_only_attribution_never_shows_the_negative_colour(tmp_path):
    rng = np.random.default_rng(0)
    attr = np.abs(rng.standard_normal((4, 3, 8, 8)))
    fig = Figure(figsize=(3, 3))
    v = HeatmapVisualizer(normalization_type="signed_max", blur=1)
    v(attr, None, fig=fig, imshow=False)
    px = _png_pixels(fig, tmp_path / "pos.png")
    assert not _is_blue(px).any()
    assert _is_red(px).sum() > 100
    # the same picture of the negated attribution is blue: the check can fail
    fig2 = Figure(figsize=(3, 3))
    v(-attr, None, fig=fig2, imshow=False)
    px2 = _png_pixels(fig2, tmp_path / "neg.png")
    assert _is_blue(px2).sum() > 100 and not _is_red(px2).any()


def test_heatmap_positive_only_and_sign_selection(tmp_path):
    attr = np.abs(np.random.default_rng(1).standard_normal((1, 8, 8))) + 0.1
    for sign in ("all", "positive", "absolute"):
        fig = Figure(figsize=(2, 2))
        out = heatmap(attr, ax=fig.add_subplot(), sign=sign)
        assert out.min() >= 0 and out.max() == 1.0
        px = _png_pixels(fig, tmp_path / f"{sign}.png")
        if sign != "absolute":  # absolute uses Greens, whose dark end is bluish-green
            assert not _is_blue(px).any(), sign
            assert _is_red(px).any(), sign
    fig = Figure(figsize=(2, 2))
    out = heatmap(attr, ax=fig.add_subplot(), sign="negative")
    assert np.all(out == 0)  # no negative evidence
    # negative evidence: blue with sign="all" and "negative", never red
    for sign in ("all", "negative"):
        fig = Figure(figsize=(2, 2))
        out = heatmap(-attr, ax=fig.add_subplot(), sign=sign)
        assert (out.min(), out.max() < 0) == (-1.0, True) if sign == "all" else out.max() == 1.0, sign
        px = _png_pixels(fig, tmp_path / f"neg_{sign}.png")
        assert _is_blue(px).sum() > 20 and not _is_red(px).any(), sign


def test_zero_has_the_same_colour_whatever_the_data_range():
    # a map dominated by positives and one dominated by negatives: zero is white in both
    a = np.zeros((2, 1, 4, 4))
    a[0, 0, 0, 0], a[0, 0, 0, 1] = 5.0, -0.1
    a[1, 0, 0, 0], a[1, 0, 0, 1] = 0.1, -5.0
    for t in ("signed_max", "unsigned_max", "signed_max_positive_centered", "signed_sum", "unnormalized"):
        rgb = HeatmapVisualizer(normalization_type=t)(a, imshow=False)
        assert np.allclose(rgb[0, 3, 3], rgb[1, 3, 3]), t
        assert np.allclose(rgb[:, 3, 3], 1.0, atol=0.01), t  # bwr's centre is white
    for t in ("magnitude_max", "magnitude_sum"):  # sequential map: zero at its light end
        rgb = HeatmapVisualizer(normalization_type=t)(a, imshow=False)
        assert np.allclose(rgb[0, 3, 3], rgb[1, 3, 3]), t
        assert np.allclose(rgb[0, 3, 3], matplotlib.colormaps["Reds"](0.0)[:3]), t
    # a signed map of much smaller values: zero keeps its colour, the extremes stay saturated
    rgb = HeatmapVisualizer()(a * 1e-6, imshow=False)
    assert np.allclose(rgb[:, 3, 3], 1.0, atol=0.01)
    assert np.allclose(rgb[0, 0, 0], matplotlib.colormaps["bwr"](1.0)[:3])
    assert np.allclose(rgb[1, 0, 1], matplotlib.colormaps["bwr"](0.0)[:3])


def test_outlier_clipping():
    a = np.ones((8, 8))
    a[0, 0] = 1000.0
    out = heatmap(a, ax=Figure().add_subplot(), outlier_perc=2)
    assert np.isclose(out[4, 4], 1.0)  # the outlier does not wash out the rest
    out = heatmap(a, ax=Figure().add_subplot(), outlier_perc=0)
    assert out[4, 4] < 0.01


def test_overlay_blends_minmax_scaled_image():
    img = np.random.default_rng(2).uniform(10, 20, (2, 1, 5, 5))
    attr = np.zeros((2, 1, 5, 5))
    v = HeatmapVisualizer()
    only_img = v(attr, img, overlay_opacity=0.0, imshow=False)
    assert only_img.shape == (2, 5, 5, 3)
    assert np.allclose(only_img.min(axis=(1, 2, 3)), 0) and np.allclose(only_img.max(axis=(1, 2, 3)), 1)
    # a zero attribution leaves the image as it is, on dark and light pixels alike
    half = v(attr, img, overlay_opacity=0.5, imshow=False)
    assert np.allclose(half, only_img)
    # the strongest attribution shows its colour at overlay_opacity, weaker ones more thinly
    a = np.zeros((2, 1, 5, 5))
    a[:, 0, 0, 0], a[:, 0, 0, 1], a[:, 0, 0, 2] = 1.0, 0.5, -1.0
    out = v(a, img, overlay_opacity=0.5, imshow=False)
    red, blue = (np.array(matplotlib.colormaps["bwr"](t)[:3]) for t in (1.0, 0.0))
    assert np.allclose(out[:, 0, 0], 0.5 * only_img[:, 0, 0] + 0.5 * red)
    assert np.allclose(out[:, 0, 2], 0.5 * only_img[:, 0, 2] + 0.5 * blue)
    mid = np.array(matplotlib.colormaps["bwr"](0.75)[:3])
    assert np.allclose(out[:, 0, 1], 0.75 * only_img[:, 0, 1] + 0.25 * mid)
    assert np.allclose(out[:, 1:], only_img[:, 1:])


def test_zero_attribution_is_untinted_on_black_and_white_pixels():
    # the notebooks' and docs' promise: zero looks the same (the image, untinted) in every
    # panel; a uniform blend turned it grey on black pixels and white on white strokes
    img = np.zeros((1, 1, 4, 4))
    img[..., 2:] = 1.0  # left half black, right half white
    attr = np.zeros((1, 1, 4, 4))
    attr[0, 0, 0, 0] = 1.0  # one non-zero pixel sets the scale
    out = HeatmapVisualizer()(attr, img, imshow=False)
    assert np.allclose(out[0, 1:, :2], 0.0) and np.allclose(out[0, 1:, 2:], 1.0)
    ax = Figure().add_subplot()
    heatmap(attr[0], image=img[0], ax=ax)
    shown = ax.images[0].get_array()
    assert np.allclose(shown[1:, :2], 0.0) and np.allclose(shown[1:, 2:], 1.0)


# --- tiling and the seed's snippet ------------------------------------------------------
@pytest.mark.parametrize("n,grid", [(1, (1, 1)), (4, (2, 2)), (5, (2, 3)), (7, (3, 3)), (10, (3, 4))])
def test_grid_shape(n, grid):
    assert grid_shape(n) == grid


def test_tiled_shape_and_order():
    batch = np.arange(5, dtype=float)[:, None, None, None] * np.ones((5, 4, 6, 3))
    t = tile(batch)
    assert t.shape == (2 * 4, 3 * 6, 3)
    assert t[0, 0, 0] == 0 and t[0, 6, 0] == 1 and t[0, 12, 0] == 2 and t[4, 0, 0] == 3
    assert t[4, 12, 0] == 1.0  # the empty cell is white
    out = HeatmapVisualizer()(np.ones((5, 3, 4, 6)), np.ones((5, 3, 4, 6)), imshow=False, return_tiled=True)
    assert out.shape == (8, 18, 3)


def test_seed_snippet_draws_into_the_figure(tmp_path):
    attr = np.random.default_rng(0).standard_normal((4, 3, 16, 16))
    img = np.random.default_rng(1).uniform(0, 1, (4, 3, 16, 16))
    mask_viz = HeatmapVisualizer(blur=7, normalization_type="signed_max")
    fig = plt.figure(figsize=(10, 10))
    try:
        out = mask_viz(attr, img, overlay_opacity=0.5, fig=fig, return_tiled=False)
        assert out.shape == (4, 16, 16, 3)
        assert len(fig.axes) == 4
        assert out.min() >= 0 and out.max() <= 1
    finally:
        plt.close(fig)
    path = tmp_path / "viz.png"
    mask_viz(np.abs(attr), np.full_like(img, 0.5), output_file=str(path), imshow=False)
    px = plt.imread(str(path))[..., :3]
    assert px.shape[0] > 50
    assert _is_red(px).sum() > 100 and not _is_blue(px).any()  # positive evidence only: red, never blue


# --- the grid, pixel by pixel --------------------------------------------------------------
def _panel(img: np.ndarray, ax, margin: int = 3) -> np.ndarray:
    """The pixels of ``ax`` (frame excluded) in a PNG saved at the figure's dpi."""
    bb = ax.get_window_extent()
    h = img.shape[0]
    return img[int(h - bb.y1) + margin:int(h - bb.y0) - margin, int(bb.x0) + margin:int(bb.x1) - margin]


def test_plot_grid_pixels(tmp_path):
    from boundary_xg.viz import Column, plot_grid

    rng = np.random.default_rng(0)
    images = np.tile(np.linspace(0, 1, 8), (2, 1, 8, 1))  # grey ramps, (2, 1, 8, 8)
    pos = np.abs(rng.standard_normal((2, 1, 8, 8))) + 0.05
    mixed = pos.copy()
    mixed[..., 4:] *= -1  # left half for, right half against
    path = tmp_path / "grid.png"
    fig = plot_grid(images, [Column("pos", pos, ["d=0.50", "d=0.25"]), ("neg", -pos), ("mixed", mixed)],
                    ["label 1", "label 2"], output_file=str(path), dpi=60)
    px = plt.imread(str(path))[..., :3]
    axes = np.array(fig.axes[:8]).reshape(2, 4)
    key = fig.axes[8]  # the colour key under the grid
    assert [t.get_text() for t in key.get_xticklabels()] == [
        "against the label", "0: image untinted", "for the label"]
    assert [a.get_title() for a in axes[0]] == ["image", "pos", "neg", "mixed"]
    assert [a.get_ylabel() for a in axes[:, 0]] == ["label 1", "label 2"]
    assert axes[1, 1].get_xlabel() == "d=0.25" and axes[1, 2].get_xlabel() == ""
    for i in range(2):
        im = _panel(px, axes[i, 0])
        assert np.allclose(im[..., 0], im[..., 2], atol=0.02)  # the image is grey
        assert im.min() < 0.1 and im.max() > 0.9  # min-max scaled: black to white
        # weak attributions are laid on thinly (zero: not at all), so only part of a
        # panel of random magnitudes is clearly coloured; never the other sign's colour
        p = _panel(px, axes[i, 1])
        assert _is_red(p).mean() > 0.25 and not _is_blue(p).any()
        n = _panel(px, axes[i, 2])
        assert _is_blue(n).mean() > 0.25 and not _is_red(n).any()
        m = _panel(px, axes[i, 3])
        half = m.shape[1] // 2
        assert not _is_blue(m[:, : half - 2]).any() and not _is_red(m[:, half + 2:]).any()
    # a column whose attributions do not match the images names the column
    with pytest.raises(InputError, match="column 'bad'"):
        plot_grid(images, [("bad", np.ones((3, 1, 8, 8)))], output_file=str(tmp_path / "x.png"))


# --- inputs ---------------------------------------------------------------------------
def test_shapes_and_errors():
    assert as_nhwc(np.zeros((5, 7))).shape == (1, 5, 7, 1)
    assert as_nhwc(np.zeros((3, 5, 7))).shape == (1, 5, 7, 3)
    assert as_nhwc(np.zeros((5, 7, 3))).shape == (1, 5, 7, 3)
    assert as_nhwc(np.zeros((2, 5, 5, 3)), layout="NCHW").shape == (2, 5, 3, 5)
    with pytest.raises(InputError, match="normalization_type"):
        HeatmapVisualizer(normalization_type="max")
    with pytest.raises(InputError, match="blur"):
        HeatmapVisualizer(blur=-1)
    with pytest.raises(InputError, match="overlay_opacity"):
        HeatmapVisualizer()(np.ones((1, 1, 4, 4)), overlay_opacity=2, imshow=False)
    with pytest.raises(InputError, match="x holds"):
        HeatmapVisualizer()(np.ones((2, 1, 5, 5)), np.ones((2, 1, 4, 4)), imshow=False)
    with pytest.raises(InputError, match="sign"):
        heatmap(np.ones((4, 4)), ax=Figure().add_subplot(), sign="pos")
    with pytest.raises(InputError, match="one"):
        heatmap(np.ones((2, 1, 4, 4)), ax=Figure().add_subplot())
    with pytest.raises(InputError, match="NaN"):
        HeatmapVisualizer()(np.full((1, 1, 2, 2), np.nan), imshow=False)
    with pytest.raises(InputError, match="shape"):
        HeatmapVisualizer()(np.ones((2, 2, 2, 2, 2)), imshow=False)


@needs_torch
def test_torch_tensors_are_accepted():
    import torch

    a = np.random.default_rng(0).standard_normal((2, 3, 6, 6)).astype(np.float32)
    v = HeatmapVisualizer()
    t = torch.from_numpy(a).requires_grad_()
    assert np.allclose(v(t * 1, t.detach(), imshow=False), v(a, a, imshow=False))


@needs_torch
def test_compare_accepts_tensors_in_either_layout(tmp_path):
    import torch

    import boundary_xg as bxg
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set
    from boundary_xg.viz import compare

    model = load_digit_model("torch")
    x, y = load_digit_test_set()
    xt, yt = torch.from_numpy(x[:2]), torch.from_numpy(y[:2])
    res = compare(model, xt, yt, methods=["SM", "IG"], options={"IG": {"steps": 8}},
                  images=np.transpose(x[:2], (0, 2, 3, 1)),  # shown in NHWC: the layout is read from the shape
                  output_file=str(tmp_path / "g.png"))
    assert isinstance(res.attributions["SM"], np.ndarray)
    np.testing.assert_allclose(res.attributions["SM"], bxg.attribute(model, x[:2], y[:2], method="SM"), rtol=1e-5)
    assert list(res.labels) == list(y[:2]) and set(res.seconds) == {"SM", "IG"}
    with pytest.raises(bxg.MethodError, match="NOPE"):
        compare(model, xt, yt, methods=["NOPE"], output_file=str(tmp_path / "h.png"))


@needs_tf
def test_tf_tensors_are_accepted():
    import tensorflow as tf

    a = np.random.default_rng(0).standard_normal((2, 6, 6, 3)).astype(np.float32)
    v = HeatmapVisualizer()
    assert np.allclose(v(tf.constant(a), tf.constant(a), imshow=False), v(a, a, imshow=False))


def test_import_viz_imports_no_matplotlib_or_framework():
    code = ("import sys, boundary_xg, boundary_xg.viz, boundary_xg.demo_models, boundary_xg.cli; "
            "bad = [m for m in ('matplotlib', 'torch', 'tensorflow', 'scipy') if m in sys.modules]; "
            "print(bad); sys.exit(1 if bad else 0)")
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert r.returncode == 0, r.stdout + r.stderr


# --- compare on the embedded digits model ---------------------------------------------------
@needs_torch
def test_compare_draws_the_grid_with_boundary_distances(tmp_path):
    import boundary_xg as bxg
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set
    from boundary_xg.methods.registry import lookup
    from boundary_xg.viz import compare, is_boundary_method

    assert not is_boundary_method(lookup("IG"))
    model = load_digit_model("torch")
    x, y = load_digit_test_set()
    x, y = x[:2], y[:2]
    methods = ["SM", "IG"]
    has_big = "BIG" in {s.short for s in bxg.METHODS.values()}
    if has_big:
        assert is_boundary_method(lookup("BIG"))
        methods.append("BIG")
    path = tmp_path / "grid.png"
    pgd = {"attacks": [bxg.PGD(eps=[0.3, 0.6, 1.0, 2.0], steps=10)], "bounds": (0.0, 1.0)} if has_big else {}
    res = compare(model, x, y, methods=methods, output_file=str(path),
                  options={"IG": {"steps": 16}, "BIG": dict(pgd, steps=16)})
    assert np.allclose(res.attributions["SM"], bxg.attribute(model, x, y, method="SM"))
    assert list(res.predictions) == list(y)  # the model gets these two right
    img = plt.imread(str(path))
    w = 1.7 * 100 * (1 + len(methods))
    assert abs(img.shape[1] - w) < 2
    axes = res.fig.axes
    assert len(axes) == 2 * (1 + len(methods)) + 1  # the panels and the colour key
    assert axes[-1].get_xticklabels()[-1].get_text() == "for the label"
    assert axes[0].get_ylabel() == f"label {y[0]}, pred {y[0]}"
    if has_big:
        assert res.distances["BIG"].shape == (2,)
        assert axes[len(methods)].get_xlabel().startswith("d=")
