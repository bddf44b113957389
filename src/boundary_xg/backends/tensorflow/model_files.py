"""Keras model files, weights and devices for the command line.

Model files are ``.keras`` archives loaded with ``safe_mode=True`` (no arbitrary
code: no Lambda layers); weights are ``.weights.h5`` files. Every failure is a
:class:`~boundary_xg.errors.ModelFileError` whose first line says how to save the
file so that it loads.
"""

from __future__ import annotations

from typing import Any, Dict

import keras
import tensorflow as tf

from ...errors import ModelFileError, first_sentence

_WEIGHTS = (".h5", ".hdf5")


def load_model_file(path: str) -> Any:
    """The Keras model in the ``.keras`` file ``path`` (not compiled)."""
    try:
        return keras.saving.load_model(path, safe_mode=True, compile=False)
    except Exception as err:
        raise ModelFileError(
            f"could not load Keras model {path!r} ({first_sentence(err)}); save it with "
            "model.save('model.keras'); custom layers must be registered with "
            "keras.saving.register_keras_serializable (no Lambda layers: safe_mode)."
        ) from err


def load_weights(model: Any, path: str) -> Any:
    """``model`` with the Keras weights file ``path`` (``model.save_weights``) loaded."""
    if not path.lower().endswith(_WEIGHTS):
        raise ModelFileError(f"--weights {path!r} is not a Keras weights file but the model is a Keras "
                             "model; pass weights saved with model.save_weights('model.weights.h5').")
    try:
        model.load_weights(path)
    except Exception as err:
        raise ModelFileError(f"could not load Keras weights {path!r} ({first_sentence(err)}); save them with "
                             "model.save_weights('model.weights.h5').") from err
    return model


def runtime_report() -> Dict[str, Any]:
    """TensorFlow's and Keras' versions, Keras' backend, and the physical devices."""
    devices = [d.name.replace("/physical_device:", "").lower() for d in tf.config.list_physical_devices()]
    version = f"{tf.__version__} (keras {keras.__version__}, backend {keras.config.backend()})"
    return {"version": version, "devices": devices}


def claim_device(local_rank: int) -> None:
    """Let this process see only GPU ``local_rank`` (modulo the count), before TensorFlow
    uses any: under a launcher each process explains its shards on its own GPU."""
    gpus = tf.config.list_physical_devices("GPU")
    if gpus:
        tf.config.set_visible_devices(gpus[local_rank % len(gpus)], "GPU")
