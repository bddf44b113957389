"""Reference-based path methods: IG-Uniform, IG-SG and IG-SQ, with attribution re-calibration.

Integrated Gradients averaged over ``M`` references per example, each path
integrated with ``k`` nodes of a quadrature rule, over the full grid of
``M x k`` points (see :mod:`boundary_xg.methods.recalibration`):

* **IG_Uniform**: references drawn uniformly within ``bounds`` (Sturmfels,
  Lundberg, Lee, "Visualizing the Impact of Feature Attribution Baselines",
  Distill 2020);
* **IG_SG**: references are noisy copies of the example itself,
  ``clip(x + N(0, sigma^2 range(x)^2), bounds)`` (SmoothGrad's noise, Smilkov et
  al. 2017, as references of IG);
* **IG_SQ**: IG_SG's references, the per-reference mean gradient squared,
  ``1/M sum_m (x - r_m) * G_m^2`` (after Hooker et al., "A Benchmark for
  Interpretability Methods in Deep Neural Networks", NeurIPS 2019, as defined
  in the re-calibration code).

``references=`` passes the references explicitly, ``(M, ...)`` shared by all
examples or ``(N, M, ...)`` per example, so results can be reproduced and
checked; otherwise ``num_references`` (default 10) are drawn with ``seed``, on
the model's device. All three take ``recalibrate="valid_ip"|"valid_ref"``
(Yang et al., ICLR 2023) and ``pairing="rec"`` (the reference code's layout).
Cost: ``M * k`` forward+backward passes per input (50 at the defaults).
"""

from __future__ import annotations

from typing import Any, Callable, Dict, Optional

import numpy as np

from ..backends import Backend, foreign_tensor
from ..errors import InputError
from ..ops import expand_rows, per_example_range
from ..search.pipeline import prepare_bounds
from .recalibration import check_gap_options, grid_attribution
from .registry import MethodSpec, register

#: references drawn when neither ``references`` nor ``num_references`` is given
DEFAULT_NUM_REFERENCES = 10


# --- the entry's checks and conversions ---------------------------------------------
def convert_references(B: Backend, refs: Any, x: Any, num_references: Optional[int], method: str) -> Any:
    """Explicit ``references`` as a tensor ``(M, ...)`` or ``(N, M, ...)`` with ``x``'s dtype and device.

    Raises:
        InputError: another framework's tensor, a non-numeric array, a shape that is
            neither ``(M,) + example`` nor ``(N, M) + example``, no references, NaN or
            infinity, or ``num_references`` that contradicts ``M``.
    """
    root = foreign_tensor(refs, B)
    if root is not None:
        raise InputError(f"references is a {root} tensor but the model runs on the {B.name} backend.")
    if not B.is_tensor(refs):
        arr = np.asarray(refs)
        if arr.dtype.kind not in "biuf":
            raise InputError(f"references has dtype {arr.dtype}; expected a numeric array.")
        refs = arr
    rt = B.cast(B.asarray(refs, like=x), x)
    rshape, xshape = tuple(B.shape(rt)), tuple(B.shape(x))
    example = xshape[1:]
    if len(rshape) == len(xshape) and rshape[1:] == example:
        m = rshape[0]
    elif len(rshape) == len(xshape) + 1 and rshape[0] == xshape[0] and rshape[2:] == example:
        m = rshape[1]
    else:
        raise InputError(
            f"references has shape {rshape}; expected (M,) + x's example shape {example} (shared by "
            f"all examples) or (N, M) + {example} with N = {xshape[0]} (one set per example), in "
            "the model's layout."
        )
    if m == 0:
        raise InputError("references holds no references (M = 0); pass at least one.")
    if num_references is not None and num_references != m:
        raise InputError(
            f"num_references={num_references} but references holds M = {m}; drop num_references "
            "(it is taken from references) or pass matching references."
        )
    if not B.all_finite(rt):
        raise InputError("references contains NaN or infinity; expected finite values.")
    return rt


def _prepare(kind: str) -> Callable[[Backend, Any, Any, Dict[str, Any]], None]:
    """The front end's pre-check of IG_Uniform / IG_SG / IG_SQ (converts options in place)."""
    method = {"uniform": "IG_Uniform", "noise": "IG_SG", "square": "IG_SQ"}[kind]

    def prepare(B: Backend, model: Any, x: Any, options: Dict[str, Any]) -> None:
        refs = options.get("references")
        if refs is not None:
            options["references"] = convert_references(B, refs, x, options.get("num_references"), method)
        bounds = options.get("bounds")
        if kind == "uniform" and refs is None:
            if bounds is None:
                raise InputError(
                    "IG_Uniform draws its references uniformly within bounds=(low, high), the box "
                    "the inputs live in (e.g. (0, 1) for pixels, or per-channel arrays for "
                    "normalised images); pass bounds=, or the references themselves with references=."
                )
        if bounds is not None:
            lo, hi = prepare_bounds(B, bounds, x)
            if kind == "uniform" and refs is None and not (
                    B.all_finite(lo) and B.all_finite(hi)):
                raise InputError("IG_Uniform: bounds=(low, high) must be finite to draw references within them.")
            options["bounds"] = (lo, hi)
    return prepare


