"""The boundary search: attacks (DeepFool, FMN, PGD, Carlini-Wagner), the protocol they
implement, and the pipeline that keeps, per example, the closest misclassified
point. Imports no framework."""

from .base import Attack, SearchContext
from .cw import CW
from .deepfool import DeepFool
from .fmn import FMN
from .pgd import PGD
from .pipeline import BoundaryResult, find_boundary
from .presets import PRESETS

__all__ = ["Attack", "SearchContext", "DeepFool", "FMN", "PGD", "CW", "PRESETS", "find_boundary",
           "BoundaryResult"]
