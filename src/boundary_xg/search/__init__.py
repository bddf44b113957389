"""The boundary search: attacks (PGD, Carlini-Wagner) and the pipeline that keeps,
per example, the closest misclassified point. Imports no framework."""

from .cw import CW
from .pipeline import BoundaryResult, find_boundary
from .pgd import PGD

__all__ = ["PGD", "CW", "find_boundary", "BoundaryResult"]
