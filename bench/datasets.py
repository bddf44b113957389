"""Overhead and memory of whole-dataset runs (``explain_dataset``), measured in one run.

(a) Time per image of a single-process run against calling ``bxg.attribute`` on
    the same batches (same method, same batch size; the run also predicts, records
    the completeness gap and writes its files). Target (issue 17): within 1.1x.
(b) Peak resident memory of a run over 360 and over 3,600 images of a .npy file
    (a random CNN on 3x64x64 inputs; 3,600 images are 177 MB of inputs and
    177 MB per method of attributions), each in a fresh process. Target: flat.

Run: ``.venv/bin/python bench/datasets.py [--quick]``.
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile

import numpy as np

import torch  # torch before tensorflow (see README)

import boundary_xg as bxg
from _timing import best_times  # noqa: E402  (bench/ is on sys.path)
from boundary_xg.demo_models import load_digit_model, load_digit_test_set
from boundary_xg.runs.explain import shard_seed


def overhead(batch_size: int, repeat: int) -> None:
    model = load_digit_model("torch")
    x, y = load_digit_test_set()
    batches = [(x[i:i + batch_size], y[i:i + batch_size]) for i in range(0, len(x), batch_size)]
    out = tempfile.mkdtemp(prefix="bxg_bench_")
    print(f"(a) digits, {len(x)} images, {batch_size} per batch, torch CPU")
    for method, opts in (("IG", {"steps": 50}), ("BIG", {"steps": 50})):
        kw = dict(opts)
        search = {}
        if method == "BIG":
            search = {"attacks": [bxg.PGD(eps=[0.5, 1.0, 2.0], steps=20)], "bounds": (0, 1)}

            def plain():
                # each shard's search seed, as the run derives it, so both make the same search
                for k, (xb, yb) in enumerate(batches):
                    res = bxg.find_boundary(model, xb, yb, progress=False, seed=shard_seed(0, k), **search)
                    bxg.attribute(model, xb, yb, method=method, boundary_points=res.points, **kw)
        else:
            def plain():
                for xb, yb in batches:
                    bxg.attribute(model, xb, yb, method=method, **kw)

        def run():
            bxg.explain_dataset(model, (x, y), methods={method: kw}, out=out, batch_size=batch_size,
                                overwrite=True, progress=False, report=False, **search)

        t_plain, t_run = best_times(plain, run, repeat=repeat)
        print(f"    {method:4s} attribute loop {1e3 * t_plain / len(x):.3f} ms/img   explain_dataset "
              f"{1e3 * t_run / len(x):.3f} ms/img   ratio {t_run / t_plain:.3f}  (target <= 1.1)")


def _rss_mb() -> float:
    with open("/proc/self/statm") as fh:
        return int(fh.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20


def memory_child(n: int, path: str, out: str) -> None:
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Conv2d(3, 8, 3, padding=1), torch.nn.ReLU(),
                                torch.nn.AdaptiveAvgPool2d(1), torch.nn.Flatten(), torch.nn.Linear(8, 10)).eval()
    base = _rss_mb()  # after the imports and the model
    bxg.explain_dataset(model, path, methods={"IG": {"steps": 4}, "SM": {}}, out=out, batch_size=64,
                        overwrite=True, progress=False, report=False)
    run = bxg.load_run(out)
    assert run.attributions("IG").shape[0] == n
    # VmHWM, not getrusage's ru_maxrss: Linux carries ru_maxrss over from the
    # forking parent through exec, so a child would inherit this script's peak
    with open("/proc/self/status") as fh:
        hwm = next(int(line.split()[1]) for line in fh if line.startswith("VmHWM:"))
    print(hwm / 1024.0, base)


def memory(sizes) -> None:
    print("(b) peak resident memory of a run (fresh process each; random CNN, 3x64x64, IG(4) + SM)")
    tmp = tempfile.mkdtemp(prefix="bxg_bench_mem_")
    rng = np.random.default_rng(0)
    peaks = []
    for n in sizes:
        path = os.path.join(tmp, f"x{n}.npy")
        arr = np.lib.format.open_memmap(path, mode="w+", dtype=np.float32, shape=(n, 3, 64, 64))
        for i in range(0, n, 360):
            arr[i:i + 360] = rng.random((min(360, n - i), 3, 64, 64), dtype=np.float32)
        del arr
        res = subprocess.run([sys.executable, __file__, "--memory-child", str(n), path, os.path.join(tmp, f"run{n}")],
                             capture_output=True, text=True, check=True)
        peak, base = map(float, res.stdout.strip().splitlines()[-1].split())
        peaks.append(peak)
        print(f"    {n:5d} images ({n * 3 * 64 * 64 * 4 / 2**20:6.1f} MB of inputs): peak RSS {peak:7.1f} MB "
              f"({peak - base:+6.1f} MB over the process before the run)")
    print(f"    ratio {sizes[-1]} / {sizes[0]} images: {peaks[-1] / peaks[0]:.3f}  (target: flat, ~1.0)")


def main() -> None:
    p = argparse.ArgumentParser()
    p.add_argument("--quick", action="store_true")
    p.add_argument("--memory-child", nargs=3, metavar=("N", "PATH", "OUT"))
    a = p.parse_args()
    if a.memory_child:
        memory_child(int(a.memory_child[0]), a.memory_child[1], a.memory_child[2])
        return
    torch.set_num_threads(1)
    overhead(batch_size=64, repeat=2 if a.quick else 5)
    memory([360, 3600])


if __name__ == "__main__":
    main()
