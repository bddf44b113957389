"""Benchmark of the boundary search on CPU (prints a table; not a test).

The distances against foolbox and torchattacks are in ``bench/boundary_peers.py``.
Here: for a small CNN at 3x32x32 (PyTorch and Keras, same weights, 512 inputs), a
wider one (64/128 channels, 256 inputs) and
torchvision's resnet18 at 3x64x64 (96 inputs), with the default pipeline
(box-aware DeepFool then FMN, refined) and the reference preset (L2 PGD over the
reference's 7 radii x 40 steps, then CW 9 x 100) and bounds (-2.118, 2.64), per
input: forward+backward and forward-only passes actually run (counted by the
search), seconds (wall, or CPU with ``--cpu-time``; best of two runs for the
small CNN, one for resnet18), the floor and the ratio to it, success rate, mean
distance of the found points and the passes as a fraction of the reference's
7 x 40 + 9 x 100 = 1180. The search runs at the
batch size where plain passes of that model run fastest (measured first and
printed with the default chunk size of ``boundary_xg.ops.default_batch_size``,
which is chosen from the input size alone and can be far from a given model's
best: 170 rows of 3x32x32 suit the 16/32-channel CNN, 64 the 64/128-channel
one), and with enough inputs that its row pool stays full but for the last
jobs, as when a data set is explained; with only as many inputs as rows, the
pool empties as examples finish and the ratio to the floor grows (about 1.5x on
the small CNN at 128 inputs in torch, more in TensorFlow, whose per-call cost
is larger).

* floor = forward+backward rows x the per-row time of plain framework code
  (the gradient of the label's logit, the same primitive the search uses) +
  forward-only rows x the per-row time of plain forward passes (the
  refinement, the final checks), each at the fastest of several batch sizes
  (1 s of passes each) and then timed there over as many rows as the search ran
  (at least 2 s), right after each search run, so that both see the same load
  of a shared machine over as long; best of the runs; + backward-only rows
  (PyTorch: DeepFool's further classes, backwards through a forward shared with
  the row's first class) x the smaller of the marginal cost of a cotangent in
  the framework's batched backward (at DeepFool's shape, timed interleaved with
  plain passes of the same rows) and the backward half of a plain pass
  (forward+backward minus forward per row). The row counts are the search's
  own (counted from shapes); in PyTorch a forward hook on the model checks the
  forward+backward (forwards with a graph) and forward-only rows on the warm-up
  run; the columns: passes (forward+backward rows), fwd (forward-only rows),
  bwd (backward-only rows), per input.
* "reference emulation" rows run our attacks configured like the reference
  (spec 2.3): PGD with the absolute step 2*eps^2/steps, random start, last
  iterate, no early exit, every radius for every example, the first successful
  radius kept and the eps1 point where none succeeded; CW with c0 = 1e-3, all 9
  binary-search steps, no warm start; the reference's merge (the closer CW point
  wins without a label check, CW clipped to L2 <= 1, the zero image where CW
  failed). Its success column counts the final points that are actually
  misclassified: the rate ours must match or beat. Its distance column is over
  those points. On resnet18 it runs on the first 8 inputs only (it costs
  about 8 s per input). (The emulation reproduces defects on purpose; it lives here
  only. Its CW aborts early per example, foolbox's on the batch-summed loss.)

* for the small CNN in each framework, one CW and one PGD iteration at full
  batch as multiples of a plain pass, and the same on a linear model of the
  same input: the attack's own arithmetic, whatever the model (``step_costs``).

Run: .venv/bin/python bench/boundary.py [part ...] [--inputs N] [--threads T] [--cpu-time] [--default-only] [--runs R]
(all parts: about 8 minutes on 2 CPU cores; parts: cnn32-torch cnn32-tf steps wide resnet; --help)
"""

from __future__ import annotations

import time
from contextlib import contextmanager
from dataclasses import dataclass

import numpy as np
import torch  # torch before tensorflow in one process
import torchvision

