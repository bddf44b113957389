"""The front end: argument checks, caller's types, labels, softmax handling,
backend selection, and that a model is left exactly as it was found."""

from __future__ import annotations

import ast
import os
import pathlib
import subprocess
import sys
import textwrap

import numpy as np
import pytest

import boundary_xg as bxg
from boundary_xg.errors import InputError, LabelError, MethodError, UnsupportedModelError
from conftest import BACKENDS, HAS_TORCH, build_cnn, needs_both, needs_tf, needs_torch

SRC = pathlib.Path(bxg.__file__).parent


# --- architecture --------------------------------------------------------------------
def test_import_pulls_in_no_framework_and_no_matplotlib():
    code = textwrap.dedent("""
        import sys, boundary_xg
        bad = [m for m in ("torch", "tensorflow", "keras", "matplotlib", "jax") if m in sys.modules]
        print(",".join(bad))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == ""


def _imported_roots(path: pathlib.Path):
    tree = ast.parse(path.read_text())
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            for a in node.names:
                yield a.name.split(".")[0]
        elif isinstance(node, ast.ImportFrom) and node.level == 0 and node.module:
            yield node.module.split(".")[0]


def test_algorithms_import_no_framework():
    frameworks = {"torch", "tensorflow", "keras", "jax", "torchvision"}
    places = [SRC / "api.py", SRC / "ops.py", *(SRC / "methods").glob("*.py"), *(SRC / "search").glob("*.py")]
    offenders = [str(p.relative_to(SRC)) for p in places if frameworks & set(_imported_roots(p))]
    assert offenders == []


# --- method names and options --------------------------------------------------------
def test_method_names_are_case_insensitive_and_unknown_names_list_the_valid_ones():
    assert bxg.BA("ig").spec is bxg.BA("Integrated-Gradients").spec is bxg.BA("IG").spec
    assert bxg.BA("smoothgrad").name == "SG" and bxg.BA("x_gradient").name == "XG"
    with pytest.raises(MethodError, match="valid names.*IG"):
        bxg.BA("integrated_gradient_typo")


@pytest.mark.parametrize("options, pattern", [
    ({"steps": 0}, "steps"), ({"steps": 2.5}, "steps"), ({"rule": "simpson"}, "rule"),
    ({"bogus": 1}, "bogus"),
])
def test_bad_ig_options_are_rejected_at_construction(options, pattern):
    with pytest.raises((InputError, MethodError), match=pattern):
        bxg.BA("IG", **options)


@pytest.mark.parametrize("options, pattern", [
    ({"num_samples": 0}, "num_samples"), ({"sigma": -0.1}, "sigma"), ({"sigma_abs": -1.0}, "sigma_abs"),
    ({"variant": "sq"}, "variant"), ({"seed": "x"}, "seed"), ({"batch_size": 0}, "batch_size"),
])
def test_bad_smoothgrad_options_are_rejected(options, pattern):
    with pytest.raises(InputError, match=pattern):
        bxg.BA("SG", **options)


def test_return_gap_only_for_path_methods():
    with pytest.raises(MethodError, match="return_gap"):
        bxg.BA("SM", return_gap=True)


# --- bad inputs ---------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_bad_inputs_get_clear_errors(backend, images):
    model, conv = build_cnn(backend)
    x = conv(images)
    good = np.array([0, 1, 2, 3])
    cases = [
        (lambda: bxg.attribute(model, x[0], good[:1], method="SM"), InputError, "batch"),
        (lambda: bxg.attribute(model, x[:, :, :5], good, method="SM"), InputError, "x"),
        (lambda: bxg.attribute(model, np.where(x > 1, np.nan, x), good, method="SM"), InputError, "NaN"),
        (lambda: bxg.attribute(model, x, good[:3], method="SM"), LabelError, "3 entries"),
        (lambda: bxg.attribute(model, x, [0, 1, 2, 5], method="SM"), LabelError, "out of range"),
        (lambda: bxg.attribute(model, x, [0, -1, 2, 3], method="SM"), LabelError, "out of range"),
        (lambda: bxg.attribute(model, x, [0.5, 1, 2, 3], method="SM"), LabelError, "non-integer"),
        (lambda: bxg.attribute(model, x, np.eye(4)[[0, 1, 2, 3]], method="SM"), LabelError, "one-hot"),
        (lambda: bxg.attribute(model, x, np.full((4, 5), 0.2), method="SM"), LabelError, "one-hot"),
        (lambda: bxg.attribute(model, x, good, method="IG", baseline=np.zeros((2, 2))), InputError, "baseline"),
        (lambda: bxg.attribute(model, x, good, method="IG", baseline=np.full(x.shape, np.inf)), InputError, "baseline"),
        (lambda: bxg.attribute(model, x, good, method="IG", baseline=float("nan")), InputError, "baseline"),
        (lambda: bxg.attribute(model, x, good, method="IG", steps=0), InputError, "steps"),
        (lambda: bxg.attribute(model, x, good, method="SG", num_samples=0), InputError, "num_samples"),
        (lambda: bxg.attribute(model, x, good, method="SG", sigma=-1.0), InputError, "sigma"),
        (lambda: bxg.attribute(model, x, good, method="nonsense"), MethodError, "valid names"),
    ]
    for call, kind, pattern in cases:
        with pytest.raises(kind, match=pattern):
            call()


@needs_torch
def test_channels_last_input_to_a_torch_model_names_the_layout(images):
    model, _ = build_cnn("torch")
    with pytest.raises(InputError, match="NCHW"):
        bxg.attribute(model, np.transpose(images, (0, 2, 3, 1)), [0, 1, 2, 3], method="SM")


@needs_tf
def test_channels_first_input_to_a_keras_model_names_the_layout(images):
    model, _ = build_cnn("tensorflow")
    with pytest.raises(InputError, match="NHWC"):
        bxg.attribute(model, images, [0, 1, 2, 3], method="SM")


def test_models_from_no_framework_name_the_extra():
    with pytest.raises(UnsupportedModelError, match=r"boundary_xg\[torch\]"):
        bxg.attribute(object(), np.zeros((1, 3)), [0], method="SM")
    with pytest.raises(TypeError):  # UnsupportedModelError is a TypeError too
        bxg.attribute(lambda t: t, np.zeros((1, 3)), [0], method="SM")


def test_keras_on_another_keras_backend_says_which_are_supported():
    code = textwrap.dedent("""
        import numpy as np, keras, boundary_xg as bxg
        m = keras.Sequential([keras.Input((3,)), keras.layers.Dense(2)])
        try:
            bxg.attribute(m, np.zeros((1, 3), "float32"), [0], method="SM")
        except bxg.UnsupportedModelError as e:
            print("ERR", e)
    """)
    env = dict(os.environ, KERAS_BACKEND="torch")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=120)
    assert "ERR" in out.stdout and "'tensorflow'" in out.stdout and "'torch'" in out.stdout, out.stderr[-2000:]


# --- labels -------------------------------------------------------------------------------
@pytest.mark.parametrize("backend", BACKENDS)
def test_label_forms_agree(backend, images):
    model, conv = build_cnn(backend)
    x = conv(images)
    idx = np.array([4, 0, 3, 1])
    ref = bxg.attribute(model, x, idx, method="SM")
    np.testing.assert_array_equal(bxg.attribute(model, x, np.eye(5)[idx], method="SM"), ref)
    np.testing.assert_array_equal(bxg.attribute(model, x, idx.tolist(), method="SM"), ref)
    np.testing.assert_array_equal(bxg.attribute(model, x, idx[:, None], method="SM"), ref)
    same = bxg.attribute(model, x, 2, method="SM")
    np.testing.assert_array_equal(same, bxg.attribute(model, x, [2, 2, 2, 2], method="SM"))


@needs_torch
def test_labels_none_explains_the_predicted_class(images):
    import torch

    model, _ = build_cnn("torch")
    with torch.no_grad():
        pred = model(torch.from_numpy(images)).argmax(1).numpy()
    np.testing.assert_array_equal(
        bxg.attribute(model, images, None, method="IG", steps=4),
        bxg.attribute(model, images, pred, method="IG", steps=4),
    )


# --- the caller's types ---------------------------------------------------------------------
@needs_torch
def test_torch_types_round_trip(images):
    import torch

    model, _ = build_cnn("torch")
    out = bxg.attribute(model, images.astype(np.float64), [0, 1, 2, 3], method="IxG")
    assert isinstance(out, np.ndarray) and out.dtype == np.float64
    t = torch.from_numpy(images)
    out = bxg.attribute(model, t, torch.tensor([0, 1, 2, 3]), method="IG", steps=3)
    assert isinstance(out, torch.Tensor) and out.device == t.device and not out.requires_grad
    u8 = (np.abs(images) * 50).astype(np.uint8)
    assert bxg.attribute(model, u8, [0, 1, 2, 3], method="SM").dtype == np.float32
    with torch.inference_mode():
        ti = torch.from_numpy(images).clone()
    assert bxg.attribute(model, ti, [0, 1, 2, 3], method="SM").shape == ti.shape


@needs_tf
def test_tensorflow_types_round_trip(images):
    import tensorflow as tf

    model, conv = build_cnn("tensorflow")
    x = conv(images)
    out = bxg.attribute(model, tf.constant(x), tf.constant([0, 1, 2, 3]), method="IG", steps=3)
    assert tf.is_tensor(out) and tuple(out.shape) == x.shape
    assert isinstance(bxg.attribute(model, x, [0, 1, 2, 3], method="SM"), np.ndarray)
    # called under the caller's tape: the attributions are constants to it (stop_gradient runs
    # only when something records), and int64 or int32 label tensors give the same result
    xt = tf.constant(x)
    with tf.GradientTape(persistent=True) as tape:
        tape.watch(xt)
        taped = bxg.attribute(model, xt, tf.constant([0, 1, 2, 3], tf.int64), method="SM")
        loss = tf.reduce_sum(taped * xt)
    assert tape.gradient(taped, xt) is None
    np.testing.assert_allclose(tape.gradient(loss, xt).numpy(), taped.numpy())
    plain = bxg.attribute(model, xt, tf.constant([0, 1, 2, 3], tf.int32), method="SM")
    np.testing.assert_array_equal(plain.numpy(), taped.numpy())


@needs_both
def test_a_tensor_of_the_other_framework_is_refused(images):
    import torch

    model, conv = build_cnn("tensorflow")
    with pytest.raises(InputError, match="torch tensor"):
        bxg.attribute(model, torch.from_numpy(conv(images)), [0, 1, 2, 3], method="SM")


# --- Keras model kinds ------------------------------------------------------------------------
@needs_tf
def test_keras_functional_and_subclassed_models_match_sequential(images):
    import keras

    seq, conv = build_cnn("tensorflow", seed=3)
    x = conv(images)
    functional = keras.Model(seq.inputs, seq.outputs)

    class Wrapped(keras.Model):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def call(self, t, training=False):
            return self.inner(t, training=training)

    sub = Wrapped(seq)
    ref = bxg.attribute(seq, x, [0, 1, 2, 3], method="IG", steps=5)
    for m in (functional, sub):
        np.testing.assert_allclose(bxg.attribute(m, x, [0, 1, 2, 3], method="IG", steps=5), ref, rtol=1e-5, atol=1e-7)


# --- softmax outputs ------------------------------------------------------------------------
@needs_torch
def test_torch_softmax_head_is_separated(images):
    import torch

    model, _ = build_cnn("torch")
    with_softmax = torch.nn.Sequential(*model, torch.nn.Softmax(dim=1))
    with pytest.warns(UserWarning, match="pre-softmax"):
        a = bxg.attribute(with_softmax, images, [0, 1, 2, 3], method="SM")
    np.testing.assert_array_equal(a, bxg.attribute(model, images, [0, 1, 2, 3], method="SM"))


@needs_tf
def test_keras_softmax_activation_is_switched_off_and_back_on(images):
    import keras

    logits_model, conv = build_cnn("tensorflow", seed=1)
    x = conv(images)
    probs = keras.models.clone_model(logits_model)
    probs.set_weights(logits_model.get_weights())
    probs.layers[-1].activation = keras.activations.softmax
    with pytest.warns(UserWarning, match="pre-softmax"):
        a = bxg.attribute(probs, x, [0, 1, 2, 3], method="SM")
    assert probs.layers[-1].activation is keras.activations.softmax
    np.testing.assert_allclose(a, bxg.attribute(logits_model, x, [0, 1, 2, 3], method="SM"), rtol=1e-5, atol=1e-7)
    with_layer = keras.Sequential([logits_model, keras.layers.Softmax()])
    with pytest.warns(UserWarning, match="pre-softmax"):
        b = bxg.attribute(with_layer, x, [0, 1, 2, 3], method="SM")
    np.testing.assert_allclose(b, a, rtol=1e-5, atol=1e-7)
    assert "call" not in with_layer.layers[-1].__dict__


# --- the model is left as it was ---------------------------------------------------------------
def _torch_state(model):
    return (
        {k: v.clone() for k, v in model.state_dict().items()},
        [m.training for m in model.modules()],
        [p.requires_grad for p in model.parameters()],
        [(len(m._forward_hooks), len(m._forward_pre_hooks), len(m._backward_hooks),
          len(getattr(m, "_backward_pre_hooks", {}))) for m in model.modules()],
        [p.grad is None for p in model.parameters()],
    )


@needs_torch
def test_torch_model_is_unchanged_after_calls_and_errors(images):
    import torch

    model, _ = build_cnn("torch")
    model.train()
    model[1].eval()  # mixed modes must come back exactly
    model[0].weight.requires_grad_(False)
    model[2].register_forward_hook(lambda *a: None)
    model.append(torch.nn.Dropout(0.5))
    before = _torch_state(model)
    for method in ["SM", "IxG", "IG", "SG", "XG"]:
        bxg.attribute(model, images, [0, 1, 2, 3], method=method)
    with pytest.raises(LabelError):
        bxg.attribute(model, images, [0, 1, 2, 9], method="IG")
    with pytest.raises(InputError):
        bxg.attribute(model, images[:, :2], [0, 1, 2, 3], method="IG")
    after = _torch_state(model)
    for k in before[0]:
        assert torch.equal(before[0][k], after[0][k])
    assert before[1:] == after[1:]


@needs_torch
def test_torch_eval_semantics_during_the_call(images):
    import torch

    model, _ = build_cnn("torch")
    noisy = torch.nn.Sequential(torch.nn.Dropout(0.9), *model).train()
    a = bxg.attribute(noisy, images, [0, 1, 2, 3], method="SM")
    np.testing.assert_array_equal(a, bxg.attribute(model, images, [0, 1, 2, 3], method="SM"))
    assert noisy.training


@needs_tf
def test_keras_model_is_unchanged_after_calls_and_errors(images):
    model, conv = build_cnn("tensorflow")
    x = conv(images)
    weights = [w.copy() for w in model.get_weights()]
    trainable = [l.trainable for l in model.layers]
    for method in ["SM", "IxG", "IG", "SG", "XG"]:
        bxg.attribute(model, x, [0, 1, 2, 3], method=method)
    with pytest.raises(LabelError):
        bxg.attribute(model, x, [0, 1, 2, 9], method="IG")
    for a, b in zip(weights, model.get_weights()):
        np.testing.assert_array_equal(a, b)
    assert trainable == [l.trainable for l in model.layers]


# --- either framework alone is enough -------------------------------------------------------
_ALONE = {
    "torch": """
        import sys

        class _Blocker:  # as if these packages were not installed
            def __init__(self, names):
                self.names = names

            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.names:
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, _Blocker({"tensorflow", "keras", "tf_keras"}))
        import numpy as np, torch, boundary_xg as bxg
        m = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
        a = bxg.attribute(m, np.ones((2, 3, 2, 2), "float32"), [0, 2], method="IG", steps=4)
        print("OK", a.shape)
        try:
            bxg.attribute(m, np.ones((2, 3, 2, 2), "float32"), [0, 2], backend="tensorflow")
        except bxg.BackendNotAvailableError as e:
            print("MISSING", e)
    """,
    "tensorflow": """
        import sys

        class _Blocker:  # as if these packages were not installed
            def __init__(self, names):
                self.names = names

            def find_spec(self, name, path=None, target=None):
                if name.split(".")[0] in self.names:
                    raise ModuleNotFoundError(f"No module named {name!r}")
                return None

        sys.meta_path.insert(0, _Blocker({"torch", "torchvision"}))
        import numpy as np, keras, boundary_xg as bxg
        m = keras.Sequential([keras.Input((2, 2, 3)), keras.layers.Flatten(), keras.layers.Dense(3)])
        a = bxg.attribute(m, np.ones((2, 2, 2, 3), "float32"), [0, 2], method="IG", steps=4)
        print("OK", a.shape)
        try:
            bxg.attribute(m, np.ones((2, 2, 2, 3), "float32"), [0, 2], backend="torch")
        except bxg.BackendNotAvailableError as e:
            print("MISSING", e)
    """,
}


@pytest.mark.parametrize("framework", BACKENDS)
def test_either_framework_alone_is_enough(framework):
    out = subprocess.run([sys.executable, "-c", textwrap.dedent(_ALONE[framework])],
                         capture_output=True, text=True, timeout=180)
    assert "OK (2," in out.stdout, out.stderr[-2000:]
    other = "tensorflow" if framework == "torch" else "torch"
    assert "MISSING" in out.stdout and f"boundary_xg[{other}]" in out.stdout


@pytest.mark.parametrize("backend", BACKENDS)
def test_default_chunks_are_sized_by_the_input_on_cpu(backend):
    """256 rows for small inputs; on a CPU the backend's element budget per chunk, 8 rows of large images."""
    from boundary_xg.backends import get_backend
    from boundary_xg.ops import default_batch_size

    B = get_backend(backend)
    budget = {"torch": 2 ** 19, "tensorflow": 2 ** 20}[backend]
    assert B.cpu_chunk_elements == budget
    expected = {"torch": (256, 170, 42, 8, 5, 1), "tensorflow": (256, 256, 85, 8, 5, 1)}[backend]
    shapes = ((2, 3, 16, 16), (2, 3, 32, 32), (2, 3, 64, 64), (2, 3, 224, 224), (2, 3, 512, 512),
              (1, 3, 1024, 1024))
    for shape, rows in zip(shapes, expected):
        x = B.asarray(np.zeros(shape, np.float32))
        assert not B.on_accelerator(x)
        assert default_batch_size(B, x) == rows
        per_row = int(np.prod(shape[1:]))
        assert rows * per_row <= max(budget, 8 * per_row) or rows == 1


