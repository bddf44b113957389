"""The command line, run as a user runs it: ``python -m boundary_xg`` in a subprocess.

Oracles: the X-Gradient = IG identity on the bias-free model (the demo's figure),
the API called in this process on the same model and inputs (the CLI must only
wire files to it), and the shapes and formats of what is written.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import warnings

import numpy as np
import pytest

from conftest import needs_tf, needs_torch
from one_framework import run_without


def run_cli(*args, cwd=None, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1",
               TF_NUM_INTEROP_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "boundary_xg", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def _digit_pngs(digits, folder, count=2):
    """Write the first ``count`` test digits as 8x8 grayscale PNG files; their paths."""
    from PIL import Image

    paths = []
    for i in range(count):
        p = folder / f"d{i}.png"
        Image.fromarray(np.round(digits[0][i, 0] * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    return paths


def error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("boundary-xg: error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


ALL_METHODS = ["SM", "IG", "SG", "XG", "DeepLIFT", "GradCAM", "FullGrad", "BSM", "BIG", "BSG", "BDT",
               "IG_Uniform", "IG_SG", "AGI", "LPI"]
BOUNDARY = {"BSM", "BIG", "BSG", "BDT"}


def check_demo(r, out, n: int) -> dict:
    """What every demo run must show, whatever the backend."""
    assert r.returncode == 0, r.stderr
    assert "I0000" not in r.stderr and "oneDNN" not in r.stderr  # framework start-up logs silenced
    assert "method" in r.stdout and "XG vs IG" in r.stdout
    for name in ALL_METHODS:  # the printed table has a row per method
        assert any(line.split()[:1] == [name] for line in r.stdout.splitlines()), name
    s = json.loads((out / "summary.json").read_text())
    assert s["accuracy"]["regular"] > 0.9 and s["accuracy"]["x"] > 0.9
    assert [m["method"] for m in s["methods"]] == ALL_METHODS and s["skipped"] == []
    # X-Gradient is IG from zero on the bias-free model, not on the regular one
    assert s["xg_vs_ig_relative_l1"]["x_model"] < 1e-4
    assert s["xg_vs_ig_relative_l1"]["regular_model"] > 0.05
    rows = {m["method"]: m for m in s["methods"]}
    assert rows["IG"]["gap_relative"] < 0.05 and rows["DeepLIFT"]["gap_relative"] < 1e-3
    assert rows["FullGrad"]["gap_relative"] < 1e-4  # the full-gradient decomposition is exact
    assert rows["XG"]["model"] == "x" and rows["IG"]["model"] == "regular"
    assert all(m["seconds"] > 0 for m in s["methods"])
    for name in BOUNDARY:  # a distance per digit, all found on these digits
        m = rows[name]
        assert m["found"] == n and len(m["distances"]) == n
        assert all(d is not None and 0 < d < 3 for d in m["distances"])
    # the page shows the grid and every figure the issue asks for
    page = (out / "index.html").read_text()
    assert '<img src="grid.png"' in page
    assert f"{s['accuracy']['regular']:.3f}" in page and f"{s['accuracy']['x']:.3f}" in page
    assert f"{s['xg_vs_ig_relative_l1']['x_model']:.2e}</b> on the bias-free X-model" in page
    assert "completeness gap" in page and f"{rows['IG']['gap_mean_abs']:.3g}" in page
    assert "Boundary distances" in page and f"{rows['BIG']['distances'][0]:.3f}" in page
    assert "<th>seconds</th>" in page and f"<td>{rows['SM']['seconds']:.2f}</td>" in page
    # DiffID and the insertion and deletion areas of every method, random for reference
    assert "<th>DiffID</th>" in page and "<th>insertion</th>" in page and "<th>deletion</th>" in page
    for name in ALL_METHODS:
        for metric in ("diffid", "insertion", "deletion"):
            assert np.isfinite(rows[name][metric]), (name, metric)
            assert f"<td>{rows[name][metric]:.3g}</td>" in page
    assert rows["IG"]["deletion"] < s["metrics_random"]["deletion"]
    assert rows["IG"]["insertion"] > s["metrics_random"]["insertion"]
    # the grid: one row per digit, the image and one column per method (1.7 in at 100 dpi)
    import matplotlib.pyplot as plt

    img = plt.imread(str(out / "grid.png"))[..., :3]
    assert abs(img.shape[1] - 170 * (1 + len(ALL_METHODS))) <= 2
    assert abs(img.shape[0] - (170 * n + 40 + 65)) <= 2  # the rows and the colour key under them
    red = (img[..., 0] - img[..., 2]) > 0.2
    blue = (img[..., 2] - img[..., 0]) > 0.2
    assert red.sum() > 50 and blue.sum() > 50  # signed heatmaps drawn, not a blank page
    return s


@needs_torch
def test_demo_torch_writes_page_grid_and_figures(tmp_path):
    """README's main command on a PyTorch-only install (TensorFlow's packages absent), no --backend."""
    out = tmp_path / "demo"
    r = run_without("tensorflow", ["demo", "--out", str(out), "-n", "3"], tmp_path)
    s = check_demo(r, out, 3)
    assert s["backend"] == "torch" and s["total_seconds"] < 60


@needs_tf
def test_demo_tensorflow(tmp_path):
    """README's main command on a TensorFlow-only install (torch's packages absent): the demo picks
    TensorFlow by itself, and TensorFlow's start-up log stays quiet without TF_CPP_MIN_LOG_LEVEL."""
    out = tmp_path / "demo"
    r = run_without("torch", ["demo", "--out", str(out), "-n", "2"], tmp_path)
    s = check_demo(r, out, 2)
    assert s["backend"] == "tensorflow"


