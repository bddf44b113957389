"""PyTorch model files, weights and devices for the command line.

Model files are TorchScript (``torch.jit.load``: no pickle); weights are state
dicts read with ``torch.load(weights_only=True)`` (tensors and plain containers,
never pickled code). Every failure is a :class:`~boundary_xg.errors.ModelFileError`
whose first line says how to save the file so that it loads.
"""

from __future__ import annotations

import pickle
import warnings
from typing import Any, Dict, List

import torch

from ...errors import ModelFileError, first_sentence

_KERAS_WEIGHTS = (".h5", ".hdf5")


def load_model_file(path: str) -> Any:
    """The TorchScript model in ``path``, on the CPU, in eval mode."""
    try:
        with warnings.catch_warnings():
            # torch 2.10+ marks TorchScript deprecated; it is still the format that loads without pickle
            warnings.simplefilter("ignore", FutureWarning)
            return torch.jit.load(path, map_location="cpu").eval()
    except Exception as err:
        raise ModelFileError(
            f"{path!r} is not a TorchScript file ({first_sentence(err)}); save the model with "
            "torch.jit.save(torch.jit.script(model), 'model.pt'), or for a state dict pass "
            "--model module:callable --weights FILE."
        ) from err


def load_weights(model: Any, path: str) -> Any:
    """``model`` with the state dict in ``path`` loaded (a checkpoint dict holding
    ``"state_dict"`` is unwrapped), in eval mode."""
    if path.lower().endswith(_KERAS_WEIGHTS):
        raise ModelFileError(f"--weights {path!r} is a Keras weights file but the model is a PyTorch "
                             "module; pass a state dict saved with torch.save(model.state_dict(), FILE).")
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # e.g. torch's note on the pickle protocol
            state = torch.load(path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ModelFileError(
            f"{path!r} is not a plain state dict: it holds pickled objects, which are never loaded "
            "(weights_only=True); save it with torch.save(model.state_dict(), FILE)."
        ) from err
    except Exception as err:
        raise ModelFileError(f"could not read state dict {path!r} ({first_sentence(err)}); save it with "
                             "torch.save(model.state_dict(), FILE).") from err
    if isinstance(state, dict) and isinstance(state.get("state_dict"), dict):
        state = state["state_dict"]
    try:
        model.load_state_dict(state)
    except Exception as err:
        why = state_dict_mismatch(model, state) or first_sentence(err)
        raise ModelFileError(f"the state dict {path!r} does not fit the model ({why}); check that the "
                             "callable builds the same architecture.") from err
    return model.eval()


def state_dict_mismatch(model: Any, state: Any) -> str:
    """The keys that differ between ``model``'s state dict and ``state``, in one short line."""
    if not isinstance(state, dict):
        return f"it is a {type(state).__name__}, not a dict of tensors"
    own = model.state_dict()
    missing = [k for k in own if k not in state]
    unexpected = [k for k in state if k not in own]
    shapes = [f"{k} {tuple(state[k].shape)} vs {tuple(own[k].shape)}" for k in own
              if k in state and hasattr(state[k], "shape") and tuple(state[k].shape) != tuple(own[k].shape)]

    def some(keys: List[str]) -> str:
        more = f" and {len(keys) - 4} more" if len(keys) > 4 else ""
        return ", ".join(keys[:4]) + more

    parts = []
    if missing:
        parts.append(f"{len(missing)} missing: {some(missing)}")
    if unexpected:
        parts.append(f"{len(unexpected)} unexpected: {some(unexpected)}")
    if shapes:
        parts.append(f"{len(shapes)} of another shape: {some(shapes)}")
    return "; ".join(parts)


def runtime_report() -> Dict[str, Any]:
    """torch's version and devices: the CPU, every CUDA device by name, MPS when available."""
    devices = ["cpu"] + [f"cuda:{i} ({torch.cuda.get_device_name(i)})" for i in range(torch.cuda.device_count())]
    mps = getattr(torch.backends, "mps", None)
    if mps is not None and mps.is_available():
        devices.append("mps")
    return {"version": torch.__version__, "devices": devices}


def place_model(model: Any, device: str = "auto", local_rank: int = 0) -> Any:
    """``model`` moved to ``device``; ``"auto"`` is ``cuda:<local_rank>`` when CUDA is
    available, else the CPU. Plain callables (no ``.to``) are returned as they are."""
    if device == "auto":
        device = f"cuda:{local_rank}" if torch.cuda.is_available() else "cpu"
    return model.to(device) if hasattr(model, "to") else model
