"""Framework-free helpers of the layer capability: layer names in error messages."""

from __future__ import annotations

from typing import Sequence

#: names listed in an error message at most
MAX_LISTED = 60


def listed_names(names: Sequence[str]) -> str:
    """``names`` for an error message: the first :data:`MAX_LISTED`, then how many more."""
    shown = ", ".join(repr(n) for n in names[:MAX_LISTED])
    more = len(names) - MAX_LISTED
    return shown + (f", ... ({more} more)" if more > 0 else "")
