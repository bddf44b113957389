"""The TensorFlow 2 / Keras 3 backend: Keras models (and TF callables), NHWC images.

This file imports no framework: it declares the backend's identity for detection.
The primitives live in ``backend.py``, DeepLIFT's Rescale kernel in ``rescale.py``,
layer capture in ``layers.py``, the X-DNN scans and builders in ``xdnn.py``, model files
and devices for the command line in ``model_files.py``.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from typing import Any, Iterator

from ...errors import UnsupportedModelError
from .._identity import BackendIdentity, register_backend
from .._quiet import native_stderr_silenced


def _torch_lazy_parts_first() -> None:
    """Import what torch would import lazily later, before TensorFlow is imported.

    torch imports ``torch._dynamo`` on first need (an error message on a meta
    tensor, ``torch.compile``); done after TensorFlow that import crashes the
    interpreter on some machines. torchvision imports it too, so it goes first
    when installed.
    """
    if "tensorflow" in sys.modules or "torch" not in sys.modules:
        return
    for name in ("torchvision", "torch._dynamo"):
        if name in sys.modules:
            return
        try:
            found = importlib.util.find_spec(name.split(".")[0]) is not None
        except (ImportError, ValueError):
            found = False
        if found:
            importlib.import_module(name)
            return


@contextlib.contextmanager
def tensorflow_logs_quiet() -> Iterator[None]:
    """TensorFlow's start-up log lines silenced while boundary_xg imports it.

    Importing TensorFlow prints C++ log lines ("oneDNN custom operations are on",
    CPU feature notes) straight to file descriptor 2, some of them before its
    logging reads ``TF_CPP_MIN_LOG_LEVEL``. When the user has not set that
    variable, boundary_xg sets it to 2 for the import and silences descriptor 2
    meanwhile; a user who set it (to 0, say, to debug an install) sees everything.
    """
    if "TF_CPP_MIN_LOG_LEVEL" in os.environ:
        yield
        return
    os.environ["TF_CPP_MIN_LOG_LEVEL"] = "2"
    try:
        with native_stderr_silenced():
            yield
    finally:
        os.environ.pop("TF_CPP_MIN_LOG_LEVEL", None)


def _keras_on_tensorflow(model: Any) -> None:
    """Refuse a Keras 3 model on another Keras backend (JAX, torch): it has no TF graph."""
    keras = sys.modules.get("keras")
    if keras is None or not any((k.__module__ or "").split(".")[0] in ("keras", "tf_keras")
                                for k in type(model).__mro__):
        return
    kb = keras.config.backend() if hasattr(keras, "config") and hasattr(keras.config, "backend") else None
    if kb not in (None, "tensorflow"):
        raise UnsupportedModelError(
            f"model is a Keras model on the {kb!r} Keras backend; boundary_xg supports "
            "Keras on the 'tensorflow' backend (and PyTorch models). Set the environment "
            "variable KERAS_BACKEND=tensorflow before importing keras."
        )


IDENTITY = register_backend(BackendIdentity(
    name="tensorflow",
    framework="tensorflow",
    roots=("tensorflow", "keras", "tf_keras"),
    aliases=("tf", "tf.keras", "keras", "tf2"),
    extra="boundary_xg[tensorflow]",
    image_layout="NHWC",
    module="boundary_xg.backends.tensorflow.backend",
    capabilities=frozenset({"deeplift", "layers", "xdnn", "datasets", "model_files"}),
    import_order=10,
    model_files=(".keras",),
    model_file_kind="a .keras file",
    weight_files=(".weights.h5", ".h5", ".hdf5"),
    weight_file_kind="Keras weights (.weights.h5, saved with model.save_weights(FILE))",
    before_import=_torch_lazy_parts_first,
    import_context=tensorflow_logs_quiet,
    check_model=_keras_on_tensorflow,
))
