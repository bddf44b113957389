"""The model randomisation test (Adebayo, Gilmer, Muelly, Goodfellow, Hardt, Kim, "Sanity
Checks for Saliency Maps", NeurIPS 2018).

The weights of a **copy** of the model are re-drawn layer by layer from the
output side down (cascading: each stage keeps the earlier randomisations), and
the attributions are recomputed at every stage. A method that explains the
model, rather than the input alone, gives maps that decorrelate from the
original ones as more layers lose their trained weights: the Spearman rank
correlation and the SSIM of the maps should fall towards 0. Each weight tensor
is re-drawn from a normal distribution with its own mean and standard deviation
(the re-calibration code's rule; Adebayo et al. re-initialise with the layer's
initialiser), from NumPy with a fixed seed in PyTorch's weight layout, so the
same weights in both frameworks are randomised alike. The caller's model is
never changed.
"""

from __future__ import annotations

from typing import Any, List, Optional, Sequence

import numpy as np

from .._entry import model_lock, resolve_backend
from ..errors import InputError
from ._inputs import check_progress, check_seed, progress_bar
from .results import MetricResult


def _numpy(a: Any) -> np.ndarray:
    if hasattr(a, "detach"):  # torch
        a = a.detach().float().cpu().numpy() if str(a.dtype) == "torch.bfloat16" else a.detach().cpu().numpy()
    elif hasattr(a, "numpy") and not isinstance(a, np.ndarray):
        a = a.numpy()
    return np.asarray(a, dtype=np.float64)


def _maps(a: np.ndarray, image_layout: str, absolute: bool) -> np.ndarray:
    """``(N, ...spatial)`` maps: channel sum of ``|A|`` (or of ``A``) for images, else ``A``."""
    if absolute:
        a = np.abs(a)
    if a.ndim >= 4:
        a = a.sum(axis=1 if image_layout == "NCHW" else -1)
    return a


