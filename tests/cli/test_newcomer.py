"""The command line as a newcomer meets it: checks before the expensive part,
one-line errors that say what to pass instead, the boundary search and EG's background
from the command line, one framework enough, warnings once, progress on a terminal.

Most runs call ``boundary_xg.cli.main`` in this process on the embedded digit models
(milliseconds); the one-framework installs run in a subprocess whose site-packages
lack the other framework (``one_framework.py``). Oracles: the API called directly
with the same arguments (the command line must only wire them), and the files the
command did not read (a check that fails before loading never touches the model).
"""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

from conftest import needs_both, needs_tf, needs_torch
from one_framework import run_without

import boundary_xg as bxg
from boundary_xg import cli, cli_checks, model_io


@pytest.fixture(scope="module")
def files(tmp_path_factory):
    """Digit models and inputs on disk: TorchScript, state dict, .keras, PNGs, .npy batches."""
    import torch

    from PIL import Image

    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    d = tmp_path_factory.mktemp("newcomer")
    x, y = load_digit_test_set("NCHW")
    np.save(d / "nchw.npy", x[:3])
    np.save(d / "nhwc.npy", np.transpose(x[:3], (0, 2, 3, 1)))
    np.save(d / "bg.npy", x[100:120])
    for i in range(2):
        Image.fromarray(np.round(x[i, 0] * 255).astype(np.uint8)).save(d / f"d{i}.png")
        Image.fromarray(np.round(np.kron(x[i, 0], np.ones((2, 2))) * 255).astype(np.uint8)).save(d / f"big{i}.png")
    model = load_digit_model("torch")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", FutureWarning)  # torch marks TorchScript deprecated
        torch.jit.save(torch.jit.script(model), str(d / "digits.pt"))
        rgb = torch.nn.Sequential(torch.nn.Conv2d(3, 4, 3), torch.nn.Flatten(), torch.nn.Linear(144, 10)).eval()
        torch.jit.save(torch.jit.script(rgb), str(d / "rgb.pt"))
    torch.save(model.state_dict(), d / "digits_sd.pt")
    bad = dict(model.state_dict())
    bad["extra.weight"] = torch.zeros(3)
    del bad[next(iter(bad))]
    torch.save(bad, d / "bad_sd.pt")
    (d / "mymods.py").write_text(
        "# built with keras in mind? no: this module only mentions it in a comment\n"
        "from boundary_xg.demo_models import load_digit_model\n\n"
        "def build():\n    return load_digit_model('torch')\n")
    (d / "w.weights.h5").write_bytes(b"not read")
    return d, x, y


def run(capsys, *argv):
    """``boundary-xg *argv`` in this process: (exit status, stdout, stderr)."""
    code = cli.main([str(a) for a in argv])
    out = capsys.readouterr()
    return code, out.out, out.err


def error(capsys, *argv) -> str:
    code, _, err = run(capsys, *argv)
    lines = [ln for ln in err.splitlines() if ln.startswith("boundary-xg: error:")]
    assert code == 1 and len(lines) == 1 and "Traceback" not in err, err
    return lines[0]


@pytest.fixture
def no_loading(monkeypatch):
    """Fail the test if the command loads a model or predicts (checks must come first)."""
    def refuse(*a, **k):
        raise AssertionError("the model was loaded before the check")
    monkeypatch.setattr(model_io, "load_model", refuse)


