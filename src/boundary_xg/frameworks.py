"""The frameworks as the front end sees them: which exist, which is installed, which owns a
model or loads a model file, their versions and devices.

Framework-free: every answer comes from the registered backends
(``boundary_xg.backends``), so the command line, the demo and users ask here
instead of naming a framework. Nothing here imports a framework unless the
answer needs it (loading a file, reading a version).
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Dict, Iterable, List, Optional, Tuple

from .backends import get_backend, identity, lookup_identity, require
from .backends import framework_of as _owner
from .backends import import_frameworks as _import_frameworks
from .backends._identity import identities, identity_for_file, providing
from .errors import InputError, UnsupportedModelError

__all__ = [
    "FrameworkInfo", "frameworks", "framework_info", "available_frameworks", "use_framework",
    "import_frameworks", "image_layout", "framework_of", "framework_for_file", "framework_providing",
    "load_model_file", "load_weights", "runtime_report", "claim_device", "place_model",
]


@dataclass(frozen=True)
class FrameworkInfo:
    """One framework, read-only.

    Attributes:
        name: the canonical ``backend=`` value ("torch").
        module: its import name.
        extra: what to ``pip install`` for it ("boundary_xg[torch]").
        image_layout: the layout of image batches its models usually take ("NCHW").
        model_files: lower-case endings of the model files it loads (may be empty).
        model_file_kind: those files in words ("a TorchScript file (.pt)").
        weight_files: lower-case endings of the weight files it loads into a model.
        weight_file_kind: those files in words, with how to save one.
        installed: whether it can be imported (checked without importing it).
    """

    name: str
    module: str
    extra: str
    image_layout: str
    model_files: Tuple[str, ...]
    model_file_kind: str
    weight_files: Tuple[str, ...]
    weight_file_kind: str
    installed: bool


def _info(ident: Any) -> FrameworkInfo:
    files = "model_files" in ident.capabilities
    return FrameworkInfo(ident.name, ident.framework, ident.extra, ident.image_layout,
                         tuple(ident.model_files) if files else (), ident.model_file_kind,
                         tuple(ident.weight_files) if files else (), ident.weight_file_kind,
                         ident.installed())


def frameworks() -> List[FrameworkInfo]:
    """Every registered framework, in the order they are imported in one process."""
    return [_info(i) for i in identities()]


def framework_info(name: str) -> FrameworkInfo:
    """The framework spelled ``name`` (``"torch"``, ``"pytorch"``, ``"tf"``, ``"keras"``...).

    Raises:
        UnsupportedModelError: an unknown name (the message lists the known ones).
    """
    return _info(identity(name))


def available_frameworks() -> Dict[str, bool]:
    """``{backend name: installed}`` for every registered backend (``{"torch": True,
    "tensorflow": True}``), without importing any framework."""
    return {f.name: f.installed for f in frameworks()}


def use_framework(name: str) -> str:
    """Check a framework name and that it is installed, import it, and return its canonical name.

    Args:
        name: ``"torch"``/``"pytorch"``/``"pt"`` or ``"tensorflow"``/``"tf"``/``"keras"``
            (the names ``backend=`` takes).

    Returns:
        ``"torch"`` or ``"tensorflow"``. The framework is imported in the order
        that is safe in one process (see :func:`import_frameworks`).

    Raises:
        UnsupportedModelError: an unknown name (the message lists the known ones).
        BackendNotAvailableError: the framework is not installed (the message
            names the extra to install).
    """
    ident = lookup_identity(name)
    if ident is None or not ident.installed():
        get_backend(name)  # raises the error that names the fix
    _import_frameworks([ident.name])
    get_backend(ident.name)
    return ident.name


def image_layout(framework: str) -> str:
    """The image layout (``"NCHW"`` or ``"NHWC"``) the models of ``framework`` usually take.

    Raises:
        UnsupportedModelError: an unknown framework name (the message lists the known ones).
    """
    return identity(framework).image_layout


def import_frameworks(names: Optional[Iterable[str]] = None) -> None:
    """Import the named installed frameworks (default: every registered one) in the order
    that is safe in one process.

    torch (with torchvision and the parts torch imports lazily) before
    TensorFlow: importing them after TensorFlow crashes the interpreter on some
    machines. Frameworks that are not installed are skipped.
    """
    _import_frameworks(names)


def framework_of(model: Any) -> Optional[str]:
    """The name of the framework that owns ``model``'s class (user subclasses included), or
    None for an object of no registered framework. Imports nothing."""
    return _owner(model)


def framework_for_file(path: str) -> Optional[str]:
    """The framework that loads model files named like ``path`` (by its ending), or None."""
    ident = identity_for_file(path)
    return None if ident is None else ident.name


def framework_providing(module: Optional[str]) -> Optional[FrameworkInfo]:
    """The framework whose extra installs the top-level module of ``module``
    (``"torchvision"`` -> torch, ``"keras.src"`` -> tensorflow), or None."""
    ident = providing(module)
    return None if ident is None else _info(ident)


def load_model_file(path: str) -> Tuple[Any, str]:
    """Load the model file ``path`` with the framework that reads its kind of file.

    Returns:
        ``(model, framework)``, the model in inference mode (TorchScript on the CPU;
        a ``.keras`` file loaded with ``safe_mode=True``, not compiled).

    Raises:
        InputError: ``path`` is not an existing file.
        UnsupportedModelError: no framework loads files named like ``path``.
        BackendNotAvailableError: the framework is not installed.
        ModelFileError: the file is not what its name says (the message says how to save it).
    """
    _check_file(path, "path")
    name = framework_for_file(path)
    if name is None:
        kinds = ", ".join(f.model_file_kind for f in frameworks() if f.model_files)
        raise UnsupportedModelError(f"unsupported model file {path!r}; use {kinds}.")
    B = get_backend(name)
    require(B, ["model_files"], "loading a model file")
    return B.model_files().load_model_file(path), name


def load_weights(model: Any, path: str) -> Any:
    """``model`` with the weights in ``path`` loaded, in the format of ``model``'s framework
    (a PyTorch state dict read with ``weights_only=True``; Keras ``.weights.h5``).

    Raises:
        UnsupportedModelError: ``model`` belongs to no registered framework.
        InputError: ``path`` is not an existing file.
        CapabilityError: its framework loads no weight files.
        ModelFileError: a file of another format, or weights that do not fit ``model``.
    """
    name = _owned(model)
    _check_file(path, "path")
    B = get_backend(name)
    require(B, ["model_files"], "loading weights")
    return B.model_files().load_weights(model, path)


def runtime_report(framework: str) -> Dict[str, Any]:
    """``{"version": str, "devices": [str, ...]}`` of an installed framework (imports it)."""
    return get_backend(framework).runtime_report()


def claim_device(framework: str, local_rank: int) -> None:
    """In a process started by a launcher (``torchrun``), before its model is built: keep the
    process on accelerator ``local_rank`` where the framework needs telling (TensorFlow)."""
    get_backend(framework).claim_device(local_rank)


def place_model(model: Any, device: str = "auto", local_rank: int = 0) -> Any:
    """``model`` on ``device``: ``"auto"`` is accelerator ``local_rank`` when there is one (torch:
    ``cuda:<local_rank>``), else the CPU; frameworks that place work by themselves keep it as it is.

    Raises:
        UnsupportedModelError: ``model`` belongs to no registered framework.
    """
    return get_backend(_owned(model)).place_model(model, device, local_rank)


def _check_file(path: Any, arg: str) -> None:
    if not isinstance(path, (str, os.PathLike)):
        raise InputError(f"{arg}={path!r}: expected a file path (str or os.PathLike).")
    if not os.path.isfile(path):
        raise InputError(f"{arg}={str(path)!r}: no such file.")


def _owned(model: Any) -> str:
    name = _owner(model)
    if name is None:
        raise UnsupportedModelError(
            f"model of type {type(model).__module__}.{type(model).__qualname__} belongs to no supported "
            f"framework ({', '.join(f.name for f in frameworks())}).")
    return name

