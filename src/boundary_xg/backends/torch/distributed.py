"""Capability "distributed" of the torch backend: the process group of a ``torchrun`` run.

Gloo serves CPU runs, NCCL GPU runs; a process group the user already started is
used as it is. Used only to agree at the start and to wait at the end.
"""

from __future__ import annotations

import datetime
from typing import Any, List, Optional

import torch
import torch.distributed as dist


class ProcessGroup:
    """This process in the ``torch.distributed`` group: ``rank``, ``world`` and two collectives."""

    def __init__(self, local_rank: int, timeout_s: float) -> None:
        self._created = False
        self._device: Any = None
        if not dist.is_initialized():
            use_nccl = torch.cuda.is_available() and dist.is_nccl_available()
            if use_nccl:
                torch.cuda.set_device(local_rank)
            dist.init_process_group("nccl" if use_nccl else "gloo",
                                    timeout=datetime.timedelta(seconds=timeout_s))
            self._created = True
        self.rank, self.world = dist.get_rank(), dist.get_world_size()
        if dist.get_backend() == "nccl":
            # NCCL moves objects through device tensors
            self._device = torch.device("cuda", torch.cuda.current_device())

    def broadcast(self, obj: Any) -> Any:
        """Rank 0's ``obj`` on every rank."""
        box = [obj]
        dist.broadcast_object_list(box, src=0, device=self._device)
        return box[0]

    def gather(self, obj: Any) -> List[Any]:
        """Every rank's ``obj``, in rank order, on every rank (also a barrier)."""
        out: List[Optional[Any]] = [None] * self.world
        dist.all_gather_object(out, obj)
        return out

    def close(self) -> None:
        """Leave the process group if this object started it."""
        if self._created and dist.is_initialized():
            dist.destroy_process_group()
        self._created = False
