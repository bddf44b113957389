"""Dataset runs across processes: torchrun on CPU (gloo), SIGKILL then resume, a failing rank.

Every test starts real processes (``python -m torch.distributed.run``), on the
shipped digits with cheap methods (saliency, IG with 4 steps; insertion curves in
the first), so the suite stays
within about a minute on two cores.
"""

from __future__ import annotations

import importlib.util
import json
import os
import socket
import subprocess
import sys
import textwrap

import numpy as np
import pytest

from conftest import needs_torch
from test_runs import _files

import boundary_xg as bxg

SRC = os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))), "src")

#: a run of the digits through the API, with hooks to count shards, kill or fail a rank
SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    import numpy as np
    import torch
    import boundary_xg as bxg
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set
    from boundary_xg.runs import explain as ex

    out, log, kill_at, fail_at = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4])
    rank = int(os.environ.get("RANK", "0"))
    computed = []
    real_run, real_save = ex._ShardWork.run, ex.fs.save_json

    def run(self, sh):
        computed.append(sh.index)
        with open(os.path.join(log, f"rank{rank}.json"), "w") as fh:
            json.dump(computed, fh)
        if sh.index == fail_at:
            raise ValueError(f"bad data in shard {sh.index}")
        return real_run(self, sh)

    def save_json(path, obj, *args):
        if kill_at >= 0 and path.endswith(f"{kill_at:05d}.json") and "examples" in path:
            os.kill(os.getpid(), signal.SIGKILL)  # mid-shard: its arrays are written, its record is not
        return real_save(path, obj, *args)

    ex._ShardWork.run, ex.fs.save_json = run, save_json
    x, y = load_digit_test_set()
    bxg.explain_dataset(load_digit_model("torch"), (x, y), methods={"IG": {"steps": 4}, "SM": {}}, out=out,
                        batch_size=40, resume=True, progress=False)
