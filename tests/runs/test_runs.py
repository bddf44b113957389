"""Whole-dataset runs in one process: explain_dataset, the run folder, load_run, resume, bad input.

The oracle is ``bxg.attribute`` on the whole array (deterministic methods give the
same numbers shard by shard) and ``bxg.find_boundary`` for the shared boundary points.
"""

from __future__ import annotations

import json
import os
import sys
import types

import numpy as np
import pytest

from conftest import needs_tf, needs_torch

import boundary_xg as bxg
from boundary_xg.runs import RunConflictError

ATTACKS = [bxg.PGD(eps=[0.5, 1.0, 2.0], steps=8)]


@pytest.fixture(scope="module")
def digits():
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    x, y = load_digit_test_set()
    return load_digit_model("torch"), x[:100], y[:100]


def _files(out):
    found = {}
    for dirpath, _, names in os.walk(out):
        for n in names:
            p = os.path.join(dirpath, n)
            with open(p, "rb") as fh:
                found[os.path.relpath(p, out)] = fh.read()
    return found


@needs_torch
def test_array_run_equals_attribute_on_the_whole_array(digits, tmp_path):
    model, x, y = digits
    run = bxg.explain_dataset(model, (x, y), methods={"IG": {"steps": 4}, "SM": {}}, out=str(tmp_path / "r"),
                              batch_size=32, progress=False)
    ig = bxg.attribute(model, x, y, method="IG", steps=4)
    np.testing.assert_allclose(np.asarray(run.attributions("IG")), ig, atol=1e-6)
    np.testing.assert_allclose(np.asarray(run.attributions("saliency")), bxg.attribute(model, x, y, method="SM"),
                               atol=1e-6)
    # shards: 32 examples each, the last one shorter, plain memory-mappable .npy
    shards = sorted(os.listdir(tmp_path / "r" / "attributions" / "IG"))
    assert shards == ["00000.npy", "00001.npy", "00002.npy", "00003.npy"]
    assert np.load(tmp_path / "r" / "attributions" / "IG" / "00003.npy", mmap_mode="r").shape == (4, 1, 8, 8)
    a = run.attributions("IG")
    assert a.shape == (100, 1, 8, 8) and len(a) == 100
    np.testing.assert_array_equal(a[31:34], ig[31:34])
    np.testing.assert_array_equal(a[[99, 0, 40]], ig[[99, 0, 40]])
    np.testing.assert_array_equal(a[-1], ig[-1])
    # one file per method on request: a plain read-only memmap, same values
    written = run.consolidate(["IG"])
    assert [os.path.basename(w) for w in written] == ["all.npy"]
    whole = bxg.load_run(str(tmp_path / "r")).attributions("IG")
    assert isinstance(whole, np.memmap) and not whole.flags.writeable
    np.testing.assert_array_equal(np.asarray(whole), ig.astype(whole.dtype))
    assert not [n for n in os.listdir(tmp_path / "r" / "attributions" / "IG") if ".tmp-" in n]
    t = run.table
    np.testing.assert_array_equal(t["index"], np.arange(100))
    np.testing.assert_array_equal(t["label"], y)
    pred = bxg.viz.predicted_labels(model, x)
    np.testing.assert_array_equal(t["prediction"], pred)
    _, gap = bxg.attribute(model, x, y, method="IG", steps=4, return_gap=True)
    np.testing.assert_allclose(t["gap_IG"], gap, atol=1e-6)
    assert "gap_SM" not in t
    cfg = run.config
    assert cfg["methods"] == {"IG": {"steps": 4}, "SM": {}} and cfg["seed"] == 0 and cfg["batch_size"] == 32
    assert cfg["versions"]["torch"] and cfg["model"]["framework"] == "torch"
    assert os.path.exists(tmp_path / "r" / "table.csv") and os.path.exists(tmp_path / "r" / "report.html")
    assert cfg == json.load(open(tmp_path / "r" / "run.json"))
    assert 'class="curve"' not in open(tmp_path / "r" / "report.html").read()  # no curve metric, no curves
    assert run.curve_metrics() == []
    with pytest.raises(bxg.InputError, match="kept no curves of 'insertion'"):
        run.curves("insertion")
    assert cfg["options"]["IG"] == {"baseline": None, "steps": 4, "rule": "gausslegendre", "exact": False}
    with pytest.raises(bxg.InputError, match="no examples"):
        bxg.explain_dataset(model, x[:0], methods=["SM"], out=str(tmp_path / "e"))


