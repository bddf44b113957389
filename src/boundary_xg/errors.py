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


class ModelError(MethodError, InputError):
    """The model's structure rules the method out (TorchScript or a softmax layer for DeepLIFT).

    A :class:`MethodError` (the method cannot run on this model) and an
    :class:`InputError` (the fault is in the ``model`` argument), so either
    ``except`` catches it."""


class CapabilityError(BoundaryXGError, TypeError):
    """The backend lacks a capability the method needs (named in the message, with the backends that have it)."""


# --- warnings: all here so that users can filter them without importing a framework ---
class SoftmaxOutputWarning(UserWarning):
    """The model ends in a softmax; the pre-softmax logit is explained instead."""


class ProbabilityOutputWarning(UserWarning):
    """The model's outputs look like probabilities, which are explained as given."""


class NonHomogeneousWarning(UserWarning):
    """The model is not nonnegatively homogeneous: X-Gradient is Input x Gradient, not IG."""


class BoundaryNotFoundWarning(UserWarning):
    """Some examples could not be moved across the decision boundary."""


class AlreadyMisclassifiedWarning(UserWarning):
    """Some examples are already classified differently from their labels."""
