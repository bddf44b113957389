"""Write example_pytorch.ipynb and example_tensorflow.ipynb at the repository root.

Both notebooks are generated from one template, so they stay in step:

    .venv/bin/python scripts/make_notebooks.py            # write, without outputs
    .venv/bin/python scripts/make_notebooks.py --execute  # write and run them (outputs committed)

They load the embedded digit classifiers, compute every registered method,
draw the heatmaps, compare BIG to IG and XG to IG, show the boundary distances,
and show (in a cell that is skipped offline) a pretrained ImageNet model.
"""

from __future__ import annotations

import argparse
import os
import sys

import nbformat
from nbformat.v4 import new_code_cell, new_markdown_cell, new_notebook

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

FW = {
    "torch": dict(
        title="PyTorch", file="example_pytorch.ipynb", layout="NCHW",
        imports="import torch  # import torch before tensorflow when a process uses both",
        framework="torch",
        layout_note="PyTorch models take NCHW batches: here `(N, 1, 8, 8)`.",
        pretrained='''RUN_PRETRAINED = os.environ.get("BXG_ONLINE") == "1"  # needs internet: ~100 MB of weights
if RUN_PRETRAINED:
    from torchvision.models import ResNet50_Weights, resnet50

    weights = ResNet50_Weights.IMAGENET1K_V2
    net = resnet50(weights=weights).eval()
    img = torch.rand(1, 3, 224, 224)  # replace with weights.transforms()(your PIL image)[None]
    mean = torch.tensor([0.485, 0.456, 0.406]).view(1, 3, 1, 1)
    std = torch.tensor([0.229, 0.224, 0.225]).view(1, 3, 1, 1)
    x_in = (img - mean) / std
    attr_ig = bxg.attribute(net, x_in, None, method="IG", steps=32, batch_size=32)
    HeatmapVisualizer(blur=7, normalization_type="signed_max")(attr_ig, img, overlay_opacity=0.5)
    if "BIG" in registered:
        lo, hi = ((0 - mean) / std), ((1 - mean) / std)  # per-channel bounds of normalised pixels
        attr_big, dist = bxg.attribute(net, x_in, None, method="BIG", bounds=(lo[0], hi[0]),
                                       return_dis=True, batch_size=32)
else:
    print("skipped: set BXG_ONLINE=1 to download ResNet-50 weights and run this cell")''',
    ),
    "tensorflow": dict(
        title="TensorFlow / Keras 3", file="example_tensorflow.ipynb", layout="NHWC",
        # not imported here: boundary_xg imports TensorFlow when the first Keras model is
        # loaded, with its C++ start-up log lines quiet (set TF_CPP_MIN_LOG_LEVEL to see them)
        imports="# TensorFlow is imported by boundary_xg with the first Keras model, its start-up log quiet",
        framework="tensorflow",
        layout_note="Keras models take NHWC batches: here `(N, 8, 8, 1)`.",
        pretrained='''RUN_PRETRAINED = os.environ.get("BXG_ONLINE") == "1"  # needs internet: ~100 MB of weights
if RUN_PRETRAINED:
    import keras

    # classifier_activation=None gives logits, which is what attributions should explain
    net = keras.applications.ResNet50(weights="imagenet", classifier_activation=None)
    img = np.random.default_rng(0).uniform(0, 255, (1, 224, 224, 3)).astype("float32")  # your image here
    x_in = keras.applications.resnet50.preprocess_input(img.copy())
    attr_ig = bxg.attribute(net, x_in, None, method="IG", steps=32, batch_size=32)
    HeatmapVisualizer(blur=7, normalization_type="signed_max")(attr_ig, img, overlay_opacity=0.5)
else:
    print("skipped: set BXG_ONLINE=1 to download ResNet-50 weights and run this cell")''',
    ),
}