@needs_torch
def test_torch_bfloat16_model():
    """A bfloat16 PyTorch model works end to end (NumPy has no bfloat16: the host reads widen
    it to float32) and agrees with its float32 twin to bfloat16 precision."""
    import torch

    from boundary_xg.testing import models as tm

    w = tm.cnn_weights(0, size=8)
    m32, m16 = tm.torch_cnn(w), tm.torch_cnn(w).to(torch.bfloat16)
    x = np.random.default_rng(3).standard_normal((2, 3, 8, 8)).astype(np.float32)
    for method in ("SM", "IG", "DeepLIFT"):
        got = bxg.attribute(m16, torch.from_numpy(x).to(torch.bfloat16), [0, 1], method=method)
        assert got.dtype == torch.bfloat16 and got.shape == x.shape
        ref = bxg.attribute(m32, x, [0, 1], method=method)
        scale = np.abs(ref).max()
        assert np.abs(got.float().numpy() - ref).max() <= 0.1 * scale, method
        as_np = bxg.attribute(m16, x, [0, 1], method=method)  # NumPy in, NumPy out
        assert as_np.dtype == np.float32 and np.isfinite(as_np).all()


# --- the registry through the public API (the one source of method facts) -------
def test_readme_method_table_is_generated_from_the_registry():
    readme = (SRC.parents[1] / "README.md").read_text(encoding="utf-8")
    start = "<!-- methods-table: generated from the registry by scripts/update_readme.py -->"
    table = readme.split(start, 1)[1].split("<!-- /methods-table -->", 1)[0]
    assert table.strip("\n") + "\n" == bxg.methods_table(), (
        "README.md's method table differs from the registry: run python scripts/update_readme.py")
    rows = [ln for ln in bxg.methods_table().splitlines()[2:]]
    assert [r.split("`")[1] for r in rows] == bxg.method_names()


