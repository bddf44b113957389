"""The front end: ``BA(method).attribute(model, x, labels)`` and ``attribute(...)``.

It picks the backend from the model, checks every argument once at the entry
(shapes, labels, baseline, NaN/inf, options), converts the input once, runs the
method (written once over the backend interface) inside a model session that
puts the model back exactly as it was, and returns the result in the caller's
type: NumPy in, NumPy out; a tensor in, a tensor of the same framework on the
same device out.

It also answers what the package offers, for the command line, the demo, the
heatmaps and users alike: :func:`method_info`, :func:`method_names` and
:func:`methods_table` read the method registry; :func:`available_frameworks`,
:func:`use_framework` and :func:`import_frameworks` the installed frameworks.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Dict, List, Mapping, Optional, Tuple

from ._entry import (
    ProbabilityOutputWarning,
    check_output_option,
    entry,
    one_row,
    prepare_baseline,
    prepare_labels,
    prepare_x,
    probe,
    resolve_backend,
    select_output,
    to_caller,
)
from .backends import require
from .backends import native_stderr_silenced  # noqa: F401  (re-exported for the command line)
from .backends import to_numpy as _backend_to_numpy
from .errors import InputError
from .frameworks import available_frameworks, image_layout, import_frameworks, use_framework
from .methods.registry import COMMON_OPTIONS, METHODS, MethodSpec, check_options, lookup
from .ops import default_batch_size, with_objective
from .ops import predict as _predict

__all__ = [
    "BA", "attribute", "predict", "run_method", "ProbabilityOutputWarning",
    "MethodInfo", "method_info", "method_names", "methods_table",
    "available_frameworks", "use_framework", "import_frameworks", "image_layout",
]


def run_method(spec: MethodSpec, model: Any, x: Any, labels: Any, options: Dict[str, Any]) -> Any:
    """Check, convert, run ``spec`` on the model and convert back (see :func:`attribute`)."""
    check_options(spec, options)
    opts = dict(COMMON_OPTIONS)
    opts.update(spec.defaults)
    opts.update(options)
    output = opts.pop("output", None)
    check_output_option(output)
    B = resolve_backend(model, x, opts.pop("backend"))
    require(B, spec.needs, spec.short)  # before any work: names the backends that can run it
    mode = opts.pop("model_mode")
    objective = opts.pop("objective")
    return_gap = bool(opts.pop("return_gap", False))
    if spec.recalibrate:
        opts.setdefault("recalibrate", None)
    with entry(B, model):
        xt, kind, np_dtype = prepare_x(B, model, x)
        if opts.get("batch_size") is None:
            opts["batch_size"] = default_batch_size(B, xt)
        if spec.prepare is not None:  # checks that need the model; converts method options
            spec.prepare(B, model, xt, opts)
        if mode != "eval":
            # the probe and the predicted labels always use inference semantics: a
            # forward in training mode would update batch-norm running statistics
            with B.session(model, mode="eval") as f_eval:
                f_eval = select_output(f_eval, output)
                num_classes = probe(B, model, f_eval, xt)
                y = prepare_labels(B, f_eval, labels, xt, num_classes, opts.get("batch_size"))
        with B.session(model, mode=mode) as f:
            f = select_output(f, output)
            if mode == "eval":
                num_classes = probe(B, model, f, xt)
                y = prepare_labels(B, f, labels, xt, num_classes, opts.get("batch_size"))
            if objective == "contrastive" and num_classes < 2:
                raise InputError(
                    "objective='contrastive' contrasts the label with the other classes; the "
                    f"model has {num_classes} output. Use objective='logit'."
                )
            # the explained scalar (labels above are predicted from the plain logits)
            f = with_objective(B, f, objective)
            if spec.uses_baseline:
                given = opts.get("baseline")
                opts["baseline"] = prepare_baseline(B, given, xt)
                if "shared_baseline" in inspect.signature(spec.func).parameters:
                    opts["shared_baseline"] = one_row(B, given, xt)
            if spec.supports_gap:
                opts["return_gap"] = return_gap
            out = spec.func(B, f, xt, y, **opts)
        keep = bool(opts.get("create_graph", False))
        if isinstance(out, tuple):  # (attr, gap) or, for boundary variants, (attr[, gap][, distances])
            return tuple(to_caller(B, t, kind, np_dtype, keep) for t in out)
        return to_caller(B, out, kind, np_dtype, keep)


class BA:
    """An attribution method, ready to explain models of either framework.

    ``BA("IG", steps=64).attribute(model, x, labels)``. Method names are the papers'
    short names (``SM``, ``IxG``, ``IG``, ``SG``, ``XG``) or readable ones
    (``"integrated_gradients"``), case-insensitive. Options given here are checked
    at once and are the defaults of every :meth:`attribute` call, which may
    override them.

    Args:
        method: the method's name; an unknown name raises :class:`MethodError`
            listing the valid ones.
        use_boundary: True gives the boundary variant of a base method (``SM`` ->
            ``BSM``, ``SG`` -> ``BSG``, ``IG`` -> ``BIG``, ``DeepLIFT`` -> ``BDT``),
            False the plain method of a boundary name; None (default) uses the
            method as named.
        **options: the method's options (see :func:`attribute`).
    """

    def __init__(self, method: str, use_boundary: Optional[bool] = None, **options: Any):
        self.spec = lookup(method)
        if use_boundary is not None:
            from .methods.boundary import with_boundary

            self.spec = with_boundary(self.spec, bool(use_boundary))
        check_options(self.spec, options)
        self.options = dict(options)

    @property
    def name(self) -> str:
        """The method's short name ("IG")."""
        return self.spec.short

    def __repr__(self) -> str:
        opts = ", ".join(f"{k}={v!r}" for k, v in self.options.items())
        return f"BA({self.spec.short!r}{', ' + opts if opts else ''})"

    def attribute(self, model: Any, x: Any, labels: Any = None, **options: Any) -> Any:
        """Explain ``model``'s logit of ``labels`` at ``x``; see :func:`attribute`."""
        merged = dict(self.options)
        merged.update(options)
        return run_method(self.spec, model, x, labels, merged)