def cells(fw: str):
    c = FW[fw]
    md, code = new_markdown_cell, new_code_cell
    return [
        md(f"""# boundary_xg with {c['title']}

This notebook explains the predictions of the small digit classifiers that ship with
`boundary_xg` (trained by `scripts/train_digits.py` on scikit-learn's 8x8 handwritten
digits), with every attribution method the installed version registers: saliency (SM),
Integrated Gradients (IG), SmoothGrad (SG), X-Gradient (XG), DeepLIFT and the boundary
methods BSM, BIG, BSG and BDT. {c['layout_note']}"""),
        code(f"""import os
import time
import warnings

{c['imports']}
import matplotlib.pyplot as plt
import numpy as np

import boundary_xg as bxg
from boundary_xg.demo_models import load_digit_model, load_digit_test_set
from boundary_xg.viz import HeatmapVisualizer, compare, heatmap

registered = {{spec.short for spec in bxg.METHODS.values()}}
print("registered methods:", sorted(registered))"""),
        md("## The embedded models and test digits\n\n`regular` has biases; `x` is its bias-free "
           "X-variant, a nonnegatively homogeneous network on which X-Gradient equals Integrated "
           "Gradients from the zero baseline."),
        code(f"""x_all, y_all = load_digit_test_set("{c['layout']}")
model = load_digit_model("{c['framework']}", "regular")
xmodel = load_digit_model("{c['framework']}", "x")
for name, m in (("regular", model), ("x", xmodel)):
    pred = bxg.viz.predicted_labels(m, x_all)
    print(f"{{name:8s}} accuracy on {{len(y_all)}} held-out digits: {{np.mean(pred == y_all):.3f}}")
x, y = x_all[:4], y_all[:4]"""),
        md("## Boundary points\n\nThe boundary search (by default box-aware DeepFool, then FMN) "
           "finds, per digit, the closest point the model classifies differently. We search once and "
           "pass the points to every boundary method."),
        code("""points = None
if hasattr(bxg, "find_boundary"):
    res = bxg.find_boundary(model, x, y, bounds=(0.0, 1.0), seed=0, progress=False)
    points = res.points
    print("found:", np.asarray(res.found))
    print("L2 distance to the boundary:", np.round(np.asarray(res.distances), 3))
else:
    print("the boundary search is not available in this install")"""),
        md("## Every method\n\nXG runs on the X-model; the others on the regular model. Boundary "
           "methods get the points found above."),
        code("""options = {"IG": {"steps": 32}, "SG": {"num_samples": 32, "seed": 0},
           "BIG": {"steps": 32}, "BSG": {"num_samples": 32, "seed": 0}}
wanted = ["SM", "IG", "SG", "XG", "DeepLIFT", "BSM", "BIG", "BSG", "BDT"]
attrs, seconds = {}, {}
for name in wanted:
    if name not in registered:
        print(f"{name}: not registered in this install, skipped")
        continue
    opts = dict(options.get(name, {}))
    if name in ("BSM", "BIG", "BSG", "BDT"):
        if points is None:
            continue
        opts["boundary_points"] = points
    m = xmodel if name == "XG" else model
    t0 = time.perf_counter()
    try:
        attrs[name] = bxg.attribute(m, x, y, method=name, **opts)
    except bxg.MethodError as err:  # e.g. BDT while DeepLIFT is not registered
        print(f"{name}: skipped ({str(err).split(';')[0]})")
        continue
    seconds[name] = time.perf_counter() - t0
for name, s in seconds.items():
    print(f"{name:8s} {s * 1000:7.1f} ms for {len(x)} digits")"""),
        md("## Heatmaps\n\nRows are digits, columns the methods. Red is evidence for the label, blue "
           "against it; a colour's opacity grows with the attribution's magnitude, so a zero "
           "attribution leaves the digit untinted in every panel, on black and white pixels alike. "
           "The key under the grid says so."),
        code("""from boundary_xg.viz import Column, plot_grid

fig = plot_grid(x, [Column(k, v) for k, v in attrs.items()],
                [f"label {a}" for a in y], overlay_opacity=0.6)
plt.show()"""),
        md("The TruLens-style visualiser of the boundary paper's README works unchanged:"),
        code("""mask_viz = HeatmapVisualizer(blur=1, normalization_type="signed_max")
fig = plt.figure(figsize=(4, 4))
_ = mask_viz(attrs["IG"], x, overlay_opacity=0.5, fig=fig, return_tiled=False)
plt.show()
fig, axes = plt.subplots(1, 4, figsize=(8, 2))
for ax, sign in zip(axes, ["all", "positive", "negative", "absolute"]):
    heatmap(attrs["IG"][0], x[0], ax=ax, sign=sign, title=sign)
plt.show()"""),
        md("## BIG vs IG\n\nIG integrates from a black image, BIG from the nearest boundary point. "
           "Both are complete: their sum equals the change of the label's logit along the path."),
        code("""if "BIG" in attrs:
    ig, ig_gap = bxg.attribute(model, x, y, method="IG", steps=32, return_gap=True)
    big, big_gap = bxg.attribute(model, x, y, method="BIG", steps=32, boundary_points=points,
                                 return_gap=True)
    flat = lambda a: a.reshape(len(a), -1)
    cos = np.sum(flat(ig) * flat(big), 1) / (np.linalg.norm(flat(ig), axis=1) * np.linalg.norm(flat(big), axis=1))
    print("completeness gap IG :", np.round(np.asarray(ig_gap), 4))
    print("completeness gap BIG:", np.round(np.asarray(big_gap), 4))
    print("cosine(IG, BIG) per digit:", np.round(cos, 3))
else:
    print("BIG is not registered in this install")"""),
        md("## XG vs IG\n\nOn the bias-free X-model, X-Gradient (one pass) equals IG from zero "
           "(32 passes); on the regular model, `x * grad` does not."),
        code("""def rel_l1(a, b):
    a, b = np.asarray(a).reshape(len(a), -1), np.asarray(b).reshape(len(b), -1)
    return float(np.mean(np.abs(a - b).sum(1) / np.abs(b).sum(1)))

xg = bxg.attribute(xmodel, x, y, method="XG")
ig_x = bxg.attribute(xmodel, x, y, method="IG", steps=32)
ixg = bxg.attribute(model, x, y, method="IxG")
ig_r = bxg.attribute(model, x, y, method="IG", steps=32)
print(f"X-model      : XG vs IG relative L1 difference {rel_l1(xg, ig_x):.2e}")
print(f"regular model: x*grad vs IG relative L1 difference {rel_l1(ixg, ig_r):.2f}")"""),
        md("## Side by side with `compare`\n\n`compare` computes and draws in one call; boundary "
           "methods note their distance under each panel."),
        code("""methods = [m for m in ["SM", "IG", "BSM", "BIG"] if m in registered]
with warnings.catch_warnings():
    warnings.simplefilter("ignore")
    result = compare(model, x[:3], y[:3], methods=methods,
                     options={"BSM": {"bounds": (0.0, 1.0)}, "BIG": {"bounds": (0.0, 1.0), "steps": 32}})
plt.show()
print({k: np.round(v, 3).tolist() for k, v in result.distances.items()})"""),
        md("## A pretrained ImageNet model\n\nThe same calls work on a full-size network. This cell "
           "downloads weights, so it is skipped offline; set `BXG_ONLINE=1` to run it."),
        code(c["pretrained"]),
    ]