# --- point 10: cheap checks before the model loads ---------------------------------------------
@needs_torch
def test_option_weights_and_image_checks_come_before_the_model_loads(capsys, files, no_loading, monkeypatch):
    d, _, _ = files
    base = ["explain", "--model", d / "digits.pt", "--images", d / "nchw.npy", "--out", d / "o"]
    cases = [
        (["--method", "IG", "--option", "bounds=[0,1]"], "IG takes no option 'bounds'"),
        (["--method", "IG", "--option", "stepz=4"], "IG takes no option 'stepz'"),
        (["--method", "IG", "--option", "steps=0"], "steps=0: expected an integer >= 1"),
        (["--method", "BIG", "--option", "attacks=PGDX"], "unknown attack 'PGDX'"),
        (["--method", "BIG", "--option", "attacks=PGD(foo=1)"], "PGD takes no parameter 'foo'"),
        (["--method", "BIG", "--option", "eps=-1", "--option", "attacks=PGD"], "eps=-1: expected a number > 0"),
        (["--method", "EG", "--option", "background=missing.npy"], "background='missing.npy': file not found"),
        (["--method", "EG", "--option", "background=abc"], "pass a number or a .npy file"),
        (["--method", "SM", "--labels", "1", "2"], "--labels has 2 classes for 3 images"),
        (["--method", "SM", "--weights", d / "digits_sd.pt"], "drop --weights"),
        (["--method", "SM", "--threads", "0"], "--threads 0"),
    ]
    for extra, expected in cases:
        assert expected in error(capsys, *base, *extra), extra
    callable_base = ["explain", "--model", "mymods:build", "--images", d / "nchw.npy", "--out", d / "o"]
    monkeypatch.chdir(d)
    assert "expected a torch state dict" in error(capsys, *callable_base, "--weights", d / "nchw.npy")
    assert "--weights" in error(capsys, *callable_base, "--weights", d / "nope.pt")
    assert "is a folder" in error(capsys, *callable_base, "--weights", d)
    png = ["explain", "--model", d / "digits.pt", "--out", d / "o", "--method", "SM"]
    assert "--grayscale images have 1 channel" in error(capsys, *png, "--images", d / "d0.png", "--grayscale",
                                                       "--mean", "0.5", "0.5", "0.5")
    assert "--std holds a 0" in error(capsys, *png, "--images", d / "d0.png", "--std", "0")


def test_a_module_that_mentions_keras_does_not_import_tensorflow(tmp_path, monkeypatch):
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "only_words.py").write_text('"""Like a keras model, but torch."""\nNAME = "tensorflow"\n')
    (tmp_path / "imports_keras.py").write_text("import os\nfrom keras import layers\n")
    (tmp_path / "imports_tf.py").write_text("def f():\n    import tensorflow.keras as k\n")
    assert model_io._frameworks_imported_by("only_words") == []
    assert model_io._frameworks_imported_by("imports_keras") == ["tensorflow"]
    assert model_io._frameworks_imported_by("imports_tf") == ["tensorflow"]
    # what is imported before such a module: torch first whenever TensorFlow is (the safe order)
    assert model_io.frameworks_first(["tensorflow"]) == ["torch", "tensorflow"]
    assert model_io.frameworks_first(["torch"]) == ["torch"]
    assert model_io.frameworks_first([]) == ["torch"]


# --- point 1: layout and channel mistakes, explained with the flag to change ---------------------
@needs_both
def test_layout_and_channel_errors_name_the_fix_before_any_prediction(capsys, files, monkeypatch, tmp_path):
    import boundary_xg.viz as viz
    from boundary_xg.demo_models import load_digit_model

    d, _, _ = files
    keras_file = tmp_path / "digits.keras"
    load_digit_model("tensorflow").save(str(keras_file))

    def no_predictions(*a, **k):
        raise AssertionError("predictions were computed before the input checks")
    monkeypatch.setattr(viz, "predicted_labels", no_predictions)
    common = ["--method", "SM", "--out", d / "o"]
    line = error(capsys, "explain", "--model", keras_file, "--images", d / "nchw.npy", *common)
    assert "looks channels-first (NCHW)" in line and "np.transpose(x, (0, 2, 3, 1))" in line
    line = error(capsys, "explain", "--model", d / "digits.pt", "--images", d / "nhwc.npy", *common)
    assert "looks channels-last (NHWC)" in line and "np.transpose(x, (0, 3, 1, 2))" in line
    line = error(capsys, "explain", "--model", d / "rgb.pt", "--images", d / "d0.png", "--grayscale", *common)
    assert "drop --grayscale" in line and "TorchScript interpreter" not in line
    line = error(capsys, "explain", "--model", d / "digits.pt", "--images", d / "d0.png", *common)
    assert "add --grayscale" in line
    line = error(capsys, "explain", "--model", keras_file, "--images", d / "d0.png", *common)
    assert "add --grayscale" in line
    line = error(capsys, "explain", "--model", keras_file, "--images", d / "big0.png", "--grayscale", *common)
    assert "add --size 8,8" in line
    # the bounds of the search must contain the inputs: said before any search
    line = error(capsys, "explain", "--model", d / "digits.pt", "--images", d / "nchw.npy", "--method", "BIG",
                 "--option", "bounds=[0.5,1]", "--out", d / "o")
    assert "--option bounds" in line and "do not contain x" in line


