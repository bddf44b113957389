"""Backend discovery and selection. Imports no framework.

Every framework is one folder, ``backends/<framework>/``, whose ``__init__`` declares
a :class:`BackendIdentity` (name, module roots, aliases, extra, image layout,
capabilities) and registers it. Selection: an explicit ``backend=`` wins; else the
first registered backend whose roots own the model's class (a Keras 3 model must
run on Keras' TensorFlow backend); else the one that owns the input's type; else
a clear error naming the extras to install. Detection never imports a framework
that is not already imported: a model of a framework can only exist once that
framework has been imported. Callers ask this module (``framework_of``,
``B.name``, ``B.image_layout``) and never compare framework names themselves.
"""

from __future__ import annotations

import contextlib
import importlib
import sys
import weakref
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..errors import BackendNotAvailableError, CapabilityError, UnsupportedModelError
from ._identity import (
    BackendIdentity,
    identities,
    installed,
    lookup_identity,
    register_backend,
    registry_version,
    unregister_backend,
)
from ._protocol import CAPABILITIES, Backend, as_written
from ._quiet import native_stderr_silenced
from . import torch as _torch_identity  # noqa: F401  (registers the backend; imports no torch)
from . import tensorflow as _tensorflow_identity  # noqa: F401  (likewise, no TensorFlow)

__all__ = [
    "Backend", "as_written", "native_stderr_silenced", "BackendIdentity", "CAPABILITIES", "get_backend",
    "backend_for", "available_backends", "import_frameworks", "framework_of", "names", "identity",
    "register_backend", "unregister_backend", "installed", "backends_with", "require", "foreign_tensor",
    "to_numpy", "forget_backend", "lookup_identity", "data_plan",
]

_instances: Dict[str, Backend] = {}


def names() -> List[str]:
    """The canonical names of the registered backends, in import order."""
    return [i.name for i in identities()]


def identity(name: Any) -> BackendIdentity:
    """The registered backend spelled ``name`` (name or alias, case-insensitive).

    Raises:
        UnsupportedModelError: no registered backend has that spelling.
    """
    ident = lookup_identity(name)
    if ident is None:
        spellings = sorted({s for i in identities() for s in i.spellings()})
        raise UnsupportedModelError(f"backend={name!r} is not a known backend; use one of {spellings}.")
    return ident


def backends_with(capability: str) -> List[str]:
    """The registered backends that declare ``capability``."""
    return [i.name for i in identities() if capability in i.capabilities]


def import_frameworks(names_: Optional[Iterable[str]] = None) -> None:
    """Import the named frameworks (default: every registered one) in the order that is safe.

    torch (and torchvision) must be imported before TensorFlow: importing
    torchvision after TensorFlow crashes the interpreter on some machines. Missing
    frameworks are skipped.
    """
    wanted = None if names_ is None else {identity(n).name for n in names_}
    for ident in identities():
        if wanted is not None and ident.name not in wanted:
            continue
        if not ident.installed():
            continue
        if ident.framework not in sys.modules:
            if ident.before_import is not None:
                ident.before_import()
            quiet = ident.import_context() if ident.import_context is not None else contextlib.nullcontext()
            with quiet:
                importlib.import_module(ident.framework)


def get_backend(name: str) -> Backend:
    """The backend called ``name`` (e.g. "torch", "pytorch", "tensorflow", "tf", "tf.keras").

    Raises:
        UnsupportedModelError: the name is not a registered backend.
        BackendNotAvailableError: its framework is not installed.
    """
    ident = identity(name)
    if ident.name not in _instances:
        if not ident.installed():
            raise BackendNotAvailableError(
                f"backend {ident.name!r} needs {ident.framework}, which is not installed; "
                f"install it with: pip install '{ident.extra}'"
            )
        import_frameworks([ident.name])
        if ident.factory is not None:
            inst = ident.factory()
        else:
            inst = importlib.import_module(ident.module).BACKEND
        _instances[ident.name] = inst
    return _instances[ident.name]


def forget_backend(name: str) -> None:
    """Drop the cached backend object of ``name`` (tests that register temporary backends)."""
    _instances.pop(name, None)


