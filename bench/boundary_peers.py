"""Our boundary search against the best public minimum-norm attacks (prints one table per case).

Needs the ``bench`` extra (``pip install -e .[bench]``: foolbox, eagerpy,
torchattacks, numba for Brendel-Bethge); never a runtime dependency.

Cases (PyTorch, CPU, one thread):

* ``digits-cnn``: the shipped digits CNN, the first 100 correctly classified test
  digits, bounds (0, 1);
* ``digits-mlp``: a ReLU MLP 64-128-128-10 trained here on scikit-learn's digits
  (a seeded 80/20 split), 100 correctly classified held-out digits, bounds (0, 1);
* ``linear``: a 3-class linear model on 20-d inputs (x ~ N(0, 0.3^2), W ~ N(0, 1),
  b ~ N(0, 0.1^2), 100 inputs) in the boxes (-0.5, 0.5) (inputs clipped into it),
  (-3, 3), (-10, 10) and none: ratios to the **exact** distance
  (:func:`boundary_xg.testing.oracles.linear_box_distance`);
* ``cifar-cnn``: a random-init CNN at 3x32x32 (16/32 channels), 32 U(0, 1)
  inputs, bounds (0, 1), labels its predictions;
* TensorFlow against torch: seconds per input of the default search on the same
  weights (digits CNN, the CIFAR-sized CNN).

Per method: success (the returned point is misclassified by the plain model and
inside the bounds), median/mean/max of distance / best-known over the examples
it succeeded on (best-known = the smallest distance any method found for that
example; exact where known), passes per input (forward+backward rows, counted by
a hook on the logits: ``bw / N``), forward-only rows per input, seconds per input.
foolbox's FMN-L2 is run as shipped (3.3.4 does not project onto the eps ball,
see /work/shared/boundary_search_anchors.md); torchattacks clamps to [0, 1], so on
the linear boxes it runs on the model rescaled to the unit box (distances mapped
back) and not without a box; foolbox CW and BB need finite bounds.

Run: PYTHONPATH=src .venv/bin/python bench/boundary_peers.py [case ...]   (all cases: ~15 min on 2 cores)
"""

from __future__ import annotations

import sys
import time
import warnings

import numpy as np
import torch  # torch before tensorflow in one process
from torch import nn

import boundary_xg as bxg
from boundary_xg.demo_models import digit_weights, load_digit_model, load_digit_test_set
from boundary_xg.testing import models as tm
from boundary_xg.testing.oracles import linear_box_distance


class Counted(nn.Module):
    """``model`` with row counters: recorded forwards, plain forwards, backward passes reaching the logits."""

    def __init__(self, model):
        super().__init__()
        self.model = model
        self.reset()

    def reset(self):
        self.fg = self.fn = self.bw = self.fg_used = 0

    def forward(self, x):
        out = self.model(x)
        rows = int(x.shape[0])
        if out.requires_grad:
            self.fg += rows
            seen = []
            out.register_hook(lambda g: self._back(rows, seen))
        else:
            self.fn += rows
        return out

    def _back(self, rows, seen):
        self.bw += rows
        if not seen:  # the first backward through this forward: it was not a forward-only pass
            seen.append(1)
            self.fg_used += rows


def _predict(model, x):
    with torch.no_grad():
        return model(x).argmax(1)


# --- the methods: each returns points (N, ...) as a torch tensor ------------------------------------

def ours(preset):
    def run(model, x, y, bounds):
        return bxg.find_boundary(model, x, y, attacks=preset, bounds=bounds, seed=0).points
    return run


def fb_attack(make, needs_bounds=False):
    def run(model, x, y, bounds):
        import foolbox as fb
        if bounds is None and needs_bounds:
            return None
        fmodel = fb.PyTorchModel(model, bounds=bounds if bounds is not None else (-1e6, 1e6))
        raw, _, _ = make(fb)(fmodel, x, y, epsilons=None)
        return raw
    return run


def fb_bb(model, x, y, bounds):
    import foolbox as fb
    if bounds is None:
        return None
    fmodel = fb.PyTorchModel(model, bounds=bounds)
    init = fb.attacks.DDNAttack(steps=100)
    att = fb.attacks.L2BrendelBethgeAttack(init_attack=init, steps=1000)
    raw, _, _ = att(fmodel, x, y, epsilons=None)
    return raw


class _Unit(nn.Module):
    """``model(lo + (hi - lo) z)``: torchattacks' [0, 1] box mapped onto ``(lo, hi)``."""

    def __init__(self, model, lo, hi):
        super().__init__()
        self.model, self.lo, self.hi = model, lo, hi

    def forward(self, z):
        return self.model(self.lo + (self.hi - self.lo) * z)


