"""What :func:`~boundary_xg.xdnn.check_homogeneous` reports: offending layers and the verdict."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Tuple

from ..backends._xdnn_common import KINDS, Offender  # noqa: F401  (part of the report API)
from ..errors import NonHomogeneousWarning  # noqa: F401  (re-exported)




@dataclass
class HomogeneityReport:
    """Result of :func:`~boundary_xg.xdnn.check_homogeneous`.

    Attributes:
        offenders: every layer found by the static scan that breaks homogeneity.
        max_rel_error: worst relative error of ``F(a x) = a F(x)`` over the tested
            scales ``a`` (None when no ``x`` was given).
        scales: the scales ``a`` tested.
        rtol: the tolerance ``max_rel_error`` is held to.
        framework: "torch" or "tensorflow".
    """

    offenders: List[Offender] = field(default_factory=list)
    max_rel_error: Optional[float] = None
    scales: Tuple[float, ...] = ()
    rtol: float = 1e-4
    framework: str = ""

    @property
    def homogeneous(self) -> bool:
        """No offending layer, and (when checked) ``F(a x) = a F(x)`` within ``rtol``."""
        numeric_ok = self.max_rel_error is None or self.max_rel_error <= self.rtol
        return not self.offenders and numeric_ok

    def __bool__(self) -> bool:
        return self.homogeneous

    def offender_summary(self, limit: int = 8) -> str:
        """The first ``limit`` offenders as one line ("name (kind), ...")."""
        names = [f"{o.layer} ({o.kind})" for o in self.offenders[:limit]]
        more = len(self.offenders) - limit
        return ", ".join(names) + (f" and {more} more" if more > 0 else "")

    def __str__(self) -> str:
        verdict = "homogeneous (an X-DNN)" if self.homogeneous else "NOT homogeneous"
        lines = [f"{self.framework or 'model'}: {verdict}"]
        if self.max_rel_error is not None:
            lines.append(
                f"  numerical check F(a x) = a F(x), a in {list(self.scales)}: worst relative "
                f"error {self.max_rel_error:.2e} (tolerance {self.rtol:g})"
            )
        if self.offenders:
            lines.append(f"  {len(self.offenders)} offending layer(s):")
            lines.extend(f"    - {o}" for o in self.offenders)
        else:
            lines.append("  static scan: no offending layer")
        return "\n".join(lines)