def framework_of(obj: Any) -> Optional[str]:
    """The name of the first registered backend whose module roots own ``obj``'s class, or None.

    Works for models and tensors alike and imports nothing.
    """
    cls = obj if isinstance(obj, type) else type(obj)
    version = registry_version()
    try:
        hit = _OWNERS.get(cls)
    except TypeError:  # a class that cannot be weakly referenced
        hit = None
    if hit is not None and hit[0] == version:
        return hit[1]
    owner = None
    idents = identities()
    # the most derived class decides: a Keras 3 layer on Keras' torch backend is
    # also a torch.nn.Module, but it is a Keras model first
    for klass in cls.__mro__:
        root = (klass.__module__ or "").split(".")[0]
        owner = next((ident.name for ident in idents if root in ident.roots), None)
        if owner is not None:
            break
    try:
        _OWNERS[cls] = (version, owner)
    except TypeError:
        pass
    return owner


#: class -> (registry version, owning backend or None): walking a Keras model's long MRO
#: against every backend's roots cost ~50 us on every call
_OWNERS: "weakref.WeakKeyDictionary[type, Tuple[int, Optional[str]]]" = weakref.WeakKeyDictionary()


def foreign_tensor(obj: Any, B: Backend) -> Optional[str]:
    """The backend owning ``obj`` when it is a tensor of another registered backend than ``B``, else None."""
    owner = framework_of(obj)
    return owner if owner is not None and owner != B.name and not B.is_tensor(obj) else None


def to_numpy(obj: Any) -> Any:
    """``obj`` as a NumPy array: a tensor of any registered backend through that backend, else ``np.asarray``.

    Imports no framework that is not loaded (a tensor exists only once its framework is).
    """
    import numpy as np

    owner = framework_of(obj)
    if owner is not None:
        B = get_backend(owner)
        if B.is_tensor(obj):
            return np.asarray(B.to_numpy(obj))
    return np.asarray(obj)


def data_plan(data: Any) -> Any:
    """How a dataset run reads ``data``: the owning backend's :class:`~._data.DataPlan`, or None.

    None for data of no registered backend (arrays, paths) and for backends without
    the ``"datasets"`` capability. Imports no framework that is not loaded.
    """
    owner = framework_of(data)
    if owner is None or "datasets" not in identity(owner).capabilities:
        return None
    return get_backend(owner).data_plan(data)


def backend_for(model: Any, x: Any = None, backend: Optional[str] = None) -> Backend:
    """Pick the backend for ``model`` (and ``x``), per the selection order above.

    Raises:
        UnsupportedModelError: the model belongs to no registered backend, or is
            a Keras 3 model on a Keras backend other than TensorFlow.
    """
    if backend is not None:
        return get_backend(backend)
    owner = framework_of(model)
    if owner is not None:
        ident = identity(owner)
        if ident.check_model is not None:
            ident.check_model(model)
        return get_backend(owner)
    if x is not None and callable(model):
        owner = framework_of(x)
        if owner is not None:
            return get_backend(owner)
    extras = " or ".join(f"pip install '{i.extra}'" for i in identities())
    raise UnsupportedModelError(
        f"model of type {type(model).__module__}.{type(model).__qualname__} belongs to no "
        f"supported framework ({', '.join(names())}). Install the framework you use with "
        f"{extras}, or pass backend=NAME for a plain callable on that framework's tensors."
    )


def require(B: Backend, capabilities: Iterable[str], method: str) -> None:
    """Raise a clear error when ``B`` lacks one of ``capabilities`` that ``method`` needs.

    Raises:
        CapabilityError: names the method, the missing capability and the registered
            backends that have it.
    """
    for cap in capabilities:
        if cap not in B.capabilities:
            having = backends_with(cap)
            raise CapabilityError(
                f"{method} needs the backend capability {cap!r} ({CAPABILITIES.get(cap, '')}), "
                f"which the {B.name!r} backend does not provide; backends that do: {having or 'none'}."
            )


def available_backends() -> Dict[str, Optional[str]]:
    """Map each backend name to its framework's version, or None when not installed.

    Importing the framework is needed to read the version, so call this only when
    the answer is wanted (the ``boundary-xg backends`` command).
    """
    import_frameworks()
    out: Dict[str, Optional[str]] = {}
    for ident in identities():
        mod = sys.modules.get(ident.framework)
        out[ident.name] = getattr(mod, "__version__", None) if mod is not None else None
    return out
