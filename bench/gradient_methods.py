"""Speed of the gradient methods against the floor and against Captum, measured in one run.

For each model (resnet18 at 3x224x224, a small CNN at 3x32x32; random weights,
CPU) this prints the seconds per explained input of every method and

  (a) the ratio to the floor: passes x the best per-example forward+backward
      time at any batch size (plain framework code, no boundary_xg);
  (b) the ratio to Captum with the same settings and its best
      ``internal_batch_size`` (skipped when Captum is missing);

DeepLIFT counts two rows per input (the doubled batch of input and baseline it
used to run; it now runs a baseline forward, then a forward+backward of the input);
then the TensorFlow backend against the torch backend on the same small CNN
(same weights), with and without ``tf.function``.

Run: ``.venv/bin/python bench/gradient_methods.py [--quick] [--methods SM,GradCAM,IG_SG,...]
[--models small,resnet18,tf] [--repeat R] [--cpu-time]`` (``--methods`` keeps only those rows,
in every section; ``IG_SG`` keeps all its variants, ``IG_SG/ip`` one). Targets: IG(steps=50)
within 1.15x of the floor and no slower than Captum's best; the TF backend within 1.5x of torch
on the same architecture; GradCAM and FullGrad (one pass each) within 1.2x of the floor (the
``/floor`` column; for the TensorFlow backend the ``/tf floor`` column, against plain
TensorFlow's floor); the reference-based path methods at M = 10 references x k = 5 steps (50
passes; IG_Uniform, IG_SG, IG_SQ, LPI, EG at 50 samples, each also re-calibrated) within 1.15x
of 50 passes of the floor, AGI (2 x 5 steps x T targets) within 1.2x of its passes.
"""

from __future__ import annotations

import argparse
import importlib.util

import numpy as np

import torch  # torch before tensorflow (see README)
import torchvision

import boundary_xg as bxg
from _timing import best_time, best_times, paired_median, round_times  # noqa: E402  (bench/ is on sys.path)
from boundary_xg.testing import models as tm






def floor_step(model, shape, b):
    """One forward+backward of ``b`` rows of the label logit, plain torch."""
    x = torch.randn((b,) + shape)
    y = torch.zeros(b, dtype=torch.long)

    def step():
        z = x.detach().requires_grad_(True)
        torch.autograd.grad(model(z).gather(1, y[:, None]).sum(), z)
    return step


def torch_floor(model, shape, batch_sizes):
    """Best per-example forward+backward time of the label logit, plain torch."""
    out = {b: best_time(floor_step(model, shape, b)) / b for b in batch_sizes}
    return min(out.values()), out


def tf_floor_step(model):
    """One forward+backward of a batch, plain TensorFlow (tf.function)."""
    import tensorflow as tf

    @tf.function(reduce_retracing=True)
    def step(z):
        with tf.GradientTape() as tape:
            tape.watch(z)
            s = tf.reduce_sum(model(z, training=False)[:, 0])
        return tape.gradient(s, z)
    return step


def tf_floor(model, shape, batch_sizes):
    """Best per-example forward+backward time, plain TensorFlow (tf.function)."""
    import tensorflow as tf

    step = tf_floor_step(model)
    out = {}
    for b in batch_sizes:
        x = tf.random.normal((b,) + shape)
        out[b] = best_time(lambda: step(x), repeat=2) / b
    return min(out.values()), out


def recalibration_cases(classes, bg):
    """Issue 15's methods at M = 10, k = 5 (50 passes) and AGI at steps 5, T = min(10, C - 1)."""
    ref = {"num_references": 10, "steps": 5, "seed": 0}
    box = {"bounds": (-6.0, 6.0)}  # contains the N(0, 1) inputs
    t = min(10, classes - 1)
    cases = []
    for recal in (None, "valid_ip", "valid_ref"):
        r = {} if recal is None else {"recalibrate": recal}
        tag = "" if recal is None else "/" + recal[6:]
        cases += [
            ("IG_Uniform" + tag, "IG_Uniform", dict(ref, **box, **r), 50),
            ("IG_SG" + tag, "IG_SG", dict(ref, **r), 50),
            ("IG_SQ" + tag, "IG_SQ", dict(ref, **r), 50),
            ("LPI" + tag, "LPI", dict(ref, background=bg, **r), 50),
            ("EG" + tag, "EG", dict(num_samples=50, background=bg, seed=0, **r), 50),
            ("AGI" + tag, "AGI", dict(box, steps=5, num_classes=t, **r), 2 * 5 * t),
        ]
        if recal is not None:
            cases.append(("IG" + tag, "IG", dict(steps=50, **r), 50))
    cases.append(("IG_Uniform/rec", "IG_Uniform", dict(ref, **box, pairing="rec"), 50))
    cases.append(("IG_SG/contrast", "IG_SG", dict(ref, objective="contrastive"), 50))
    return cases