# --- the methods ----------------------------------------------------------------------
def ig_uniform(
    B: Backend, f: Callable, x: Any, labels: Any, *, references: Any = None,
    num_references: Optional[int] = None, steps: int = 5, rule: str = "gausslegendre",
    bounds: Any = None, seed: Optional[int] = None, pairing: str = "full",
    recalibrate: Optional[str] = None, batch_size: Optional[int] = None, return_gap: bool = False,
) -> Any:
    """IG averaged over references drawn uniformly within ``bounds``.

    Args:
        B: the backend; f: the logits function (its objective is explained).
        x: inputs ``(N, ...)``; labels: ``(N,)`` class indices.
        references: explicit references ``(M, ...)`` (shared) or ``(N, M, ...)``;
            None (default) draws ``num_references`` of them per example.
        num_references: ``M`` (default 10 when drawn).
        steps: ``k``, quadrature nodes per path (default 5).
        rule: quadrature rule of IG (default ``"gausslegendre"``).
        bounds: ``(low, high)`` tensors broadcastable to one example (the front
            end converts scalars and per-channel arrays); needed to draw.
        seed: seed of the draws (None: fresh randomness).
        pairing: ``"full"`` (default, the M x k grid) or ``"rec"`` (the reference
            code's layout, docs/recalibration.md).
        recalibrate: None, ``"valid_ip"`` or ``"valid_ref"``.
        batch_size: model inputs per forward/backward.
        return_gap: also return ``sum(attr) - (Phi(x) - mean_m Phi(r_m))``, ``(N,)``.

    Returns:
        Attributions shaped like ``x`` (non-negative with ``recalibrate``), or
        ``(attributions, gap)``.
    """
    check_gap_options(return_gap, recalibrate, "IG_Uniform")
    refs, m = _uniform_source(B, x, references, num_references, bounds, seed)
    return grid_attribution(B, f, x, labels, refs, num_references=m, steps=steps, rule=rule,
                            pairing=pairing, recalibrate=recalibrate, batch_size=batch_size,
                            return_gap=return_gap)


def ig_sg(
    B: Backend, f: Callable, x: Any, labels: Any, *, references: Any = None,
    num_references: Optional[int] = None, steps: int = 5, rule: str = "gausslegendre",
    sigma: float = 0.15, sigma_abs: Optional[float] = None, bounds: Any = None,
    seed: Optional[int] = None, pairing: str = "full", recalibrate: Optional[str] = None,
    batch_size: Optional[int] = None, return_gap: bool = False,
) -> Any:
    """IG averaged over noisy copies of each example (references ``clip(x + noise, bounds)``).

    Args:
        sigma: noise std as a fraction of each example's value range
            ``max(x_n) - min(x_n)`` (default 0.15, SmoothGrad's).
        sigma_abs: absolute noise std in input units; overrides ``sigma``.
        bounds: ``(low, high)`` to clip the noisy copies to (None: no clipping).
        Others: as :func:`ig_uniform`.

    Returns:
        Attributions shaped like ``x``, or ``(attributions, gap)``.
    """
    check_gap_options(return_gap, recalibrate, "IG_SG")
    refs, m = _noise_source(B, x, references, num_references, sigma, sigma_abs, bounds, seed)
    return grid_attribution(B, f, x, labels, refs, num_references=m, steps=steps, rule=rule,
                            pairing=pairing, recalibrate=recalibrate, batch_size=batch_size,
                            return_gap=return_gap)


def ig_sq(
    B: Backend, f: Callable, x: Any, labels: Any, *, references: Any = None,
    num_references: Optional[int] = None, steps: int = 5, rule: str = "gausslegendre",
    sigma: float = 0.15, sigma_abs: Optional[float] = None, bounds: Any = None,
    seed: Optional[int] = None, pairing: str = "full", recalibrate: Optional[str] = None,
    batch_size: Optional[int] = None,
) -> Any:
    """IG-SQ: ``1/M sum_m (x - r_m) * G_m^2`` over IG_SG's references.

    ``G_m = sum_s w_s g(x_{m,s})`` is reference ``m``'s mean path gradient; it is
    squared before the signed difference multiplies it (so the sign of
    ``x - r_m`` survives), as the re-calibration code defines IG-SQ. With
    ``recalibrate`` the non-negative terms are squared and averaged (their scale
    is that of a squared attribution). Options as :func:`ig_sg`.

    Returns:
        Attributions shaped like ``x``.
    """
    refs, m = _noise_source(B, x, references, num_references, sigma, sigma_abs, bounds, seed)
    return grid_attribution(B, f, x, labels, refs, num_references=m, steps=steps, rule=rule,
                            pairing=pairing, recalibrate=recalibrate, square=True,
                            batch_size=batch_size)