# --- point 4: the boundary search and EG's background from the command line -----------------------
def test_attacks_by_name_with_parameters():
    assert cli_checks.parse_attacks("reference") == "reference"
    assert cli_checks.parse_attacks("PGD,cw") == [bxg.PGD(), bxg.CW()]
    assert cli_checks.parse_attacks(["PGD", "CW"]) == [bxg.PGD(), bxg.CW()]  # a JSON list of names
    got = cli_checks.parse_attacks("PGD(eps=[0.5,1],steps=20),CW(steps=50),DeepFool,FMN(steps=10)")
    assert got == [bxg.PGD(eps=(0.5, 1), steps=20), bxg.CW(steps=50), bxg.DeepFool(), bxg.FMN(steps=10)]
    with pytest.raises(model_io.CLIError, match="could not read it"):
        cli_checks.parse_attacks("PGD(")
    with pytest.raises(model_io.CLIError, match="PGD: .*eps"):
        cli_checks.parse_attacks("PGD(eps=[1,0.5])")  # the attack's own check, named
    big = bxg.BA("BIG").spec
    opts = cli_checks.method_options(big, [("attacks", "PGD,CW"), ("eps", [0.25, 0.5])])
    assert opts["attacks"] == [bxg.PGD(eps=(0.25, 0.5)), bxg.CW()]
    opts = cli_checks.method_options(big, [("attacks", "reference"), ("eps", 0.5)])
    assert opts["attacks"][0] == bxg.PGD(eps=0.5) and isinstance(opts["attacks"][1], bxg.CW)
    with pytest.raises(model_io.CLIError, match="add --option attacks=PGD,CW"):
        cli_checks.method_options(big, [("eps", 0.5)])  # the default search has no radius
    with pytest.raises(model_io.CLIError, match="IG runs no boundary search"):
        cli_checks.method_options(bxg.BA("IG").spec, [("eps", 0.5)])


@needs_torch
def test_boundary_search_and_background_from_the_command_line_match_the_api(capsys, files):
    from boundary_xg.demo_models import load_digit_model

    d, x, y = files
    model = load_digit_model("torch")
    code, out, err = run(capsys, "explain", "--model", d / "digits.pt", "--images", d / "nchw.npy",
                         "--method", "BIG", "--option", "attacks=PGD,CW", "--option", "eps=[0.5,1]",
                         "--option", "bounds=[0,1]", "--option", "steps=8", "--labels", *y[:3],
                         "--out", d / "big")
    assert code == 0, err
    want, dist = bxg.attribute(model, x[:3], y[:3], method="BIG", attacks=[bxg.PGD(eps=(0.5, 1)), bxg.CW()],
                               bounds=(0, 1), steps=8, return_dis=True)
    np.testing.assert_allclose(np.load(d / "big" / "attributions.npy"), want, rtol=1e-4, atol=1e-6)
    np.testing.assert_allclose(np.load(d / "big" / "distances.npy"), dist, rtol=1e-4)
    code, out, err = run(capsys, "explain", "--model", d / "digits.pt", "--images", d / "nchw.npy",
                         "--method", "EG", "--option", f"background={d / 'bg.npy'}", "--option", "seed=3",
                         "--option", "num_samples=8", "--labels", *y[:3], "--out", d / "eg")
    assert code == 0, err
    want = bxg.attribute(model, x[:3], y[:3], method="EG", background=x[100:120], seed=3, num_samples=8)
    np.testing.assert_allclose(np.load(d / "eg" / "attributions.npy"), want, rtol=1e-4, atol=1e-6)


