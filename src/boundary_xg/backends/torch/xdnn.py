"""PyTorch side of the X-DNN toolkit: the layer scan, bias stripping, the architectures.

Imported only by the public functions of :mod:`boundary_xg.xdnn` when a PyTorch
model is involved. The architectures follow spec section 3.3 (torchvision's
layout for AlexNet and VGG16, so torchvision and the paper's checkpoints load
after the key mapping of :mod:`boundary_xg.xdnn.checkpoints`; the Fixup
parameter names of Zhang et al.). ``width`` scales every channel count and hidden
size (1.0 = the paper's networks), so tests can build them small.
"""

from __future__ import annotations

import copy
import math
from typing import Any, List, Sequence, Tuple

import torch
from torch import nn

from .._xdnn_common import Offender

# --- the layer scan -------------------------------------------------------------------
_NORMS = tuple(
    t for t in (
        getattr(nn.modules.batchnorm, "_NormBase", None), nn.LayerNorm, nn.GroupNorm,
        nn.LocalResponseNorm, nn.CrossMapLRN2d, getattr(nn, "RMSNorm", None),
    ) if t is not None
)
_BAD_ACTIVATIONS = tuple(
    getattr(nn, n) for n in (
        "GELU", "SiLU", "Sigmoid", "Tanh", "ELU", "SELU", "CELU", "Softplus", "Mish",
        "Hardswish", "Hardsigmoid", "Hardtanh", "Softmax", "LogSoftmax", "Softmin", "Softmax2d",
        "Softsign", "Tanhshrink", "LogSigmoid", "GLU", "Softshrink", "Hardshrink",
    ) if hasattr(nn, n)
)
_ATTENTION = (nn.MultiheadAttention, nn.TransformerEncoderLayer, nn.TransformerDecoderLayer)
_BIAS_LAYERS = (nn.Linear, nn.Bilinear, nn.modules.conv._ConvNd)
_SHIFT_WORDS = ("bias", "mean", "shift", "offset")


def _trailing_softmax(model: nn.Module) -> Any:
    # the backend explains the pre-softmax logit of such a Sequential: not an offence
    if isinstance(model, nn.Sequential) and len(model) > 1 and isinstance(
        model[-1], (nn.Softmax, nn.LogSoftmax)
    ):
        return model[-1]
    return None


def scan(model: Any) -> List[Offender]:
    """Every layer or parameter of ``model`` that breaks ``F(a x) = a F(x)``."""
    if not isinstance(model, nn.Module):
        return []
    skip = _trailing_softmax(model)
    out: List[Offender] = []
    for name, mod in model.named_modules():
        label = name or type(mod).__name__
        kind = type(mod).__name__
        if mod is skip:
            continue
        if isinstance(mod, _NORMS):
            out.append(Offender(label, "normalization",
                                f"{kind} shifts and rescales by statistics (running mean, bias)"))
            continue
        if isinstance(mod, _ATTENTION):
            out.append(Offender(label, "activation", f"{kind} applies a softmax over scores"))
            continue
        if isinstance(mod, _BAD_ACTIVATIONS):
            out.append(Offender(label, "activation",
                                f"{kind} is not nonnegatively homogeneous (not piecewise linear through 0)"))
        elif isinstance(mod, nn.Threshold) and (mod.threshold != 0 or mod.value != 0):
            out.append(Offender(label, "activation", "Threshold with a non-zero threshold or value"))
        for pname, p in mod.named_parameters(recurse=False):
            if "bias" not in pname.lower():
                continue
            if isinstance(mod, _BIAS_LAYERS) and pname == "bias":
                out.append(Offender(label, "bias", f"{kind} has a bias"))
            else:
                where = f"{name}.{pname}" if name else pname
                size = "learned scalar bias" if p.numel() == 1 else f"learned bias of shape {tuple(p.shape)}"
                out.append(Offender(where, "bias", f"{size} added inside {kind}"))
        for bname, b in mod.named_buffers(recurse=False):
            if b is None or not b.is_floating_point() or not any(w in bname.lower() for w in _SHIFT_WORDS):
                continue
            if bool((b != 0).any()):
                where = f"{name}.{bname}" if name else bname
                out.append(Offender(where, "offset",
                                    f"non-zero buffer {bname!r} (an additive constant, e.g. input normalisation)"))
    return out