def bench_model(name, model, shape, n, steps, samples, batch_sizes, captum_ibs, only=None, repeat=3):
    print(f"\n== {name}, input {shape}, N={n}, CPU threads={torch.get_num_threads()}")
    floor, per_b = torch_floor(model, shape, batch_sizes)
    print("floor (s/example fwd+bwd) by batch size: "
          + ", ".join(f"{b}: {t * 1e3:.2f} ms" for b, t in per_b.items()) + f"  -> best {floor * 1e3:.2f} ms")
    # each method is timed in turn with the floor at its best batch size, round by round, so
    # that both see the same load of a shared machine; /floor uses that interleaved floor
    best_b = min(per_b, key=per_b.get)
    floor_fn = floor_step(model, shape, best_b)
    x = torch.randn((n,) + shape)
    y = torch.arange(n) % 10
    rows = []
    cases = [
        ("SM", {}, 1, ("Saliency", {})),
        ("IxG", {}, 1, ("InputXGradient", {})),
        ("XG", {}, 1, None),
        ("IG", {"steps": steps}, steps, ("IntegratedGradients", {"n_steps": steps, "method": "gausslegendre"})),
        ("SG", {"num_samples": samples, "sigma_abs": 0.15, "seed": 0}, samples,
         ("NoiseTunnel", {"nt_samples": samples, "stdevs": 0.15, "nt_type": "smoothgrad"})),
        # floor: one forward and one backward over the doubled batch (input and baseline)
        ("DeepLIFT", {}, 2, ("DeepLift", {})),
        # layer methods (issue 14): one forward+backward; Captum's LayerGradCam on the same
        # (default) layer, upsampled as ours; Captum has no FullGrad
        ("GradCAM", {}, 1, ("LayerGradCam", {})),
        ("FullGrad", {}, 1, None),
    ]
    with torch.no_grad():
        classes = model(x[:1]).shape[1]
    bg = torch.randn((20,) + shape)
    cases = [(m, m, o, p, c) for m, o, p, c in cases]
    cases += [(label, m, o, p, None) for label, m, o, p in recalibration_cases(classes, bg)]
    if only:  # "IG_SG" all its variants, "IG_SG/ip" that one
        cases = [c for c in cases if c[0] in only or c[0].split("/")[0] in only]
    have_captum = importlib.util.find_spec("captum") is not None
    for method, real, opts, passes, captum_case in cases:
        reps = max(1, round(passes * n / best_b))  # the floor does the same amount of work

        def floor_work():
            for _ in range(reps):
                floor_fn()
        t_floor, ours = best_times(floor_work, lambda: bxg.attribute(model, x, y, method=real, **opts),
                                   repeat=repeat)
        floor = t_floor / (reps * best_b)
        ours /= n
        theirs = None
        if have_captum and captum_case is not None:
            theirs = captum_time(model, x, y, captum_case, captum_ibs)
            theirs = None if theirs is None else theirs / n
        rows.append((method, passes, ours, ours / (passes * floor), theirs))
    print(f"{'method':20} {'passes':>6} {'s/input':>9} {'/floor':>7} {'captum s/input':>15} {'ours/captum':>11}")
    for method, passes, ours, to_floor, theirs in rows:
        cap = f"{theirs:15.4f} {ours / theirs:11.2f}" if theirs else f"{'-':>15} {'-':>11}"
        print(f"{method:20} {passes:6d} {ours:9.4f} {to_floor:7.2f} {cap}")
    one_pass_at_floor_batch(lambda xb, yb, m: bxg.attribute(model, xb, yb, method=m), floor_fn, best_b,
                            lambda b: (torch.randn((b,) + shape), torch.arange(b) % classes), only, repeat)
    return rows