def ta_attack(make):
    def run(model, x, y, bounds):
        import torchattacks
        if bounds is None:
            return None
        lo, hi = float(bounds[0]), float(bounds[1])
        unit = _Unit(model, lo, hi) if (lo, hi) != (0.0, 1.0) else model
        z = (x - lo) / (hi - lo)
        adv = make(torchattacks, unit)(z, y)
        return lo + (hi - lo) * adv
    return run


METHODS = [
    ("ours (default)", ours("default")),
    ("ours (reference preset)", ours("reference")),
    ("fb DDN (100)", fb_attack(lambda fb: fb.attacks.DDNAttack(steps=100))),
    ("fb DDN (1000)", fb_attack(lambda fb: fb.attacks.DDNAttack(steps=1000))),
    ("fb FMN-L2 (100, as shipped)", fb_attack(lambda fb: fb.attacks.L2FMNAttack(steps=100))),
    ("fb DeepFool-L2 (50, os 0.02)", fb_attack(lambda fb: fb.attacks.L2DeepFoolAttack(steps=50, candidates=10))),
    ("fb CW-L2 (100x9)", fb_attack(lambda fb: fb.attacks.L2CarliniWagnerAttack(steps=100, binary_search_steps=9),
                                   needs_bounds=True)),
    ("fb BB-L2 (1000, init DDN-100)", fb_bb),
    ("ta FAB-L2 (10 steps)", ta_attack(lambda ta, m: ta.FAB(m, norm="L2", steps=10, n_restarts=1, eps=1e9,
                                                            n_classes=NUM_CLASSES[0]))),
    ("ta DeepFool (50, os 0.02)", ta_attack(lambda ta, m: ta.DeepFool(m, steps=50, overshoot=0.02))),
]
NUM_CLASSES = [10]


def evaluate(label, model, x, y, bounds, exact=None, methods=None, skip=()):
    """Run every method on ``(x, y)``; print the table."""
    cm = Counted(model).eval()
    n = x.shape[0]
    rows, dists = [], {}
    for name, run in (methods or METHODS):
        if any(s in name for s in skip):
            continue
        cm.reset()
        t = time.perf_counter()
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            pts = run(cm, x.clone(), y.clone(), bounds)
        sec = (time.perf_counter() - t) / n
        if pts is None:
            rows.append((name, None))
            continue
        pts = pts.detach().float()
        passes, fwd = cm.bw / n, (cm.fn + cm.fg - cm.fg_used) / n
        ok = (_predict(model, pts) != y).numpy()
        if bounds is not None:
            inside = (pts >= bounds[0] - 1e-6) & (pts <= bounds[1] + 1e-6)
            ok &= inside.flatten(1).all(1).numpy()
        d = (pts.double() - x.double()).flatten(1).norm(dim=1).numpy()
        d[~ok] = np.inf
        dists[name] = d
        rows.append((name, (ok.mean(), passes, fwd, sec)))
    ref = exact if exact is not None else np.min(np.stack(list(dists.values())), axis=0)
    kind = "exact" if exact is not None else "best"
    print(f"\n#### {label} (N={n}; {kind} distance median {np.median(ref):.4f})\n")
    print(f"| method | success | median d/{kind} | mean | max | passes/input | fwd-only/input | s/input |")
    print("|---|---|---|---|---|---|---|---|")
    for name, r in rows:
        if r is None:
            print(f"| {name} | n/a | | | | | | |")
            continue
        succ, passes, fwd, sec = r
        q = dists[name] / ref
        q = q[np.isfinite(q)]
        med, mean, mx = (np.median(q), q.mean(), q.max()) if q.size else (np.nan,) * 3
        print(f"| {name} | {succ:.3f} | {med:.4f} | {mean:.4f} | {mx:.4f} | {passes:.1f} | {fwd:.1f} | {sec:.4f} |",
              flush=True)
    return dists


def _correct(model, x, y, k):
    idx = np.nonzero((_predict(model, x) == y).numpy())[0][:k]
    return x[idx], y[idx]


def case_digits_cnn(skip=()):
    x, y = load_digit_test_set()
    model = load_digit_model("torch", "regular")
    xs, ys = _correct(model, torch.tensor(x), torch.tensor(y), 100)
    evaluate("digits CNN (shipped), bounds (0, 1)", model, xs, ys, (0.0, 1.0), skip=skip)