# --- reference sources ------------------------------------------------------------------
def _explicit(B: Backend, x: Any, references: Any) -> tuple:
    shape = B.shape(references)
    m = shape[0] if len(shape) == len(B.shape(x)) else shape[1]
    return references, int(m)


def _uniform_source(B: Backend, x: Any, references: Any, num_references: Optional[int],
                    bounds: Any, seed: Optional[int]) -> tuple:
    """``(references or draw(n0, n1), M)``: uniform draws within ``bounds``."""
    if references is not None:
        return _explicit(B, x, references)
    m = int(num_references or DEFAULT_NUM_REFERENCES)
    lo, hi = bounds
    width = hi - lo
    example = tuple(B.shape(x)[1:])
    rng = B.rng(seed, like=x)

    def draw(n0: int, n1: int) -> Any:
        u = B.uniform(rng, ((n1 - n0) * m,) + example, like=x)
        return B.reshape(lo + u * width, (n1 - n0, m) + example)
    return draw, m


def _noise_source(B: Backend, x: Any, references: Any, num_references: Optional[int], sigma: float,
                  sigma_abs: Optional[float], bounds: Any, seed: Optional[int]) -> tuple:
    """``(references or draw(n0, n1), M)``: noisy copies of each example, clipped to ``bounds``."""
    if references is not None:
        return _explicit(B, x, references)
    m = int(num_references or DEFAULT_NUM_REFERENCES)
    shape = B.shape(x)
    example, nd = tuple(shape[1:]), len(shape)
    if sigma_abs is None:
        std = float(sigma) * per_example_range(B, x)  # one std per example, not per batch
    else:
        std = B.zeros_like(per_example_range(B, x)) + float(sigma_abs)
    rng = B.rng(seed, like=x)

    def draw(n0: int, n1: int) -> Any:
        nb = n1 - n0
        ex = n0 + B.arange(0, nb * m, like=x) // m
        noise = B.normal(rng, (nb * m,) + example, like=x) * expand_rows(B, B.gather(std, ex), nd)
        refs = B.gather(x, ex) + noise
        if bounds is not None:
            refs = B.minimum(B.maximum(refs, bounds[0]), bounds[1])
        return B.reshape(refs, (nb, m) + example)
    return draw, m


# --- registration -------------------------------------------------------------------------
_PAPER_REC = ("Yang, Akhtar, Wen, Shah, Mian, Re-calibrating Feature Attributions for Model "
              "Interpretation, ICLR 2023")
_COMMON = {"references": None, "num_references": None, "steps": 5, "rule": "gausslegendre",
           "bounds": None, "seed": None, "pairing": "full"}


def _passes(o: Dict[str, Any]) -> int:
    return int(o.get("num_references") or DEFAULT_NUM_REFERENCES) * int(o["steps"])


register(MethodSpec(
    name="ig_uniform", short="IG_Uniform", func=ig_uniform, defaults=dict(_COMMON),
    aliases=("integrated_gradients_uniform", "ig_uniform_references"), supports_gap=True,
    passes=_passes, prepare=_prepare("uniform"), recalibrate=True,
    summary=('IG averaged over `num_references` (M = 10) references drawn uniformly within `bounds` (or '
             'explicit `references=`, `(M, ...)` shared or `(N, M, ...)`), `steps` (k = 5) nodes of any '
             'IG `rule` each, over the full M x k grid; `seed`, `recalibrate`, `pairing` (`"full"`; '
             '`"rec"` reproduces the reference code\'s layout), `return_gap`'),
    cost='M x k', in_demo=True,
    paper="Sturmfels, Lundberg, Lee, Visualizing the Impact of Feature Attribution Baselines, "
          "Distill 2020; " + _PAPER_REC,
))
register(MethodSpec(
    name="ig_sg", short="IG_SG", func=ig_sg,
    defaults=dict(_COMMON, sigma=0.15, sigma_abs=None),
    aliases=("ig_smoothgrad", "integrated_gradients_sg"), supports_gap=True,
    passes=_passes, prepare=_prepare("noise"), recalibrate=True,
    summary=('as IG_Uniform with noisy copies of each example as references: `sigma` (0.15 of each '
             "example's range) or `sigma_abs`, clipped to `bounds` if given"),
    cost='M x k', in_demo=True,
    paper="Smilkov et al., SmoothGrad, 2017; " + _PAPER_REC,
))
register(MethodSpec(
    name="ig_sq", short="IG_SQ", func=ig_sq,
    defaults=dict(_COMMON, sigma=0.15, sigma_abs=None),
    aliases=("ig_squared", "integrated_gradients_sq"),
    passes=_passes, prepare=_prepare("square"), recalibrate=True,
    summary="IG_SG's references, `1/M sum_m (x - r_m) G_m^2` with `G_m` reference m's mean path gradient",
    cost='M x k',
    paper="Hooker et al., A Benchmark for Interpretability Methods in Deep Neural Networks, "
          "NeurIPS 2019; " + _PAPER_REC,
))
