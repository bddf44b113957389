"""Named attack pipelines of :func:`~boundary_xg.search.find_boundary`.

* ``"default"``: box-aware multi-class DeepFool (up to 3 steps over the 6
  competing classes with the largest logits), then box-aware FMN (70 steps)
  started from DeepFool's point, each candidate refined along ``x -> point``
  to within 2**-12 of its distance of the boundary: at most 88 model
  gradient rows per input (forward+backward rows, and in PyTorch DeepFool's
  backward-only rows through a shared forward: ``res.passes + res.backwards``),
  and about 6-12 forward-only ones (see
  docs/boundary.md for the distances against the best public attacks).
* ``"reference"``: the reference implementation's pipeline (L2 PGD over the
  radii ``[36/255, 64/255, 0.3, 0.5, 0.7, 0.9, 1.1]`` x 40 steps, then
  Carlini-Wagner 9 x 100), without refinement, to reproduce the paper's setting.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, List, Tuple

from .cw import CW
from .deepfool import DeepFool
from .fmn import FMN
from .pgd import PGD
from .refine import DEFAULT_REFINE_STEPS


def default_attacks() -> List[Any]:
    """The default pipeline's attacks.

    ``[DeepFool(steps=3, candidates=6), FMN(steps=70, init="best", alpha=(0.3, 0.01))]``.

    Six competing classes, not all nine of a 10-class model: the same distances bit for
    bit on every case of ``bench/boundary_peers.py`` (digits CNN and MLP, the CIFAR-sized
    CNN, the linear boxes) and on resnet18 at 64x64 (1000 classes, 16 inputs) and the
    small CNN of ``bench/boundary.py``, at two thirds of DeepFool's model rows (gradient
    rows per input 97 -> 88; FMN, started from DeepFool's best point, settles on the same
    boundary). With four, one digit in a hundred ended 1.41x farther.
    """
    return [DeepFool(steps=3, candidates=6), FMN(steps=70, init="best", alpha=(0.3, 0.01))]


def reference_attacks() -> List[Any]:
    """The reference's pipeline: ``[PGD(), CW()]``, the boundary paper's code's search (docs/boundary.md)."""
    return [PGD(), CW()]


#: name -> (attacks factory, refinement precision in bits)
PRESETS: Dict[str, Tuple[Callable[[], List[Any]], int]] = {
    "default": (default_attacks, DEFAULT_REFINE_STEPS),
    "reference": (reference_attacks, 0),
}
