"""The seed README's code blocks (../shared/seeds/004_*.txt) run with only the package
name changed (``boundary`` -> ``boundary_xg``), on small random models on CPU."""

import numpy as np
import pytest

import boundary_xg
from conftest import needs_tf, needs_torch

PYTORCH_BLOCK = """
import boundary
from boundary import BA_pytorch
# Load your pytorch
model = load_model(...)
# Load your data into numpy arrays
numpy_data_x, labels_onehot = load_your_data(...)
# Create attribution object
big = BA_pytorch('BIG', use_boundary=True)
# Load the default parameters. You can also modify these parameters if needed.
# These default parameters should work with one Titan RTX 3080.
parameters = boundary.PARAMETERS
pipeline = boundary.PIPELINE
# Compute attribution scores
attr = big.attribute(model,
numpy_data_x,
labels_onehot,
pipline=pipeline,
return_dis=False,
**parameters)
"""

TENSORFLOW_BLOCK = """
import boundary
from boundary import BA_tensorflow
# Load your tf.keras model
model = load_model(...)
# Load your data into numpy arrays
numpy_data_x, labels_onehot = load_your_data(...)
# Create attribution object
big = BA_tensorflow('BIG', use_boundary=True)
# Load the default parameters. You can also modify these parameters if needed.
# These default parameters should work with one Titan RTX 3080.
parameters = boundary.PARAMETERS
pipeline = boundary.PIPELINE
# Change the backend from 'pytorch' to 'tensorflow'.
parameters.backend = 'tf.keras'
# Compute attribution scores
attr = big.attribute(model,
numpy_data_x,
labels_onehot,
pipline=pipeline,
return_dis=False,
**parameters)
"""


def _renamed(block):
    return block.replace("import boundary\n", "import boundary_xg as boundary\n").replace(
        "from boundary import", "from boundary_xg import")


@pytest.fixture
def small_presets():
    """Shrink the shared presets for speed; restore them (they are module state)."""
    saved_p = dict(boundary_xg.PARAMETERS)
    saved_pl = dict(boundary_xg.PIPELINE)
    boundary_xg.PIPELINE.update(pgd_eps=[0.5, 1.0, 2.0], pgd_max_steps=5, cw_max_steps=5)
    yield
    for preset, saved in ((boundary_xg.PARAMETERS, saved_p), (boundary_xg.PIPELINE, saved_pl)):
        preset.clear()
        preset.update(saved)


def _run(block, model, x, labels):
    ns = {"load_model": lambda *_: model, "load_your_data": lambda *_: (x, labels)}
    exec(compile(_renamed(block), "<seed README>", "exec"), ns)
    return ns


def _data(backend, model):
    from boundary_xg.testing.models import nchw_to_nhwc

    x = np.random.default_rng(0).uniform(-2.0, 2.2, (3, 3, 8, 8)).astype(np.float32)
    if backend == "tensorflow":
        x = nchw_to_nhwc(x)
        logits = np.asarray(model(x))
    else:
        import torch

        with torch.no_grad():
            logits = model(torch.from_numpy(x)).numpy()
    return x, np.eye(logits.shape[1], dtype=np.float32)[logits.argmax(1)]


@needs_torch
@pytest.mark.filterwarnings("ignore::boundary_xg.search.pipeline.BoundaryNotFoundWarning")
def test_pytorch_block_runs(small_presets):
    from boundary_xg.testing import models as tm

    model = tm.torch_cnn(tm.cnn_weights(0))
    x, labels = _data("torch", model)
    ns = _run(PYTORCH_BLOCK, model, x, labels)
    assert ns["attr"].shape == x.shape and np.all(np.isfinite(ns["attr"]))


@needs_tf
@pytest.mark.filterwarnings("ignore::boundary_xg.search.pipeline.BoundaryNotFoundWarning")
def test_tensorflow_block_runs(small_presets):
    from boundary_xg.testing import models as tm

    model = tm.keras_cnn(tm.cnn_weights(0))
    x, labels = _data("tensorflow", model)
    ns = _run(TENSORFLOW_BLOCK, model, x, labels)
    assert ns["attr"].shape == x.shape and np.all(np.isfinite(ns["attr"]))
    assert boundary_xg.PARAMETERS.backend == "tf.keras"  # attribute assignment works


def test_presets_hold_reference_defaults():
    p, pl = boundary_xg.PARAMETERS, boundary_xg.PIPELINE
    assert p["n_steps"] == 10 and p.stdevs == 0.15 and p.batch_size == 32
    assert p.data_min == pytest.approx(-2.117904) and p.data_max == pytest.approx(2.64)
    assert pl.methods == "PGDs+CW" and pl.pgd_max_steps == 40 and pl.cw_max_steps == 100
    assert pl.pgd_eps[:2] == [36 / 255, 64 / 255]
    attacks = boundary_xg.compat.attacks_from_pipeline(pl)
    assert [type(a).__name__ for a in attacks] == ["PGD", "CW"]
    assert attacks[0].absolute_step(0.5) == pytest.approx(2.5 * 0.5 / 40)


@needs_torch
@pytest.mark.filterwarnings("ignore::boundary_xg.search.pipeline.BoundaryNotFoundWarning")
def test_legacy_names_and_return_dis(small_presets):
    from boundary_xg.testing import models as tm

    model = tm.torch_cnn(tm.cnn_weights(0))
    x, labels = _data("torch", model)
    boundary_xg.PIPELINE.methods = "PGDs"  # the fixture restores it
    attr, dist = boundary_xg.BA_pytorch("bIG").attribute(
        model, x, labels, pipline=boundary_xg.PIPELINE, return_dis=True, **boundary_xg.PARAMETERS)
    assert attr.shape == x.shape and dist.shape == (3,)
    res = boundary_xg.get_boundary_points(model, x, labels, pipeline=boundary_xg.PIPELINE,
                                          clamp=(-2.117904, 2.64))
    points, distances, found = res
    np.testing.assert_allclose(distances, dist, rtol=1e-5)
    plain = boundary_xg.BA_pytorch("BSM", use_boundary=False).attribute(model, x, labels, **boundary_xg.PARAMETERS)
    assert plain.shape == x.shape
