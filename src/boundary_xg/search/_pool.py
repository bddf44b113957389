"""The row pool of the boundary search: a batch whose finished rows are refilled.

An attack is a sequence of *jobs* per example (a PGD run at one radius, a CW run
at one constant). The pool holds up to ``capacity`` running jobs, one per row of
every device tensor it carries, plus host arrays (the example of each row, its
step count). When jobs finish, their rows leave and waiting jobs (the next job of
any example, or a not-yet-started example) take their place, so the model keeps
seeing full batches while work remains instead of batches that shrink as
examples finish (compaction alone) and then wait for the slowest example.

Rows enter only at *boundaries* (every ``check`` steps of the pool's clock, or
when it is empty), so the rows' step counts stay aligned on multiples of
``check``: the host reads the flags of every row at once, every ``check``
steps, never per step.
"""

from __future__ import annotations

from typing import Any, Dict, Optional

import numpy as np

from ..backends import Backend


class Pool:
    """Running jobs: named device tensors ``(R, ...)`` and host arrays ``(R,)``, row for row.

    Args:
        B: the backend.
        index_like: an integer tensor on the model's device (the labels), the
            template of the row indices used to gather.
        capacity: the most rows run at once (>= 1).
        check: rows enter only when ``clock % check == 0`` (or the pool is empty).
    """

    def __init__(self, B: Backend, index_like: Any, capacity: int, check: int) -> None:
        self.B = B
        self.index_like = index_like
        self.capacity = max(1, int(capacity))
        self.check = max(1, int(check))
        self.dev: Dict[str, Any] = {}
        self.host: Dict[str, np.ndarray] = {}
        self.size = 0
        self.clock = 0  # steps since the pool was last empty

    def index(self, rows: np.ndarray) -> Any:
        """Row indices as a device tensor (to gather or scatter)."""
        return self.B.asarray(np.asarray(rows, dtype=np.int64), like=self.index_like)

    def free(self) -> int:
        """Rows that may enter now: the free capacity at a boundary, else 0."""
        if self.size and self.clock % self.check:
            return 0
        if not self.size:
            self.clock = 0
        return self.capacity - self.size

    def at_boundary(self) -> bool:
        """True when the clock is on a multiple of ``check`` (the flags are read then)."""
        return self.clock % self.check == 0

    def tick(self) -> None:
        """One step of every row: the clock and each row's ``t`` advance."""
        self.clock += 1
        self.host["t"] = self.host["t"] + 1

    def add(self, dev: Dict[str, Any], host: Dict[str, np.ndarray]) -> None:
        """Append rows (same keys as the rows already held; ``host`` needs no ``t``)."""
        m = len(next(iter(host.values())))
        host = dict(host, t=np.zeros(m, dtype=np.int64))
        if not self.size:
            self.dev, self.host = dict(dev), host
        else:
            B = self.B
            self.dev = {k: B.concat([v, dev[k]]) for k, v in self.dev.items()}
            self.host = {k: np.concatenate([v, host[k]]) for k, v in self.host.items()}
        self.size += m

    def rows(self, keys: Any, mask: np.ndarray, pos: Optional[Any] = None) -> list:
        """The rows where ``mask`` holds of the device tensors ``keys`` (a list, in order)."""
        if mask.all():
            return [self.dev[k] for k in keys]
        pos = self.index(np.nonzero(mask)[0]) if pos is None else pos
        return [self.B.gather(self.dev[k], pos) for k in keys]

    def keep(self, mask: np.ndarray) -> None:
        """Keep only the rows where ``mask`` holds (the others' jobs are over)."""
        if mask.all():
            return
        if not mask.any():
            self.dev, self.host, self.size = {}, {}, 0
            return
        pos = self.index(np.nonzero(mask)[0])
        self.dev = {k: self.B.gather(v, pos) for k, v in self.dev.items()}
        self.host = {k: v[mask] for k, v in self.host.items()}
        self.size = int(mask.sum())
