"""Model files, weights, versions and devices through ``boundary_xg.frameworks`` (capability "model_files").

Oracles: the model that was saved (the loaded one computes the same logits), the
framework's own save functions, and files built to be wrong in a known way.
"""

from __future__ import annotations

import numpy as np
import pytest

from conftest import BACKENDS, build_cnn, needs_tf, needs_torch
import boundary_xg as bxg
from boundary_xg import frameworks

X = np.random.default_rng(0).uniform(size=(2, 3, 8, 8)).astype(np.float32)


def _x(fw: str) -> np.ndarray:
    return X if frameworks.image_layout(fw) == "NCHW" else np.ascontiguousarray(X.transpose(0, 2, 3, 1))


def _save_model(fw: str, model, path) -> str:
    """Save ``model`` the way each framework's users do."""
    if fw == "torch":
        import warnings

        import torch

        with warnings.catch_warnings():  # torch 2.10+ marks TorchScript deprecated
            warnings.simplefilter("ignore", FutureWarning)
            torch.jit.save(torch.jit.script(model), str(path / "m.pt"))
        return str(path / "m.pt")
    model.save(str(path / "m.keras"))
    return str(path / "m.keras")


def _save_weights(fw: str, model, path) -> str:
    if fw == "torch":
        import torch

        torch.save(model.state_dict(), str(path / "w.pt"))
        return str(path / "w.pt")
    model.save_weights(str(path / "w.weights.h5"))
    return str(path / "w.weights.h5")


@pytest.mark.parametrize("fw", BACKENDS)
def test_a_saved_model_loads_by_its_file_name_and_computes_the_same_logits(fw, tmp_path):
    from boundary_xg.demo_models import load_digit_model, load_digit_test_set

    model = load_digit_model(fw)
    x = load_digit_test_set(frameworks.image_layout(fw))[0][:4]
    path = _save_model(fw, model, tmp_path)
    assert frameworks.framework_for_file(path) == fw
    loaded, name = frameworks.load_model_file(path)
    assert name == fw
    np.testing.assert_allclose(bxg.predict(loaded, x), bxg.predict(model, x), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("fw", BACKENDS)
def test_weights_load_into_a_fresh_model(fw, tmp_path):
    trained, fresh = build_cnn(fw, seed=1)[0], build_cnn(fw, seed=2)[0]
    assert not np.allclose(bxg.predict(trained, _x(fw)), bxg.predict(fresh, _x(fw)))
    out = frameworks.load_weights(fresh, _save_weights(fw, trained, tmp_path))
    np.testing.assert_allclose(bxg.predict(out, _x(fw)), bxg.predict(trained, _x(fw)), rtol=1e-5, atol=1e-6)


@needs_torch
def test_torch_weights_files_that_do_not_fit_get_one_line_that_says_why(tmp_path):
    import torch

    model = build_cnn("torch", seed=0)[0]
    (tmp_path / "k.weights.h5").write_bytes(b"")
    with pytest.raises(bxg.ModelFileError, match="Keras weights file"):
        frameworks.load_weights(model, str(tmp_path / "k.weights.h5"))
    torch.save({"net": torch.nn.Linear(2, 2)}, str(tmp_path / "pickled.pt"))  # a module: pickled code
    with pytest.raises(bxg.ModelFileError, match="weights_only"):
        frameworks.load_weights(model, str(tmp_path / "pickled.pt"))
    other = {k: v for k, v in model.state_dict().items() if not k.endswith("bias")}
    torch.save(other, str(tmp_path / "partial.pt"))
    with pytest.raises(bxg.ModelFileError, match="missing"):
        frameworks.load_weights(model, str(tmp_path / "partial.pt"))
    (tmp_path / "junk.pt").write_bytes(b"not a zip")
    with pytest.raises(bxg.ModelFileError, match="TorchScript"):
        frameworks.load_model_file(str(tmp_path / "junk.pt"))


@needs_tf
def test_keras_files_that_do_not_fit_get_one_line_that_says_why(tmp_path):
    model = build_cnn("tensorflow", seed=0)[0]
    (tmp_path / "w.pt").write_bytes(b"")
    with pytest.raises(bxg.ModelFileError, match="not a Keras weights file"):
        frameworks.load_weights(model, str(tmp_path / "w.pt"))
    (tmp_path / "junk.keras").write_bytes(b"not a zip")
    with pytest.raises(bxg.ModelFileError, match="model.save"):
        frameworks.load_model_file(str(tmp_path / "junk.keras"))


def test_files_and_modules_are_attributed_to_frameworks_by_the_registry(tmp_path):
    assert frameworks.framework_for_file("a/b/model.KERAS") == "tensorflow"
    assert frameworks.framework_for_file("model.pth") == "torch"
    assert frameworks.framework_for_file("model.onnx") is None
    assert frameworks.framework_providing("torchvision.models").name == "torch"
    assert frameworks.framework_providing("keras.src.layers").name == "tensorflow"
    assert frameworks.framework_providing("numpy") is None
    with pytest.raises(bxg.InputError, match="no such file"):
        frameworks.load_model_file("model.onnx")
    with pytest.raises(bxg.UnsupportedModelError, match="no supported framework"):
        frameworks.load_weights(object(), "w.pt")
    (tmp_path / "model.onnx").write_bytes(b"")
    with pytest.raises(bxg.UnsupportedModelError, match="unsupported model file"):
        frameworks.load_model_file(str(tmp_path / "model.onnx"))


@pytest.mark.parametrize("fw", BACKENDS)
def test_versions_devices_and_placement(fw):
    report = frameworks.runtime_report(fw)
    assert isinstance(report["version"], str) and report["version"]
    assert report["devices"] and any("cpu" in d for d in report["devices"])
    model = build_cnn(fw, seed=0)[0]
    before = bxg.predict(model, _x(fw))
    frameworks.claim_device(fw, 0)  # on a machine without accelerators: nothing to do
    placed = frameworks.place_model(model, "cpu")
    np.testing.assert_array_equal(bxg.predict(placed, _x(fw)), before)


@needs_torch
def test_a_backend_without_the_capability_is_refused_by_name(tmp_path):
    from boundary_xg import backends
    from boundary_xg.backends.torch.backend import TorchBackend

    class NoFiles(TorchBackend):
        name = "torch_nofiles"
        capabilities = TorchBackend.capabilities - {"model_files"}

    backends.register_backend(backends.BackendIdentity(
        name="torch_nofiles", framework="torch", roots=(), extra="boundary_xg[torch]", factory=NoFiles,
        capabilities=NoFiles.capabilities, import_order=60, model_files=(".nofiles",)))
    (tmp_path / "m.nofiles").write_bytes(b"")
    try:
        with pytest.raises(bxg.CapabilityError, match="'model_files'.*backends that do: .*torch"):
            frameworks.load_model_file(str(tmp_path / "m.nofiles"))
    finally:
        backends.unregister_backend("torch_nofiles")
        backends.forget_backend("torch_nofiles")
