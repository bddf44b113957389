"""Attribution methods, each written once over the backend interface.

Each method module registers its methods in :mod:`boundary_xg.methods.registry`
when it is imported; importing this package (which any import of a module below
it does first) imports them all, so the table is complete. The import order is
the order of README's method table. A new method: one new module that calls
``register(MethodSpec(...))``, and one line here.
"""

from . import saliency as _saliency  # noqa: F401  (SM, IxG)
from . import integrated_gradients as _integrated_gradients  # noqa: F401  (IG)
from . import smoothgrad as _smoothgrad  # noqa: F401  (SG)
from . import xgradient as _xgradient  # noqa: F401  (XG)
from . import deeplift as _deeplift  # noqa: F401  (DeepLIFT)
from . import expected_gradients as _expected_gradients  # noqa: F401  (EG)
from . import gradcam as _gradcam  # noqa: F401  (GradCAM, GradCAM++)
from . import fullgrad as _fullgrad  # noqa: F401  (FullGrad)
from . import boundary as _boundary  # noqa: F401  (BSM, BIG, BSG, BDT: after their bases)
from . import recalibration as _recalibration  # noqa: F401  (options of re-calibration)
from . import reference_paths as _reference_paths  # noqa: F401  (IG_Uniform, IG_SG, IG_SQ)
from . import agi as _agi  # noqa: F401  (AGI)
from . import lpi as _lpi  # noqa: F401  (LPI)