def build(fw: str) -> nbformat.NotebookNode:
    """The notebook for ``fw`` ("torch" or "tensorflow"), without outputs."""
    nb = new_notebook(cells=cells(fw))
    nb.metadata["kernelspec"] = {"name": "python3", "display_name": "Python 3", "language": "python"}
    nb.metadata["language_info"] = {"name": "python"}
    return nb


def execute(nb: nbformat.NotebookNode, timeout: int = 300) -> nbformat.NotebookNode:
    """Run ``nb`` top to bottom in a python3 kernel (the current interpreter's)."""
    from nbclient import NotebookClient

    # outputs are kept as they come: TensorFlow's start-up log lines are silenced by
    # boundary_xg itself (tests/test_notebooks.py checks that none reach a reader)
    NotebookClient(nb, timeout=timeout, kernel_name="python3", resources={"metadata": {"path": ROOT}}).execute()
    return nb


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--execute", action="store_true", help="run the notebooks and keep their outputs")
    args = p.parse_args(argv)
    # the digit models are tiny: one thread per op is the fastest on a shared machine
    for var in ("OMP_NUM_THREADS", "TF_NUM_INTRAOP_THREADS", "TF_NUM_INTEROP_THREADS"):
        os.environ.setdefault(var, "1")
    for fw, c in FW.items():
        nb = build(fw)
        if args.execute:
            execute(nb)
        path = os.path.join(ROOT, c["file"])
        nbformat.write(nb, path)
        print("wrote", path)
    return 0


if __name__ == "__main__":
    sys.exit(main())