def test_method_info_names_and_demo_list_come_from_the_registry():
    from boundary_xg.cli import method_help
    from boundary_xg.demo import DEMO_METHODS
    from boundary_xg.methods.registry import METHODS, lookup

    assert bxg.method_names() == [s.short for s in METHODS.values()]
    assert list(DEMO_METHODS) == bxg.method_names(demo=True)
    assert list(DEMO_METHODS) == ["SM", "IG", "SG", "XG", "DeepLIFT", "GradCAM", "FullGrad",
                                  "BSM", "BIG", "BSG", "BDT", "IG_Uniform", "IG_SG", "AGI", "LPI"]
    assert all(name in method_help() for name in bxg.method_names())
    info = bxg.method_info("boundary-integrated-gradients")
    assert (info.short, info.boundary, info.base, info.supports_gap) == ("BIG", True, "IG", True)
    assert info.defaults["steps"] == lookup("IG").defaults["steps"]
    with pytest.raises(TypeError):
        info.defaults["steps"] = 3  # read-only: the registry is not changed through it
    cam = bxg.method_info("gradcam")
    assert (cam.takes_layer, cam.output, cam.boundary) == (True, "map", False)
    assert "layers" in cam.needs
    with pytest.raises(MethodError, match="valid names"):
        bxg.method_info("nope")


def test_boundary_variants_inherit_their_base_methods_checks():
    with pytest.raises(InputError, match="rule='nope'"):
        bxg.BA("BIG", rule="nope")
    with pytest.raises(InputError, match="variant='nope'"):
        bxg.BA("BSG", variant="nope")
    with pytest.raises(InputError, match="rule="):
        bxg.BA("IG", rule="nope")


def test_available_frameworks_and_use_framework():
    from boundary_xg.errors import BackendNotAvailableError

    assert set(bxg.available_frameworks()) == {"torch", "tensorflow"}
    with pytest.raises(UnsupportedModelError, match="backend='nope'"):
        bxg.use_framework("nope")
    if HAS_TORCH:
        assert bxg.use_framework("PyTorch") == "torch"
    else:
        with pytest.raises(BackendNotAvailableError):
            bxg.use_framework("torch")