@needs_torch
def test_table_is_parquet_when_pyarrow_is_installed(digits, tmp_path):
    pytest.importorskip("pyarrow")
    model, x, y = digits
    run = bxg.explain_dataset(model, (x[:20], y[:20]), methods=["SM"], out=str(tmp_path / "p"), batch_size=8,
                              progress=False)
    assert os.path.exists(tmp_path / "p" / "table.parquet") and not os.path.exists(tmp_path / "p" / "table.csv")
    np.testing.assert_array_equal(run.table["label"], y[:20])


@needs_torch
@pytest.mark.filterwarnings("ignore::boundary_xg.search.pipeline.AlreadyMisclassifiedWarning")
def test_boundary_methods_share_one_search_per_shard(digits, tmp_path, monkeypatch):
    model, x, y = digits
    x, y = x[:40], y[:40]
    from boundary_xg.runs import explain as ex

    calls = []
    real = ex.find_boundary
    monkeypatch.setattr(ex, "find_boundary", lambda *a, **k: calls.append(1) or real(*a, **k))
    run = bxg.explain_dataset(model, (x, y), methods={"BIG": {"steps": 4}, "BSM": {}}, out=str(tmp_path / "b"),
                              batch_size=20, attacks=ATTACKS, bounds=(0, 1), progress=False)
    assert len(calls) == 2  # one search per shard, for both methods
    pts = np.asarray(run.boundary_points())
    res = bxg.find_boundary(model, x[:20], y[:20], attacks=ATTACKS, bounds=(0, 1),
                            seed=ex.shard_seed(0, 0), progress=False)
    np.testing.assert_allclose(pts[:20], res.points, atol=1e-6)
    np.testing.assert_allclose(run.table["boundary_distance"][:20], res.distances, rtol=1e-6)
    np.testing.assert_array_equal(run.table["boundary_found"][:20], res.found)
    big = bxg.attribute(model, x, y, method="BIG", steps=4, boundary_points=pts)
    np.testing.assert_allclose(np.asarray(run.attributions("BIG")), big, atol=1e-6)
    np.testing.assert_allclose(np.asarray(run.attributions("BSM")),
                               bxg.attribute(model, x, y, method="BSM", boundary_points=pts), atol=1e-6)
    # saved points are reused: from the earlier run's folder, or from a find_boundary result
    calls.clear()
    again = bxg.explain_dataset(model, (x, y), methods={"BIG": {"steps": 4}}, out=str(tmp_path / "c"),
                                batch_size=20, boundary=str(tmp_path / "b"), progress=False)
    assert not calls
    np.testing.assert_array_equal(np.asarray(again.attributions("BIG")), np.asarray(run.attributions("BIG")))
    whole = bxg.find_boundary(model, x, y, attacks=ATTACKS, bounds=(0, 1), progress=False)
    third = bxg.explain_dataset(model, (x, y), methods=["BSM"], out=str(tmp_path / "d"), batch_size=20,
                                boundary=whole, progress=False)
    np.testing.assert_allclose(third.table["boundary_distance"], whole.distances, rtol=1e-6)
    np.testing.assert_allclose(np.asarray(third.attributions("BSM")),
                               bxg.attribute(model, x, y, method="BSM", boundary_points=whole.points), atol=1e-6)


