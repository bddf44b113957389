"""Shared fixtures. One suite, parametrised over the installed backends.

torch and torchvision are imported before tensorflow: importing torchvision
after TensorFlow crashes the interpreter on this project's machines.
"""

from __future__ import annotations

import contextlib
import importlib.util
import os

import numpy as np
import pytest

os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")

HAS_TORCH = importlib.util.find_spec("torch") is not None
HAS_TF = importlib.util.find_spec("tensorflow") is not None
HAS_CAPTUM = importlib.util.find_spec("captum") is not None

if HAS_TORCH:
    import torch  # noqa: F401

    if importlib.util.find_spec("torchvision") is not None:
        import torchvision  # noqa: F401
if HAS_TF:
    import tensorflow as tf  # noqa: F401

    tf.config.threading.set_inter_op_parallelism_threads(2)

from boundary_xg import backends as _backends  # noqa: E402  (after the frameworks, in their safe order)

#: every registered backend, skipped where its framework is not installed
BACKENDS = [
    pytest.param(name, marks=pytest.mark.skipif(not _backends.identity(name).installed(),
                                                reason=f"{_backends.identity(name).framework} not installed"))
    for name in _backends.names()
]

needs_torch = pytest.mark.skipif(not HAS_TORCH, reason="torch not installed")
needs_tf = pytest.mark.skipif(not HAS_TF, reason="tensorflow not installed")
needs_both = pytest.mark.skipif(not (HAS_TORCH and HAS_TF), reason="needs torch and tensorflow")
needs_captum = pytest.mark.skipif(not (HAS_TORCH and HAS_CAPTUM), reason="captum not installed")


@pytest.fixture(params=BACKENDS)
def backend_name(request):
    """Each installed backend in turn."""
    return request.param


def pytest_addoption(parser):
    parser.addoption("--backend", action="append", default=None, metavar="NAME",
                     help="run the backend-parametrised tests for this backend only (repeatable; "
                          f"registered: {', '.join(_backends.names())})")


def pytest_collection_modifyitems(config, items):
    chosen = config.getoption("--backend")
    if not chosen:
        return
    chosen = {_backends.identity(n).name for n in chosen}
    known = set(_backends.names())
    keep, drop = [], []
    for item in items:
        params = getattr(getattr(item, "callspec", None), "params", {})
        named = {v for v in params.values() if isinstance(v, str) and v in known}
        (drop if named and not named & chosen else keep).append(item)
    if drop:
        config.hook.pytest_deselected(items=drop)
        items[:] = keep


def _channels_first(backend: str) -> bool:
    return _backends.identity(backend).image_layout == "NCHW"


def build_cnn(backend: str, seed: int = 0, bias: bool = True, activation: str = "relu", **kw):
    """(model, make_input) for the shared small CNN in ``backend`` (the builder registered for it
    in ``boundary_xg.testing.models.CNN_BUILDERS``).

    ``make_input(x_nchw)`` converts a NCHW NumPy batch to the model's layout.
    """
    from boundary_xg.testing import models as tm

    w = tm.cnn_weights(seed=seed, bias=bias, **kw)
    return tm.cnn(w, backend, activation), ((lambda x: x) if _channels_first(backend) else tm.nchw_to_nhwc)


def to_nchw(backend: str, a: np.ndarray) -> np.ndarray:
    """An attribution in ``backend``'s layout, as NCHW."""
    from boundary_xg.testing.models import nhwc_to_nchw

    return a if _channels_first(backend) else nhwc_to_nchw(a)


@pytest.fixture
def images():
    """A small NCHW batch (4, 3, 8, 8), fixed seed."""
    return np.random.default_rng(1).standard_normal((4, 3, 8, 8)).astype(np.float32)


@contextlib.contextmanager
def keras_dtype_policy(name):
    """Build Keras layers under the global dtype policy ``name`` ("float16", "bfloat16"), then restore it."""
    import keras

    before = keras.config.dtype_policy()
    keras.config.set_dtype_policy(name)
    try:
        yield
    finally:
        keras.config.set_dtype_policy(before)
