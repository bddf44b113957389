"""X-architectures and their regular variants, in PyTorch and Keras.

The X-DNN paper's AlexNet, VGG16 and Fixup-ResNet-50 (docs/xdnn.md).

Each constructor builds the network of Hesse et al. (NeurIPS 2021) in the
framework asked for: the X-variant (``x_...``) has no bias anywhere and only
ReLU, max/average pooling, convolutions and linear layers, so it is
nonnegatively homogeneous and X-Gradient is exactly IG from zero; the regular
variant keeps the biases (and Fixup's scalar biases). Weights are randomly
initialised as in the paper; load trained ones with
:func:`boundary_xg.xdnn.load_checkpoint` (PyTorch).

Common arguments:
    num_classes: outputs (default 1000; 10 for the small CNN).
    framework: "torch" (default; NCHW input) or "keras"/"tensorflow" (NHWC).
    width: factor on every channel count and hidden size (1.0 = the paper's
        network; e.g. 1/16 for fast tests).
    in_channels: input channels (default 3; 1 for the small CNN).
    input_size: input height = width, needed by Keras (default 224; AlexNet needs
        at least 63, VGG16 and Fixup-ResNet-50 at least 32). PyTorch models take any
        size that large thanks to adaptive pooling.
    seed: seed of the initialisation (sets the framework's global seed).
"""

from __future__ import annotations

from typing import Any, Optional

from ..backends import get_backend, lookup_identity, names, require
from ..errors import InputError

from ..backends._xdnn_common import VGG16_CONFIG  # noqa: F401 - re-exported where it used to live

def _build(arch: str, bias: bool, num_classes: int, framework: str, width: float,
           in_channels: int, input_size: int, seed: Optional[int]) -> Any:
    ident = lookup_identity(framework)
    if ident is None:
        raise InputError(f"framework={framework!r}: expected one of {names()} (or an alias such as 'keras').")
    if not (isinstance(width, (int, float)) and width > 0):
        raise InputError(f"width={width!r}: expected a number > 0.")
    B = get_backend(ident.name)  # names the extra to install when the framework is missing
    require(B, ("xdnn",), "the X-DNN architectures")
    impl = B.xdnn_kernels()
    return impl.build(arch, int(num_classes), bias, float(width), int(in_channels), int(input_size), seed)


def x_alexnet(num_classes: int = 1000, *, framework: str = "torch", width: float = 1.0,
              in_channels: int = 3, input_size: int = 224, seed: Optional[int] = None) -> Any:
    """X-AlexNet: AlexNet without any bias (an X-DNN). See the module docstring for the arguments.

    Returns:
        A ``torch.nn.Module`` (``features``/``avgpool``/``classifier``, torchvision's
        layout) or a Keras functional model.
    """
    return _build("alexnet", False, num_classes, framework, width, in_channels, input_size, seed)


def alexnet(num_classes: int = 1000, *, framework: str = "torch", width: float = 1.0,
            in_channels: int = 3, input_size: int = 224, seed: Optional[int] = None) -> Any:
    """AlexNet with biases (torchvision's layout, no LRN/BN): the regular counterpart of X-AlexNet."""
    return _build("alexnet", True, num_classes, framework, width, in_channels, input_size, seed)


def x_vgg16(num_classes: int = 1000, *, framework: str = "torch", width: float = 1.0,
            in_channels: int = 3, input_size: int = 224, seed: Optional[int] = None) -> Any:
    """X-VGG16: VGG16 (configuration D, no BN) without any bias (an X-DNN).

    Returns:
        A ``torch.nn.Module`` in torchvision's layout or a Keras functional model.
    """
    return _build("vgg16", False, num_classes, framework, width, in_channels, input_size, seed)


def vgg16(num_classes: int = 1000, *, framework: str = "torch", width: float = 1.0,
          in_channels: int = 3, input_size: int = 224, seed: Optional[int] = None) -> Any:
    """VGG16 with biases (configuration D, no BN): the regular counterpart of X-VGG16."""
    return _build("vgg16", True, num_classes, framework, width, in_channels, input_size, seed)


def x_fixup_resnet50(num_classes: int = 1000, *, framework: str = "torch", width: float = 1.0,
                     in_channels: int = 3, input_size: int = 224, seed: Optional[int] = None) -> Any:
    """X-Fixup-ResNet-50: Fixup-ResNet-50 without scalar biases, scale and fc bias (an X-DNN).

    Note the Fixup initialisation sets every block's last convolution and the fc
    layer to zero, so a fresh model outputs zeros until trained or loaded.
    """
    return _build("fixup_resnet50", False, num_classes, framework, width, in_channels, input_size, seed)


def fixup_resnet50(num_classes: int = 1000, *, framework: str = "torch", width: float = 1.0,
                   in_channels: int = 3, input_size: int = 224, seed: Optional[int] = None) -> Any:
    """Fixup-ResNet-50 with its scalar biases, ``scale`` multipliers and fc bias (not homogeneous)."""
    return _build("fixup_resnet50", True, num_classes, framework, width, in_channels, input_size, seed)


def x_cnn(num_classes: int = 10, *, framework: str = "torch", in_channels: int = 1,
          input_size: int = 8, seed: Optional[int] = None) -> Any:
    """A small X-CNN for tests and demos (e.g. the 8x8 digits): bias-free, ReLU.

    conv3x3(8) -> ReLU -> maxpool 2 -> conv3x3(16) -> ReLU -> adaptive avgpool 2x2 ->
    linear(32) -> ReLU -> linear(num_classes).
    """
    return _build("cnn", False, num_classes, framework, 1.0, in_channels, input_size, seed)


def cnn(num_classes: int = 10, *, framework: str = "torch", in_channels: int = 1,
        input_size: int = 8, seed: Optional[int] = None) -> Any:
    """The small CNN of :func:`x_cnn` with biases (not homogeneous)."""
    return _build("cnn", True, num_classes, framework, 1.0, in_channels, input_size, seed)
