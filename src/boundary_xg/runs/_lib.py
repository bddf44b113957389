"""The package internals a dataset run needs, imported in this one place.

Everything else in :mod:`boundary_xg.runs` goes through the public API
(``attribute``, ``find_boundary``) and these few names, so a move of the front
end's helpers changes one file.
"""

from __future__ import annotations

from typing import Any, Dict

from .. import backends  # noqa: F401  (re-exported for the runs package)
from ..api import BA, attribute  # noqa: F401  (re-exported for the runs package)
from ..api import method_info as _method_info
from ..errors import BoundaryXGError, InputError, MethodError  # noqa: F401
from ..search import find_boundary  # noqa: F401
from ..search.pipeline import AlreadyMisclassifiedWarning, BoundaryNotFoundWarning  # noqa: F401
from ..viz.grid import predicted_labels  # noqa: F401


def method_info(name: str) -> Dict[str, Any]:
    """``{"short", "defaults", "gap", "boundary"}`` of a registered method (MethodError if unknown)."""
    info = _method_info(name)
    return {
        "short": info.short,
        "defaults": dict(info.defaults),
        "gap": info.supports_gap,
        "boundary": info.boundary,
    }


def package_version() -> str:
    from .._version import __version__

    return __version__