def strip_bias(model: Any) -> Tuple[Any, Tuple[Offender, ...]]:
    """A deep copy of ``model`` without biases, and the offenders that remain."""
    if not isinstance(model, nn.Module):
        from ...errors import UnsupportedModelError

        raise UnsupportedModelError(
            f"strip_bias needs a torch.nn.Module; got {type(model).__qualname__}.")
    clone = copy.deepcopy(model)
    for mod in clone.modules():
        if isinstance(mod, _NORMS + _ATTENTION):
            continue  # not fixable by removing a bias; reported below
        for pname, p in list(mod.named_parameters(recurse=False)):
            if "bias" not in pname.lower():
                continue
            if isinstance(mod, _BIAS_LAYERS) and pname == "bias":
                mod.register_parameter("bias", None)
            else:
                # an additive parameter used in forward(): keep the name, make it a constant 0
                delattr(mod, pname)
                mod.register_buffer(pname, torch.zeros_like(p.detach()), persistent=False)
        for bname, b in list(mod.named_buffers(recurse=False)):
            if b is not None and b.is_floating_point() and "bias" in bname.lower():
                b.zero_()
    unfixable = tuple(scan(clone))
    clone.xdnn_unfixable = unfixable
    return clone, unfixable


# --- architectures (the X-DNN paper's) ------------------------------------------------------------
def _w(channels: int, width: float) -> int:
    return max(1, int(round(channels * width)))