import boundary_xg as bxg
from boundary_xg.backends import get_backend
from boundary_xg.ops import default_batch_size, label_grad
from boundary_xg.search._ops import Cost, put_rows
from boundary_xg.search.base import FAR, SearchContext, run_attack
from boundary_xg.search.presets import default_attacks
from boundary_xg.search.cw import _cw_step, _tanh_space
from boundary_xg.search.pgd import _pgd_step
from boundary_xg.search.pipeline import boundary_search, check_attacks, prepare_bounds
from boundary_xg.testing import models as tm

REFERENCE_PASSES = 7 * 40 + 9 * 100
#: the clock of every timing: wall time, or this process's CPU time with ``--cpu-time`` (on a
#: machine shared with other work, where the wall time of a run depends on the others' load)
CLOCK = time.perf_counter
BOUNDS = (-2.117904, 2.64)
EPS = (36 / 255, 64 / 255, 0.3, 0.5, 0.7, 0.9, 1.1)
HEADER = (f"{'case':<46} {'passes':>7} {'fwd':>5} {'bwd':>5} {'s/input':>8} {'floor':>7} {'/floor':>6} "
          f"{'succ':>6} {'dist':>7} {'/1180':>7}")


def _plain_forward(B, f, z):
    return B.forward(f, z)


