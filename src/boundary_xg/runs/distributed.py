"""The processes of a run: one, or the ranks ``torchrun`` starts.

Under ``torchrun`` (``WORLD_SIZE`` > 1 in the environment) the ranks use
``torch.distributed`` for two things only: to agree at the start (same
arguments, rank 0 has prepared the folder) and to wait for each other at the
end (so rank 0 writes the table and report once every shard is there). Gloo
serves CPU runs, NCCL GPU runs; a process group the user already started is
used as it is. The work itself needs no communication: shard ``k`` belongs to
rank ``k % world_size``, and every rank reads and writes its own shards.
"""

from __future__ import annotations

import datetime
import os
from typing import Any, List, Optional


class Processes:
    """This process's rank among ``world`` processes, and the collectives of the run."""

    def __init__(self) -> None:
        self.world = int(os.environ.get("WORLD_SIZE", "1") or 1)
        self.rank = int(os.environ.get("RANK", "0") or 0)
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0") or 0)
        self._dist: Any = None
        self._created = False
        self._device: Any = None

    @property
    def distributed(self) -> bool:
        return self.world > 1

    def start(self, timeout_s: float) -> None:
        """Join the process group (start it with gloo or NCCL unless the user did)."""
        if not self.distributed:
            return
        try:
            import torch
            import torch.distributed as dist
        except ImportError as err:  # pragma: no cover - torchrun implies torch
            raise RuntimeError("WORLD_SIZE > 1 but torch.distributed is not available; a multi-process "
                               "run needs PyTorch (pip install 'boundary_xg[torch]').") from err
        self._dist = dist
        if not dist.is_initialized():
            use_nccl = torch.cuda.is_available() and dist.is_nccl_available()
            if use_nccl:
                torch.cuda.set_device(self.local_rank)
            dist.init_process_group("nccl" if use_nccl else "gloo",
                                    timeout=datetime.timedelta(seconds=timeout_s))
            self._created = True
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if dist.get_backend() == "nccl":
            self._device = torch.device("cuda", torch.cuda.current_device())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        if not self.distributed:
            return obj
        box = [obj]
        self._dist.broadcast_object_list(box, src=0, device=self._device)
        return box[0]

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank (also a barrier)."""
        if not self.distributed:
            return [obj]
        out: List[Optional[Any]] = [None] * self.world
        self._dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Leave the process group if this run started it."""
        if self._created and self._dist is not None and self._dist.is_initialized():
            self._dist.destroy_process_group()
        self._created = False