''')


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _env():
    env = dict(os.environ, PYTHONPATH=SRC + os.pathsep + os.environ.get("PYTHONPATH", ""), OMP_NUM_THREADS="1")
    env.pop("WORLD_SIZE", None)
    env.pop("RANK", None)
    return env


def _torchrun(n: int, args, cwd, timeout=240):
    cmd = [sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={n}", f"--master-port={_free_port()}"]
    return subprocess.run(cmd + list(args), cwd=cwd, env=_env(), capture_output=True, text=True, timeout=timeout)


def _prepare(tmp_path):
    """SCRIPT written into ``tmp_path``; its run folder and its folder of per-rank shard logs."""
    script = tmp_path / "run_digits.py"
    script.write_text(SCRIPT)
    out, log = str(tmp_path / "run"), str(tmp_path / "log")
    os.makedirs(log)
    return script, out, log


@pytest.fixture(scope="module")
def reference(tmp_path_factory):
    """An uninterrupted single-process run of SCRIPT's arguments."""
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    x, y = load_digit_test_set()
    out = str(tmp_path_factory.mktemp("ref") / "run")
    bxg.explain_dataset(load_digit_model("torch"), (x, y), methods={"IG": {"steps": 4}, "SM": {}}, out=out,
                        batch_size=40, resume=True, progress=False)
    return out


@needs_torch
def test_torchrun_two_processes_give_the_single_process_files(tmp_path):
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    x, y = load_digit_test_set()
    np.save(tmp_path / "x.npy", x)
    np.save(tmp_path / "y.npy", y)
    # a module that names no Keras, so the CLI imports torch only (as a user's torch module would)
    (tmp_path / "digits_model.py").write_text(
        "from boundary_xg.demo_models import load_digit_model\n\n\ndef build():\n"
        "    return load_digit_model('torch')\n")
    args = ["--model", "digits_model:build", "--data", "x.npy", "--labels", "y.npy",
            "--methods", "IG,SM", "--option", "steps=4", "--metrics", "insertion", "--batch-size", "40"]
    single = subprocess.run([sys.executable, "-m", "boundary_xg", "evaluate", *args, "--out", "one"],
                            cwd=tmp_path, env=_env(), capture_output=True, text=True, timeout=240)
    assert single.returncode == 0, single.stderr
    two = _torchrun(2, ["-m", "boundary_xg", "evaluate", *args, "--out", "two"], cwd=tmp_path)
    assert two.returncode == 0, two.stderr[-3000:]
    assert "rank 1/2: shard 2/9" in two.stderr and "rank 0/2: shard 9/9" in two.stderr
    assert two.stdout.count("wrote two") == 1  # rank 0 reports
    one_files, two_files = _files(tmp_path / "one"), _files(tmp_path / "two")
    assert sorted(one_files) == sorted(two_files)
    assert one_files == two_files  # byte for byte: shards, table, run.json, report
    run = bxg.load_run(str(tmp_path / "two"))
    model = load_digit_model("torch")
    np.testing.assert_allclose(np.asarray(run.attributions("IG")), bxg.attribute(model, x, y, method="IG", steps=4),
                               atol=1e-6)
    np.testing.assert_allclose(np.asarray(run.attributions("SM")), bxg.attribute(model, x, y, method="SM"),
                               atol=1e-6)
    # rank 0's report and run.curves add up the curves both ranks kept: the metric's own mean curve
    ref = bxg.metrics.insertion(model, x, y, np.asarray(run.attributions("IG")))
    np.testing.assert_allclose(run.curves("insertion")["IG"][1], ref.per_example_curves.mean(axis=0), atol=1e-6)
    assert open(tmp_path / "two" / "report.html").read().count('class="curve"') == 1


@needs_torch
def test_sigkill_mid_run_then_resume_gives_the_same_files(tmp_path, reference):
    script, out, log = _prepare(tmp_path)
    killed = subprocess.run([sys.executable, str(script), out, log, "3", "-1"], env=_env(),
                            capture_output=True, text=True, timeout=240)
    assert killed.returncode == -9
    first = json.load(open(os.path.join(log, "rank0.json")))
    assert first == [0, 1, 2, 3]
    assert os.path.exists(os.path.join(out, "attributions", "IG", "00003.npy"))  # written before the kill
    assert not os.path.exists(os.path.join(out, "examples", "00003.json"))
    resumed = subprocess.run([sys.executable, str(script), out, log, "-1", "-1"], env=_env(),
                             capture_output=True, text=True, timeout=240)
    assert resumed.returncode == 0, resumed.stderr
    again = json.load(open(os.path.join(log, "rank0.json")))
    assert again == [3, 4, 5, 6, 7, 8]  # one shard recomputed: the one the kill interrupted
    assert _files(out) == _files(reference)


@pytest.mark.slow
@needs_torch
def test_torchrun_sigkill_then_resume_recomputes_at_most_one_shard_per_rank(tmp_path, reference):
    script, out, log = _prepare(tmp_path)
    killed = _torchrun(2, [str(script), out, log, "5", "-1"], cwd=tmp_path)
    assert killed.returncode != 0
    before = {r: json.load(open(os.path.join(log, f"rank{r}.json"))) for r in (0, 1)}
    complete = {k for k in range(9) if os.path.exists(os.path.join(out, "examples", f"{k:05d}.json"))}
    for r in (0, 1):
        os.remove(os.path.join(log, f"rank{r}.json"))
    resumed = _torchrun(2, [str(script), out, log, "-1", "-1"], cwd=tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-3000:]
    for r in (0, 1):
        path = os.path.join(log, f"rank{r}.json")
        again = json.load(open(path)) if os.path.exists(path) else []  # a rank may have nothing left
        assert not set(again) & complete
        assert len(set(again) & set(before[r])) <= 1
    assert _files(out) == _files(reference)


@needs_torch
def test_a_failing_rank_stops_the_others_with_a_clear_error(tmp_path):
    script, out, log = _prepare(tmp_path)
    res = _torchrun(2, [str(script), out, log, "-1", "3"], cwd=tmp_path)
    assert res.returncode != 0
    assert "ValueError: bad data in shard 3" in res.stderr
    assert "RunFailedError: rank 1 failed" in res.stderr  # rank 0's error names the failing rank
    assert not os.path.exists(os.path.join(out, "table.csv"))
    # no half-written shard passes for complete: shard 3 has no record
    assert not os.path.exists(os.path.join(out, "examples", "00003.json"))
    rank0 = json.load(open(os.path.join(log, "rank0.json")))
    assert max(rank0) < 8  # rank 0 stopped early instead of finishing its shards


#: the Keras digits under torchrun: the same contract, TensorFlow in every process
KERAS_SCRIPT = textwrap.dedent('''
    import sys
    import torch  # torch before tensorflow
    import boundary_xg as bxg
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    x, y = load_digit_test_set("NHWC")
    bxg.explain_dataset(load_digit_model("tensorflow"), (x[:120], y[:120]), methods={"IG": {"steps": 4}, "SM": {}},
                        out=sys.argv[1], batch_size=40, progress=False)
''')


@pytest.mark.slow
@needs_torch
@pytest.mark.skipif(importlib.util.find_spec("tensorflow") is None, reason="tensorflow not installed")
def test_torchrun_keras_model_gives_the_single_process_files(tmp_path):
    script = tmp_path / "keras_digits.py"
    script.write_text(KERAS_SCRIPT)
    one = subprocess.run([sys.executable, str(script), str(tmp_path / "one")], env=_env(), capture_output=True,
                         text=True, timeout=400)
    assert one.returncode == 0, one.stderr[-3000:]
    two = _torchrun(2, [str(script), str(tmp_path / "two")], cwd=tmp_path, timeout=400)
    assert two.returncode == 0, two.stderr[-3000:]
    assert _files(tmp_path / "one") == _files(tmp_path / "two")
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    x, y = load_digit_test_set("NHWC")
    ref = bxg.attribute(load_digit_model("tensorflow"), x[:120], y[:120], method="IG", steps=4)
    np.testing.assert_allclose(np.asarray(bxg.load_run(str(tmp_path / "two")).attributions("IG")), ref, atol=1e-6)
