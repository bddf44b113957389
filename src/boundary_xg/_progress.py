"""Progress bars for long loops: on a terminal only, and only once the work has taken a second.

Methods that take many passes per input (IG's steps, SmoothGrad's and Expected
Gradients' samples) count their model rows here; a bar appears on stderr when
stderr is a terminal and the loop is still running after :data:`DELAY` seconds, so
short calls and notebooks, logs and pipes stay clean. ``tqdm`` draws it when
installed; otherwise one line is rewritten in place.

:data:`SHOW` switches bars on (True) or off (False) everywhere; None (default)
means "on a terminal".
"""

from __future__ import annotations

import sys
import time
from typing import Any, Optional

#: None: bars when stderr is a terminal; True / False: always / never
SHOW: Optional[bool] = None
#: seconds a loop runs before its bar appears
DELAY = 1.0


def enabled() -> bool:
    """Whether bars are drawn now (:data:`SHOW`, else whether stderr is a terminal)."""
    if SHOW is not None:
        return SHOW
    try:
        return sys.stderr.isatty()
    except (AttributeError, ValueError):
        return False


def bar(total: int, desc: str) -> Optional[Any]:
    """A bar over ``total`` model rows (forward+backward passes of one input), or None when off.

    The object has ``update(k)`` and ``close()``.
    """
    if total <= 0 or not enabled():
        return None
    try:
        from tqdm.auto import tqdm
    except ImportError:
        return _LineBar(total, desc)
    return tqdm(total=total, desc=desc, unit="pass", delay=DELAY, leave=False, dynamic_ncols=True)


class _LineBar:
    """A one-line bar on stderr for installs without tqdm (same ``update``/``close``)."""

    def __init__(self, total: int, desc: str):
        self.total, self.desc, self.done = total, desc, 0
        self.start = self.last = time.perf_counter()
        self.shown = False

    def update(self, k: int) -> None:
        self.done += k
        now = time.perf_counter()
        if now - self.start < DELAY or (now - self.last < 0.5 and self.done < self.total):
            return
        self.last = now
        rate = self.done / max(now - self.start, 1e-9)
        left = (self.total - self.done) / rate if rate > 0 else float("nan")
        sys.stderr.write(f"\r{self.desc}: {100 * self.done // self.total:3d}% "
                         f"({self.done}/{self.total} passes, ~{left:.0f} s left) ")
        sys.stderr.flush()
        self.shown = True

    def close(self) -> None:
        if self.shown:
            sys.stderr.write("\r" + " " * 72 + "\r")
            sys.stderr.flush()
