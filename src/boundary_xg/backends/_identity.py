"""What a backend is, before its framework is imported: name, module roots, aliases, extra.

Each backend folder (``backends/<framework>/__init__.py``) declares one
:class:`BackendIdentity` and registers it; detection walks the registered
identities in order and compares the module names of an object's classes with
their ``roots``. Nothing here imports a framework: a model of a framework can
only exist once that framework is imported, so reading ``type(obj).__mro__``
is enough.
"""

from __future__ import annotations

import importlib
import importlib.util
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, FrozenSet, List, Optional, Tuple

from ..errors import UnsupportedModelError


@dataclass(frozen=True)
class BackendIdentity:
    """One backend as detection and messages see it.

    Attributes:
        name: canonical name, the value of ``backend=`` and of ``B.name`` ("torch").
        framework: the import name whose presence makes the backend available.
        roots: top-level module names whose classes this backend owns (a model or
            tensor whose class, or a base class, lives under one of them).
        aliases: further accepted spellings of ``backend=`` ("pytorch", "tf.keras").
        extra: what to ``pip install`` when the framework is missing.
        image_layout: the layout of image batches its models usually take.
        module: the module holding ``BACKEND`` (imported on first use), or None
            when ``factory`` builds it.
        factory: builds the backend object (used instead of ``module``).
        capabilities: the named capabilities beyond the core protocol
            (see :data:`boundary_xg.backends.CAPABILITIES`).
        import_order: frameworks are imported in increasing order when several are
            needed in one process (torch before TensorFlow).
        before_import: called before the framework is first imported.
        import_context: a context manager entered around the framework's first import
            (TensorFlow: its start-up log lines silenced).
        check_model: called with a model this backend owns; raises
            :class:`~boundary_xg.errors.UnsupportedModelError` for owned but
            unsupported models (a Keras 3 model on a JAX backend).
        model_files: lower-case endings of the model files it loads (capability
            ``"model_files"``), so the command line picks the framework from a file
            name before importing any.
        model_file_kind: those files in words, for messages ("a .keras file").
        weight_files: lower-case endings of the weight files it loads into a model.
        weight_file_kind: those files in words, with how to save one.
        companions: further top-level modules its extra installs (torchvision), for
            the install hint of a missing module.
    """

    name: str
    framework: str
    roots: Tuple[str, ...]
    aliases: Tuple[str, ...] = ()
    extra: str = ""
    image_layout: str = "NCHW"
    module: Optional[str] = None
    factory: Optional[Callable[[], Any]] = None
    capabilities: FrozenSet[str] = field(default_factory=frozenset)
    import_order: int = 100
    before_import: Optional[Callable[[], None]] = None
    import_context: Optional[Callable[[], Any]] = None
    check_model: Optional[Callable[[Any], None]] = None
    model_files: Tuple[str, ...] = ()
    model_file_kind: str = ""
    weight_files: Tuple[str, ...] = ()
    weight_file_kind: str = ""
    companions: Tuple[str, ...] = ()

    def owns(self, obj: Any) -> bool:
        """True when ``obj``'s class (or a base class) comes from one of :attr:`roots`."""
        cls = obj if isinstance(obj, type) else type(obj)
        return any((k.__module__ or "").split(".")[0] in self.roots for k in cls.__mro__)

    def installed(self) -> bool:
        """True when the framework can be imported (checked without importing it)."""
        return installed(self.framework)

    def loads_file(self, path: str) -> bool:
        """True when ``path``'s name ends in one of :attr:`model_files`."""
        return bool(self.model_files) and str(path).lower().endswith(self.model_files)

    def spellings(self) -> Tuple[str, ...]:
        """The name and every alias, lower-case."""
        return (self.name.lower(),) + tuple(a.lower() for a in self.aliases)


_REGISTRY: Dict[str, BackendIdentity] = {}


def register_backend(identity: BackendIdentity) -> BackendIdentity:
    """Add (or replace) a backend; its name and aliases become valid ``backend=`` values.

    Raises:
        UnsupportedModelError: an alias is already another backend's spelling.
    """
    for other in _REGISTRY.values():
        if other.name != identity.name:
            clash = set(other.spellings()) & set(identity.spellings())
            if clash:
                raise UnsupportedModelError(
                    f"backend {identity.name!r}: the spellings {sorted(clash)} already name "
                    f"backend {other.name!r}.")
    _REGISTRY[identity.name] = identity
    _changed()
    return identity


def unregister_backend(name: str) -> None:
    """Remove a registered backend (tests register temporary ones)."""
    _REGISTRY.pop(name, None)
    _changed()


#: the registry's version (bumped by every change) and its identities in import order at that version:
#: every API call asks who owns its model and arrays, so the sorted list is kept, not re-sorted
_ORDERED: List[Any] = [0, None]


def _changed() -> None:
    _ORDERED[0] += 1
    _ORDERED[1] = None


def registry_version() -> int:
    """A number that changes whenever a backend is registered or removed (for caches)."""
    return _ORDERED[0]


def identities() -> List[BackendIdentity]:
    """Every registered backend, in import order."""
    ordered = _ORDERED[1]
    if ordered is None:
        ordered = _ORDERED[1] = tuple(sorted(_REGISTRY.values(), key=lambda i: (i.import_order, i.name)))
    return list(ordered)


def lookup_identity(name: Any) -> Optional[BackendIdentity]:
    """The backend spelled ``name`` (case-insensitive), or None."""
    key = str(name).lower()
    for ident in identities():
        if key in ident.spellings():
            return ident
    return None


def identity_for_file(path: str) -> Optional[BackendIdentity]:
    """The first registered backend (in import order) that loads model files named like ``path``, or None."""
    for ident in identities():
        if ident.loads_file(path):
            return ident
    return None


def providing(module: Optional[str]) -> Optional[BackendIdentity]:
    """The backend whose extra installs top-level module ``module`` (its framework, roots
    or companions), or None."""
    root = (module or "").split(".")[0]
    for ident in identities():
        if root and root in (ident.framework, *ident.roots, *ident.companions):
            return ident
    return None


def installed(module: str) -> bool:
    """True when ``module`` can be imported (without importing it)."""
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False