class AlexNet(nn.Module):
    """AlexNet (torchvision layout, no LRN, no BN); ``bias=False`` gives X-AlexNet."""

    def __init__(self, num_classes: int = 1000, bias: bool = True, width: float = 1.0,
                 in_channels: int = 3):
        super().__init__()
        c = [_w(n, width) for n in (64, 192, 384, 256, 256)]
        h = _w(4096, width)
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c[0], 11, stride=4, padding=2, bias=bias), nn.ReLU(inplace=True),
            nn.MaxPool2d(3, 2),
            nn.Conv2d(c[0], c[1], 5, padding=2, bias=bias), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
            nn.Conv2d(c[1], c[2], 3, padding=1, bias=bias), nn.ReLU(inplace=True),
            nn.Conv2d(c[2], c[3], 3, padding=1, bias=bias), nn.ReLU(inplace=True),
            nn.Conv2d(c[3], c[4], 3, padding=1, bias=bias), nn.ReLU(inplace=True), nn.MaxPool2d(3, 2),
        )
        self.avgpool = nn.AdaptiveAvgPool2d((6, 6))
        self.classifier = nn.Sequential(
            nn.Dropout(), nn.Linear(c[4] * 36, h, bias=bias), nn.ReLU(inplace=True),
            nn.Dropout(), nn.Linear(h, h, bias=bias), nn.ReLU(inplace=True),
            nn.Linear(h, num_classes, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


from .._xdnn_common import VGG16_CONFIG  # noqa: E402


class VGG16(nn.Module):
    """VGG16 (configuration D, no BN, torchvision layout); ``bias=False`` gives X-VGG16."""

    def __init__(self, num_classes: int = 1000, bias: bool = True, width: float = 1.0,
                 in_channels: int = 3):
        super().__init__()
        layers: List[nn.Module] = []
        cin = in_channels
        for v in VGG16_CONFIG:
            if v == "M":
                layers.append(nn.MaxPool2d(2, 2))
            else:
                cout = _w(v, width)
                layers += [nn.Conv2d(cin, cout, 3, padding=1, bias=bias), nn.ReLU(inplace=True)]
                cin = cout
        h = _w(4096, width)
        self.features = nn.Sequential(*layers)
        self.avgpool = nn.AdaptiveAvgPool2d((7, 7))
        self.classifier = nn.Sequential(
            nn.Linear(cin * 49, h, bias=bias), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(h, h, bias=bias), nn.ReLU(inplace=True), nn.Dropout(),
            nn.Linear(h, num_classes, bias=bias),
        )
        for m in self.modules():  # the paper's initialisation
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
            elif isinstance(m, nn.Linear):
                nn.init.normal_(m.weight, 0, 0.01)
            if isinstance(m, (nn.Conv2d, nn.Linear)) and m.bias is not None:
                nn.init.zeros_(m.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(torch.flatten(self.avgpool(self.features(x)), 1))


def _fixup_std(conv: nn.Conv2d, num_blocks: int, power: float) -> float:
    fan_out = conv.weight.shape[0] * conv.weight.shape[2] * conv.weight.shape[3]
    return math.sqrt(2.0 / fan_out) * num_blocks ** (-power)


class FixupBottleneck(nn.Module):
    """Fixup bottleneck (expansion 4). ``bias=False``: the X-variant without scalar biases and scale."""

    expansion = 4

    def __init__(self, inplanes: int, planes: int, stride: int = 1, downsample: Any = None,
                 bias: bool = True):
        super().__init__()
        self.has_bias = bias
        if bias:
            for n in ("bias1a", "bias1b", "bias2a", "bias2b", "bias3a", "bias3b"):
                setattr(self, n, nn.Parameter(torch.zeros(1)))
            self.scale = nn.Parameter(torch.ones(1))
        self.conv1 = nn.Conv2d(inplanes, planes, 1, bias=False)
        self.conv2 = nn.Conv2d(planes, planes, 3, stride=stride, padding=1, bias=False)
        self.conv3 = nn.Conv2d(planes, planes * 4, 1, bias=False)
        # separate ReLU modules (not one reused in-place module) keep hooks and
        # Captum's DeepLift usable on these blocks
        self.relu1, self.relu2, self.relu3 = nn.ReLU(), nn.ReLU(), nn.ReLU()
        self.downsample = downsample

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.has_bias:
            out = self.relu1(self.conv1(x))
            out = self.relu2(self.conv2(out))
            out = self.conv3(out)
            identity = x if self.downsample is None else self.downsample(x)
            return self.relu3(out + identity)
        xa = x + self.bias1a
        out = self.relu1(self.conv1(xa) + self.bias1b)
        out = self.relu2(self.conv2(out + self.bias2a) + self.bias2b)
        out = self.conv3(out + self.bias3a) * self.scale + self.bias3b
        identity = x if self.downsample is None else self.downsample(xa)
        return self.relu3(out + identity)


class FixupResNet50(nn.Module):
    """Fixup-ResNet-50 (no normalisation layers); ``bias=False`` gives X-Fixup-ResNet-50."""

    def __init__(self, num_classes: int = 1000, bias: bool = True, width: float = 1.0,
                 in_channels: int = 3, layers: Sequence[int] = (3, 4, 6, 3)):
        super().__init__()
        self.has_bias = bias
        num_blocks = sum(layers)
        self.inplanes = _w(64, width)
        self.conv1 = nn.Conv2d(in_channels, self.inplanes, 7, stride=2, padding=3, bias=False)
        if bias:
            self.bias1 = nn.Parameter(torch.zeros(1))
        self.relu = nn.ReLU()
        self.maxpool = nn.MaxPool2d(3, 2, 1)
        stages = []
        for i, (planes, blocks) in enumerate(zip((64, 128, 256, 512), layers)):
            stages.append(self._stage(_w(planes, width), blocks, 1 if i == 0 else 2, bias))
        self.layer1, self.layer2, self.layer3, self.layer4 = stages
        self.avgpool = nn.AdaptiveAvgPool2d((1, 1))
        if bias:
            self.bias2 = nn.Parameter(torch.zeros(1))
        self.fc = nn.Linear(self.inplanes, num_classes, bias=bias)
        for m in self.modules():  # Fixup initialisation (Zhang et al., ICLR 2019)
            if isinstance(m, FixupBottleneck):
                nn.init.normal_(m.conv1.weight, 0, _fixup_std(m.conv1, num_blocks, 0.25))
                nn.init.normal_(m.conv2.weight, 0, _fixup_std(m.conv2, num_blocks, 0.25))
                nn.init.zeros_(m.conv3.weight)
                if m.downsample is not None:
                    nn.init.normal_(m.downsample.weight, 0, _fixup_std(m.downsample, 1, 0.0))
        nn.init.zeros_(self.fc.weight)
        if self.fc.bias is not None:
            nn.init.zeros_(self.fc.bias)

    def _stage(self, planes: int, blocks: int, stride: int, bias: bool) -> nn.Sequential:
        downsample = None
        if stride != 1 or self.inplanes != planes * 4:
            downsample = nn.Conv2d(self.inplanes, planes * 4, 1, stride=stride, bias=False)
        out = [FixupBottleneck(self.inplanes, planes, stride, downsample, bias)]
        self.inplanes = planes * 4
        out += [FixupBottleneck(self.inplanes, planes, bias=bias) for _ in range(1, blocks)]
        return nn.Sequential(*out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.conv1(x)
        x = self.relu(x + self.bias1) if self.has_bias else self.relu(x)
        x = self.layer4(self.layer3(self.layer2(self.layer1(self.maxpool(x)))))
        x = torch.flatten(self.avgpool(x), 1)
        return self.fc(x + self.bias2) if self.has_bias else self.fc(x)


class SmallCNN(nn.Module):
    """A small CNN for tests and demos (e.g. 8x8 digits); ``bias=False`` gives an X-CNN.

    conv3x3 -> ReLU -> maxpool 2 -> conv3x3 -> ReLU -> adaptive avgpool 2x2 ->
    flatten -> linear -> ReLU -> linear.
    """

    def __init__(self, num_classes: int = 10, bias: bool = False, in_channels: int = 1,
                 widths: Sequence[int] = (8, 16), hidden: int = 32):
        super().__init__()
        c1, c2 = widths
        self.features = nn.Sequential(
            nn.Conv2d(in_channels, c1, 3, padding=1, bias=bias), nn.ReLU(), nn.MaxPool2d(2),
            nn.Conv2d(c1, c2, 3, padding=1, bias=bias), nn.ReLU(), nn.AdaptiveAvgPool2d((2, 2)),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(), nn.Linear(c2 * 4, hidden, bias=bias), nn.ReLU(),
            nn.Linear(hidden, num_classes, bias=bias),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(x))


def build(arch: str, num_classes: int, bias: bool, width: float, in_channels: int,
          input_size: int, seed: Any = None) -> nn.Module:
    """Construct ``arch`` ("alexnet", "vgg16", "fixup_resnet50", "cnn") in PyTorch."""
    if seed is not None:
        torch.manual_seed(int(seed))
    if arch == "cnn":
        return SmallCNN(num_classes, bias=bias, in_channels=in_channels)
    cls = {"alexnet": AlexNet, "vgg16": VGG16, "fixup_resnet50": FixupResNet50}[arch]
    return cls(num_classes, bias=bias, width=width, in_channels=in_channels)


# --- checkpoints -------------------------------------------------------------------------
def read_checkpoint(path: Any) -> Any:
    """``torch.load`` a checkpoint file on the CPU, tensors and plain containers only."""
    return torch.load(path, map_location="cpu", weights_only=True)


def load_state(model: nn.Module, state: Any, strict: bool) -> Any:
    """``model.load_state_dict`` returning the missing/unexpected keys."""
    return model.load_state_dict(state, strict=strict)


def state_keys(model: nn.Module) -> List[str]:
    """The model's state-dict keys."""
    return list(model.state_dict().keys())
