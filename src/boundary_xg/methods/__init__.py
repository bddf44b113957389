"""Attribution methods, each written once over the backend interface."""

# registers the boundary variants (BSM, BSG, BIG, BDT) once the base methods are in the table
from . import boundary as _boundary  # noqa: E402,F401
# layer methods (issue 14): each registers itself
from . import fullgrad as _fullgrad  # noqa: E402,F401
from . import gradcam as _gradcam  # noqa: E402,F401
