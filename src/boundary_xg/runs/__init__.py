"""Whole-dataset runs: explain and evaluate a dataset into a resumable run folder.

``explain_dataset(model, data, methods=[...], metrics=[...], out=DIR)`` streams the
data in shards, writes attributions, per-example numbers, ``run.json`` and an HTML
report as it goes (atomically; a killed run resumes), on one process or on the
ranks of ``torchrun``; ``load_run(DIR)`` reads a run back. See ``docs/datasets.md``.
"""

from .explain import explain_dataset
from .folder import RunConflictError, RunFailedError
from .load import Run, ShardedArray, load_run
from .metrics_adapter import resolve as resolve_metric

__all__ = ["explain_dataset", "load_run", "Run", "ShardedArray", "RunConflictError", "RunFailedError",
           "resolve_metric"]
