"""boundary_xg: attributions for PyTorch and TensorFlow/Keras 3 image classifiers.

One front end for both frameworks::

    import boundary_xg as bxg
    attr = bxg.BA("IG", steps=64).attribute(model, x, labels)
    attr = bxg.attribute(model, x, labels, method="SG", num_samples=50, seed=0)
    bxg.metrics.diffid(model, x, labels, attr).value      # evaluation metrics, both frameworks

Importing this package imports neither framework nor matplotlib; the backend of
a model is loaded when the model is first explained.
"""

from .api import (
    BA,
    MethodInfo,
    attribute,
    available_frameworks,
    import_frameworks,
    method_info,
    method_names,
    methods_table,
    predict,
    to_numpy,
    use_framework,
)
from .errors import (
    AlreadyMisclassifiedWarning,
    BackendNotAvailableError,
    BoundaryNotFoundWarning,
    BoundaryXGError,
    CapabilityError,
    ModelFileError,
    InputError,
    LabelError,
    MethodError,
    ModelError,
    NonHomogeneousWarning,
    ProbabilityOutputWarning,
    SoftmaxOutputWarning,
    UnsupportedModelError,
)
from .methods.quadrature import quadrature
from .methods.registry import METHODS, valid_names
from .search import CW, FMN, PGD, BoundaryResult, DeepFool, find_boundary
from .compat import PARAMETERS, PIPELINE, BA_pytorch, BA_tensorflow, get_boundary_points
from .runs import explain_dataset, load_run
from . import metrics

from ._version import __version__

__all__ = [
    "BA",
    "attribute",
    "predict",
    "to_numpy",
    "quadrature",
    "find_boundary",
    "get_boundary_points",
    "explain_dataset",
    "load_run",
    "metrics",
    "BoundaryResult",
    "PGD",
    "CW",
    "DeepFool",
    "FMN",
    "PARAMETERS",
    "PIPELINE",
    "BA_pytorch",
    "BA_tensorflow",
    "METHODS",
    "valid_names",
    "MethodInfo",
    "method_info",
    "method_names",
    "methods_table",
    "available_frameworks",
    "use_framework",
    "import_frameworks",
    "BoundaryXGError",
    "InputError",
    "LabelError",
    "MethodError",
    "UnsupportedModelError",
    "BackendNotAvailableError",
    "ModelError",
    "CapabilityError",
    "ModelFileError",
    "SoftmaxOutputWarning",
    "ProbabilityOutputWarning",
    "NonHomogeneousWarning",
    "BoundaryNotFoundWarning",
    "AlreadyMisclassifiedWarning",
    "__version__",
]