def attribute(model: Any, x: Any, labels: Any = None, method: str = "IG", **options: Any) -> Any:
    """Attributions of ``model``'s prediction for ``labels`` at ``x``.

    Args:
        model: a ``torch.nn.Module`` or a Keras 3 model on the TensorFlow backend
            (Sequential, functional or subclassed). The backend is chosen from the
            model; ``backend="torch"``/``"tensorflow"`` overrides.
        x: inputs, batch first, in the model's own layout (``(N, C, H, W)`` for
            PyTorch images, ``(N, H, W, C)`` for Keras). NumPy or a native tensor.
        labels: class indices ``(N,)``, one-hot ``(N, C)``, one int for all
            examples, or None for the predicted class.
        method: ``"SM"`` saliency, ``"IxG"`` input x gradient, ``"IG"`` Integrated
            Gradients, ``"SG"`` SmoothGrad, ``"XG"`` X-Gradient (or readable names).
        **options: method options: IG ``baseline`` (None = zeros, a scalar or an
            array broadcastable to ``x``), ``steps`` (50), ``rule``
            ("gausslegendre"), ``return_gap``; SG ``num_samples`` (50), ``sigma``
            (0.15 of each input's range), ``sigma_abs``, ``variant``, ``seed``; SM
            ``abs`` (False); XG ``create_graph`` (False). Every method takes
            ``batch_size`` (model inputs per pass; default :func:`~boundary_xg.ops.default_batch_size`), ``backend``,
            ``model_mode`` ("eval" or "as_is": train-mode modules run as they
            are; batch-norm statistics are put back afterwards) and ``output``
            (for models with several outputs: an index, a key or a callable
            that picks the ``(N, C)`` logits from them). Gradient methods take
            ``objective`` (the explained scalar: ``"logit"`` (default) ``F_y``,
            ``"log_prob"`` ``log softmax(F)_y``, ``"contrastive"`` ``F_y`` minus the
            softmax-weighted other logits); completeness gaps refer to it. IG,
            EG, BIG, IG_Uniform, IG_SG, IG_SQ, AGI and LPI take ``recalibrate``
            (``"valid_ip"`` or ``"valid_ref"``: attribution re-calibration,
            non-negative output; see docs/recalibration.md).

    Returns:
        Attributions shaped like ``x``, in the caller's type (NumPy in, NumPy out;
        a tensor in, a tensor on the same device out). With ``return_gap=True``:
        ``(attributions, gap)``, gap ``(N,)`` = ``sum(attr) - (F(x) - F(baseline))``.

    Raises:
        InputError, LabelError, MethodError, UnsupportedModelError,
        BackendNotAvailableError: with a message naming the argument and the fix.

    Example:
        >>> attr = attribute(model, x, labels, method="SG", num_samples=50, sigma=0.15, seed=0)
    """
    return run_method(lookup(method), model, x, labels, dict(options))


def predict(model: Any, x: Any, *, batch_size: Optional[int] = None, backend: Optional[str] = None,
            output: Any = None) -> Any:
    """The model's logits ``(N, C)`` at ``x``, in inference mode, in the caller's type.

    The same entry checks as :func:`attribute` (layout, dtype, device, several
    outputs), for callers that only need predictions (``viz``, the command line).

    Args:
        model, x, backend, output: as for :func:`attribute`.
        batch_size: model inputs per pass (default: :func:`~boundary_xg.ops.default_batch_size`).

    Returns:
        Logits ``(N, C)``: NumPy for NumPy input, a tensor on the model's device for a tensor.

    Example:
        >>> labels = predict(model, x).argmax(axis=1)
    """
    check_output_option(output)
    B = resolve_backend(model, x, backend)
    with entry(B, model):
        xt, kind, np_dtype = prepare_x(B, model, x)
        with B.session(model, mode="eval") as f:
            f = select_output(f, output)
            probe(B, model, f, xt)
            out = _predict(B, f, xt, batch_size or default_batch_size(B, xt))
        return to_caller(B, out, kind, np_dtype)