def train_digits_mlp(seed=0):
    """A ReLU MLP 64-128-128-10 on scikit-learn's digits (80 % of a seeded split), and the held-out 20 %."""
    from sklearn.datasets import load_digits
    d = load_digits()
    x = (d.data / 16.0).astype(np.float32).reshape(-1, 1, 8, 8)
    y = d.target.astype(np.int64)
    perm = np.random.default_rng(seed).permutation(len(x))
    cut = int(0.8 * len(x))
    tr, te = perm[:cut], perm[cut:]
    torch.manual_seed(seed)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 128), nn.ReLU(), nn.Linear(128, 128), nn.ReLU(),
                          nn.Linear(128, 10))
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)
    xt, yt = torch.tensor(x[tr]), torch.tensor(y[tr])
    for _ in range(300):
        perm_b = torch.randperm(len(xt))
        for i in range(0, len(xt), 128):
            b = perm_b[i:i + 128]
            opt.zero_grad()
            nn.functional.cross_entropy(model(xt[b]), yt[b]).backward()
            opt.step()
    return model.eval(), torch.tensor(x[te]), torch.tensor(y[te])


def case_digits_mlp(skip=()):
    model, x, y = train_digits_mlp()
    acc = float((_predict(model, x) == y).float().mean())
    xs, ys = _correct(model, x, y, 100)
    evaluate(f"digits MLP 64-128-128-10 (held-out accuracy {acc:.3f}), bounds (0, 1)", model, xs, ys, (0.0, 1.0),
             skip=skip)


def case_linear(skip=()):
    NUM_CLASSES[0] = 3
    rng = np.random.default_rng(0)
    D, K, N = 20, 3, 100
    W = rng.standard_normal((K, D)).astype(np.float32)
    b = (rng.standard_normal(K) * 0.1).astype(np.float32)
    x = rng.standard_normal((N, D)) * 0.3
    model = tm.torch_linear({"weight": W, "bias": b})
    for box in [(-0.5, 0.5), (-3.0, 3.0), (-10.0, 10.0), None]:
        xx = (np.clip(x, *box) if box else x).astype(np.float32)
        y = (xx.astype(np.float64) @ W.T.astype(np.float64) + b).argmax(1)
        exact = linear_box_distance(W, b, xx, y, *(box or (-np.inf, np.inf)))
        label = f"linear 3-class 20-d, bounds {box}" + (" (inputs clipped)" if box == (-0.5, 0.5) else "")
        evaluate(label, model, torch.tensor(xx), torch.tensor(y), box, exact=exact, skip=skip)
    NUM_CLASSES[0] = 10


def cifar_cnn():
    w = tm.cnn_weights(0, size=32, widths=(16, 32), hidden=64, classes=10)
    x = np.random.default_rng(0).uniform(0, 1, (32, 3, 32, 32)).astype(np.float32)
    return w, x


def case_cifar(skip=()):
    w, x = cifar_cnn()
    model = tm.torch_cnn(w)
    xt = torch.tensor(x)
    evaluate("CIFAR-sized CNN 3x32x32 (random init), bounds (0, 1)", model, xt, _predict(model, xt), (0.0, 1.0),
             skip=skip + ("BB",))


def case_tf_vs_torch(skip=()):
    import tensorflow as tf  # after torch
    tf.config.threading.set_intra_op_parallelism_threads(1)
    x, y = load_digit_test_set()
    w = digit_weights("regular")
    cw, cx = cifar_cnn()
    print("\n#### TensorFlow / torch, default search, same weights (best of 2 runs after a warm-up)\n")
    print("| model | torch s/input | tensorflow s/input | ratio |")
    print("|---|---|---|---|")
    for label, wts, xn in (("digits CNN (100 digits)", w, x[:100]), ("CIFAR-sized CNN (32 inputs)", cw, cx)):
        times = {}
        for fw in ("torch", "tensorflow"):
            model = tm.torch_cnn(wts) if fw == "torch" else tm.keras_cnn(wts)
            xi = xn if fw == "torch" else tm.nchw_to_nhwc(xn)
            best = np.inf
            for r in range(3):
                t = time.perf_counter()
                with warnings.catch_warnings():
                    warnings.simplefilter("ignore")
                    bxg.find_boundary(model, xi, None, bounds=(0.0, 1.0))
                if r:
                    best = min(best, time.perf_counter() - t)
            times[fw] = best / len(xn)
        print(f"| {label} | {times['torch']:.4f} | {times['tensorflow']:.4f} | "
              f"{times['tensorflow'] / times['torch']:.2f} |", flush=True)


CASES = {"digits-cnn": case_digits_cnn, "digits-mlp": case_digits_mlp, "linear": case_linear,
         "cifar-cnn": case_cifar, "tf": case_tf_vs_torch}


def main(argv):
    torch.set_num_threads(1)
    names = argv or list(CASES)
    skip = ()
    if "--fast" in names:  # without the slow anchors (BB, DDN-1000)
        names = [n for n in names if n != "--fast"] or list(CASES)
        skip = ("BB", "DDN (1000)")
    for name in names:
        CASES[name](skip=skip)


if __name__ == "__main__":
    main(sys.argv[1:])
