"""Layer tables of the X-DNN architectures, shared by the torch and Keras builders.

A module of its own so that ``architectures`` (which picks a builder) and the
builders ``_torch`` / ``_keras`` both import it without importing each other.
"""

from __future__ import annotations

from typing import Any, Sequence

#: VGG16's convolution widths, "M" for a 2x2 max pooling (Simonyan & Zisserman 2015, config D)
VGG16_CONFIG: Sequence[Any] = (64, 64, "M", 128, 128, "M", 256, 256, 256, "M",
                               512, 512, 512, "M", 512, 512, 512, "M")