# --- point 9: the messages that misled -----------------------------------------------------------
@needs_torch
def test_misleading_messages_now_say_what_to_do(capsys, files, monkeypatch):
    d, _, _ = files
    common = ["--method", "SM", "--out", d / "o"]
    line = error(capsys, "explain", "--model", d / "digits.pt", "--images", d, *common)
    assert "is a folder" in line and "evaluate --data" in line and "not found" not in line
    line = error(capsys, "explain", "--model", d, "--images", d / "d0.png", *common)
    assert "is a folder" in line and "not found" not in line
    line = error(capsys, "explain", "--model", d / "digits.pt", "--images", d / "nchw.npy", d / "d0.png", *common)
    assert "mixes a .npy batch" in line and "several .npy" not in line
    line = error(capsys, "explain", "--model", d / "digits.pt", "--images", d / "nchw.npy", d / "nhwc.npy", *common)
    assert "2 .npy files" in line and "np.concatenate" in line
    monkeypatch.chdir(d)
    line = error(capsys, "explain", "--model", "mymods:build", "--weights", d / "bad_sd.pt",
                 "--images", d / "nchw.npy", *common)
    assert "1 missing: conv1.weight" in line and "1 unexpected: extra.weight" in line
    line = error(capsys, "explain", "--model", "mymods:build", "--weights", d / "w.weights.h5",
                 "--images", d / "nchw.npy", *common)
    assert "Keras weights file" in line and "torch.save(model.state_dict()" in line
    out_file = d / "a_file.txt"
    out_file.write_text("x")
    line = error(capsys, "explain", "--model", d / "digits.pt", "--images", d / "nchw.npy", "--out", out_file)
    assert "is a file, not a folder" in line and "FileExistsError" not in line
    line = error(capsys, "evaluate", "--model", d / "digits.pt", "--data", d / "nchw.npy", "--out", out_file)
    assert "is a file, not a folder" in line
    line = error(capsys, "explain", "--model", d / "digits.pt", "--images", d / "nchw.npy", "--method", "dlx",
                 "--out", d / "o")
    assert "did you mean 'DeepLIFT'" in line
    assert all(alias in line for alias in ("dl", "deep_lift", "rescale", "grad_cam"))
    # a missing package is named with the extra that provides it
    assert model_io.install_hint("tensorflow") == "pip install 'boundary_xg[tensorflow]'"
    assert model_io.install_hint("keras.src") == "pip install 'boundary_xg[tensorflow]'"
    assert model_io.install_hint("torchvision") == "pip install 'boundary_xg[torch]'"
    assert model_io.install_hint("matplotlib") == "pip install 'boundary_xg[viz]'"


