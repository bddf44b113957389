"""The processes of a run: one, or the ranks ``torchrun`` starts.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the ranks use the
process group of a backend with the ``"distributed"`` capability (PyTorch's
``torch.distributed``, which ``torchrun`` sets up) for two things only: to agree
at the start (same arguments, rank 0 has prepared the folder) and to wait for
each other at the end (so rank 0 writes the table and report once every shard is
there). The work itself needs no communication: shard ``k`` belongs to rank
``k % world_size``, and every rank reads and writes its own shards.
"""

from __future__ import annotations

import os
from typing import Any, List

from ._lib import backends


class Processes:
    """This process's rank among ``world`` processes, and the collectives of the run."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.rank = int(os.environ.get("RANK", "0") or 0)
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        self._group: Any = None

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def start(self, timeout_s: float) -> None:
        """Join the process group (through the first installed backend with the "distributed" capability)."""
        if not self.distributed:
            return
        having = [n for n in backends.backends_with("distributed") if backends.identity(n).installed()]
        if not having:
            raise RuntimeError(
                "WORLD_SIZE > 1 but no installed backend can join a process group; a multi-process "
                f"run needs one of {backends.backends_with('distributed')} "
                f"(pip install '{backends.identity(backends.backends_with('distributed')[0]).extra}').")
        self._group = backends.get_backend(having[0]).process_group(self.local_rank, timeout_s)
        self.rank, self.world = self._group.rank, self._group.world

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        return obj if self._group is None else self._group.broadcast(obj)

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank (also a barrier)."""
        return [obj] if self._group is None else self._group.gather(obj)

    def close(self) -> None:
        """Leave the process group if this run started it."""
        if self._group is not None:
            self._group.close()
        self._group = None
