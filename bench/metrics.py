"""Speed of the evaluation metrics against the floor, measured in one run.

DiffID costs 19 forwards per example (the clean image, 9 insertions, 9
deletions); the KPM family (KPM, KNM, KAM, RAM and the two unreported remove
tests, :func:`boundary_xg.metrics.kpm_family`) 96. The floor is that many
forward passes per example in plain framework code (no boundary_xg): the best
per-example forward time over a few batch sizes, times 19 (or 96). For each model
this prints the seconds per explained input of DiffID and of the KPM family and
their ratio to the floor (target: <= 1.2x, issue 16), and insertion/deletion and
sensitivity-n for reference.

Models (random weights unless shipped, CPU unless a GPU is visible): the shipped
digits CNN (1x8x8, tiny: the fixed per-call cost of argument checks, ranking and
batch building dominates), the small test CNN at 3x32x32, torchvision resnet18 at
3x224x224, and on TensorFlow the digits CNN and keras MobileNetV2 at 224x224x3.

Run: ``.venv/bin/python bench/metrics.py [--quick] [--no-tf]``.
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np

import torch  # torch before tensorflow (see README)
import torchvision

import boundary_xg as bxg
from _timing import best_time, best_times  # noqa: E402  (bench/ is on sys.path)
from boundary_xg import metrics
from boundary_xg.testing import models as tm


def torch_forward_floor(model, shape, batch_sizes, device):
    """Best per-example forward time (no gradients), plain torch."""
    out = {}
    for b in batch_sizes:
        x = torch.randn((b,) + shape, device=device)

        def step():
            with torch.no_grad():
                model(x)
            if device != "cpu":
                torch.cuda.synchronize()

        out[b] = best_time(step, repeat=3) / b
    return min(out.values()), out


def tf_forward_floor(model, shape, batch_sizes):
    """Best per-example forward time, plain TensorFlow (tf.function, training=False)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(z):
        return model(z, training=False)

    out = {}
    for b in batch_sizes:
        x = tf.random.normal((b,) + shape)
        out[b] = best_time(lambda: step(x).numpy(), repeat=3) / b
    return min(out.values()), out


def bench(name, model, x, y, floor, per_b, repeat, extra=True):
    n = len(x)
    print(f"\n== {name}, input {tuple(x.shape[1:])}, N={n}")
    print("forward floor (s/example) by batch size: "
          + ", ".join(f"{b}: {t * 1e3:.3f} ms" for b, t in per_b.items()) + f"  -> best {floor * 1e3:.3f} ms")
    a = np.random.default_rng(0).standard_normal(tuple(x.shape)).astype(np.float32)
    cases = [("diffid", lambda: metrics.diffid(model, x, y, a), 19),
             ("kpm_family", lambda: metrics.kpm_family(model, x, y, a), 96)]
    if extra:
        cases += [("insertion(32)", lambda: metrics.insertion(model, x, y, a), 33),
                  ("deletion(32)", lambda: metrics.deletion(model, x, y, a), 33),
                  ("sensitivity_n", lambda: metrics.sensitivity_n(model, x, y, a), 91)]
    times = best_times(*(fn for _, fn, _ in cases), repeat=repeat)
    print(f"{'metric':14} {'forwards':>8} {'s/input':>9} {'floor s/input':>14} {'/floor':>7}")
    rows = []
    for (label, _, fwd), t in zip(cases, times):
        ours, fl = t / n, fwd * floor
        rows.append((label, ours / fl))
        print(f"{label:14} {fwd:8d} {ours:9.5f} {fl:14.5f} {ours / fl:7.2f}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats (a smoke run)")
    ap.add_argument("--no-tf", action="store_true", help="skip the TensorFlow models")
    args = ap.parse_args()
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    repeat = 2 if args.quick else 3
    print(f"torch {torch.__version__} on {device}, CPU threads={torch.get_num_threads()}")
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    xd, yd = load_digit_test_set()
    nd = 64 if args.quick else 360
    digits = load_digit_model("torch").to(device)
    floor, per_b = torch_forward_floor(digits, (1, 8, 8), [256, 1024, 4096], device)
    bench("digits CNN (torch)", digits, torch.from_numpy(xd[:nd]).to(device), torch.from_numpy(yd[:nd]).to(device),
          floor, per_b, repeat)

    small = tm.torch_cnn(tm.cnn_weights(seed=0, size=32, widths=(16, 32), hidden=64, classes=10)).to(device)
    xs = torch.randn(16 if args.quick else 64, 3, 32, 32, device=device)
    ys = torch.arange(len(xs), device=device) % 10
    floor, per_b = torch_forward_floor(small, (3, 32, 32), [64, 256, 1024], device)
    bench("small CNN (torch)", small, xs, ys, floor, per_b, repeat)

    resnet = torchvision.models.resnet18(weights=None, num_classes=1000).eval().to(device)
    nr = 1 if args.quick else (16 if device != "cpu" else 2)
    xr = torch.randn(nr, 3, 224, 224, device=device)
    yr = torch.arange(nr, device=device) % 1000
    floor, per_b = torch_forward_floor(resnet, (3, 224, 224), [8, 16, 32] if device == "cpu" else [64, 128, 256],
                                       device)
    bench("resnet18 (torch)", resnet, xr, yr, floor, per_b, 2 if device == "cpu" else repeat, extra=device != "cpu")

    if args.no_tf or importlib.util.find_spec("tensorflow") is None:
        return
    import keras

    kd = load_digit_model("tensorflow")
    floor, per_b = tf_forward_floor(kd, (8, 8, 1), [256, 1024, 4096])
    xk = tm.nchw_to_nhwc(xd[:nd])
    bench("digits CNN (keras)", kd, xk, yd[:nd], floor, per_b, repeat)

    mobile = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000,
                                            classifier_activation=None)
    nm = 1 if args.quick else 2
    xm = np.random.default_rng(0).standard_normal((nm, 224, 224, 3)).astype(np.float32)
    floor, per_b = tf_forward_floor(mobile, (224, 224, 3), [8, 16, 32])
    bench("MobileNetV2 (keras)", mobile, xm, np.arange(nm) % 1000, floor, per_b, 2, extra=False)


if __name__ == "__main__":
    main()
