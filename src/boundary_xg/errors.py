"""Error classes of boundary_xg.

Every error raised at the API names the argument at fault and what was expected,
so a user can fix the call without reading our source. The classes also derive
from the built-in exception a Python user would catch (``ValueError`` for bad
values, ``TypeError`` for wrong kinds of objects), so existing ``except`` blocks
keep working.
"""

from __future__ import annotations

import contextlib
import contextvars
import os
import sys
import warnings
from typing import Any, Iterator, Optional


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


class ModelFileError(BoundaryXGError, ValueError):
    """A model or weights file cannot be loaded: of another format than its name says,
    unreadable, or weights that do not fit the model (the message says how to save it)."""


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


# --- warnings: once per call, attributed to the caller's line ------------------------------
#: files whose frames are skipped when a warning is attributed to a line: this package's own
#: and contextlib's (a session entered with ``with`` runs inside contextlib)
_INTERNAL = (os.path.dirname(os.path.abspath(__file__)) + os.sep, contextlib.__file__)

#: the warnings already given during the current outermost call (None: outside any call)
_GIVEN: "contextvars.ContextVar[Optional[set]]" = contextvars.ContextVar("boundary_xg_warned", default=None)


def _internal(filename: str) -> bool:
    return filename.startswith(_INTERNAL[0]) or filename == _INTERNAL[1]


def warn(message: str, category: type = UserWarning) -> None:
    """Warn about what the caller passed, once per call, at the caller's own line.

    The warning is attributed (``stacklevel``) to the first frame outside
    boundary_xg, so Python shows the user's line, not ours, and the default
    filter's once-per-location rule applies to the user's call site. Inside
    :func:`one_call` (every entry point opens one) the same category and message
    are given once, however many passes or sessions of the call meet the cause.
    """
    given = _GIVEN.get()
    if given is not None:
        key = (category, message)
        if key in given:
            return
        given.add(key)
    level, frame = 2, sys._getframe(1)
    while frame is not None and _internal(frame.f_code.co_filename):
        frame = frame.f_back
        level += 1
    warnings.warn(message, category, stacklevel=level)


@contextlib.contextmanager
def one_call() -> Iterator[None]:
    """Scope of one public call: inside it :func:`warn` gives each warning once.

    Nested scopes (an entry point calling another, ``compare`` calling
    ``attribute`` per method) share the outermost one.
    """
    if _GIVEN.get() is not None:
        yield
        return
    token = _GIVEN.set(set())
    try:
        yield
    finally:
        _GIVEN.reset(token)


def first_line(err: Any) -> str:
    """The first line of ``err``'s message (its type's name when empty): one-line errors."""
    text = str(err).strip()
    return text.splitlines()[0] if text else type(err).__name__


def first_sentence(err: BaseException, limit: int = 140) -> str:
    """The first sentence of the first line of ``err``'s message (its type's name when
    empty), at most ``limit`` characters: a cause quoted inside a one-line error."""
    first = first_line(err).strip()
    cut = first.find(". ")
    if 0 < cut:
        first = first[:cut]
    return first if len(first) <= limit else first[: limit - 3].rstrip() + "..."
