"""Capability "datasets" of the TensorFlow backend: ``tf.data.Dataset`` pipelines."""

from __future__ import annotations

from typing import Any, Optional

from .._data import DataPlan


def _batched(ds: Any) -> bool:
    spec = ds.element_spec
    first = spec[0] if isinstance(spec, (tuple, list)) else (
        next(iter(spec.values())) if isinstance(spec, dict) else spec)
    shape = getattr(first, "shape", None)
    return shape is not None and len(shape) > 0 and shape[0] is None


def plan(data: Any) -> Optional[DataPlan]:
    """The plan for a ``tf.data.Dataset`` (read in order); None for anything else."""
    if not hasattr(data, "as_numpy_iterator"):
        return None
    n = int(data.cardinality())
    batched = _batched(data)
    return DataPlan("stream", "tf_data", iterate=lambda: data.as_numpy_iterator(),
                    length=n if (n >= 0 and not batched) else None, batched=batched,
                    info={"element_spec": str(data.element_spec)})