@needs_torch
def test_resume_recomputes_only_missing_shards_and_gives_identical_files(digits, tmp_path, monkeypatch):
    model, x, y = digits
    kw = dict(methods={"IG": {"steps": 4}}, batch_size=25, progress=False)
    full = bxg.explain_dataset(model, (x, y), out=str(tmp_path / "full"), **kw)
    from boundary_xg.runs import explain as ex

    done = []
    real = ex._ShardWork.run

    def crash_at_third(self, sh):
        if sh.index == 2:
            # a crash while writing: the method's array is there, the examples file is not
            a = np.zeros((25, 1, 8, 8), np.float32)
            np.save(os.path.join(self.out, "attributions", "IG", ".00002.npy.tmp-1"), a)
            raise KeyboardInterrupt
        done.append(sh.index)
        return real(self, sh)

    monkeypatch.setattr(ex._ShardWork, "run", crash_at_third)
    with pytest.raises(KeyboardInterrupt):
        bxg.explain_dataset(model, (x, y), out=str(tmp_path / "part"), **kw)
    assert done == [0, 1]
    monkeypatch.setattr(ex._ShardWork, "run", lambda self, sh: done.append(sh.index) or real(self, sh))
    with pytest.raises(RunConflictError, match="resume"):
        bxg.explain_dataset(model, (x, y), out=str(tmp_path / "part"), **kw)
    done.clear()
    bxg.explain_dataset(model, (x, y), out=str(tmp_path / "part"), resume=True, **kw)
    assert done == [2, 3]
    assert _files(tmp_path / "full") == _files(tmp_path / "part")
    assert full.table["index"].shape == (100,)


@needs_torch
def test_curve_metrics_keep_mean_curves_across_resume_and_in_the_report(digits, tmp_path, monkeypatch):
    model, x, y = digits
    x, y = x[:40], y[:40]
    kw = dict(methods={"IG": {"steps": 4}, "SM": {}}, metrics=["insertion", "deletion"],
              metric_options={"insertion": {"steps": 8}, "deletion": {"steps": 8}}, batch_size=16, progress=False)
    run = bxg.explain_dataset(model, (x, y), out=str(tmp_path / "full"), **kw)
    assert run.curve_metrics() == ["insertion", "deletion"]
    for metric in ("insertion", "deletion"):
        curves = run.curves(metric.upper())
        assert list(curves) == ["IG", "SM"]
        for m in ("IG", "SM"):
            # the reference: the metric on the whole array of the run's attributions, averaged here
            ref = getattr(bxg.metrics, metric)(model, x, y, np.asarray(run.attributions(m)), steps=8)
            frac, mean = curves[m]
            np.testing.assert_allclose(frac, np.arange(9) / 8, atol=0)
            np.testing.assert_allclose(mean, ref.per_example_curves.mean(axis=0), atol=1e-6)
            # area under the mean curve = the mean of the per-example areas in the table
            area = ((mean[1:] + mean[:-1]) / 2 * np.diff(frac)).sum()
            np.testing.assert_allclose(area, np.nanmean(run.table[f"{metric}_{m}"]), atol=1e-6)
    page = open(tmp_path / "full" / "report.html").read()
    assert page.count('class="curve"') == 2 and 'alt="insertion curves"' in page and 'alt="deletion curves"' in page
    # killed after the first shard, then resumed: the same files, curves and report included
    from boundary_xg.runs import explain as ex

    real = ex._ShardWork.run

    def crash_at_second(self, sh):
        if sh.index == 1:
            raise KeyboardInterrupt
        return real(self, sh)

    monkeypatch.setattr(ex._ShardWork, "run", crash_at_second)
    with pytest.raises(KeyboardInterrupt):
        bxg.explain_dataset(model, (x, y), out=str(tmp_path / "part"), **kw)
    monkeypatch.setattr(ex._ShardWork, "run", real)
    assert bxg.load_run(str(tmp_path / "part")).curves("insertion")  # the complete shard's curves, already
    again = bxg.explain_dataset(model, (x, y), out=str(tmp_path / "part"), resume=True, **kw)
    assert _files(tmp_path / "full") == _files(tmp_path / "part")
    np.testing.assert_array_equal(again.curves("insertion")["IG"][1], run.curves("insertion")["IG"][1])
    # a folder written before runs kept curves: it loads, and curves() says why there are none
    import shutil

    old = tmp_path / "old"
    shutil.copytree(tmp_path / "full", old)
    for name in os.listdir(old / "examples"):
        rec = json.load(open(old / "examples" / name))
        del rec["curves"]
        json.dump(rec, open(old / "examples" / name, "w"))
    past = bxg.load_run(str(old))
    np.testing.assert_array_equal(np.asarray(past.attributions("IG")), np.asarray(run.attributions("IG")))
    assert past.curve_metrics() == []
    with pytest.raises(bxg.InputError, match="written before runs kept curves"):
        past.curves("insertion")


