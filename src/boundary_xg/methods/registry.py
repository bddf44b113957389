"""The table of methods: names, aliases, default options, option checks.

Names are looked up case-insensitively with ``-``, ``_`` and spaces ignored, so
``"IG"``, ``"ig"``, ``"integrated_gradients"`` and ``"Integrated-Gradients"`` all
name the same method. Options are checked when a method object is built and
again when a call overrides them, and every message names the option.
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..errors import InputError, MethodError
from .integrated_gradients import integrated_gradients, prepare_exact
from .quadrature import RULES
from .saliency import input_x_gradient, saliency
from .smoothgrad import VARIANTS, smoothgrad
from .xgradient import warn_if_not_homogeneous, xgradient


@dataclass(frozen=True)
class MethodSpec:
    """One attribution method as the front end sees it.

    Attributes:
        name: canonical readable name ("integrated_gradients").
        short: the papers' short name ("IG").
        func: ``func(B, f, x, labels, **options) -> tensor`` (or ``(tensor, gap)``).
        defaults: every option the method takes, with its default.
        aliases: further accepted names.
        uses_baseline: the method takes ``baseline=`` (the API converts it).
        supports_gap: ``return_gap=True`` gives the completeness gap.
        passes: forward+backward passes per input, as a function of the options.
        paper: the reference to cite.
        prepare: optional ``prepare(B, model, x, options)`` the front end calls
            after converting ``x`` and before running the model: checks that need
            the model (XG's homogeneity warning, IG's ``exact=True``) and
            conversion of method-specific options in place (EG's ``background``,
            a layer method's ``layer``).
        takes_layer: the method explains a layer and takes ``layer=``.
        output: ``"like_x"`` (attributions shaped like ``x``) or ``"map"`` (one
            map per example: ``(N, 1, H, W)`` for NCHW, ``(N, H, W, 1)`` for NHWC).
        needs: the backend capabilities (:data:`boundary_xg.backends.CAPABILITIES`)
            the method calls beyond the core primitives, e.g. ``("layers",)``; the
            front end checks them before any work and names the backends that have them.
        checks: option name -> validator raising :class:`InputError`, for the
            method's own options (consulted before the shared :data:`CHECKS`).
        summary: one line saying what the method computes (README's table).
    """

    name: str
    short: str
    func: Callable
    defaults: Mapping[str, Any]
    aliases: Tuple[str, ...] = ()
    uses_baseline: bool = False
    supports_gap: bool = False
    passes: Callable[[Mapping[str, Any]], int] = field(default=lambda o: 1)
    paper: str = ""
    prepare: Optional[Callable[..., None]] = None
    takes_layer: bool = False
    output: str = "like_x"
    needs: Tuple[str, ...] = ()
    checks: Mapping[str, Callable[[Any], None]] = field(default_factory=dict)
    summary: str = ""


def _key(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch not in "-_ ")


METHODS: Dict[str, MethodSpec] = {}
_LOOKUP: Dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the table under its name, short name and aliases."""
    METHODS[spec.name] = spec
    for alias in (spec.name, spec.short) + tuple(spec.aliases):
        _LOOKUP[_key(alias)] = spec
    return spec


def valid_names() -> list:
    """Short and readable names of every registered method."""
    return sorted({n for s in METHODS.values() for n in (s.short, s.name)}, key=str.lower)


def lookup(method: Any) -> MethodSpec:
    """The :class:`MethodSpec` called ``method``.

    Raises:
        MethodError: unknown name; the message lists the valid ones.
    """
    spec = _LOOKUP.get(_key(method)) if isinstance(method, str) else None
    if spec is None:
        raise MethodError(f"method={method!r} is not a known method; valid names: {valid_names()}.")
    return spec


# --- option checks -----------------------------------------------------------------
def _int_at_least(name: str, least: int) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < least:
            raise InputError(f"{name}={v!r}: expected an integer >= {least}.")
    return check


def _nonneg_float(name: str, optional: bool = False) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if optional and v is None:
            return
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise InputError(f"{name}={v!r}: expected a finite number >= 0.")
    return check


def _one_of(name: str, choices: Tuple[str, ...]) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if v not in choices:
            raise InputError(f"{name}={v!r}: expected one of {list(choices)}.")
    return check


def _boolean(name: str) -> Callable[[Any], None]:
    def check(v: Any) -> None:
        if not isinstance(v, bool):
            raise InputError(f"{name}={v!r}: expected True or False.")
    return check


def _seed(v: Any) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
        raise InputError(f"seed={v!r}: expected an integer or None.")


def _batch_size(v: Any) -> None:
    if v is not None:
        _int_at_least("batch_size", 1)(v)


#: option validators for the ``checks`` of registrations in other modules
boolean_option = _boolean

CHECKS: Dict[str, Callable[[Any], None]] = {
    "steps": _int_at_least("steps", 1),
    "num_samples": _int_at_least("num_samples", 1),
    "sigma": _nonneg_float("sigma"),
    "sigma_abs": _nonneg_float("sigma_abs", optional=True),
    "rule": _one_of("rule", RULES),
    "variant": _one_of("variant", VARIANTS),
    "abs": _boolean("abs"),
    "create_graph": _boolean("create_graph"),
    "return_gap": _boolean("return_gap"),
    "exact": _boolean("exact"),
    "seed": _seed,
    "batch_size": _batch_size,
    "model_mode": _one_of("model_mode", ("eval", "as_is")),
}

#: options every method takes (handled by the front end)
COMMON_OPTIONS: Dict[str, Any] = {"batch_size": None, "backend": None, "model_mode": "eval", "output": None}


def check_options(spec: MethodSpec, options: Mapping[str, Any]) -> None:
    """Raise a clear error for an option the method does not take or a bad value."""
    allowed = set(spec.defaults) | set(COMMON_OPTIONS) | ({"return_gap"} if spec.supports_gap else set())
    for name, value in options.items():
        if name not in allowed:
            hint = ""
            if name == "return_gap":
                hint = f" (only path methods report a completeness gap; {spec.short} does not)"
            elif name == "layer":
                layered = sorted(s.short for s in METHODS.values() if s.takes_layer)
                hint = f" (it explains the input, not a layer; methods that take layer=: {layered})"
            raise MethodError(
                f"{spec.short} takes no option {name!r}{hint}; its options are {sorted(allowed)}."
            )
        if name in spec.checks:
            spec.checks[name](value)
        elif name in CHECKS:
            CHECKS[name](value)


register(MethodSpec(
    name="saliency", short="SM", func=saliency, defaults={"abs": False},
    aliases=("saliency_map", "gradient", "grad", "vanilla_gradient"),
    paper="Simonyan et al., Deep Inside Convolutional Networks, 2014",
))
register(MethodSpec(
    name="input_x_gradient", short="IxG", func=input_x_gradient, defaults={},
    aliases=("inputxgradient", "input_times_gradient", "gradient_x_input", "inputgrad"),
    paper="Shrikumar et al., Not Just a Black Box, 2016",
))
register(MethodSpec(
    name="integrated_gradients", short="IG", func=integrated_gradients,
    defaults={"baseline": None, "steps": 50, "rule": "gausslegendre", "exact": False},
    aliases=("integratedgradients", "intgrad"), uses_baseline=True, supports_gap=True,
    passes=lambda o: 1 if o.get("exact") else int(o["steps"]),
    prepare=prepare_exact,
    paper="Sundararajan et al., Axiomatic Attribution for Deep Networks, ICML 2017",
))
register(MethodSpec(
    name="smoothgrad", short="SG", func=smoothgrad,
    defaults={"num_samples": 50, "sigma": 0.15, "sigma_abs": None, "variant": "smoothgrad", "seed": None},
    aliases=("smooth_grad", "smoothgradient"),
    passes=lambda o: int(o["num_samples"]),
    paper="Smilkov et al., SmoothGrad: removing noise by adding noise, 2017",
))
register(MethodSpec(
    name="x_gradient", short="XG", func=xgradient, defaults={"create_graph": False},
    aliases=("xgradient", "x-gradient"), prepare=warn_if_not_homogeneous,
    paper="Hesse et al., Fast Axiomatic Attribution for Neural Networks, NeurIPS 2021",
))

# --- Expected Gradients (issue 6) ---------------------------------------------------
from .expected_gradients import expected_gradients, prepare_background  # noqa: E402

register(MethodSpec(
    name="expected_gradients", short="EG", func=expected_gradients,
    defaults={"background": None, "num_samples": 50, "seed": None},
    aliases=("expectedgradients", "expgrad"), supports_gap=True,
    passes=lambda o: int(o["num_samples"]), prepare=prepare_background,
    paper="Erion et al., Improving performance of deep learning models with axiomatic "
          "attribution priors and expected gradients, Nature Machine Intelligence 2021",
))

# --- DeepLIFT (issue 3) -------------------------------------------------------------
from .deeplift import deeplift  # noqa: E402

register(MethodSpec(
    name="deeplift", short="DeepLIFT", func=deeplift, defaults={"baseline": None},
    aliases=("deep_lift", "dl", "rescale"), uses_baseline=True, supports_gap=True, needs=("deeplift",),
    # at most: a baseline forward and an input forward+backward cost less than the
    # doubled batch's two rows (a shared baseline costs one row)
    passes=lambda o: 2,
    paper="Shrikumar, Greenside, Kundaje, Learning Important Features Through Propagating "
          "Activation Differences, ICML 2017",
))
