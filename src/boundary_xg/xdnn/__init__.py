"""The X-DNN toolkit: exact attributions in one pass, and training with attribution priors.

For a nonnegatively homogeneous network (``F(a x) = a F(x)`` for ``a > 0``: no
bias anywhere, ReLU-type activations, convolutions, linear layers, max/average
pooling) Integrated Gradients from the zero baseline equals X-Gradient
``x * grad F(x)`` exactly, at the cost of one pass (Hesse, Schaub-Meyer, Roth,
"Fast Axiomatic Attribution for Neural Networks", NeurIPS 2021).

* :func:`check_homogeneous`: which layers break homogeneity, plus a numerical check.
* :func:`strip_bias`: a bias-free copy of a model, for fine-tuning into an X-DNN.
* X-architectures and their regular variants in PyTorch and Keras:
  :func:`x_alexnet`, :func:`x_vgg16`, :func:`x_fixup_resnet50`, :func:`x_cnn`
  (and :func:`alexnet`, :func:`vgg16`, :func:`fixup_resnet50`, :func:`cnn`).
* :func:`load_checkpoint`: the paper's published PyTorch checkpoints.
* Priors for training: :func:`gini_prior`, :func:`total_variation`, with
  :func:`xgradient_for_training`.

Nothing here imports a framework until a model of it is used.
"""

from .architectures import alexnet, cnn, fixup_resnet50, vgg16, x_alexnet, x_cnn, x_fixup_resnet50, x_vgg16
from .checkpoints import load_checkpoint, map_checkpoint_keys, unwrap_state_dict
from .homogeneity import check_homogeneous, scan_layers, strip_bias
from .priors import gini, gini_prior, mean_abs_gini, total_variation, xgradient_for_training
from .report import HomogeneityReport, NonHomogeneousWarning, Offender

__all__ = [
    "check_homogeneous", "scan_layers", "strip_bias", "HomogeneityReport", "Offender",
    "NonHomogeneousWarning",
    "x_alexnet", "alexnet", "x_vgg16", "vgg16", "x_fixup_resnet50", "fixup_resnet50", "x_cnn", "cnn",
    "load_checkpoint", "map_checkpoint_keys", "unwrap_state_dict",
    "gini", "mean_abs_gini", "gini_prior", "total_variation", "xgradient_for_training",
]