@needs_torch
def test_other_arguments_are_refused_unless_overwrite(digits, tmp_path):
    model, x, y = digits
    out = str(tmp_path / "r")
    bxg.explain_dataset(model, (x[:20], y[:20]), methods=["SM"], out=out, batch_size=10, progress=False)
    with pytest.raises(RunConflictError, match="methods, options differ"):
        bxg.explain_dataset(model, (x[:20], y[:20]), methods=["IxG"], out=out, batch_size=10, progress=False)
    with pytest.raises(RunConflictError, match="data differ"):
        bxg.explain_dataset(model, (x[:20], (y[:20] + 1) % 10), methods=["SM"], out=out, batch_size=10,
                            resume=True, progress=False)
    run = bxg.explain_dataset(model, (x[:20], y[:20]), methods=["IxG"], out=out, batch_size=10, overwrite=True,
                              progress=False)
    assert run.methods == ["IxG"] and not os.path.exists(os.path.join(out, "attributions", "SM"))
    os.makedirs(tmp_path / "other")
    open(tmp_path / "other" / "notes.txt", "w").close()
    with pytest.raises(RunConflictError, match="other files"):
        bxg.explain_dataset(model, x[:10], methods=["SM"], out=str(tmp_path / "other"), progress=False)


@needs_torch
def test_metrics_through_the_adapter(digits, tmp_path, monkeypatch):
    model, x, y = digits
    x, y = x[:30], y[:30]

    class Result:
        def __init__(self, per):
            self.per_example, self.value = per, float(per.mean())

    def total(model, x, labels, attributions, scale=1.0):
        # a tiny metric: the sum of each example's attributions, scaled
        return Result(scale * attributions.reshape(len(x), -1).sum(axis=1))

    class Profile(Result):
        def __init__(self, per):
            super().__init__(per)
            # only the mean curve (no per-example curves): a run weights it by the shard's size
            self.curve, self.fractions = np.array([per.mean(), 2 * per.mean()]), np.array([0.0, 1.0])

    def profile(model, x, labels, attributions):
        return Profile(attributions.reshape(len(x), -1).sum(axis=1))

    fake = types.ModuleType("boundary_xg.metrics")
    fake.total, fake.profile, fake.__all__ = total, profile, ["total", "profile"]
    monkeypatch.setitem(sys.modules, "boundary_xg.metrics", fake)
    run = bxg.explain_dataset(model, (x, y), methods={"IG": {"steps": 4}, "SM": {}}, metrics=["TOTAL", "profile"],
                              metric_options={"TOTAL": {"scale": 2.0}}, out=str(tmp_path / "m"), batch_size=16,
                              progress=False)
    ig = bxg.attribute(model, x, y, method="IG", steps=4)
    np.testing.assert_allclose(run.table["total_IG"], 2 * ig.reshape(30, -1).sum(axis=1), rtol=1e-5)
    assert "total_SM" in run.table
    page = open(tmp_path / "m" / "report.html").read()
    assert "total" in page and page.count('class="curve"') == 1  # total has no curve, profile has
    mean = ig.reshape(30, -1).sum(axis=1).mean()  # shards of 16 and 14 examples, weighted by their sizes
    np.testing.assert_allclose(run.curves("profile")["IG"][1], [mean, 2 * mean], rtol=1e-5)
    with pytest.raises(bxg.InputError, match="not a curve metric"):
        run.curves("total")
    with pytest.raises(bxg.InputError, match="unknown metric 'nope'"):
        bxg.explain_dataset(model, x, methods=["SM"], metrics=["nope"], out=str(tmp_path / "n"))


