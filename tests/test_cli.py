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


def run_cli(*args, cwd=None, timeout=120):
    env = dict(os.environ, OMP_NUM_THREADS="1", TF_NUM_INTRAOP_THREADS="1",
               TF_NUM_INTEROP_THREADS="1", TF_CPP_MIN_LOG_LEVEL="2", MPLBACKEND="Agg")
    return subprocess.run([sys.executable, "-m", "boundary_xg", *args], capture_output=True,
                          text=True, cwd=cwd, env=env, timeout=timeout)


def error_line(r) -> str:
    lines = [ln for ln in r.stderr.splitlines() if ln.startswith("boundary-xg: error:")]
    assert len(lines) == 1, r.stderr
    assert "Traceback" not in r.stderr
    return lines[0]


@needs_torch
def test_demo_torch_writes_page_grid_and_figures(tmp_path):
    out = tmp_path / "demo"
    r = run_cli("demo", "--backend", "torch", "--out", str(out), "-n", "3")
    assert r.returncode == 0, r.stderr
    assert "method" in r.stdout and "XG vs IG" in r.stdout
    page = (out / "index.html").read_text()
    assert '<img src="grid.png"' in page and "Accuracy" in page
    s = json.loads((out / "summary.json").read_text())
    assert s["accuracy"]["regular"] > 0.9 and s["accuracy"]["x"] > 0.9
    shown = [m["method"] for m in s["methods"]]
    assert shown[:4] == ["SM", "IG", "SG", "XG"]
    # X-Gradient is IG from zero on the bias-free model, not on the regular one
    assert s["xg_vs_ig_relative_l1"]["x_model"] < 1e-4
    assert s["xg_vs_ig_relative_l1"]["regular_model"] > 0.05
    ig = next(m for m in s["methods"] if m["method"] == "IG")
    assert ig["gap_relative"] < 0.05
    for m in s["methods"]:
        if "distances" in m:  # boundary methods: a distance per digit, all found here
            assert m["found"] == 3 and all(d is not None and d > 0 for d in m["distances"])
    import matplotlib.pyplot as plt

    img = plt.imread(str(out / "grid.png"))
    assert img.shape[1] > img.shape[0]  # one column per method plus the image
    assert img[..., :3].std() > 0.05  # not blank


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


@needs_tf
def test_explain_keras_png(tmp_path, digits):
    from PIL import Image

    import boundary_xg as bxg
    from boundary_xg.demo_models import load_digit_model

    model = load_digit_model("tensorflow")
    model.save(str(tmp_path / "m.keras"))
    x = digits[0][:2]
    paths = []
    for i in range(2):
        p = tmp_path / f"d{i}.png"
        Image.fromarray(np.round(x[i, 0] * 255).astype(np.uint8)).save(p)
        paths.append(str(p))
    out = tmp_path / "o"
    r = run_cli("explain", "--model", str(tmp_path / "m.keras"), "--images", *paths, "--grayscale",
                "--size", "8", "--method", "SM", "--out", str(out))
    assert r.returncode == 0, r.stderr
    attr = np.load(out / "attributions.npy")
    assert attr.shape == (2, 8, 8, 1)
    xk = np.stack([np.asarray(Image.open(p), np.float32)[..., None] / 255 for p in paths])
    np.testing.assert_allclose(attr, bxg.attribute(model, xk, None, method="SM"), rtol=1e-4, atol=1e-6)


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


def test_backends_lists_frameworks():
    r = run_cli("backends")
    assert r.returncode == 0, r.stderr
    assert "torch" in r.stdout and "tensorflow" in r.stdout and "devices" in r.stdout