def test_one_framework_installs_get_the_right_extra(tmp_path):
    """With torch absent: a module:callable that imports torch, X-DNN builders for torch; with
    TensorFlow absent: a .keras file, x_cnn(framework="keras"); each names its own extra."""
    (tmp_path / "torchy.py").write_text("import torch\n\ndef build():\n    return torch.nn.Linear(2, 2)\n")
    np.save(tmp_path / "x.npy", np.zeros((1, 2), np.float32))
    (tmp_path / "m.keras").write_bytes(b"")
    r = run_without("torch", ["explain", "--model", "torchy:build", "--images", "x.npy", "--method", "SM"], tmp_path)
    line = r.stderr.strip()
    assert r.returncode == 1 and "imports 'torch', which is not installed" in line, r.stderr
    assert "boundary_xg[torch]" in line and "on the path" not in line
    r = run_without("tensorflow", ["explain", "--model", "m.keras", "--images", "x.npy", "--method", "SM"], tmp_path)
    assert r.returncode == 1 and "boundary_xg[tensorflow]" in r.stderr and "[all]" not in r.stderr, r.stderr
    code = ("from boundary_xg import xdnn, BackendNotAvailableError\n"
            "try:\n    xdnn.x_cnn(framework='keras')\nexcept BackendNotAvailableError as e:\n    print(e)\n")
    r = run_without("tensorflow", ["-c", code], tmp_path, module=False)
    assert r.returncode == 0 and "boundary_xg[tensorflow]" in r.stdout, r.stderr


# --- point 3: the demo runs on the installed framework ---------------------------------------------
def test_demo_picks_the_installed_framework(capsys, monkeypatch, tmp_path):
    """Only TensorFlow installed (simulated): ``boundary-xg demo`` runs on TensorFlow, no flag needed."""
    import boundary_xg.demo as demo

    seen = {}

    def fake_run_demo(out, backend, n):
        seen["backend"] = backend
        return {}
    monkeypatch.setattr(cli_checks, "installed", lambda fw: fw == "tensorflow")
    monkeypatch.setattr(demo, "run_demo", fake_run_demo)
    monkeypatch.setattr(demo, "format_table", lambda s: "table")
    monkeypatch.setattr(model_io, "import_quietly", lambda names: None)
    code, out, err = run(capsys, "demo", "--out", tmp_path / "d")
    assert code == 0 and seen["backend"] == "tensorflow", err
    assert "not installed" in error(capsys, "demo", "--backend", "torch", "--out", tmp_path / "d")
    assert "--backend tensorflow" in error(capsys, "demo", "--backend", "torch", "--out", tmp_path / "d")
    monkeypatch.setattr(cli_checks, "installed", lambda fw: False)
    line = error(capsys, "demo", "--out", tmp_path / "d")
    assert "boundary_xg[torch]" in line and "boundary_xg[tensorflow]" in line


# --- point 8: warnings once, at the caller's line ---------------------------------------------------
@needs_torch
def test_warnings_once_per_call_at_the_callers_line(tmp_path):
    import torch

    from boundary_xg.demo_models import load_digit_model, load_digit_test_set
    from boundary_xg.viz import compare

    model = torch.nn.Sequential(*load_digit_model("torch"), torch.nn.Softmax(dim=1))
    x, y = load_digit_test_set()
    x, y = x[:2], y[:2]
    for call in (lambda: bxg.attribute(model, x, y, method="IG", steps=4, model_mode="as_is"),
                 lambda: compare(model, x, y, methods=["SM", "IG"], options={"IG": {"steps": 4}},
                                 output_file=str(tmp_path / "g.png")),
                 lambda: bxg.attribute(model, x, y, method="GradCAM")):
        with warnings.catch_warnings(record=True) as got:
            warnings.simplefilter("always")
            call()
        soft = [w for w in got if "softmax" in str(w.message).lower()]
        assert len(soft) == 1, [str(w.message) for w in got]
        assert soft[0].filename == __file__, soft[0].filename  # the user's line, not ours


@needs_tf
def test_cli_prints_each_warning_once(capsys, tmp_path):
    import keras

    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    k = load_digit_model("tensorflow")
    soft = keras.Sequential([keras.Input((8, 8, 1))] + k.layers + [keras.layers.Softmax()])
    soft.save(str(tmp_path / "soft.keras"))
    x, _ = load_digit_test_set("NHWC")
    np.save(tmp_path / "x.npy", x[:2])
    code, out, err = run(capsys, "explain", "--model", tmp_path / "soft.keras", "--images", tmp_path / "x.npy",
                         "--method", "IG", "--option", "steps=4", "--out", tmp_path / "o")
    assert code == 0, err
    lines = [ln for ln in err.splitlines() if ln.strip()]
    assert len([ln for ln in lines if "Softmax" in ln]) == 1, err
    assert all(ln.startswith("boundary-xg: warning: ") for ln in lines), err