# --- what the package offers: methods ---------------------------------------------------
@dataclass(frozen=True)
class MethodInfo:
    """What the registry knows about a method (read-only; see :func:`method_info`).

    Attributes:
        short: the papers' short name (``"IG"``), as results and tables name it.
        name: the readable name (``"integrated_gradients"``).
        aliases: further accepted names.
        defaults: every option the method takes, with its default (read-only).
        uses_baseline: the method takes ``baseline=``.
        supports_gap: ``return_gap=True`` gives a completeness gap (FullGrad: the
            residual of its decomposition).
        boundary: a boundary variant (BSM, BIG, BSG, BDT): it runs a boundary
            search and ``return_dis=True`` also returns the distances.
        base: for a boundary variant, its base method's short name, else "".
        takes_layer: the method explains a layer and takes ``layer=``.
        output: ``"like_x"`` (shaped like ``x``) or ``"map"`` (one map per example,
            ``(N, 1, H, W)`` for PyTorch, ``(N, H, W, 1)`` for Keras).
        needs: backend capabilities used beyond plain gradients.
        cost: forward+backward passes per input, in words (``"`steps`"``).
        summary: what the method computes (Markdown).
        paper: the reference (Markdown).
        in_demo: ``boundary-xg demo`` shows it.
    """

    short: str
    name: str
    aliases: Tuple[str, ...]
    defaults: Mapping[str, Any]
    uses_baseline: bool
    supports_gap: bool
    boundary: bool
    base: str
    takes_layer: bool
    output: str
    needs: Tuple[str, ...]
    cost: str
    summary: str
    paper: str
    in_demo: bool


def _info(spec: MethodSpec) -> MethodInfo:
    return MethodInfo(
        short=spec.short, name=spec.name, aliases=tuple(spec.aliases),
        defaults=MappingProxyType(dict(spec.defaults)), uses_baseline=bool(spec.uses_baseline),
        supports_gap=bool(spec.supports_gap), boundary=bool(spec.base), base=spec.base,
        takes_layer=bool(spec.takes_layer), output=spec.output, needs=tuple(spec.needs),
        cost=_cost(spec), summary=_summary(spec), paper=spec.paper, in_demo=bool(spec.in_demo),
    )


def _cost(spec: MethodSpec) -> str:
    if spec.cost:
        return spec.cost
    try:  # a registration without the README wording: the passes at the defaults
        return str(int(spec.passes(dict(spec.defaults))))
    except Exception:  # noqa: BLE001 - a passes() that needs options the defaults lack
        return "?"


def _summary(spec: MethodSpec) -> str:
    if spec.summary:
        return spec.summary
    doc = (getattr(spec.func, "__doc__", None) or "").strip()
    return doc.splitlines()[0].rstrip(".") if doc else spec.name


def method_info(method: str) -> MethodInfo:
    """What the registry knows about ``method`` (any accepted name, case-insensitive).

    Example:
        >>> info = bxg.method_info("BIG")
        >>> info.short, info.boundary, info.base, dict(info.defaults)["steps"]
        ('BIG', True, 'IG', 50)

    Raises:
        MethodError: an unknown name; the message lists the valid ones.
    """
    return _info(lookup(method))


def method_names(demo: bool = False) -> List[str]:
    """Short names of the registered methods, in the order of README's table.

    Args:
        demo: only those ``boundary-xg demo`` shows.
    """
    return [s.short for s in METHODS.values() if s.in_demo or not demo]


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


def methods_table() -> str:
    """README's method table (Markdown), generated from the registry.

    One row per registered method, in registration order: its names, what it
    computes and its options, its forward+backward passes per input, its paper
    ("same" where a row repeats the one above). ``scripts/update_readme.py``
    writes it into README.md; a test checks README against it.
    """
    lines = ["| name (`BA(...)`) | method | passes per input | paper |", "|---|---|---|---|"]
    previous = None
    for spec in METHODS.values():
        info = _info(spec)
        names = ", ".join(f"`{n}`" for n in (info.short, info.name))
        paper = "same" if info.paper and info.paper == previous else info.paper
        previous = info.paper
        lines.append(f"| {names} | {_cell(info.summary)} | {_cell(info.cost)} | {_cell(paper)} |")
    return "\n".join(lines) + "\n"


def to_numpy(a: Any) -> Any:
    """``a`` as a NumPy array: a tensor of any supported framework (on any device) or array-like.

    Imports no framework: a tensor exists only once its framework is imported.

    Example:
        >>> heat = to_numpy(bxg.attribute(model, x_tensor, labels)).sum(axis=1)
    """
    return _backend_to_numpy(a)