ONE_PASS = ("SM", "IxG", "XG", "GradCAM", "FullGrad")


def one_pass_at_floor_batch(call, floor_fn, best_b, make_batch, only, repeat):
    """One-pass methods explaining as many inputs as the floor's best batch, against that batch.

    With N inputs a one-pass method runs one batch of N rows; at N = 16 on a small
    model that batch alone costs up to 1.3x a row of the best batch, whatever the method
    does. Here each method gets ``best_b`` inputs, so the floor's batch size is within its
    reach, and is timed interleaved with one plain pass of that batch.
    """
    xb, yb = make_batch(best_b)
    print(f"one-pass methods on N = {best_b} inputs (the floor's best batch), against one plain pass of it:")
    print(f"{'method':20} {'s/input':>9} {'/floor':>7} {'paired median':>14}")
    for method in ONE_PASS:
        if only and method not in only:
            continue
        # /floor: best time over best time; paired median: the median over rounds of each
        # round's ratio (the floor and the method alternate), which a shared machine moves less
        t_floor, t_ours = round_times(floor_fn, lambda: call(xb, yb, method), repeat=repeat)
        ours = min(t_ours)
        print(f"{method:20} {ours / best_b:9.5f} {ours / min(t_floor):7.2f} {paired_median(t_ours, t_floor):14.2f}")


