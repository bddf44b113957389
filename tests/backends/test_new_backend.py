"""A new backend is one class plus its registration: shown with torch registered again.

The stand-in backend ("torch_lite") is the torch backend under another name with
the DeepLIFT capability removed. It passes the conformance suite, explains a
model like the torch backend, and DeepLIFT refuses it before any work with an
error that names the capability and the backends that have it.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import needs_torch
import boundary_xg as bxg
from boundary_xg import backends

import test_conformance as conformance


@pytest.fixture
def torch_lite():
    from boundary_xg.backends.torch.backend import TorchBackend

    class TorchLite(TorchBackend):
        name = "torch_lite"
        capabilities = TorchBackend.capabilities - {"deeplift"}

    backends.register_backend(backends.BackendIdentity(
        name="torch_lite", framework="torch", roots=(), aliases=("tlite",), extra="boundary_xg[torch]",
        image_layout="NCHW", factory=TorchLite, capabilities=TorchLite.capabilities, import_order=50))
    try:
        yield backends.get_backend("tlite")
    finally:
        backends.unregister_backend("torch_lite")
        backends.forget_backend("torch_lite")


@needs_torch
def test_the_new_backend_passes_the_conformance_suite(torch_lite):
    assert "torch_lite" in backends.names() and torch_lite.name == "torch_lite"
    import inspect

    for name in dir(conformance):
        test = getattr(conformance, name)
        if name.startswith("test_") and list(inspect.signature(test).parameters) == ["B"]:
            test(torch_lite)


@needs_torch
def test_the_new_backend_explains_like_the_one_it_copies(torch_lite):
    from boundary_xg.testing import models as tm

    model = tm.torch_cnn(tm.cnn_weights(seed=0))
    x = np.random.default_rng(0).normal(size=(3, 3, 8, 8)).astype(np.float32)
    want = bxg.attribute(model, x, [0, 1, 2], method="IG", steps=8)
    got = bxg.attribute(model, x, [0, 1, 2], method="IG", steps=8, backend="torch_lite")
    np.testing.assert_array_equal(got, want)
    # detection still picks the registered torch backend for torch models
    assert backends.backend_for(model).name == "torch"


@needs_torch
def test_deeplift_names_the_missing_capability_before_any_work(torch_lite):
    from boundary_xg.testing import models as tm

    model = tm.torch_cnn(tm.cnn_weights(seed=0))
    calls = []
    handle = model.register_forward_hook(lambda *a: calls.append(1))
    x = np.zeros((2, 3, 8, 8), np.float32)
    try:
        for method in ("DeepLIFT", "BDT"):
            with pytest.raises(bxg.CapabilityError) as err:
                bxg.attribute(model, x, [0, 1], method=method, backend="torch_lite")
            msg = str(err.value)
            assert method in msg and "'deeplift'" in msg and "torch_lite" in msg
            assert "torch" in msg.split("backends that do:")[1]
    finally:
        handle.remove()
    assert calls == []  # refused before the model ran
