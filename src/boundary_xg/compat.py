"""Drop-in compatibility with the reference package ``boundary`` (zifanw/boundary).

The only module that knows the reference's names. It provides ``PARAMETERS`` and
``PIPELINE`` (the reference defaults, in our semantics), ``BA_pytorch``,
``BA_tensorflow`` and ``get_boundary_points``, and maps the legacy keywords:

=================  ===============================================================
legacy             ours
=================  ===============================================================
``y_onehot``       ``labels`` (one-hot or indices)
``pipline=``       ``attacks`` (``pipeline=`` is accepted too)
``n_steps``        ``steps`` (IG, BIG) or ``num_samples`` (SG, BSG); dropped elsewhere
``stdevs``         ``sigma_abs`` (SG, BSG: absolute noise std); dropped elsewhere
``data_min/max``   ``bounds=(data_min, data_max)`` of the boundary search
``device``         ignored: the model's own device is used
``backend``        ignored by ``BA_pytorch``/``BA_tensorflow`` (the class decides)
``return_dis``     ``return_dis`` (boundary variants; ``(attr, None)`` for plain ones)
=================  ===============================================================

Semantics differ from the reference where it has defects (docs/boundary.md): PGD's
``pgd_step_size=None`` means the absolute step ``2.5 * eps / steps``; ``cw_eps``
is ignored (CW points are not clipped back to a radius); examples never found
are reported instead of silently kept. See docs/boundary.md.
"""

from __future__ import annotations

import copy
from typing import Any, Dict, List, Optional

from .api import BA
from .errors import InputError
from .search.base import is_attack
from .search.cw import CW
from .search.pgd import PGD
from .search.pipeline import BoundaryResult, find_boundary


class Preset(dict):
    """A dict of settings that also allows attribute access (``PARAMETERS.backend = 'tf.keras'``)."""

    def __getattr__(self, name: str) -> Any:
        try:
            return self[name]
        except KeyError as err:
            raise AttributeError(name) from err

    def __setattr__(self, name: str, value: Any) -> None:
        self[name] = value

    def __delattr__(self, name: str) -> None:
        try:
            del self[name]
        except KeyError as err:
            raise AttributeError(name) from err

    def copy(self) -> "Preset":
        """A deep copy (the presets are shared module state; copy before editing)."""
        return Preset(copy.deepcopy(dict(self)))


#: the reference's attribution settings (boundary/default.py)
PARAMETERS = Preset(
    batch_size=32,
    data_min=-2.117904,  # min_c (0 - mean_c) / std_c, ImageNet normalisation
    data_max=2.64,       # max_c (1 - mean_c) / std_c
    device="cuda:0",     # ignored: the model's device is used
    n_steps=10,
    stdevs=0.15,
)

#: the reference's boundary-search settings
PIPELINE = Preset(
    methods="PGDs+CW",
    norm="l2",
    pgd_eps=[36 / 255, 64 / 255, 0.3, 0.5, 0.7, 0.9, 1.1],
    pgd_step_size=None,  # ours: absolute step 2.5 * eps / steps
    pgd_max_steps=40,
    cw_eps=1.0,          # ignored: CW points are not clipped
    cw_step_size=0.01,
    cw_max_steps=100,
)


def attacks_from_pipeline(pipeline: Any) -> List[Any]:
    """Our attack list from a reference pipeline dict (``PIPELINE``-like), or the list itself.

    Raises:
        InputError: the pipeline asks for no known attack.
    """
    if pipeline is None:
        pipeline = PIPELINE
    if isinstance(pipeline, (list, tuple)) and all(is_attack(a) for a in pipeline):
        return list(pipeline)
    if is_attack(pipeline):
        return [pipeline]
    p = dict(PIPELINE)
    p.update(dict(pipeline))
    methods = str(p.get("methods", ""))
    attacks: List[Any] = []
    if "PGD" in methods.upper():
        eps = p["pgd_eps"]
        attacks.append(PGD(
            eps=eps, steps=int(p["pgd_max_steps"]),
            norm="l2" if str(p.get("norm", "l2")).lower() == "l2" else "linf",
            step_size=p.get("pgd_step_size"),
        ))
    if "CW" in methods.upper():
        attacks.append(CW(steps=int(p["cw_max_steps"]), step_size=float(p["cw_step_size"])))
    if not attacks:
        raise InputError(f"pipeline methods={methods!r}: expected 'PGDs', 'CW' or 'PGDs+CW'.")
    return attacks


def _is_attack_list(pipeline: Any) -> bool:
    return is_attack(pipeline) or (isinstance(pipeline, (list, tuple)) and bool(pipeline)
                                   and all(is_attack(a) for a in pipeline))


