"""Backend discovery and selection. Imports no framework.

Selection order (DESIGN.md): an explicit ``backend=`` wins; else the framework is
read from the module names in the model's class hierarchy (a Keras 3 model
resolves through ``keras.config.backend()``); else from the input's type; else a
clear error naming the extra to install. Detection never imports a framework that
is not already imported: a model of a framework is only possible once that
framework has been imported.
"""

from __future__ import annotations

import contextlib
import importlib
import importlib.util
import os
import sys
from typing import Any, Dict, Iterator, Optional

from ..errors import BackendNotAvailableError, UnsupportedModelError
from ._protocol import Backend, as_written

__all__ = ["Backend", "as_written", "get_backend", "backend_for", "available_backends", "import_frameworks"]

# canonical name -> (module holding the backend, the framework's import name, pip extra)
_BACKENDS = {
    "torch": ("boundary_xg.backends.torch", "torch", "boundary_xg[torch]"),
    "tensorflow": ("boundary_xg.backends.tensorflow", "tensorflow", "boundary_xg[tensorflow]"),
}
_ALIASES = {
    "torch": "torch", "pytorch": "torch", "pt": "torch",
    "tensorflow": "tensorflow", "tf": "tensorflow", "tf.keras": "tensorflow",
    "keras": "tensorflow", "tf2": "tensorflow",
}
_instances: Dict[str, Backend] = {}


def _installed(name: str) -> bool:
    """True when ``name`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(name) is not None
    except (ImportError, ValueError):
        return False


def import_frameworks(names=("torch", "tensorflow")) -> None:
    """Import the named frameworks in the order that is safe in one process.

    torch (and torchvision) must be imported before tensorflow: importing
    torchvision after TensorFlow crashes the interpreter on some machines.
    Missing frameworks are skipped.
    """
    order = [n for n in ("torch", "tensorflow") if n in names]
    for n in order:
        if not _installed(n):
            continue
        if n == "tensorflow" and "tensorflow" not in sys.modules:
            if "torch" in sys.modules:
                _import_torch_lazy_parts()
            with tensorflow_logs_quiet():
                importlib.import_module(n)
            continue
        importlib.import_module(n)


@contextlib.contextmanager
def native_stderr_silenced() -> Iterator[None]:
    """Point file descriptor 2 at /dev/null for the block (Python exceptions still propagate)."""
    try:
        sys.stderr.flush()
        saved = os.dup(2)
        null = os.open(os.devnull, os.O_WRONLY)
    except (OSError, ValueError, AttributeError):  # no real fd 2 (e.g. some notebook kernels)
        yield
        return
    try:
        os.dup2(null, 2)
        yield
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        os.close(null)


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


def _import_torch_lazy_parts() -> None:
    """Import what torch would import lazily later, before TensorFlow is imported.

    torch imports ``torch._dynamo`` on first need (an error message on a meta
    tensor, ``torch.compile``); done after TensorFlow that import crashes the
    interpreter on some machines. torchvision imports it too, so it goes first
    when installed.
    """
    for name in ("torchvision", "torch._dynamo"):
        if name in sys.modules:
            return
        if _installed(name.split(".")[0]):
            importlib.import_module(name)
            return


def get_backend(name: str) -> Backend:
    """Return the backend called ``name`` ("torch", "pytorch", "tensorflow", "tf", "tf.keras").

    Raises:
        UnsupportedModelError: the name is not a known backend.
        BackendNotAvailableError: the framework is not installed.
    """
    key = _ALIASES.get(str(name).lower())
    if key is None:
        raise UnsupportedModelError(
            f"backend={name!r} is not a known backend; use one of "
            f"{sorted(set(_ALIASES))}."
        )
    if key not in _instances:
        module, framework, extra = _BACKENDS[key]
        if not _installed(framework):
            raise BackendNotAvailableError(
                f"backend {key!r} needs {framework}, which is not installed; "
                f"install it with: pip install '{extra}'"
            )
        if framework not in sys.modules:
            import_frameworks([framework])  # the safe order, and TensorFlow's start-up logs quiet
        _instances[key] = importlib.import_module(module).BACKEND
    return _instances[key]


def _framework_of_class(cls: type) -> Optional[str]:
    for klass in cls.__mro__:
        root = (klass.__module__ or "").split(".")[0]
        if root == "torch":
            return "torch"
        if root in ("keras", "tf_keras", "tensorflow"):
            return "keras" if root in ("keras", "tf_keras") else "tensorflow"
    return None


def backend_for(model: Any, x: Any = None, backend: Optional[str] = None) -> Backend:
    """Pick the backend for ``model`` (and ``x``), per the selection order above.

    Raises:
        UnsupportedModelError: the model belongs to no supported framework, or is
            a Keras 3 model on a Keras backend other than TensorFlow.
    """
    if backend is not None:
        return get_backend(backend)
    kind = _framework_of_class(type(model))
    if kind == "torch":
        return get_backend("torch")
    if kind == "keras":
        keras = sys.modules.get("keras")
        kb = None
        if keras is not None and hasattr(keras, "config") and hasattr(keras.config, "backend"):
            kb = keras.config.backend()
        if kb not in (None, "tensorflow"):
            raise UnsupportedModelError(
                f"model is a Keras model on the {kb!r} Keras backend; boundary_xg supports "
                "Keras on the 'tensorflow' backend (and PyTorch models). Set the environment "
                "variable KERAS_BACKEND=tensorflow before importing keras."
            )
        return get_backend("tensorflow")
    if kind == "tensorflow":
        return get_backend("tensorflow")
    if x is not None:
        xkind = _framework_of_class(type(x))
        if xkind == "torch" and callable(model):
            return get_backend("torch")
        if xkind in ("tensorflow", "keras") and callable(model):
            return get_backend("tensorflow")
    raise UnsupportedModelError(
        f"model of type {type(model).__module__}.{type(model).__qualname__} is neither a "
        "torch.nn.Module nor a Keras model. Install the framework you use with "
        "pip install 'boundary_xg[torch]' or pip install 'boundary_xg[tensorflow]', or pass "
        "backend='torch'/'tensorflow' for a plain callable."
    )


def available_backends() -> Dict[str, Optional[str]]:
    """Map each backend name to its framework's version, or None when not installed.

    Importing the framework is needed to read the version, so call this only when
    the answer is wanted (the ``boundary-xg backends`` command).
    """
    out: Dict[str, Optional[str]] = {}
    import_frameworks([n for n in ("torch", "tensorflow")])
    for key, (_, framework, _) in _BACKENDS.items():
        mod = sys.modules.get(framework)
        out[key] = getattr(mod, "__version__", None) if mod is not None else None
    return out
