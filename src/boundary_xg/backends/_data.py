"""How a framework's dataset objects are read by a dataset run, in framework-free terms.

A backend with the ``"datasets"`` capability has a ``data`` module whose
``plan(data)`` returns a :class:`DataPlan` for the dataset objects of its
framework (or None); ``boundary_xg.runs`` turns the plan into a reader. The
module is imported only for an object of that framework, which therefore is
already imported.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, Iterator, Optional


@dataclass
class DataPlan:
    """One dataset object as a run reads it.

    Attributes:
        kind: ``"map"`` (``len(dataset)`` and ``dataset[i]``: shards are read by seeking)
            or ``"stream"`` (read through in order).
        name: what the run records as the data's kind (``"torch_dataloader"``, ``"tf_data"``).
        dataset: for ``"map"``: the indexable dataset.
        read_range: for ``"map"``: optional ``read_range(start, stop)`` yielding the
            batches of examples ``start..stop`` through the user's loader (its workers
            and collate function); None reads ``dataset[i]`` one by one.
        iterate: for ``"stream"``: a fresh iterator over the data, from the start.
        length: examples, when known without reading.
        batched: the stream yields batches, not single examples.
        info: what identifies the data in ``run.json``.
    """

    kind: str
    name: str
    dataset: Any = None
    read_range: Optional[Callable[[int, int], Iterable[Any]]] = None
    iterate: Optional[Callable[[], Iterator[Any]]] = None
    length: Optional[int] = None
    batched: bool = False
    info: Dict[str, Any] = field(default_factory=dict)
