"""Capability "datasets" of the torch backend: map-style and iterable Datasets, DataLoaders."""

from __future__ import annotations

from typing import Any, Iterator, Optional

from torch.utils.data import DataLoader, Dataset, IterableDataset, RandomSampler, SequentialSampler, Subset

from ...errors import InputError
from .._data import DataPlan


def _through_loader(dataset: Any, loader: Any):
    """``read_range`` that runs the user's loader settings (workers, collate) over a shard's indices only."""
    def read_range(start: int, stop: int) -> Iterator[Any]:
        sub = Subset(dataset, range(start, stop))
        return iter(DataLoader(sub, batch_size=loader.batch_size or 1, shuffle=False,
                               num_workers=loader.num_workers, collate_fn=loader.collate_fn,
                               pin_memory=False))
    return read_range


def plan(data: Any) -> Optional[DataPlan]:
    """The plan for a torch ``Dataset``, ``IterableDataset`` or ``DataLoader``; None for anything else.

    Raises:
        InputError: a shuffling DataLoader (a run keeps the dataset order).
    """
    if isinstance(data, DataLoader):
        if isinstance(data.sampler, RandomSampler):
            raise InputError("data is a DataLoader with shuffle=True; a run keeps the dataset order, "
                             "so pass shuffle=False (or the Dataset itself).")
        sequential = data.sampler is None or isinstance(data.sampler, SequentialSampler)
        if isinstance(data.dataset, IterableDataset) or data.batch_size is None or not sequential:
            return DataPlan("stream", "torch_dataloader", iterate=lambda: iter(data),
                            batched=data.batch_size is not None,
                            info={"class": type(data.dataset).__name__})
        return DataPlan("map", "torch_dataloader", dataset=data.dataset, length=len(data.dataset),
                        read_range=_through_loader(data.dataset, data) if data.num_workers else None,
                        info={"class": type(data.dataset).__name__})
    if isinstance(data, IterableDataset):
        return DataPlan("stream", "torch_iterable_dataset", iterate=lambda: iter(data),
                        info={"class": type(data).__name__})
    if isinstance(data, Dataset) or (hasattr(data, "__getitem__") and hasattr(data, "__len__")):
        return DataPlan("map", "torch_dataset", dataset=data, length=len(data),
                        info={"class": type(data).__name__})
    return None
