"""Evaluation metrics of attributions, the same code for PyTorch and Keras 3 models.

Every metric is ``metrics.NAME(model, x, labels, attributions, **options)`` and
returns a :class:`MetricResult` (``.value``: one number; ``.per_example``;
``.curve`` where there is one)::

    import boundary_xg as bxg
    attr = bxg.attribute(model, x, y, method="IG")
    bxg.metrics.diffid(model, x, y, attr).value          # insertion - deletion (ICLR 2023)
    bxg.metrics.insertion(model, x, y, attr).curve       # RISE's curves (BMVC 2018)
    bxg.metrics.kpm(model, x, y, attr).value             # the X-DNN paper's keep/remove tests
    bxg.metrics.randomization_check(model, x, y, method="IG")  # computes its own attributions

All perturbed images of an example run as rows of large batches (``batch_size``)
on the model's device; results are NumPy. See ``docs/metrics.md`` for each
metric's definition, conventions and cost. ``__all__`` lists the metric
functions only (what ``explain_dataset(metrics=[...])`` can call).
:func:`kpm_family` (all six keep/remove tests in one stream, ``{test: result}``)
and :class:`MetricResult` are public too.
"""

from .curves import deletion, insertion
from .diffid import diffid
from .kpm import kam, knm, kpm, kpm_family, ram  # noqa: F401  (kpm_family: public, not a per-example metric)
from .randomization import randomization_check
from .results import MetricResult  # noqa: F401  (the result type: public, not in __all__)
from .scores import completeness, mean_absolute_relative_difference, sparseness
from .sensitivity import sensitivity_n

__all__ = [
    "diffid",
    "insertion",
    "deletion",
    "kpm",
    "knm",
    "kam",
    "ram",
    "sensitivity_n",
    "completeness",
    "sparseness",
    "mean_absolute_relative_difference",
    "randomization_check",
]
