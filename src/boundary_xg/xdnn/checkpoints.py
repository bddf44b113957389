"""Loading the published PyTorch checkpoints of the X-DNN paper (and torchvision's weights).

The paper's checkpoints (``<arch>_model_best.pth.tar``) are dicts holding
``state_dict`` next to ``epoch``, ``arch``, ``best_acc1`` and ``optimizer``, saved
from DataParallel models: AlexNet/VGG16 wrapped only ``features`` (keys
``features.module.0.weight``), the X-models and Fixup-ResNets the whole model
(``module.features.0.weight``). Spec 3.4, 3.8. The key mapping is plain Python.
"""

from __future__ import annotations

import os
from typing import Any, Dict, Iterable, Mapping, Optional

from ..backends import backend_for, backends_with
from ..errors import InputError, UnsupportedModelError

#: the dict keys under which training scripts nest the weights
_NESTED = ("state_dict", "model_state_dict", "model")


def unwrap_state_dict(obj: Any) -> Mapping[str, Any]:
    """The weights inside a checkpoint: ``obj["state_dict"]`` (or similar) or ``obj`` itself."""
    for key in _NESTED:
        if isinstance(obj, Mapping) and isinstance(obj.get(key), Mapping):
            return obj[key]
    if not isinstance(obj, Mapping):
        raise InputError(f"checkpoint holds a {type(obj).__name__}; expected a state dict (a mapping).")
    return obj


def map_checkpoint_keys(
    state_dict: Mapping[str, Any],
    model_keys: Optional[Iterable[str]] = None,
    drop_bias: bool = False,
) -> Dict[str, Any]:
    """Rename checkpoint keys to the model's: remove every DataParallel ``module`` component.

    ``module.features.0.weight`` (the whole model wrapped: the X-models, the
    Fixup-ResNets) and ``features.module.0.weight`` (only ``features`` wrapped: the
    paper's AlexNet and VGG16) both become ``features.0.weight``. A key the model
    already has (given ``model_keys``) is kept as it is, so a model with a
    sub-module really named ``module`` still loads.

    Args:
        state_dict: the checkpoint's weights (after :func:`unwrap_state_dict`).
        model_keys: the model's state-dict keys; needed by ``drop_bias``.
        drop_bias: drop bias entries the model does not have (loading a regular
            checkpoint, e.g. torchvision's VGG16, into an X-model, as the paper's
            "pretrained" X-VGG16 does).

    Returns:
        A new dict with the mapped keys (values untouched).
    """
    keep = set(model_keys) if model_keys is not None else None
    out: Dict[str, Any] = {}
    for key, value in state_dict.items():
        new = str(key)
        if keep is None or new not in keep:
            new = ".".join(part for part in new.split(".") if part != "module")
        if drop_bias and keep is not None and new not in keep and "bias" in new.rsplit(".", 1)[-1]:
            continue
        out[new] = value
    return out


def load_checkpoint(model: Any, checkpoint: Any, *, strict: bool = True, drop_bias: bool = False) -> Any:
    """Load a PyTorch checkpoint of the X-DNN paper (or any state dict) into ``model``.

    Args:
        model: a ``torch.nn.Module``, e.g. ``x_vgg16()``.
        checkpoint: a path to a ``.pth``/``.pth.tar`` file, or an already loaded
            object (a state dict, or a dict nesting one under ``state_dict``).
        strict: every key must match (default True).
        drop_bias: skip bias entries the model lacks (regular weights into an
            X-model; the model then is a different function and needs fine-tuning).

    Returns:
        ``model``, with the weights loaded (in place).

    Raises:
        UnsupportedModelError: ``model`` is not a PyTorch model.
        InputError: the file does not exist, or keys do not match (the message
            lists the first missing and unexpected keys).
    """
    B = backend_for(model)
    if "state_dict_checkpoints" not in B.capabilities:
        raise UnsupportedModelError(
            f"load_checkpoint loads PyTorch state-dict checkpoints (backends: "
            f"{backends_with('state_dict_checkpoints')}); for a {B.name} model use the "
            "framework's own loader (Keras: model.load_weights()).")
    kernels = B.xdnn_kernels()

    if isinstance(checkpoint, (str, os.PathLike)):
        if not os.path.exists(checkpoint):
            raise InputError(f"checkpoint file {os.fspath(checkpoint)!r} does not exist.")
        checkpoint = kernels.read_checkpoint(checkpoint)
    model_keys = kernels.state_keys(model)
    state = map_checkpoint_keys(unwrap_state_dict(checkpoint), model_keys, drop_bias)
    missing = [k for k in model_keys if k not in state]
    unexpected = [k for k in state if k not in set(model_keys)]
    if strict and (missing or unexpected):
        hint = ""
        if any(k.rsplit(".", 1)[-1].startswith("bias") for k in unexpected):
            hint = (" The checkpoint has biases the model lacks: it is a regular model's; build the "
                    "regular architecture, or pass drop_bias=True to load it into the X-model.")
        raise InputError(
            f"checkpoint does not match the model: missing keys {missing[:5]}"
            f"{' ...' if len(missing) > 5 else ''}, unexpected keys {unexpected[:5]}"
            f"{' ...' if len(unexpected) > 5 else ''}.{hint}"
        )
    kernels.load_state(model, state, strict=strict)
    return model
