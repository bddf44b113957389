"""Attribution methods, each written once over the backend interface."""

# registers the boundary variants (BSM, BSG, BIG, BDT) once the base methods are in the table
from . import boundary as _boundary  # noqa: E402,F401
# layer methods (issue 14): each registers itself
from . import fullgrad as _fullgrad  # noqa: E402,F401
from . import gradcam as _gradcam  # noqa: E402,F401
# reference-based path methods (IG-Uniform, IG-SG, IG-SQ), AGI and LPI, with attribution
# re-calibration (issue 15): each registers itself
from . import reference_paths as _reference_paths  # noqa: E402,F401
from . import agi as _agi  # noqa: E402,F401
from . import lpi as _lpi  # noqa: E402,F401