@pytest.fixture(scope="module")
def digits():
    from boundary_xg.demo_models import load_digit_test_set

    return load_digit_test_set()


@needs_torch
def test_explain_torchscript_npy(tmp_path, digits):
    import torch

    import boundary_xg as bxg
    from boundary_xg.demo_models import load_digit_model

    model = load_digit_model("torch")
    x, y = digits[0][:3], digits[1][:3]
    with warnings.catch_warnings():  # torch 2.10+ marks TorchScript deprecated
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(model), str(tmp_path / "m.pt"))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o"
    r = run_cli("explain", "--model", str(tmp_path / "m.pt"), "--images", str(tmp_path / "x.npy"),
                "--method", "IG", "--option", "steps=16", "--labels", *map(str, y), "--out", str(out))
    assert r.returncode == 0, r.stderr
    attr = np.load(out / "attributions.npy")
    assert attr.shape == x.shape
    np.testing.assert_allclose(attr, bxg.attribute(model, x, y, method="IG", steps=16), rtol=1e-4, atol=1e-6)
    assert (out / "heatmaps.png").stat().st_size > 1000
    assert "x.npy[0]: label" in r.stdout


@needs_torch
def test_explain_with_metrics_prints_and_writes_them(tmp_path, digits):
    import torch

    from boundary_xg import metrics
    from boundary_xg.demo_models import load_digit_model

    model = load_digit_model("torch")
    x, y = digits[0][:4], digits[1][:4]
    with warnings.catch_warnings():  # torch 2.10+ marks TorchScript deprecated
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(model), str(tmp_path / "m.pt"))
    np.save(tmp_path / "x.npy", x)
    out = tmp_path / "o"
    r = run_cli("explain", "--model", str(tmp_path / "m.pt"), "--images", str(tmp_path / "x.npy"),
                "--method", "IG", "--option", "steps=8", "--labels", *map(str, y),
                "--metrics", "diffid,insertion,Deletion", "--out", str(out))
    assert r.returncode == 0, r.stderr
    attr = np.load(out / "attributions.npy")
    saved = json.loads((out / "metrics.json").read_text())
    page = (out / "index.html").read_text()
    assert '<img src="heatmaps.png"' in page and '<img src="curves.png"' in page
    for name in ("diffid", "insertion", "deletion"):
        want = getattr(metrics, name)(model, x, y, attr)
        np.testing.assert_allclose(saved[name]["per_example"], want.per_example, rtol=1e-5, atol=1e-6)
        assert f"{name}: {float(want.value):.4g} (mean over 4 images" in r.stdout
        assert f"<th>{float(want.value):.4g}</th>" in page
    assert f"diffid {saved['diffid']['per_example'][0]:.4g}" in r.stdout.splitlines()[0]
    # a bad metric name fails before any work, naming the choices
    r = run_cli("explain", "--model", str(tmp_path / "m.pt"), "--images", str(tmp_path / "x.npy"),
                "--metrics", "diffid,nope", "--out", str(tmp_path / "o2"))
    assert "unknown metric 'nope'" in error_line(r) and not (tmp_path / "o2").exists()


