"""Boundary attributions (Wang, Fredrikson, Datta, "Boundary Attributions Provide
Normal (Vector) Explanations", arXiv 2103.11257): a boundary search, then a base
method that uses the boundary point ``x~`` (docs/boundary.md).

* BSM: saliency evaluated **at** ``x~``: ``grad F_y(x~)``.
* BSG: SmoothGrad **at** ``x~``.
* BIG: Integrated Gradients from the **baseline** ``x~`` to ``x``.
* BDT: DeepLIFT (rescale) with the **baseline** ``x~``.

All explain the original label ``y``. The boundary points come from
:func:`~boundary_xg.search.pipeline.boundary_search` unless the user passes
``boundary_points`` (e.g. to compare backends on the same points). Where no
boundary point was found, ``x~ = x`` (distance ``inf``; BIG and BDT give zeros,
BSM and BSG the plain method at ``x``) and a warning says how many.
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np

from ..backends import Backend
from ..errors import InputError
from ..search._ops import l2_distance
from ..search.pipeline import boundary_search, check_attacks, prepare_bounds
# the base methods register themselves on import: they are in the table before the variants
from . import deeplift as _deeplift  # noqa: F401
from . import integrated_gradients as _integrated_gradients  # noqa: F401
from . import saliency as _saliency  # noqa: F401
from . import smoothgrad as _smoothgrad  # noqa: F401
from .registry import MethodSpec, lookup, register

#: boundary variant short name -> (base method name, how the boundary point is used);
#: in README's table order
VARIANTS: Dict[str, tuple] = {
    "BSM": ("SM", "input"),
    "BIG": ("IG", "baseline"),
    "BSG": ("SG", "input"),
    "BDT": ("DeepLIFT", "baseline"),
}

#: options of the search, taken by every boundary variant
SEARCH_OPTIONS: Dict[str, Any] = {
    "boundary_points": None, "attacks": None, "bounds": None, "seed": 0, "progress": None,
    "return_dis": False, "refine": None,
}


def _points(B: Backend, points: Any, x: Any) -> Any:
    """User-given boundary points as a tensor shaped like ``x``."""
    if not B.is_tensor(points):
        points = np.asarray(points)
    pt = B.cast(B.asarray(points, like=x), x)
    if B.shape(pt) != B.shape(x):
        raise InputError(
            f"boundary_points has shape {B.shape(pt)}; expected x's shape {B.shape(x)} "
            "(one boundary point per example, in the model's layout)."
        )
    if not B.all_finite(pt):
        raise InputError("boundary_points contains NaN or infinity.")
    return pt


def boundary_attribution(
    B: Backend, f: Callable, x: Any, labels: Any, *, which: str,
    boundary_points: Any = None, attacks: Any = None, bounds: Any = None, seed: Optional[int] = 0,
    progress: Optional[bool] = None, refine: Optional[int] = None, return_dis: bool = False, return_gap: bool = False,
    batch_size: Optional[int] = None, **base_options: Any,
) -> Any:
    """A boundary variant (``which`` in :data:`VARIANTS`) over backend tensors.

    Args:
        x: inputs ``(N, ...)``; labels: ``(N,)``, the class explained (and moved away from).
        boundary_points: precomputed points shaped like ``x`` (skips the search).
        attacks, bounds, seed, progress, refine: the search's settings (see ``find_boundary``).
        return_dis: also return the L2 distance ``||x - x~||`` per example ``(N,)``.
        return_gap: (BIG, BDT) also return ``sum(attr) - (F_y(x) - F_y(x~))``.
        batch_size: model inputs per pass (attributions) and examples per search batch.
        **base_options: options of the base method (``steps``, ``num_samples``, ...).

    Returns:
        ``attr`` shaped like ``x``; with ``return_gap``/``return_dis`` a tuple
        ``(attr[, gap][, distances])``.
    """
    base_name, role = VARIANTS[which]
    if boundary_points is None:
        lo, hi = prepare_bounds(B, bounds, x)
        num_classes = B.shape(B.forward(f, x[:1]))[1]
        attack_list, refine = check_attacks(attacks, refine)
        res = boundary_search(B, f, x, labels, attacks=attack_list, lo=lo, hi=hi,
                              num_classes=num_classes, seed=seed, batch_size=batch_size,
                              progress=progress, refine=refine)
        points, dist = res.points, res.distances
    else:
        points = _points(B, boundary_points, x)
        dist = l2_distance(B, points, x)
    base = lookup(base_name)
    if "seed" in base.defaults:
        # one seed for the whole call: the search and the base method's noise (BSG)
        base_options["seed"] = seed
    if role == "input":
        out = base.func(B, f, points, labels, batch_size=batch_size, **base_options)
        gap = None
    else:
        out = base.func(B, f, x, labels, baseline=points, batch_size=batch_size,
                        return_gap=return_gap, **base_options)
        out, gap = out if return_gap else (out, None)
    result = (out,) + ((gap,) if return_gap else ()) + ((dist,) if return_dis else ())
    return result[0] if len(result) == 1 else result


def _variant_func(variant: str) -> Callable:
    def func(B, f, x, labels, **options):
        return boundary_attribution(B, f, x, labels, which=variant, **options)
    func.__name__ = f"boundary_{variant.lower()}"
    func.__doc__ = f"{variant}: see :func:`boundary_attribution`."
    return func


def _base_defaults(name: str) -> Dict[str, Any]:
    try:
        spec = lookup(name)
    except Exception:  # the base method is not registered (yet)
        return {}
    # IG's exact=True needs its own front-end hook; a boundary baseline is never zero
    return {k: v for k, v in spec.defaults.items() if k not in ("baseline", "exact")}


#: short name -> (readable name, aliases, README's summary, README's cost)
_NAMES = {
    "BSM": ("boundary_saliency", ("boundary_based_sm", "boundarysm"),
            "saliency at the closest boundary point", "search + 1"),
    "BIG": ("boundary_integrated_gradients", ("boundary_based_ig", "boundaryig"),
            "IG from the closest boundary point to `x`", "search + `steps`"),
    "BSG": ("boundary_smoothgrad", ("boundary_based_sg", "boundarysg"),
            "SmoothGrad at the closest boundary point", "search + `num_samples`"),
    "BDT": ("boundary_deeplift", ("bdeeplift", "boundary_based_deeplift"),
            "DeepLIFT from the closest boundary point", "search + 1 + a forward of the points"),
}

PAPER = "Wang, Fredrikson, Datta, *Boundary Attributions Provide Normal (Vector) Explanations*, 2021"


def register_variants() -> None:
    """Register BSM, BIG, BSG, BDT.

    Their defaults include the base method's options (with the base's checks),
    and the base's ``prepare`` runs before the search: a model the base method
    refuses (DeepLIFT on TorchScript) is refused before any forward pass.
    """
    for short, (base_name, role) in VARIANTS.items():
        name, aliases, summary, cost = _NAMES[short]
        try:
            base = lookup(base_name)
        except Exception:  # the base method is not registered
            base = None
        defaults = dict(_base_defaults(base_name))
        defaults.update(SEARCH_OPTIONS)
        register(MethodSpec(
            name=name, short=short, func=_variant_func(short), defaults=defaults, aliases=aliases,
            uses_baseline=False, supports_gap=(role == "baseline"),
            needs=base.needs if base is not None else (),
            prepare=base.prepare if base is not None else None,
            checks=dict(base.checks) if base is not None else {},
            summary=summary, cost=cost, base=base_name, in_demo=True, paper=PAPER,
            # the base method's objectives and re-calibration (BIG: IG's), passed through to it
            objectives=base.objectives if base is not None else ("logit",),
            recalibrate=base is not None and base.recalibrate,
        ))


def with_boundary(spec: MethodSpec, use_boundary: bool) -> MethodSpec:
    """The boundary variant of a base method (``use_boundary=True``) or the base of a variant.

    Raises:
        InputError: ``use_boundary=True`` for a method without a boundary variant.
    """
    if use_boundary:
        if spec.short in VARIANTS:
            return spec
        for short, (base_name, _) in VARIANTS.items():
            try:
                base = lookup(base_name)
            except Exception:  # e.g. DeepLIFT not registered
                continue
            if base is spec:
                return lookup(short)
        raise InputError(
            f"use_boundary=True: {spec.short} has no boundary variant; boundary variants exist "
            f"for {[b for b, _ in VARIANTS.values()]} ({list(VARIANTS)})."
        )
    if spec.short in VARIANTS:
        return lookup(VARIANTS[spec.short][0])
    return spec


register_variants()