def _rankdata(v: np.ndarray) -> np.ndarray:
    """Ranks 1..n of a 1-D array, ties given their average rank (as scipy.stats.rankdata)."""
    order = np.argsort(v, kind="stable")
    sv = v[order]
    starts = np.r_[True, sv[1:] != sv[:-1]]
    group = np.cumsum(starts) - 1
    first = np.flatnonzero(starts)
    last = np.r_[first[1:], len(v)] - 1
    avg = (first + last) / 2.0 + 1.0
    out = np.empty(len(v))
    out[order] = avg[group]
    return out


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman rank correlation of two arrays (flattened); NaN where either is constant."""
    ra, rb = _rankdata(a.reshape(-1)), _rankdata(b.reshape(-1))
    ra, rb = ra - ra.mean(), rb - rb.mean()
    den = np.sqrt((ra * ra).sum() * (rb * rb).sum())
    return float((ra * rb).sum() / den) if den > 0 else float("nan")


def _minmax(m: np.ndarray) -> np.ndarray:
    lo, hi = m.min(), m.max()
    return (m - lo) / (hi - lo) if hi > lo else np.zeros_like(m)


def ssim(a: np.ndarray, b: np.ndarray, win: int = 7, data_range: float = 1.0) -> float:
    """Structural similarity of two 2-D maps (Wang et al. 2004), as scikit-image computes it
    by default: a uniform ``win x win`` window, K1 = 0.01, K2 = 0.03, sample covariances,
    the mean over the windows that lie inside the maps. NaN for maps that are not 2-D."""
    if a.ndim != 2:
        return float("nan")
    win = min(win, a.shape[0], a.shape[1])
    win -= 1 - win % 2  # odd
    if win < 1:
        return float("nan")
    from numpy.lib.stride_tricks import sliding_window_view

    wa = sliding_window_view(a, (win, win)).reshape(-1, win * win)
    wb = sliding_window_view(b, (win, win)).reshape(-1, win * win)
    npx = win * win
    cov = npx / (npx - 1) if npx > 1 else 1.0
    ua, ub = wa.mean(1), wb.mean(1)
    va = cov * ((wa * wa).mean(1) - ua * ua)
    vb = cov * ((wb * wb).mean(1) - ub * ub)
    vab = cov * ((wa * wb).mean(1) - ua * ub)
    c1, c2 = (0.01 * data_range) ** 2, (0.03 * data_range) ** 2
    s = ((2 * ua * ub + c1) * (2 * vab + c2)) / ((ua * ua + ub * ub + c1) * (va + vb + c2))
    return float(s.mean())


def randomization_check(model: Any, x: Any, labels: Any = None, method: Any = "IG", *,
                        layers: Optional[Sequence[str]] = None, cascade: bool = True, seed: int = 0,
                        absolute: bool = True, keep_attributions: bool = True,
                        progress: Optional[bool] = None, backend: Optional[str] = None,
                        **method_options: Any) -> MetricResult:
    """Cascading model randomisation: how the attributions change as layers lose their weights.

    When to use: a sanity check of a method (and of its settings) on a model: the
    correlation with the original maps should fall as layers are randomised;
    a method that stays correlated explains the input, not the model.

    Args:
        model: a ``torch.nn.Module`` or a Keras 3 model (Sequential or functional:
            it is copied with ``keras.models.clone_model``); it is never changed.
        x: ``(N, ...)`` inputs in the model's layout.
        labels: the classes explained at every stage (None: the original model's predictions).
        method: a method name (``"IG"``, ``"SM"``, ...) or a callable
            ``method(model, x, labels) -> attributions``.
        layers: names of the layers to randomise, in the order given (see the
            ``stages`` in ``details``); None: every layer with weights, from the
            output side down.
        cascade: True (default): stage ``i`` has the first ``i`` layers randomised;
            False: each stage randomises its layer alone (independent randomisation).
        seed: seeds the new weights (NumPy; the same in both frameworks).
        absolute: compare maps of ``|A|`` summed over the channels (default; False: ``A`` summed).
        keep_attributions: keep every stage's attributions in ``details["attributions"]``.
        progress: a bar over the stages (None: on a terminal).
        backend: as for ``attribute``; **method_options: options of ``method`` (e.g. ``steps=32``).

    Returns:
        :class:`MetricResult`: ``curve`` the mean Spearman correlation with the
        original maps at each stage (stage 0 the original model: 1), ``fractions``
        the stage numbers, ``per_example`` each example's correlation at the last
        stage and ``value`` their mean (lower: the method depends on the weights);
        ``details``: ``stages`` (``"original"`` then the layer names),
        ``spearman`` and ``ssim`` ``(N, stages)``, ``attributions`` (one array per
        stage, NumPy, ``x``'s layout).

    Raises:
        InputError: ``method`` is an array (this check computes its own
            attributions: it cannot be a metric of ``explain_dataset``), an unknown
            layer name, a model that cannot be copied.

    Example:
        >>> res = bxg.metrics.randomization_check(model, x, y, method="IG", steps=32)
        >>> bxg.viz.plot_randomization(res, x)
    """
    from ..api import attribute, predict

    if isinstance(method, str):
        from ..errors import MethodError
        from ..methods.registry import lookup

        try:
            lookup(method)
        except MethodError as err:
            raise InputError(f"method={method!r}: {err}") from err
        name = method

        def explain(m: Any) -> Any:
            return attribute(m, x, labels, method=method, backend=backend, **method_options)
    elif callable(method):
        if method_options:
            raise InputError(f"options {sorted(method_options)} go with a method name; a callable method "
                             "takes none.")
        name = getattr(method, "__name__", "callable")

        def explain(m: Any) -> Any:
            return method(m, x, labels)
    else:
        raise InputError(
            f"method is a {type(method).__name__}; randomization_check computes its own attributions at "
            "every stage: pass method=NAME (e.g. 'IG') or a callable method(model, x, labels). It "
            "cannot run as a metric of explain_dataset, which passes attributions."
        )
    if not isinstance(cascade, bool) or not isinstance(absolute, bool) or not isinstance(keep_attributions, bool):
        raise InputError("cascade, absolute and keep_attributions take True or False.")
    check_seed(seed)
    check_progress(progress)
    B = resolve_backend(model, x, backend)
    if labels is None:  # every stage explains the original model's prediction
        labels = np.asarray(_numpy(predict(model, x, backend=backend)).argmax(axis=1), np.int64)
    with model_lock(model):
        copy = B.copy_model(model)
    everything = B.parameter_layers(copy)
    names = [n for n, _ in everything]
    if not everything:
        raise InputError("the model has no layers with weights to randomise.")
    if layers is None:
        chosen = list(range(len(everything)))[::-1]  # the output side first
    else:
        if isinstance(layers, str):
            layers = [layers]
        chosen = []
        for lname in layers:
            if lname not in names:
                from ..backends._layers_common import listed_names

                raise InputError(f"layers: the model has no layer {lname!r} with weights; layers with "
                                 f"weights: {listed_names(names)}.")
            chosen.append(names.index(lname))
    original = _numpy(explain(model))
    stages = ["original"] + [names[i] for i in chosen]
    attrs: List[np.ndarray] = [original]
    bar = progress_bar(progress, len(chosen), "randomisation")
    try:
        for i in chosen:
            if not cascade:
                with model_lock(model):
                    copy = B.copy_model(model)
                everything = B.parameter_layers(copy)
            B.randomize_layer(copy, everything[i][1], (int(seed), int(i)))
            attrs.append(_numpy(explain(copy)))
            bar.update(1)
    finally:
        bar.close()
    n = original.shape[0]
    base_maps = _maps(original, B.image_layout, absolute)
    rho = np.empty((n, len(attrs)))
    sim = np.empty((n, len(attrs)))
    for s, a in enumerate(attrs):
        maps = _maps(a, B.image_layout, absolute)
        for e in range(n):
            rho[e, s] = spearman(base_maps[e], maps[e])
            sim[e, s] = ssim(_minmax(base_maps[e]), _minmax(maps[e]))
    curve = np.nanmean(rho, axis=0) if np.isfinite(rho).any() else np.full(len(attrs), np.nan)
    per = rho[:, -1]
    return MetricResult(
        name="randomization_check", value=np.float64(np.nanmean(per)) if np.isfinite(per).any() else np.float64(np.nan),
        per_example=per, curve=curve, fractions=np.arange(len(attrs), dtype=np.float64),
        per_example_curves=rho, higher_is_better=False,
        details={"stages": stages, "spearman": rho, "ssim": sim, "ssim_curve": np.nanmean(sim, axis=0),
                 "attributions": attrs if keep_attributions else None, "method": name, "cascade": cascade,
                 "absolute": absolute},
    )