@needs_torch
def test_explain_lpi_reads_background_npy_and_agi_gets_pixel_bounds(tmp_path, digits):
    import boundary_xg as bxg
    from boundary_xg.demo_models import load_digit_model

    model = load_digit_model("torch")
    x, y = digits[0][:2], digits[1][:2]
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "bg.npy", digits[0][-40:])
    src = tmp_path / "mymodels.py"
    src.write_text("from boundary_xg.demo_models import load_digit_model\n"
                   "def build():\n    return load_digit_model('torch')\n")
    out = tmp_path / "o"
    r = run_cli("explain", "--model", "mymodels:build", "--images", "x.npy", "--method", "LPI",
                "--option", "background=bg.npy", "--option", "seed=0", "--option", "recalibrate=valid_ip",
                "--labels", *map(str, y), "--out", str(out), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    want = bxg.attribute(model, x, y, method="LPI", background=digits[0][-40:], seed=0, recalibrate="valid_ip")
    np.testing.assert_allclose(np.load(out / "attributions.npy"), want, rtol=1e-4, atol=1e-6)
    r = run_cli("explain", "--model", "mymodels:build", "--images", *_digit_pngs(digits, tmp_path),
                "--grayscale", "--method", "AGI", "--out", str(tmp_path / "a"), cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr  # AGI needs bounds: image files give the pixel box


@needs_tf
def test_explain_keras_png(tmp_path, digits):
    from PIL import Image

    import boundary_xg as bxg
    from boundary_xg.demo_models import load_digit_model

    model = load_digit_model("tensorflow")
    model.save(str(tmp_path / "m.keras"))
    paths = _digit_pngs(digits, tmp_path)
    out = tmp_path / "o"
    r = run_cli("explain", "--model", str(tmp_path / "m.keras"), "--images", *paths, "--grayscale",
                "--size", "8", "--method", "SM", "--out", str(out))
    assert r.returncode == 0, r.stderr
    attr = np.load(out / "attributions.npy")
    assert attr.shape == (2, 8, 8, 1)
    xk = np.stack([np.asarray(Image.open(p), np.float32)[..., None] / 255 for p in paths])
    np.testing.assert_allclose(attr, bxg.attribute(model, xk, None, method="SM"), rtol=1e-4, atol=1e-6)


DIGIT_ARCH = dict(in_channels=1, size=8, classes=10, widths=(8, 16), hidden=32)


@needs_torch
def test_explain_callable_with_state_dict_and_normalisation(tmp_path, digits):
    import torch

    import boundary_xg as bxg
    from boundary_xg.demo_models import load_digit_model

    # the callable builds the architecture with random weights; --weights must replace them
    (tmp_path / "mymodels.py").write_text(
        "from boundary_xg.testing import models as tm\n"
        f"def build():\n    return tm.torch_cnn(tm.cnn_weights(seed=123, **{DIGIT_ARCH!r}))\n"
    )
    trained = load_digit_model("torch")
    torch.save(trained.state_dict(), str(tmp_path / "w.pt"))
    x = digits[0][:3]
    np.save(tmp_path / "x.npy", x)
    r = run_cli("explain", "--model", "mymodels:build", "--weights", "w.pt", "--images", "x.npy",
                "--mean", "0.5", "--std", "0.25", "--method", "IG", "--option", "steps=16",
                "--out", "o", cwd=str(tmp_path))
    assert r.returncode == 0, r.stderr
    assert "tensorflow" not in r.stderr.lower()
    attr = np.load(tmp_path / "o" / "attributions.npy")
    x_in = (x - 0.5) / 0.25
    # labels default to the predictions of the trained model (the random one would differ)
    pred = trained(torch.from_numpy(x_in)).argmax(1).numpy()
    expect = bxg.attribute(trained, x_in, pred, method="IG", steps=16)
    np.testing.assert_allclose(attr, expect, rtol=1e-4, atol=1e-6)
    for i, p in enumerate(pred):
        assert f"x.npy[{i}]: label {p}, predicted {p}" in r.stdout


@needs_torch
def test_explain_boundary_method_on_png_searches_within_the_pixel_box(tmp_path, digits):
    import torch
    from PIL import Image

    import boundary_xg as bxg
    from boundary_xg.demo_models import load_digit_model
    from boundary_xg.model_io import pixel_bounds

    model = load_digit_model("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(model), str(tmp_path / "m.pt"))
    paths = _digit_pngs(digits, tmp_path)
    out = tmp_path / "o"
    # BIG is the default method
    r = run_cli("explain", "--model", str(tmp_path / "m.pt"), "--images", *paths, "--grayscale",
                "--mean", "0.5", "--std", "0.5", "--option", "steps=16", "--out", str(out))
    assert r.returncode == 0, r.stderr
    attr = np.load(out / "attributions.npy")
    dis = np.load(out / "distances.npy")
    assert attr.shape == (2, 1, 8, 8) and dis.shape == (2,)
    assert np.all(np.isfinite(dis)) and np.all(dis > 0)
    assert r.stdout.count("d=") == 2
    xp = np.stack([np.asarray(Image.open(p), np.float32)[None] / 255 for p in paths])
    x_in = (xp - 0.5) / 0.5
    lo, hi = pixel_bounds(x_in, "torch", [0.5], [0.5])
    assert lo.shape == (1, 1, 1) and np.allclose(lo, -1.0) and np.allclose(hi, 1.0)
    expect, d2 = bxg.attribute(model, x_in, None, method="BIG", steps=16, bounds=(lo, hi),
                               return_dis=True)
    np.testing.assert_allclose(dis, d2, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(attr, expect, rtol=1e-3, atol=1e-5)


def test_pixel_bounds_per_channel_layouts():
    from boundary_xg.model_io import pixel_bounds

    mean, std = [0.485, 0.456, 0.406], [0.229, 0.224, 0.225]
    lo, hi = pixel_bounds(np.zeros((1, 3, 4, 4)), "torch", mean, std)
    assert lo.shape == (3, 1, 1) and np.allclose(lo.ravel(), [-2.1179, -2.0357, -1.8044], atol=1e-4)
    assert np.allclose(hi.ravel(), [2.2489, 2.4286, 2.64], atol=1e-4)  # spec section 2.2
    lo, hi = pixel_bounds(np.zeros((1, 4, 4, 3)), "tensorflow", None, None)
    assert lo.shape == (3,) and np.all(lo == 0) and np.all(hi == 1)


@needs_torch
def test_pickled_code_is_never_loaded(tmp_path):
    """A model or weights file that would run code when unpickled is refused, with one line."""
    import pickle

    import torch

    marker = tmp_path / "PWNED"

    class Evil:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    with open(tmp_path / "plain.pt", "wb") as fh:
        pickle.dump({"w": Evil()}, fh)
    torch.save({"w": Evil()}, str(tmp_path / "zip.pt"))
    (tmp_path / "mm.py").write_text("import torch\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    np.save(tmp_path / "x.npy", np.zeros((1, 2), np.float32))
    for f in ("plain.pt", "zip.pt"):
        r = run_cli("explain", "--model", f, "--images", "x.npy", "--method", "SM", cwd=str(tmp_path))
        assert r.returncode == 1 and "not a TorchScript file" in error_line(r)
        r = run_cli("explain", "--model", "mm:build", "--weights", f, "--images", "x.npy",
                    "--method", "SM", cwd=str(tmp_path))
        line = error_line(r)
        assert r.returncode == 1 and "not a plain state dict" in line and "weights_only" in line
        assert "set to `False`" not in line  # never suggest the unsafe way out
    assert not marker.exists()


def test_missing_framework_is_one_line(tmp_path):
    """An install without TensorFlow (simulated: the module is blocked): one line naming the extra."""
    (tmp_path / "m.keras").write_bytes(b"")
    code = ("import sys; sys.modules['tensorflow'] = sys.modules['keras'] = None; "
            "from boundary_xg.cli import main; sys.exit(main(sys.argv[1:]))")
    env = dict(os.environ, TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    for args in (["explain", "--model", str(tmp_path / "m.keras"), "--images", "a.png", "--method", "SM"],
                 ["demo", "--backend", "tensorflow", "--out", str(tmp_path / "d")]):
        r = subprocess.run([sys.executable, "-c", code, *args], capture_output=True, text=True,
                           env=env, timeout=120)
        assert r.returncode == 1, r.stderr
        line = error_line(r)
        assert "tensorflow" in line and "boundary_xg[tensorflow]" in line, line
        assert r.stderr.strip() == line
    assert not (tmp_path / "d").exists()


def test_error_lines(tmp_path):
    r = run_cli("explain", "--model", str(tmp_path / "missing.pt"), "--images", "a.png")
    assert r.returncode == 1
    assert "not found" in error_line(r)
    bad = tmp_path / "model.txt"
    bad.write_text("hello")
    r = run_cli("explain", "--model", str(bad), "--images", "a.png")
    assert r.returncode == 1 and "unsupported model file" in error_line(r)
    r = run_cli("explain", "--model", str(bad), "--images", "a.png", "--method", "NOPE")
    assert r.returncode == 1 and "valid names" in error_line(r)
    r = run_cli("explain", "--model", "no_such_module_xyz:build", "--images", "a.png", "--method", "SM")
    assert r.returncode == 1 and "could not import module" in error_line(r)
    r = run_cli("--debug", "explain", "--model", str(bad), "--images", "a.png")
    assert r.returncode != 0 and "Traceback" in r.stderr
    r = run_cli("explain", "--images", "a.png")  # usage error from argparse
    assert r.returncode == 2 and "--model" in r.stderr


def test_image_loading_errors_and_normalisation(tmp_path):
    from PIL import Image

    from boundary_xg.model_io import CLIError, load_images

    npy = tmp_path / "x.npy"
    np.save(npy, np.zeros((2, 1, 8, 8), np.float32))
    for kwargs, match in (({"size": (8, 8)}, "--size"), ({"grayscale": True}, "--grayscale")):
        with pytest.raises(CLIError, match=match):
            load_images([str(npy)], "torch", **kwargs)
    with pytest.raises(CLIError, match="one .npy batch"):
        load_images([str(npy), str(npy)], "torch")
    with pytest.raises(CLIError, match="not found"):
        load_images([str(tmp_path / "nope.png")], "torch")
    (tmp_path / "a.txt").write_text("x")
    with pytest.raises(CLIError, match="unsupported image file"):
        load_images([str(tmp_path / "a.txt")], "torch")
    rgb = np.zeros((4, 6, 3), np.uint8)
    rgb[..., 0], rgb[..., 2] = 255, 51
    Image.fromarray(rgb).save(tmp_path / "a.png")
    Image.fromarray(rgb[:2]).save(tmp_path / "b.png")
    with pytest.raises(CLIError, match="--size"):
        load_images([str(tmp_path / "a.png"), str(tmp_path / "b.png")], "torch")
    x, shown, names = load_images([str(tmp_path / "a.png"), str(tmp_path / "b.png")], "torch",
                                  size=(4, 6), mean=[0.5, 0.5, 0.2], std=[0.5, 1.0, 0.1])
    assert x.shape == (2, 3, 4, 6) and shown.shape == x.shape and names == ["a.png", "b.png"]
    assert np.allclose(x[0, :, 0, 0], [1.0, -0.5, 0.0]) and np.allclose(shown[0, :, 0, 0], [1, 0, 0.2])
    x, _, _ = load_images([str(tmp_path / "a.png")], "tensorflow", mean=[0.5], std=[0.5])
    assert x.shape == (1, 4, 6, 3) and np.allclose(x[0, 0, 0], [1.0, -1.0, -0.6])
    with pytest.raises(CLIError, match="--mean has 2 values"):
        load_images([str(tmp_path / "a.png")], "torch", mean=[0.1, 0.2])


def test_backends_lists_frameworks():
    r = run_cli("backends")
    assert r.returncode == 0, r.stderr
    assert "torch" in r.stdout and "tensorflow" in r.stdout and "devices" in r.stdout


@pytest.mark.slow
@needs_torch
def test_training_script_reproduces_the_shipped_weights():
    """scripts/train_digits.py retrains both digit models (CPU, fixed seeds; about 10 s): bit for
    bit on the CPU that made them, elsewhere as accurate and agreeing on 99 % of the test digits."""
    pytest.importorskip("sklearn")
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    r = subprocess.run([sys.executable, os.path.join(root, "scripts", "train_digits.py"), "--check", "--no-keras"],
                       capture_output=True, text=True, timeout=600, env=dict(os.environ, OMP_NUM_THREADS="1"))
    assert r.returncode == 0, r.stdout + r.stderr
    assert r.stdout.count("identical") + r.stdout.count("equivalent") == 3 and "DIFFERS" not in r.stdout


@needs_torch
def test_out_is_checked_before_any_work_and_warnings_are_one_line(tmp_path, digits):
    import torch

    from boundary_xg.demo_models import load_digit_model

    blocker = tmp_path / "a_file"
    blocker.write_text("not a folder")
    # the model file does not exist either: --out is checked first
    r = run_cli("explain", "--model", str(tmp_path / "missing.pt"), "--images", "a.png",
                "--out", str(blocker / "sub"))
    assert r.returncode == 1
    assert "--out" in error_line(r) and "not a folder" in error_line(r)
    r = run_cli("demo", "--out", str(blocker / "sub"))
    assert r.returncode == 1 and "--out" in error_line(r)
    # a warning (XG on a model with biases) is one line, without Python's source line
    model = load_digit_model("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(model), str(tmp_path / "m.pt"))
    np.save(tmp_path / "x.npy", digits[0][:2])
    r = run_cli("explain", "--model", str(tmp_path / "m.pt"), "--images", str(tmp_path / "x.npy"),
                "--method", "XG", "--out", str(tmp_path / "o"))
    assert r.returncode == 0, r.stderr
    lines = [ln for ln in r.stderr.splitlines() if ln.strip()]
    assert lines and all(ln.startswith("boundary-xg: warning: ") for ln in lines), r.stderr
    assert any("not nonnegatively homogeneous" in ln for ln in lines)


@needs_torch
def test_explain_deeplift_on_torchscript_fails_with_the_fix(tmp_path, digits):
    import torch

    from boundary_xg.demo_models import load_digit_model

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)
        torch.jit.save(torch.jit.script(load_digit_model("torch")), str(tmp_path / "m.pt"))
    np.save(tmp_path / "x.npy", digits[0][:2])
    r = run_cli("explain", "--model", str(tmp_path / "m.pt"), "--images", str(tmp_path / "x.npy"),
                "--method", "DeepLIFT", "--out", str(tmp_path / "o"))
    assert r.returncode == 1 and "TorchScript" in error_line(r)
    assert not (tmp_path / "o" / "attributions.npy").exists()
