"""The table of methods: what each method is, under which names, with which options.

Every method registers itself next to its code (``methods/saliency.py``,
``methods/gradcam.py``, ...) with ``register(MethodSpec(...))``: its names,
options and their checks, whether it takes a layer, the shape of its output, the
backend capabilities it needs, its cost and its paper. This module holds only
the table and what reads it; it imports no method, so a method module can import
it without an import circle. ``methods/__init__.py`` imports every method module,
so the table is complete as soon as anything under ``boundary_xg.methods`` is
imported. A new method is one new module plus one line there.

Names are looked up case-insensitively with ``-``, ``_`` and spaces ignored, so
``"IG"``, ``"ig"``, ``"integrated_gradients"`` and ``"Integrated-Gradients"`` all
name the same method. Options are checked when a method object is built and
again when a call overrides them, and every message names the option.

README's method table, the command line's ``--method`` help and the demo's
method list are generated from this table (``boundary_xg.methods_table()``,
``boundary_xg.method_names()``).
"""

from __future__ import annotations

import math
import numbers
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Mapping, Optional, Tuple

from ..errors import InputError, MethodError
from ..ops import OBJECTIVES


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
        paper: the reference to cite (README's table shows it; Markdown ``*title*``).
        prepare: optional ``prepare(B, model, x, options)`` the front end calls
            after converting ``x`` and before running the model: checks that need
            the model (XG's homogeneity warning, IG's ``exact=True``, DeepLIFT's
            refusal of TorchScript) and conversion of method-specific options in
            place (EG's ``background``, a layer method's ``layer``).
        takes_layer: the method explains a layer and takes ``layer=``.
        output: ``"like_x"`` (attributions shaped like ``x``) or ``"map"`` (one
            map per example: ``(N, 1, H, W)`` for NCHW, ``(N, H, W, 1)`` for NHWC).
        needs: the backend capabilities (:data:`boundary_xg.backends.CAPABILITIES`)
            the method calls beyond the core primitives, e.g. ``("layers",)``; the
            front end checks them before any work and names the backends that have them.
        checks: option name -> validator raising :class:`InputError`, for the
            method's own options (consulted before the shared :data:`CHECKS`).
        summary: what the method computes and its main options (README's table,
            Markdown); empty: the first line of ``func``'s docstring.
        cost: forward+backward passes per input as README's table states them
            (``"1"``, ``"`steps`"``); empty: ``passes`` of the defaults.
        base: for a boundary variant, the short name of its base method ("IG" for BIG).
        in_demo: the demo (``boundary-xg demo``) shows the method.
        objectives: the scalars the method can explain (``objective=``; default:
            all of :data:`~boundary_xg.ops.OBJECTIVES`, for methods whose
            gradients go through :func:`~boundary_xg.ops.label_scores` or the
            backends' layer capture); ``("logit",)`` for DeepLIFT.
        recalibrate: the method takes ``recalibrate="valid_ip"|"valid_ref"``
            (attribution re-calibration, see :mod:`boundary_xg.methods.recalibration`);
            the front end passes ``recalibrate=`` (default None) to ``func``.
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
    cost: str = ""
    base: str = ""
    in_demo: bool = False
    objectives: Tuple[str, ...] = OBJECTIVES
    recalibrate: bool = False


def _key(name: str) -> str:
    return "".join(ch for ch in str(name).lower() if ch not in "-_ ")


#: canonical name -> spec, in registration order (README's table order)
METHODS: Dict[str, MethodSpec] = {}
_LOOKUP: Dict[str, MethodSpec] = {}


def register(spec: MethodSpec) -> MethodSpec:
    """Add ``spec`` to the table under its name, short name and aliases.

    Registering a name again replaces the entry (in place: its table position stays).
    """
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
        raise MethodError(f"method={method!r} is not a known method;{_did_you_mean(method)} valid "
                          f"names (each method's short name, then its other names): {_all_names()}.")
    return spec


def _all_names() -> str:
    """"SM (saliency, saliency_map, ...); IxG (...); ...": every name ``lookup`` accepts."""
    parts = []
    for s in sorted(METHODS.values(), key=lambda s: s.short.lower()):
        others = [n for n in dict.fromkeys((s.name,) + tuple(s.aliases)) if n != s.short]
        parts.append(f"{s.short} ({', '.join(others)})" if others else s.short)
    return "; ".join(parts)


def _did_you_mean(method: Any) -> str:
    import difflib

    if not isinstance(method, str):
        return ""
    close = difflib.get_close_matches(_key(method), list(_LOOKUP), n=1, cutoff=0.6)
    return f" did you mean {_LOOKUP[close[0]].short!r}?" if close else ""


# --- option checks (shared; a method's own go in its MethodSpec.checks) ----------------
def int_at_least(name: str, least: int) -> Callable[[Any], None]:
    """A check: ``name`` is an integer >= ``least`` (not a bool)."""
    def check(v: Any) -> None:
        if isinstance(v, bool) or not isinstance(v, numbers.Integral) or v < least:
            raise InputError(f"{name}={v!r}: expected an integer >= {least}.")
    return check


def nonneg_float(name: str, optional: bool = False) -> Callable[[Any], None]:
    """A check: ``name`` is a finite number >= 0 (or None with ``optional``)."""
    def check(v: Any) -> None:
        if optional and v is None:
            return
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v < 0:
            raise InputError(f"{name}={v!r}: expected a finite number >= 0.")
    return check


def one_of(name: str, choices: Tuple[str, ...]) -> Callable[[Any], None]:
    """A check: ``name`` is one of ``choices``."""
    def check(v: Any) -> None:
        if v not in choices:
            raise InputError(f"{name}={v!r}: expected one of {list(choices)}.")
    return check


def boolean_option(name: str) -> Callable[[Any], None]:
    """A check: ``name`` is True or False."""
    def check(v: Any) -> None:
        if not isinstance(v, bool):
            raise InputError(f"{name}={v!r}: expected True or False.")
    return check


def positive_float(name: str, optional: bool = False) -> Callable[[Any], None]:
    """A check: ``name`` is a finite number > 0 (or None when ``optional``)."""
    def check(v: Any) -> None:
        if optional and v is None:
            return
        if isinstance(v, bool) or not isinstance(v, numbers.Real) or not math.isfinite(v) or v <= 0:
            raise InputError(f"{name}={v!r}: expected a finite number > 0.")
    return check


def optional(check: Callable[[Any], None]) -> Callable[[Any], None]:
    """``check``, with None also accepted."""
    def checked(v: Any) -> None:
        if v is not None:
            check(v)
    return checked


def _seed(v: Any) -> None:
    if v is not None and (isinstance(v, bool) or not isinstance(v, numbers.Integral)):
        raise InputError(f"seed={v!r}: expected an integer or None.")


def _batch_size(v: Any) -> None:
    if v is not None:
        int_at_least("batch_size", 1)(v)


# the names the checks had before they were public
_int_at_least, _nonneg_float, _one_of, _boolean = int_at_least, nonneg_float, one_of, boolean_option

#: checks of options several methods share; a method's own (IG's ``rule``, SG's
#: ``variant``, GradCAM's ``relu``) are in its registration's ``checks``
CHECKS: Dict[str, Callable[[Any], None]] = {
    "steps": int_at_least("steps", 1),
    "num_samples": int_at_least("num_samples", 1),
    "sigma": nonneg_float("sigma"),
    "sigma_abs": nonneg_float("sigma_abs", optional=True),
    "abs": boolean_option("abs"),
    "create_graph": boolean_option("create_graph"),
    "return_gap": boolean_option("return_gap"),
    "exact": boolean_option("exact"),
    "seed": _seed,
    "batch_size": _batch_size,
    "model_mode": one_of("model_mode", ("eval", "as_is")),
    "objective": one_of("objective", OBJECTIVES),
}


def register_checks(checks: Mapping[str, Callable[[Any], None]]) -> None:
    """Add checks of options that several methods share, from the module that defines them
    (re-calibration's ``recalibrate`` and ``pairing``, the reference methods' counts)."""
    CHECKS.update(checks)

#: options every method takes (handled by the front end)
COMMON_OPTIONS: Dict[str, Any] = {
    "batch_size": None, "backend": None, "model_mode": "eval", "output": None, "objective": "logit",
}


def check_options(spec: MethodSpec, options: Mapping[str, Any]) -> None:
    """Raise a clear error for an option the method does not take or a bad value."""
    allowed = set(spec.defaults) | set(COMMON_OPTIONS) | ({"return_gap"} if spec.supports_gap else set())
    if spec.recalibrate:
        allowed.add("recalibrate")
    for name, value in options.items():
        if name not in allowed:
            hint = ""
            if name == "recalibrate":
                able = sorted(s.short for s in METHODS.values() if s.recalibrate)
                hint = f" (attribution re-calibration is supported by {able})"
            elif name == "return_gap":
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
        if name == "objective" and value not in spec.objectives:
            raise MethodError(
                f"objective={value!r}: {spec.short} explains only {list(spec.objectives)}; the "
                f"objectives {list(OBJECTIVES)} are available for the gradient methods "
                f"{sorted(s.short for s in METHODS.values() if len(s.objectives) > 1)}."
            )