# --- point 5: a progress bar on a terminal ----------------------------------------------------------
@needs_torch
def test_progress_bar_for_many_passes_only_on_a_terminal(capsys, monkeypatch):
    from boundary_xg import _progress
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    model = load_digit_model("torch")
    x, y = load_digit_test_set()
    bxg.attribute(model, x[:4], y[:4], method="IG", steps=64, batch_size=16)
    assert "passes" not in capsys.readouterr().err  # not a terminal: no bar
    monkeypatch.setattr(_progress, "SHOW", True)
    monkeypatch.setattr(_progress, "DELAY", 0.0)
    for method, opts in (("IG", {"steps": 64}), ("SG", {"num_samples": 64}),
                         ("EG", {"num_samples": 64, "background": x[100:110]})):
        bxg.attribute(model, x[:4], y[:4], method=method, batch_size=16, **opts)
        err = capsys.readouterr().err
        assert "/256" in err and "pass" in err, (method, err)


# --- point 2: attribution priors with NumPy batches -------------------------------------------------
@pytest.mark.parametrize("backend_name", [
    pytest.param("torch", marks=needs_torch), pytest.param("tensorflow", marks=needs_tf)])
def test_training_with_a_prior_from_numpy_batches(backend_name):
    """docs/xdnn.md's example with NumPy batches: the attributions come back as a tensor with its
    graph, so the prior's gradient reaches the weights; a NumPy array given to a prior is named."""
    from boundary_xg import xdnn
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    model = load_digit_model(backend_name, "x")
    x, y = load_digit_test_set("NCHW" if backend_name == "torch" else "NHWC")
    xb, yb = x[:8], y[:8]
    if backend_name == "torch":
        attr = xdnn.xgradient_for_training(model, xb, yb)
        assert not isinstance(attr, np.ndarray) and attr.requires_grad
        xdnn.gini_prior(attr).backward()
        grads = [p.grad for p in model.parameters()]
        assert all(g is not None and float(g.abs().sum()) > 0 for g in grads)
    else:
        import tensorflow as tf

        with tf.GradientTape() as tape:
            attr = xdnn.xgradient_for_training(model, xb, yb)
            loss = xdnn.gini_prior(attr)
        grads = tape.gradient(loss, model.trainable_variables)
        assert all(g is not None and float(tf.reduce_sum(tf.abs(g))) > 0 for g in grads)
    with pytest.raises(bxg.InputError, match="attr is a numpy.ndarray"):
        xdnn.gini_prior(np.zeros((2, 1, 4, 4)))
    with pytest.raises(bxg.InputError, match="attr is a numpy.ndarray"):
        xdnn.total_variation(np.zeros((2, 1, 4, 4)))


# --- point 8: TensorFlow's start-up log in plain library use ------------------------------------------
@needs_tf
def test_tensorflow_start_up_log_is_quiet_unless_asked_for(tmp_path):
    import subprocess
    import sys

    from one_framework import SRC

    code = "from boundary_xg.demo_models import load_digit_model; load_digit_model('tensorflow')"
    env = dict(os.environ, PYTHONPATH=SRC)
    env.pop("TF_CPP_MIN_LOG_LEVEL", None)
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and r.stderr.strip() == "", r.stderr
    env["TF_CPP_MIN_LOG_LEVEL"] = "0"  # the user asked for TensorFlow's log: it is not hidden
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert r.returncode == 0 and "I0000" in r.stderr, r.stderr