@needs_torch
def test_metrics_unavailable_is_a_clear_error(digits, tmp_path, monkeypatch):
    import importlib.util

    if importlib.util.find_spec("boundary_xg.metrics") is not None:
        monkeypatch.setitem(sys.modules, "boundary_xg.metrics", None)
    model, x, _ = digits
    with pytest.raises(bxg.InputError, match="metrics are unavailable"):
        bxg.explain_dataset(model, x, methods=["SM"], metrics=["diffid"], out=str(tmp_path / "n"))


@needs_torch
def test_torch_dataset_and_dataloader(digits, tmp_path):
    import torch
    from torch.utils.data import DataLoader, Dataset, TensorDataset

    model, x, y = digits
    x, y = x[:50], y[:50]
    ds = TensorDataset(torch.from_numpy(x), torch.from_numpy(y))
    ref = bxg.attribute(model, x, y, method="SM")
    for i, data in enumerate([ds, DataLoader(ds, batch_size=7), DataLoader(ds, batch_size=7, num_workers=1)]):
        run = bxg.explain_dataset(model, data, methods=["SM"], out=str(tmp_path / f"t{i}"), batch_size=16,
                                  progress=False)
        np.testing.assert_allclose(np.asarray(run.attributions("SM")), ref, atol=1e-6)
        np.testing.assert_array_equal(run.table["label"], y)
    with pytest.raises(bxg.InputError, match="shuffle"):
        bxg.explain_dataset(model, DataLoader(ds, shuffle=True), methods=["SM"], out=str(tmp_path / "s"))

    class Ragged(Dataset):
        def __len__(self):
            return 20

        def __getitem__(self, i):
            return (torch.zeros(1, 8, 8) if i != 13 else torch.zeros(1, 8, 9)), 0

    with pytest.raises(bxg.InputError, match=r"shape \(1, 8, 9\) at position 13"):
        bxg.explain_dataset(model, Ragged(), methods=["SM"], out=str(tmp_path / "g"), batch_size=8, progress=False)
    with pytest.raises(bxg.InputError, match="shard 0"):  # examples that do not fit the model
        bxg.explain_dataset(model, np.zeros((4, 3, 8, 8), np.float32), methods=["SM"], out=str(tmp_path / "w"),
                            progress=False)


@needs_torch
def test_image_folder_unreadable_image_skipped_or_raised(digits, tmp_path):
    from PIL import Image

    model, x, y = digits
    root = tmp_path / "imgs"
    for cls in ("0", "1"):
        os.makedirs(root / cls)
    for i in range(5):
        img = (x[i, 0] * 255).astype(np.uint8)
        Image.fromarray(img).save(root / ("0" if i < 3 else "1") / f"d{i}.png")
    (root / "1" / "broken.png").write_bytes(b"not a png")
    run = bxg.explain_dataset(model, str(root), methods=["SM"], out=str(tmp_path / "r"), batch_size=4,
                              grayscale=True, progress=False)
    t = run.table
    names = list(t["name"])
    assert names == ["0/d0.png", "0/d1.png", "0/d2.png", "1/broken.png", "1/d3.png", "1/d4.png"]
    np.testing.assert_array_equal(t["label"], [0, 0, 0, 1, 1, 1])
    assert "unreadable" in t["error"][3] and t["prediction"][3] == -1
    a = np.asarray(run.attributions("SM"))
    assert np.isnan(a[3]).all() and np.isfinite(np.delete(a, 3, axis=0)).all()
    pixels = np.stack([np.asarray(Image.open(root / "0" / "d0.png"), np.float32) / 255])[:, None]
    np.testing.assert_allclose(a[0], bxg.attribute(model, pixels, [0], method="SM")[0], atol=1e-6)
    with pytest.raises(bxg.InputError, match="broken.png"):
        bxg.explain_dataset(model, str(root), methods=["SM"], out=str(tmp_path / "q"), grayscale=True,
                            on_error="raise", progress=False)


