"""Error classes of boundary_xg.

Every error raised at the API names the argument at fault and what was expected,
so a user can fix the call without reading our source. The classes also derive
from the built-in exception a Python user would catch (``ValueError`` for bad
values, ``TypeError`` for wrong kinds of objects), so existing ``except`` blocks
keep working.
"""

from __future__ import annotations


class BoundaryXGError(Exception):
    """Base class of every error raised by boundary_xg."""


class InputError(BoundaryXGError, ValueError):
    """An argument has the wrong shape, range or value (``x``, ``baseline``, an option)."""


class LabelError(InputError):
    """``labels`` do not fit the model's outputs: wrong length, out of range, bad one-hot."""


class MethodError(BoundaryXGError, ValueError):
    """An unknown method name or an option the method does not take."""


class UnsupportedModelError(BoundaryXGError, TypeError):
    """The model belongs to no supported framework, or to an unsupported Keras backend."""


class BackendNotAvailableError(BoundaryXGError, ImportError):
    """The framework a model or an explicit ``backend=`` needs is not installed."""