def captum_time(model, x, y, case, ibs_choices):
    """Captum's best time over its ``internal_batch_size`` (or ``nt_samples_batch_size``)."""
    import captum.attr as ca

    kind, opts = case
    if kind in ("Saliency", "InputXGradient"):
        algo = getattr(ca, kind)(model)
        extra = {"abs": False} if kind == "Saliency" else {}
        return best_time(lambda: algo.attribute(x.clone(), target=y, **extra), 2)
    if kind == "LayerGradCam":
        from boundary_xg.backends import get_backend

        layer = get_backend("torch").default_layer(model, x[:1])
        algo = ca.LayerGradCam(model, layer)
        size = tuple(x.shape[2:])
        return best_time(lambda: ca.LayerAttribution.interpolate(
            algo.attribute(x, target=y, relu_attributions=True), size, "bilinear"), 3)
    if kind == "DeepLift":
        try:  # Captum fails on reused or in-place ReLUs (torchvision ResNets)
            algo = ca.DeepLift(model)
            return best_time(lambda: algo.attribute(x.clone(), target=y), 2)
        except Exception as err:  # noqa: BLE001 - report, do not stop the benchmark
            print(f"  (Captum DeepLift failed: {type(err).__name__}: {str(err).splitlines()[0][:80]})")
            return None
    best = float("inf")
    for ibs in ibs_choices:
        if kind == "IntegratedGradients":
            algo = ca.IntegratedGradients(model)
            fn = lambda: algo.attribute(x, target=y, internal_batch_size=ibs, **opts)  # noqa: E731
        else:
            algo = ca.NoiseTunnel(ca.Saliency(model))
            fn = lambda: algo.attribute(x, target=y, abs=False, nt_samples_batch_size=max(1, ibs // len(x)), **opts)  # noqa: E731
        best = min(best, best_time(fn, repeat=1))
    return best


def bench_tf_vs_torch(n, steps, only=None):
    import tensorflow as tf
    from boundary_xg.backends import get_backend

    w = tm.cnn_weights(seed=0, size=32, widths=(16, 32), hidden=64, classes=10)
    tmodel, kmodel = tm.torch_cnn(w), tm.keras_cnn(w)
    x = np.random.default_rng(0).standard_normal((n, 3, 32, 32)).astype(np.float32)
    xk = tm.nchw_to_nhwc(x)
    y = np.arange(n) % 10
    print(f"\n== TF backend vs torch backend, same small CNN (3x32x32, same weights), N={n}")
    tfb = get_backend("tensorflow")
    floor_t, _ = torch_floor(tmodel, (3, 32, 32), [16, 64, 256])
    floor_k, per_k = tf_floor(kmodel, (32, 32, 3), [16, 64, 256])
    step_k = tf_floor_step(kmodel)
    print(f"{'method':8} {'torch s/input':>14} {'tf.function':>12} {'tf eager':>10} {'tf.function/torch':>18} "
          f"{'/tf floor':>9}")
    cases = [("SM", {}, 1), ("IG", {"steps": steps}, steps), ("SG", {"num_samples": 50, "seed": 0}, 50),
             ("GradCAM", {}, 1), ("FullGrad", {}, 1)]
    for method, opts, passes in cases:
        if only and method not in only:
            continue
        def tf_call(compiled):
            tfb.use_tf_function = compiled
            try:
                bxg.attribute(kmodel, xk, y, method=method, **opts)
            finally:
                tfb.use_tf_function = True

        t_torch, t_fn, t_eager = (t / n for t in best_times(
            lambda: bxg.attribute(tmodel, x, y, method=method, **opts),
            lambda: tf_call(True), lambda: tf_call(False), repeat=5))
        print(f"{method:8} {t_torch:14.5f} {t_fn:12.5f} {t_eager:10.5f} {t_fn / t_torch:18.2f} "
              f"{t_fn / (passes * floor_k):9.2f}")
    print(f"plain-framework floor per example: torch {floor_t * 1e3:.3f} ms, tensorflow {floor_k * 1e3:.3f} ms "
          f"(ratio {floor_k / floor_t:.2f})")

    best_k = min(per_k, key=per_k.get)
    xbk = tf.random.normal((best_k, 32, 32, 3))
    print("TensorFlow backend, ", end="")
    one_pass_at_floor_batch(lambda xb, yb, m: bxg.attribute(kmodel, xb, yb, method=m),
                            lambda: step_k(xbk), best_k,
                            # TensorFlow tensors in, as the floor's input and the torch section's
                            lambda b: (tf.constant(np.random.default_rng(1).standard_normal((b, 32, 32, 3))
                                                   .astype(np.float32)), tf.constant(np.arange(b) % 10)),
                            only, 5)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="fewer inputs and steps (a smoke run)")
    ap.add_argument("--methods", help="comma-separated method rows to keep (default: all)")
    ap.add_argument("--models", default="small,resnet18,tf",
                    help="comma-separated sections to run: small, resnet18, tf (default: all three)")
    ap.add_argument("--resnet-n", type=int, default=None, help="resnet18 inputs (default 2, 1 with --quick)")
    ap.add_argument("--repeat", type=int, default=3, help="timed rounds per method (default 3)")
    ap.add_argument("--cpu-time", action="store_true",
                    help="one thread, process CPU time instead of wall time (for a loaded shared machine)")
    args = ap.parse_args()
    if args.cpu_time:
        import _timing

        torch.set_num_threads(1)
        _timing.use_cpu_time()
    only = None if not args.methods else {m.strip() for m in args.methods.split(",")}
    sections = set(args.models.split(","))
    torch.manual_seed(0)
    steps = 10 if args.quick else 50
    small = tm.torch_cnn(tm.cnn_weights(seed=0, size=32, widths=(16, 32), hidden=64, classes=10))
    if "small" in sections:
        bench_model("small CNN", small, (3, 32, 32), n=16, steps=steps, samples=steps,
                    batch_sizes=[16, 64, 256], captum_ibs=[64, 256, 800], only=only, repeat=args.repeat)
    if "resnet18" in sections:
        resnet = torchvision.models.resnet18(weights=None, num_classes=1000).eval()
        n_res = args.resnet_n or (1 if args.quick else 2)
        bench_model("resnet18", resnet, (3, 224, 224), n=n_res, steps=steps, samples=steps,
                    batch_sizes=[1, 8, 16, 32], captum_ibs=[8, 16, 32], only=only, repeat=args.repeat)
    if "tf" in sections and importlib.util.find_spec("tensorflow") is not None:
        bench_tf_vs_torch(n=16, steps=steps, only=only)


if __name__ == "__main__":
    main()