@needs_tf
def test_keras_model_with_tf_data(tmp_path):
    import tensorflow as tf

    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    x, y = load_digit_test_set("NHWC")
    x, y = x[:40], y[:40]
    model = load_digit_model("tensorflow")
    ref = bxg.attribute(model, x, y, method="IG", steps=4)
    for i, ds in enumerate([tf.data.Dataset.from_tensor_slices((x, y)),
                            tf.data.Dataset.from_tensor_slices((x, y)).batch(9)]):
        run = bxg.explain_dataset(model, ds, methods={"IG": {"steps": 4}}, out=str(tmp_path / f"k{i}"),
                                  batch_size=16, progress=False)
        np.testing.assert_allclose(np.asarray(run.attributions("IG")), ref, atol=1e-5)
        np.testing.assert_array_equal(run.table["label"], y)
        assert run.config["model"]["framework"] == "tensorflow"


@pytest.mark.slow  # ~9 s: the metric's first TensorFlow compile; the curve code itself is NumPy, tested above
@needs_tf
def test_keras_curve_metric_mean_curve(tmp_path):
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    x, y = load_digit_test_set("NHWC")
    model = load_digit_model("tensorflow")
    # a curve metric on Keras: the run's mean curve is the metric's own on the same attributions
    run = bxg.explain_dataset(model, (x[:12], y[:12]), methods=["SM"], metrics=["deletion"],
                              metric_options={"deletion": {"steps": 4}}, out=str(tmp_path / "c"), batch_size=8,
                              progress=False)
    ref = bxg.metrics.deletion(model, x[:12], y[:12], np.asarray(run.attributions("SM")), steps=4)
    np.testing.assert_allclose(run.curves("deletion")["SM"][1], ref.per_example_curves.mean(axis=0), atol=1e-6)
    assert open(tmp_path / "c" / "report.html").read().count('class="curve"') == 1


@needs_torch
def test_cli_evaluate_logs_a_line_per_shard_and_refuses_other_arguments(digits, tmp_path, capsys):
    from boundary_xg.cli import main

    model, x, y = digits
    np.save(tmp_path / "x.npy", x[:30])
    np.save(tmp_path / "y.npy", y[:30])
    args = ["evaluate", "--model", "boundary_xg.demo_models:load_digit_model", "--data", str(tmp_path / "x.npy"),
            "--labels", str(tmp_path / "y.npy"), "--methods", "IG,SM", "--option", "IG.steps=4",
            "--batch-size", "10", "--out", str(tmp_path / "r")]
    assert main(args) == 0
    out, err = capsys.readouterr()
    assert "shard 3/3 (examples 20-29)" in err and "wrote" in out
    run = bxg.load_run(str(tmp_path / "r"))
    assert run.config["methods"] == {"IG": {"steps": 4}, "SM": {}}
    np.testing.assert_allclose(np.asarray(run.attributions("IG")),
                               bxg.attribute(model, x[:30], y[:30], method="IG", steps=4), atol=1e-6)
    assert main(args[:-4] + ["--batch-size", "15", "--out", str(tmp_path / "r"), "--resume"]) == 1
    assert "batch_size differ" in capsys.readouterr().err
    assert main(args + ["--resume"]) == 0
    assert main(args[:-2] + ["--metrics", "nope", "--out", str(tmp_path / "m")]) == 1
    assert "metric" in capsys.readouterr().err
