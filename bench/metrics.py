"""Speed of the evaluation metrics against the floor, measured in one run.

DiffID costs 19 forwards per example (the clean image, 9 insertions, 9
deletions); the KPM family (KPM, KNM, KAM, RAM and the two unreported remove
tests, :func:`boundary_xg.metrics.kpm_family`) 96. The floor is that many
forward passes per example in plain framework code (no boundary_xg), in batches of
the fastest of a few batch sizes, timed in the same rounds as the metric (the
rounds alternate, so both see the same load of a shared machine). For each model
this prints the seconds per explained input of each metric at its default
``batch_size`` and at the floor's batch size, and the ratios to the floor (of the best
times, and the median over rounds of each round's ratio, which a loaded machine moves less)
(target for DiffID and the KPM family: <= 1.2x, issue 16); insertion/deletion and
sensitivity-n for reference.

Models (random weights unless shipped, CPU unless a GPU is visible): the shipped
digits CNN (1x8x8, tiny: the fixed per-call cost of argument checks, ranking and
batch building dominates), the small test CNN at 3x32x32, torchvision resnet18 at
3x224x224, and on TensorFlow the digits CNN and keras MobileNetV2 at 224x224x3.

Run: ``.venv/bin/python bench/metrics.py [--quick] [--no-tf] [--models digits,resnet18,...]``.
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np

import torch  # torch before tensorflow (see README)
import torchvision

from _timing import best_time, paired_median, round_times  # noqa: E402  (bench/ is on sys.path)
from boundary_xg import metrics
from boundary_xg.testing import models as tm


def torch_forward(model, shape, device):
    """``run(rows, b)``: plain-torch forwards of ``rows`` images in batches of ``b`` (no gradients)."""
    cache = {}

    def run(rows, b):
        if b not in cache:
            cache[b] = torch.randn((b,) + shape, device=device)
        with torch.no_grad():
            for lo in range(0, rows, b):
                model(cache[b][: min(b, rows - lo)])
        if device != "cpu":
            torch.cuda.synchronize()

    return run


def tf_forward(model, shape):
    """``run(rows, b)``: plain TensorFlow forwards (tf.function, training=False)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(z):
        return model(z, training=False)

    cache = {}

    def run(rows, b):
        if b not in cache:
            cache[b] = tf.random.normal((b,) + shape)
        outs = [step(cache[b][: min(b, rows - lo)]) for lo in range(0, rows, b)]
        outs[-1].numpy()

    return run


def bench(name, model, x, y, run, batch_sizes, repeat, extra=True):
    """Seconds per input of each metric and of its floor, timed in the same rounds."""
    n = len(x)
    per_b = {b: best_time(lambda: run(4 * b, b), repeat=3) / (4 * b) for b in batch_sizes}
    fb = min(per_b, key=per_b.get)
    print(f"\n== {name}, input {tuple(x.shape[1:])}, N={n}")
    print("plain forward (s/example) by batch size: "
          + ", ".join(f"{b}: {t * 1e3:.3f} ms" for b, t in per_b.items()) + f"  -> floor batch {fb}")
    a = np.random.default_rng(0).standard_normal(tuple(x.shape)).astype(np.float32)
    cases = [("diffid", lambda bs: metrics.diffid(model, x, y, a, batch_size=bs), 19),
             ("kpm_family", lambda bs: metrics.kpm_family(model, x, y, a, batch_size=bs), 96)]
    if extra:
        cases += [("insertion(32)", lambda bs: metrics.insertion(model, x, y, a, batch_size=bs), 33),
                  ("deletion(32)", lambda bs: metrics.deletion(model, x, y, a, batch_size=bs), 33),
                  ("sensitivity_n", lambda bs: metrics.sensitivity_n(model, x, y, a, batch_size=bs), 91)]
    print(f"{'metric':14} {'forwards':>8} {'s/input':>9} {'floor s/input':>14} {'/floor':>7} "
          f"{'at batch ' + str(fb):>12} {'paired median':>14}")
    rows = []
    for label, fn, fwd in cases:
        times = round_times(lambda: fn(None), lambda: fn(fb), lambda: run(fwd * n, fb), repeat=repeat)
        ours, ours_fb, floor = (min(t) / n for t in times)
        paired = (paired_median(times[0], times[2]), paired_median(times[1], times[2]))
        rows.append((label, ours / floor, ours_fb / floor) + paired)
        print(f"{label:14} {fwd:8d} {ours:9.5f} {floor:14.5f} {ours / floor:7.2f} {ours_fb / floor:12.2f} "
              f"{paired[0]:6.2f} /{paired[1]:5.2f}")
    return rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer images and repeats (a smoke run)")
    ap.add_argument("--no-tf", action="store_true", help="skip the TensorFlow models")
    ap.add_argument("--models", default="digits,small,resnet18,keras_digits,mobilenet",
                    help="comma-separated subset of digits,small,resnet18,keras_digits,mobilenet")
    args = ap.parse_args()
    wanted = set(args.models.split(","))
    torch.manual_seed(0)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    repeat = 2 if args.quick else 3
    print(f"torch {torch.__version__} on {device}, CPU threads={torch.get_num_threads()}")
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    xd, yd = load_digit_test_set()
    nd = 64 if args.quick else 360
    digits = load_digit_model("torch").to(device)
    if "digits" in wanted:
        bench("digits CNN (torch)", digits, torch.from_numpy(xd[:nd]).to(device), torch.from_numpy(yd[:nd]).to(device),
              torch_forward(digits, (1, 8, 8), device), [256, 1024, 4096], repeat)

    small = tm.torch_cnn(tm.cnn_weights(seed=0, size=32, widths=(16, 32), hidden=64, classes=10)).to(device)
    xs = torch.randn(16 if args.quick else 64, 3, 32, 32, device=device)
    ys = torch.arange(len(xs), device=device) % 10
    if "small" in wanted:
        bench("small CNN (torch)", small, xs, ys, torch_forward(small, (3, 32, 32), device), [64, 256, 1024],
              repeat)

    resnet = torchvision.models.resnet18(weights=None, num_classes=1000).eval().to(device)
    nr = 1 if args.quick else (16 if device != "cpu" else 2)
    xr = torch.randn(nr, 3, 224, 224, device=device)
    yr = torch.arange(nr, device=device) % 1000
    if "resnet18" in wanted:
        bench("resnet18 (torch)", resnet, xr, yr, torch_forward(resnet, (3, 224, 224), device),
              [8, 16, 32] if device == "cpu" else [64, 128, 256], 1 if device == "cpu" else repeat,
              extra=device != "cpu")

    if args.no_tf or importlib.util.find_spec("tensorflow") is None or not wanted & {"keras_digits", "mobilenet"}:
        return
    import keras

    kd = load_digit_model("tensorflow")
    if "keras_digits" in wanted:
        bench("digits CNN (keras)", kd, tm.nchw_to_nhwc(xd[:nd]), yd[:nd], tf_forward(kd, (8, 8, 1)),
              [256, 1024, 4096], repeat)
    if "mobilenet" not in wanted:
        return

    mobile = keras.applications.MobileNetV2(weights=None, input_shape=(224, 224, 3), classes=1000,
                                            classifier_activation=None)
    nm = 1 if args.quick else 2
    xm = np.random.default_rng(0).standard_normal((nm, 224, 224, 3)).astype(np.float32)
    bench("MobileNetV2 (keras)", mobile, xm, np.arange(nm) % 1000, tf_forward(mobile, (224, 224, 3)),
          [8, 16, 32], 1, extra=False)


if __name__ == "__main__":
    main()
