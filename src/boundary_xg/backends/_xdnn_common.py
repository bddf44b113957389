"""Framework-free records shared by the X-DNN kernels of every backend and by ``xdnn``.

The per-framework scans (``backends/<framework>/xdnn.py``) return :class:`Offender`
records and build architectures from the layer tables here, so they need nothing
from ``boundary_xg.xdnn`` (which sits above the backends).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Sequence

#: the kinds of offence a layer can commit
KINDS = ("bias", "normalization", "activation", "offset")


@dataclass(frozen=True)
class Offender:
    """One layer (or parameter) that breaks ``F(a x) = a F(x)``.

    Attributes:
        layer: the layer's (or parameter's) name in the model, e.g. ``"features.0"``.
        kind: one of :data:`KINDS`: ``"bias"`` (an additive parameter),
            ``"normalization"`` (batch/layer/group norm, input normalisation),
            ``"activation"`` (not of the form ``a1 z`` for ``z > 0``, ``a2 z`` below),
            ``"offset"`` (another additive constant, e.g. a non-zero buffer).
        reason: one readable sentence.
    """

    layer: str
    kind: str
    reason: str

    def __str__(self) -> str:
        return f"{self.layer} [{self.kind}]: {self.reason}"


#: VGG16's convolution widths, "M" for a 2x2 max pooling (Simonyan & Zisserman 2015, config D)
VGG16_CONFIG: Sequence[Any] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                               512, 512, 512, "M", 512, 512, 512, "M")