_STEPS_NAME = {"IG": "steps", "BIG": "steps", "SG": "num_samples", "BSG": "num_samples"}
_BOUNDARY = ("BSM", "BSG", "BIG", "BDT")


def translate_options(short: str, options: Dict[str, Any], pipeline: Any = None) -> Dict[str, Any]:
    """Map legacy keywords (``PARAMETERS`` keys, ``pipline``) to the options of method ``short``."""
    opts = dict(options)
    out: Dict[str, Any] = {}
    n_steps = opts.pop("n_steps", None)
    stdevs = opts.pop("stdevs", None)
    data_min = opts.pop("data_min", None)
    data_max = opts.pop("data_max", None)
    opts.pop("device", None)
    if n_steps is not None and short in _STEPS_NAME:
        out[_STEPS_NAME[short]] = int(n_steps)
    if stdevs is not None and short in ("SG", "BSG"):
        out["sigma_abs"] = float(stdevs)
    if short in _BOUNDARY:
        if data_min is not None or data_max is not None:
            out["bounds"] = (data_min if data_min is not None else float("-inf"),
                             data_max if data_max is not None else float("inf"))
        if pipeline is not None or "attacks" not in opts:
            out["attacks"] = attacks_from_pipeline(pipeline)
            if not _is_attack_list(pipeline):
                out.setdefault("refine", 0)  # the reference's points: no refinement
    out.update(opts)
    return out


class _LegacyBA(BA):
    _backend = "torch"

    def __init__(self, name: str, use_boundary: bool = True, **options: Any):
        super().__init__(name, use_boundary=use_boundary, **options)

    def attribute(self, model: Any, x: Any, y_onehot: Any = None, pipline: Any = None,
                  return_dis: bool = False, **kwargs: Any) -> Any:
        """Attributions as the reference computes them (see the module docstring for the names).

        Args:
            model: the model of this class's framework.
            x: NumPy inputs ``(N, ...)`` in the model's layout.
            y_onehot: one-hot ``(N, C)`` or class indices ``(N,)``.
            pipline: a ``PIPELINE``-like dict or a list of attacks (None: ``PIPELINE``).
            return_dis: also return the distance to the boundary point ``(N,)``.
            **kwargs: ``PARAMETERS`` keys or our own option names.

        Returns:
            Attributions like ``x``, or ``(attributions, distances)``.
        """
        labels = kwargs.pop("labels", y_onehot)
        pipeline = kwargs.pop("pipeline", pipline)
        kwargs.pop("backend", None)
        short = self.spec.short
        opts = translate_options(short, kwargs, pipeline)
        if short in _BOUNDARY:
            return super().attribute(model, x, labels, backend=self._backend, return_dis=return_dis, **opts)
        attr = super().attribute(model, x, labels, backend=self._backend, **opts)
        return (attr, None) if return_dis else attr


class BA_pytorch(_LegacyBA):  # noqa: N801 - the reference's name
    """``BA_pytorch(name, use_boundary=True)``: the reference's PyTorch front end (a :class:`BA`)."""

    _backend = "torch"


class BA_tensorflow(_LegacyBA):  # noqa: N801 - the reference's name
    """``BA_tensorflow(name, use_boundary=True)``: the reference's Keras front end (a :class:`BA`)."""

    _backend = "tensorflow"


def get_boundary_points(model: Any, x: Any, y_onehot: Any = None, batch_size: Optional[int] = 64,
                        pipeline: Any = None, clamp: Any = None, backend: Optional[str] = None,
                        device: Any = None, seed: Optional[int] = 0, progress: Optional[bool] = None,
                        **kwargs: Any) -> BoundaryResult:
    """The boundary search under its reference name; see :func:`find_boundary`.

    Accepts the reference's keywords: ``y_onehot`` (labels), ``pipeline`` (a
    ``PIPELINE``-like dict or a list of attacks; None: ``PIPELINE``), ``clamp``
    (``(low, high)`` bounds; None: unbounded), ``device`` (ignored),
    ``backend`` ("pytorch", "tf.keras", ...), and ``attacks``/``bounds``/``labels``.

    Returns:
        :class:`BoundaryResult` (unpacks as ``points, distances, found``).
    """
    labels = kwargs.pop("labels", y_onehot)
    attacks = kwargs.pop("attacks", None)
    bounds = kwargs.pop("bounds", clamp)
    refine = kwargs.pop("refine", None)
    if kwargs:
        raise InputError(f"get_boundary_points takes no option(s) {sorted(kwargs)}.")
    if attacks is None:
        attacks = attacks_from_pipeline(pipeline)
        if refine is None and not _is_attack_list(pipeline):
            refine = 0  # the reference's points: no refinement
    return find_boundary(model, x, labels, attacks=attacks, bounds=bounds, seed=seed,
                         batch_size=batch_size, progress=progress, backend=backend, refine=refine)