def floor_per_row(B, f, x, y, batch_sizes, seconds=2.0, forward=False, rows=0):
    """Best per-row time of plain forward+backward passes (``forward``: forward-only passes) over ``batch_sizes``.

    Each batch size runs back-to-back passes for at least ``seconds`` and at least
    ``rows`` rows (not a best of a few short timings, which catch the quiet moments
    of a shared machine that a search of several seconds does not get).
    """
    if forward:
        fwd = B.jit(_plain_forward, f, B, f)
        step = lambda xb, yb: (None, fwd(xb))  # noqa: E731
    else:
        step = B.jit(label_grad, f, B, f, False)
    best = float("inf")
    for bs in batch_sizes:
        reps = -(-bs // B.shape(x)[0])
        xb = B.concat([x] * reps)[:bs] if reps > 1 else x[:bs]
        yb = B.concat([y] * reps)[:bs] if reps > 1 else y[:bs]
        B.to_numpy(step(xb, yb)[1][:1])  # warm-up (and tf.function trace)
        done, t0 = 0, CLOCK()
        while True:
            _, g = step(xb, yb)
            B.to_numpy(g[:1])
            done += bs
            el = CLOCK() - t0
            if el >= seconds and done >= rows:
                break
        best = min(best, el / done)
    return best


def _plain_vjps(B, f, z, cot):
    return B.value_and_vjps(f, z, cot)


def backward_per_row(B, f, x, y, rows, k, total, seconds=2.0):
    """Per-row time of a backward-only row in plain framework code: ``(T_vjps - T_pass) / ((k - 1) rows)``.

    ``T_vjps``: :meth:`value_and_vjps` of the bare logits on ``rows`` rows with ``k``
    cotangents ``e_c - e_y`` (the shape of DeepFool's step: one forward, ``k``
    backwards); ``T_pass``: a plain forward+backward pass of the same ``rows`` rows.
    Timed interleaved (so both see the same load) for at least ``seconds`` and
    ``total`` backward-only rows. The marginal cost at the pool's small row count,
    where a plain pass costs more per row than at the best batch size, so this
    floor is the lower (stricter) one.
    """
    xb, yb = x[:rows], y[:rows]
    classes = B.shape(B.forward(f, xb))[1]
    oh = B.one_hot(yb, classes, like=xb)
    cot = B.concat([B.reshape(B.one_hot((yb + (1 + j)) % classes, classes, like=xb) - oh, (1, -1, classes))
                    for j in range(k)])
    vj = B.jit(_plain_vjps, f, B, f)
    fb = B.jit(label_grad, f, B, f, False)
    B.to_numpy(vj(xb, cot)[1][:1, :1])
    B.to_numpy(fb(xb, yb)[1][:1])
    t_v = t_p = 0.0
    done = 0
    while True:
        t = CLOCK()
        B.to_numpy(vj(xb, cot)[1][:1, :1])
        t_v += CLOCK() - t
        t = CLOCK()
        B.to_numpy(fb(xb, yb)[1][:1])
        t_p += CLOCK() - t
        done += (k - 1) * rows
        if t_v + t_p >= seconds and done >= total:
            break
    return max(0.0, t_v - t_p) / done


def floors(B, f, x, y, batch_sizes, fb_rows, f_rows):
    """``(forward+backward, forward-only)`` per-row times of the floor, measured right after a search.

    Each: the fastest of ``batch_sizes`` (1 s of passes each), then that batch size
    timed over as many rows as the search ran (``fb_rows``, ``f_rows``; at least 2 s),
    so that the floor sees the load of a shared machine over as long as the search
    did. (Timed over 2 s windows instead, the floor of the small CNN in PyTorch
    ranged over 0.51-0.60 ms per row within a minute on the shared 2-core machine,
    and its best caught the quiet moments that a search of 35 s does not get.)
    """
    out = []
    for fwd, rows in ((False, fb_rows), (True, f_rows)):
        probe = {bs: floor_per_row(B, f, x, y, (bs,), 1.0, fwd) for bs in batch_sizes}
        out.append(floor_per_row(B, f, x, y, (min(probe, key=probe.get),), 2.0, fwd, rows))
    return tuple(out)


def floor_seconds(passes, forwards, backwards, per_row):
    """The floor per input of a search that ran these rows per input, at the per-row prices ``per_row``
    (see :func:`line`)."""
    per_b = min(per_row[2], max(0.0, per_row[0] - per_row[1])) if len(per_row) > 2 else 0.0
    return passes * per_row[0] + forwards * per_row[1] + backwards * per_b


def line(name, passes, forwards, sec, per_row, found, dist, backwards=0.0):
    """One row; ``sec`` is seconds per input, ``per_row`` the floor's ``(forward+backward, forward,
    backward-only)`` seconds per row: the floor per input is ``passes x per_row[0] + forwards x
    per_row[1] + backwards x b``, ``b`` the smaller of two prices of a backward-only row: the
    marginal cost of one more cotangent in the framework's batched backward (``per_row[2]``,
    :func:`backward_per_row`) and the backward half of a plain pass (``per_row[0] -
    per_row[1]``), whichever asks more of the search. "/1180" counts model gradient rows
    (passes + backwards)."""
    floor_sec = floor_seconds(passes, forwards, backwards, per_row)
    mean_d = float(dist[found].mean()) if found.any() else float("nan")
    print(f"{name:<46} {passes:7.1f} {forwards:5.1f} {backwards:5.1f} {sec:8.3f} {floor_sec:7.4f} "
          f"{sec / floor_sec:6.2f} {found.mean():6.2f} {mean_d:7.3f} "
          f"{(passes + backwards) / REFERENCE_PASSES:7.2f}   (floor ms/row: fwd+bwd {1e3 * per_row[0]:.3f}, "
          f"fwd {1e3 * per_row[1]:.3f}, bwd-only {1e3 * (per_row[2] if len(per_row) > 2 else 0.0):.3f})",
          flush=True)


@contextmanager
def row_hook(model):
    """``{"fb": rows, "f": rows}`` run through a torch ``model`` inside the block (forward+backward:
    gradients recorded; forward: not), counted by a forward hook; None for other models."""
    if not isinstance(model, torch.nn.Module):
        yield None
        return
    rows = {"fb": 0, "f": 0}

    def hook(mod, inp, out):
        rows["fb" if torch.is_grad_enabled() else "f"] += int(inp[0].shape[0])

    handle = model.register_forward_hook(hook)
    try:
        yield rows
    finally:
        handle.remove()


def run(name, B, f, x, y, lo, hi, classes, floor_bs, attacks, batch_size, runs=2, model=None):
    """Time the search and its floor, alternately (best of ``runs`` each), and print a row.

    ``attacks`` is a preset name or a list (see ``find_boundary``). ``model``: the torch
    module behind ``f``, whose forward hook checks the search's row counts on the warm-up run.
    """
    attacks, refine = check_attacks(attacks)
    k = min(16, B.shape(x)[0])
    with row_hook(model) as rows:
        res = boundary_search(B, f, x[:k], y[:k], attacks=attacks, lo=lo, hi=hi, num_classes=classes,
                              progress=False, warn=False, refine=refine)
    # (the hook sees forwards: a forward+backward row is a forward with gradients recorded, and
    # backward-only rows, through a forward already counted there, are not seen)
    if rows is not None and (rows["fb"] != round(res.passes * k) or rows["f"] != round(res.forwards * k)):
        raise SystemExit(f"{name}: the search counted {res.passes * k:.0f} forward+backward and "
                         f"{res.forwards * k:.0f} forward rows, the model's hook {rows['fb']} and {rows['f']}")
    n = B.shape(x)[0]
    sec, per_fb, per_f, per_b = float("inf"), float("inf"), float("inf"), float("inf")
    vjp_shape = None
    if res.backwards:
        # the shape of the step that runs backward-only rows: DeepFool's (its pool's rows, its classes)
        df = next(a for a in attacks if hasattr(a, "row_backwards"))
        kc = df.classes(classes)
        vjp_shape = (max(1, batch_size // kc), kc)
    paired = []  # each run's seconds over the floor timed right after it
    for _ in range(runs):
        t = CLOCK()
        res = boundary_search(B, f, x, y, attacks=attacks, lo=lo, hi=hi, num_classes=classes,
                              seed=0, batch_size=batch_size, progress=False, warn=False, refine=refine)
        B.to_numpy(res.distances)
        sec_i = (CLOCK() - t) / n
        sec = min(sec, sec_i)
        fb, fo = floors(B, f, x, y, floor_bs, round(res.passes * n), round(res.forwards * n))
        per_fb, per_f = min(per_fb, fb), min(per_f, fo)
        pb = backward_per_row(B, f, x, y, *vjp_shape, round(res.backwards * n)) if vjp_shape else 0.0
        per_b = min(per_b, pb)
        paired.append(sec_i / floor_seconds(res.passes, res.forwards, res.backwards, (fb, fo, pb)))
    line(name, res.passes, res.forwards, sec, (per_fb, per_f, per_b if vjp_shape else 0.0),
         B.to_numpy(res.found).astype(bool), B.to_numpy(res.distances), res.backwards)
    if runs > 1:
        # the best times above may come from different runs; each run against its own floor
        # moves less with the load of a shared machine
        print(f"{'':<46} /floor per run: {', '.join(f'{r:.2f}' for r in paired)} "
              f"(median {float(np.median(paired)):.2f})", flush=True)
    return sec


@dataclass(frozen=True)
class LastIteratePGD(bxg.PGD):
    """PGD returning every example's last iterate at its radius, misclassified or not (the reference's
    output; its distance is ``FAR`` where the iterate is not misclassified)."""

    def begin(self, ctx, x, labels, prior, prior_d):
        return dict(super().begin(ctx, x, labels, prior, prior_d), last=x)

    def end_job(self, ctx, carry, ex, it, state, stopped):
        carry["last"] = put_rows(ctx.B, carry["last"], it, state["xs"])
        return super().end_job(ctx, carry, ex, it, state, stopped)

    def result(self, ctx, carry):
        _, d = super().result(ctx, carry)
        return carry["last"], d


def reference_emulation(name, B, f, x, y, lo, hi, classes, floor_bs):
    """The reference's pipeline and merge (spec 2.3.2-2.3.4) with our attacks; prints a row."""
    n = B.shape(x)[0]
    cost, rng = Cost(), B.rng(0, like=x)
    ctx = SearchContext(B, f, lo, hi, x[:1], classes, rng, cost, n)
    far = B.zeros_like(B.sum(x, axis=tuple(range(1, len(B.shape(x)))))) + FAR
    t = CLOCK()
    pts, found = None, np.zeros(n, dtype=bool)
    for k, eps in enumerate(EPS):
        atk = LastIteratePGD(eps=[eps], steps=40, step_size=2 * eps ** 2 / 40, early_exit=False,
                             radius_search="increasing")
        adv, d = run_attack(ctx, atk, x, y, x, far)
        adv, ok = B.to_numpy(adv), B.to_numpy(d) < FAR
        if k == 0:
            pts = adv.copy()  # the eps1 point stays where no radius succeeds
        new = ok & ~found
        pts[new] = adv[new]
        found |= ok
    cw = bxg.CW(steps=100, binary_search_steps=9, step_size=0.01, initial_const=1e-3,
                const_rtol=0, dist_rtol=0)
    cand, d_cw = run_attack(ctx, cw, x, y, x, far)
    xn, cand, ok_cw = B.to_numpy(x), B.to_numpy(cand), B.to_numpy(d_cw) < FAR
    cand = np.where(ok_cw.reshape((-1,) + (1,) * (xn.ndim - 1)), cand, 0.0)  # foolbox: zeros on failure
    delta = (cand - xn).reshape(n, -1)
    norm = np.linalg.norm(delta, axis=1)
    cand = xn + (delta * np.minimum(1.0, 1.0 / np.maximum(norm, 1e-12))[:, None]).reshape(xn.shape)
    d_pgd = np.linalg.norm((pts - xn).reshape(n, -1), axis=1)
    d_cw = np.linalg.norm((cand - xn).reshape(n, -1), axis=1)
    take = d_cw < d_pgd  # no label check (spec 2.3.4)
    final = np.where(take.reshape((-1,) + (1,) * (xn.ndim - 1)), cand, pts).astype(xn.dtype)
    dist = np.where(take, d_cw, d_pgd)
    pred = B.to_numpy(B.argmax(B.forward(f, B.asarray(final, like=x)), axis=1))
    sec = (CLOCK() - t) / n
    cost.forwards += n  # the check of the final points
    line(name, cost.passes / n, cost.forwards / n, sec, floors(B, f, x, y, floor_bs, cost.passes, cost.forwards),
         pred != B.to_numpy(y), dist)


def step_costs(label, backend, model, cheap, x_np, rows, reps=8, calls=8):
    """Print one iteration of each attack (DeepFool, FMN, CW, PGD) per model row as multiples of a plain pass.

    The three are timed interleaved (``reps`` rounds of ``calls`` calls each; the
    median of the per-round ratios), so they see the same load. The "arithmetic
    alone" column runs the same iterations on ``cheap``, a linear model on the
    same input (its pass costs little): what the attack adds to every pass,
    whatever the model.
    """
    B = get_backend(backend)
    x = B.asarray(x_np[:rows], dtype="float32")
    out = {}
    for name, m in (("model", model), ("cheap", cheap)):
        with B.session(m) as f:
            y = B.argmax(B.forward(f, x), axis=1)
            lo, hi = prepare_bounds(B, BOUNDS, x)
            a, b = (hi + lo) / 2.0, (hi - lo) / 2.0
            ones = B.zeros_like(B.sum(x, axis=tuple(range(1, len(B.shape(x)))))) + 1.0
            zeros = lambda: B.zeros_like(x)  # noqa: E731
            onehot = B.one_hot(y, B.shape(B.forward(f, x))[1], like=x)
            no = B.not_equal(B.zeros_like(y), B.zeros_like(y))
            cw_args = (x, a, b, x[:1], y, onehot, ones * 0.1, B.constant([0.0], like=x), B.constant([0.01], like=x),
                       ones, ones, _tanh_space(B, True, x, a, b), zeros(), zeros(), x, ones * 1e30, no, -ones)
            pgd_args = (x, x, y, ones * 0.3, ones * 0.3 * 2.5 / 40, lo, hi, no, x[:1])
            # the default's attacks through their protocol: DeepFool runs one model row per
            # competing class, so rows // classes pool rows make about `rows` model rows
            df, fmn = default_attacks()
            classes = B.shape(onehot)[1]
            ctx = SearchContext(B, f, lo, hi, x[:1], classes, B.rng(0, like=x), Cost(), rows)
            far = ones * FAR
            r_df = max(1, rows // df.classes(classes))
            s_df = df.start(ctx, x[:r_df], y[:r_df], x[:r_df], far[:r_df])
            s_fmn = fmn.start(ctx, x, y, x, far)
            fns = {"plain": (B.jit(label_grad, f, B, f, False), (x, y), rows),
                   "cw": (B.jit(_cw_step, f, B, f, True), cw_args, rows),
                   "pgd": (B.jit(_pgd_step, f, B, f, "l2", True), pgd_args, rows),
                   "deepfool": (B.jit(type(df).step, f, df, B, f), (s_df, lo, hi, x[:1]),
                                r_df * df.classes(classes)),
                   "fmn": (B.jit(type(fmn).step, f, fmn, B, f), (s_fmn, lo, hi, x[:1]), rows)}

            def sync(res):
                B.to_numpy((res["z"] if isinstance(res, dict) else res[1])[:1])

            times = {k: [] for k in fns}
            for _k, (fn, args, _) in fns.items():
                sync(fn(*args))  # warm-up (and trace)
            for _ in range(reps):
                for k, (fn, args, n_rows) in fns.items():
                    t = CLOCK()
                    for _ in range(calls):
                        res = fn(*args)
                    sync(res)
                    times[k].append((CLOCK() - t) / calls / n_rows * rows)  # per `rows` model rows
            out[name] = {k: np.array(v) for k, v in times.items()}
    mp = out["model"]["plain"]
    print(f"-- {label}, one iteration at {rows} model rows, as multiples of a plain pass "
          f"({1e3 * np.median(mp):.1f} ms): "
          + "; ".join(f"{k.upper()} {np.median(out['model'][k] / mp):.2f}x "
                      f"(arithmetic alone {np.median(out['cheap'][k] - out['cheap']['plain']) / np.median(mp):.2f})"
                      for k in ("deepfool", "fmn", "cw", "pgd")), flush=True)


#: ``--runs N``: timed runs of each search (and of its floor after it) of the small CNNs (default 2)
RUNS = 2
#: ``--default-only``: time the default pipeline alone (no reference preset, PGD-only or emulation rows)
DEFAULT_ONLY = False


def case(label, backend, model, x_np, batch_sizes, batch_size, emulate=0, runs=None):
    runs = RUNS if runs is None else runs
    B = get_backend(backend)
    x = B.asarray(x_np, dtype="float32")
    with B.session(model) as f:
        logits = B.forward(f, x)
        y = B.argmax(logits, axis=1)
        classes = B.shape(logits)[1]
        lo, hi = prepare_bounds(B, BOUNDS, x)
        floor_bs = batch_sizes
        default = default_batch_size(B, x)
        if batch_size is None:
            # the search at the batch size where plain passes run fastest: the ratio
            # then measures the search, not the choice of a chunk size for this model
            per = {bs: floor_per_row(B, f, x, y, (bs,), seconds=1.0) for bs in batch_sizes + (default,)}
            batch_size = min(per, key=per.get)
            print(f"-- {label}: ms per row of plain passes by batch size: "
                  + ", ".join(f"{bs}: {1e3 * t:.3f}" for bs, t in sorted(per.items()))
                  + f"; the search runs at {batch_size} rows (default here: {default})")
        sec = run(f"{label}, default (DeepFool+FMN)", B, f, x, y, lo, hi, classes, floor_bs, "default",
                  batch_size, runs, model=model)
        if DEFAULT_ONLY:
            return sec
        run(f"{label}, reference preset (PGD+CW)", B, f, x, y, lo, hi, classes, floor_bs, "reference",
            batch_size, runs, model=model)
        if emulate:
            run(f"{label}, PGD only", B, f, x, y, lo, hi, classes, floor_bs, [bxg.PGD()], batch_size, runs=1,
                model=model)
            reference_emulation(f"{label}, reference emulation ({emulate} inputs)", B, f, x[:emulate],
                                y[:emulate], lo, hi, classes, floor_bs)
    return sec


PARTS = ("cnn32-torch", "cnn32-tf", "steps", "wide", "resnet")


def main(argv):
    """``python bench/boundary.py [part ...] [--inputs N] [--threads T] [--cpu-time] [--default-only]
    [--runs R]``: the parts in :data:`PARTS` (default all); ``--inputs N`` runs the small CNN on N inputs instead of 512
    (shorter; the pool then empties sooner, which raises the ratio to the floor a little);
    ``--threads T`` (default 2); ``--cpu-time`` times with this process's CPU time instead of the
    wall clock (with one thread: what a search costs whatever else the machine runs); ``--default-only``
    times the default pipeline alone (shorter); ``--runs R`` times each search of the small CNNs R times (default
    2), each followed by its floor, and prints each run's ratio to its own floor and their median."""
    global CLOCK, DEFAULT_ONLY, RUNS
    if "--help" in argv or "-h" in argv:
        print(main.__doc__)
        return
    parts = [a for a in argv if not a.startswith("--") and not a.isdigit()] or list(PARTS)
    unknown = sorted(set(parts) - set(PARTS))
    if unknown:
        raise SystemExit(f"unknown parts {unknown}; expected some of {PARTS}")
    n32 = int(argv[argv.index("--inputs") + 1]) if "--inputs" in argv else 512
    threads = int(argv[argv.index("--threads") + 1]) if "--threads" in argv else 2
    if "--cpu-time" in argv:
        CLOCK = time.process_time
    DEFAULT_ONLY = "--default-only" in argv
    if "--runs" in argv:
        RUNS = int(argv[argv.index("--runs") + 1])
    print(f"-- {threads} thread(s), {'CPU' if CLOCK is time.process_time else 'wall'} time")
    torch.manual_seed(0)
    torch.set_num_threads(threads)
    rng = np.random.default_rng(0)
    # enough inputs that the search's row pool (default batch_size: 170 rows at
    # 3x32x32, 42 at 3x64x64 on a CPU) stays full but for the last jobs
    x32 = rng.uniform(-2.0, 2.2, (512, 3, 32, 32)).astype(np.float32)
    x64 = rng.uniform(-2.0, 2.2, (96, 3, 64, 64)).astype(np.float32)  # (drawn after x32, as before)
    w = tm.cnn_weights(0, size=32, widths=(16, 32), hidden=64, classes=10)
    print(HEADER)
    t_torch = t_tf = None
    if "cnn32-torch" in parts:
        t_torch = case(f"cnn32 torch ({n32} inputs)", "torch", tm.torch_cnn(w), x32[:n32], (64, 128, 170, 256),
                       None, emulate=min(128, n32))
    if any(p in parts for p in ("cnn32-tf", "steps", "wide")):
        import tensorflow as tf  # noqa: F401  (after torch)

        tf.config.threading.set_intra_op_parallelism_threads(threads)
    if "cnn32-tf" in parts:
        t_tf = case(f"cnn32 tensorflow ({n32} inputs)", "tensorflow", tm.keras_cnn(w), tm.nchw_to_nhwc(x32[:n32]),
                    (64, 128, 170, 256), None)
    if "steps" in parts:
        # where the time goes on the small CNN: the attack's own arithmetic per iteration
        lin = tm.linear_weights(0, features=3 * 32 * 32, classes=10)
        step_costs("cnn32 torch", "torch", tm.torch_cnn(w), tm.torch_linear(lin, (3, 32, 32)), x32, 64)
        step_costs("cnn32 tensorflow", "tensorflow", tm.keras_cnn(w), tm.keras_linear(lin, (32, 32, 3)),
                   tm.nchw_to_nhwc(x32), 256)
    if t_torch and t_tf:
        print(f"-- tensorflow / torch seconds per input (cnn32, default pipeline): {t_tf / t_torch:.2f}")
    if "wide" in parts:
        # a wider small CNN (64/128 channels, 256 hidden units, as CIFAR models are): the
        # model's passes outweigh the attack's own element-wise arithmetic
        wide = tm.cnn_weights(0, size=32, widths=(64, 128), hidden=256, classes=10)
        case("cnn32-wide torch (256 inputs)", "torch", tm.torch_cnn(wide), x32[:256], (32, 64, 128, 170), None)
        case("cnn32-wide tensorflow (256 inputs)", "tensorflow", tm.keras_cnn(wide), tm.nchw_to_nhwc(x32[:256]),
             (32, 64, 128, 256), None)
    if "resnet" in parts:
        torch.manual_seed(0)  # the same random resnet18 whatever ran before
        resnet = torchvision.models.resnet18(num_classes=10).eval()
        case("resnet18@64 torch (96 inputs)", "torch", resnet, x64, (16, 32, 42, 64), None, emulate=8, runs=1)


if __name__ == "__main__":
    import sys

    main(sys.argv[1:])
