"""DeepLIFT's Rescale rule for PyTorch: intercept nonlinearities at the function level.

Why a function mode and not module hooks
-----------------------------------------
DeepLIFT (Shrikumar, Greenside, Kundaje, ICML 2017) back-propagates *multipliers*
instead of gradients: through each nonlinearity ``y = g(u)`` the multiplier is
``(g(u) - g(u')) / (u - u')``, ``u`` and ``u'`` being the nonlinearity's inputs
for the explained input and for the baseline. Hook-based implementations (Captum)
store one input/output pair per *module object*, so a ReLU object called several
times in one forward pass (torchvision ResNets), an ``inplace=True`` ReLU, or a
functional ``F.relu`` / ``torch.relu`` call inside ``forward`` silently break the
computation.

The baseline and the input run as **two passes** of ``n`` rows under a
:class:`torch.overrides.TorchFunctionMode` that sees every call of a
nonlinearity, whichever way it is made (a module, ``F.relu``, ``torch.relu``,
``Tensor.relu_``, a reused module object):

1. the baseline pass records, call by call, each nonlinearity's input ``u'``
   and output ``g(u')``;
2. the input pass replaces the ``k``-th call by a custom autograd Function that
   computes the ordinary output and, for that very call, the multiplier against
   the ``k``-th record. One backward pass over ``n`` rows follows.

Every call site therefore gets its own multiplier and nothing is stored on the
model; the mode is popped when each pass ends (also after an error), and no
hook or attribute is touched. Two passes beat one doubled batch ``cat([x, x'])``
because the backward pass, the dearer half, runs over ``n`` rows instead of
``2n`` (and a baseline shared by all rows runs as one row). Should the two passes
not make the same calls (control flow that depends on the data, or a model that
later modifies a recorded activation in place, seen by its version counter), the
call falls back to the doubled batch (row ``i`` and row ``n + i`` a pair), which
needs no pairing of calls. The model must keep the batch axis in place (row
``i`` of every activation belongs to row ``i`` of the input), as every model in
inference mode does.

Rules
-----
* Element-wise nonlinearities (ReLU, ReLU6/Hardtanh, LeakyReLU, PReLU, ELU, SELU,
  CELU, GELU, SiLU, Mish, Hardswish, Hardsigmoid, Softplus, Sigmoid, Tanh,
  LogSigmoid): Rescale, ``m = (g(u) - g(u')) / (u - u')``. Rescale is well defined
  for any element-wise function, and summation-to-delta holds exactly for it. No
  absolute threshold decides when the ratio is 0/0 (activations of a random-init
  network can be ~1e-9, and ``DeepLIFT(c x, c x')`` must equal ``c DeepLIFT(x, x')``
  for a ReLU network): see :func:`_multiplier` for the two fallbacks.
* Max pooling (1-3d, adaptive included): per window, the output difference
  ``d = max(u) - max(u')`` (times the incoming multiplier) is routed to one
  element and divided there by that element's ``u - u'``: to the window's
  maximum **for x** when ``d >= 0``, to the maximum **for the baseline** when
  ``d < 0``. That divisor is never smaller than ``|d|``, so every multiplier lies
  in ``[0, 1]`` like a ReLU's, and summation-to-delta holds without dividing by
  tiny numbers (which in float32 would amplify rounding errors). Overlapping
  windows add up. Where the divisor is exactly 0 (then so is ``d``) the plain
  gradient is used. In our experiments Captum's DeepLift gives the same result
  where it satisfies summation-to-delta; it falls back to the gradient where its
  divisor is 0 (common after a ReLU, both halves 0), which loses it. The
  DeepLIFT paper passes the plain gradient through max pooling, which breaks
  summation-to-delta in general.
* Linear operations (convolutions, linear layers, average pooling, batch norm and
  dropout in inference mode, reshapes, concatenations, additions) need nothing:
  their gradient is already the multiplier.
* Softmax / log-softmax inside the network are not element-wise: an error names
  the function (the model's *final* softmax is removed by the backend's session).
* Other non-linear operations that are not intercepted (products of two
  activations as in squeeze-excitation gates, ``abs``, ``max`` reductions) pass
  their plain gradient; summation-to-delta may then fail, which the completeness
  gap (``return_gap=True``) reports.
"""

from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, List, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ...errors import ModelError

#: piecewise-linear kinds: the ratio is exact wherever ``u != u'``
PIECEWISE_LINEAR = ("relu", "leaky", "pwl")


def smooth_tolerance(dtype: torch.dtype) -> float:
    """Relative closeness below which a smooth nonlinearity uses its midpoint derivative.

    ``eps ** (1/3)`` of the dtype balances the ratio's cancellation error
    (``eps / tol``) against the midpoint rule's truncation error (``tol ** 2``);
    about 5e-3 in float32, 6e-6 in float64, 0.1 in float16.
    """
    return float(torch.finfo(dtype).eps) ** (1.0 / 3.0)


# --- element-wise nonlinearities ----------------------------------------------------
def _local_derivative(g: Callable, u: torch.Tensor) -> torch.Tensor:
    """``g'(u)`` element-wise (``g`` is element-wise), by one small autograd call."""
    with torch.enable_grad():
        v = u.detach().requires_grad_(True)
        y = g(v)
        (d,) = torch.autograd.grad(y, v, torch.ones_like(y))
    return d


def _multiplier(g: Callable, kind: str, slope: float, ux, out_x, ub, out_b) -> torch.Tensor:
    """Rescale multiplier of one call: ``(g(u) - g(u')) / (u - u')``.

    Piecewise-linear kinds (ReLU, leaky ReLU, ReLU6/Hardtanh, Hardsigmoid) use the
    ratio wherever ``u != u'``: it is exact there (both sides on one linear piece
    give that piece's slope bit for bit), scale-free and never larger than the
    largest slope, so it needs no threshold; where ``u == u'`` (0/0) any value keeps
    summation-to-delta and the gradient at ``u`` is used. Smooth functions use the
    derivative at the midpoint ``(u + u') / 2`` where
    ``|u - u'| <= tol * max(|u| + |u'|, 1)`` (:func:`smooth_tolerance`) and ``u``,
    ``u'`` lie on one side of 0: there the ratio loses its digits to cancellation,
    while the midpoint rule is exact to ``O((u - u')^2)``. The floor 1 is the scale
    at which these functions bend; across 0 (the kink of PReLU, SELU, CELU) the
    ratio is kept, being right there at any scale.
    ``ub``/``out_b`` may have one row (a baseline shared by all rows): they broadcast.
    """
    d_in = ux - ub
    # 0/0 or x/0 where the fallback applies: torch.where below picks the fallback there
    ratio = (out_x - out_b) / d_in
    if kind in PIECEWISE_LINEAR:
        small = d_in == 0
        # ReLU-type kinks are common enough to skip autograd
        if kind == "relu":
            dg = (ux > 0).to(ux.dtype)
        elif kind == "leaky":
            dg = torch.where(ux > 0, torch.ones_like(ux), torch.full_like(ux, slope))
        else:
            dg = _local_derivative(g, ux)
    else:
        scale = (ux.abs() + ub.abs()).clamp_min(1.0)
        # never across 0, where PReLU/SELU-like functions have their kink: there the
        # midpoint's one-sided slope would be wrong, and the ratio is right
        same_side = torch.sign(ux) == torch.sign(ub)
        small = (d_in == 0) | ((d_in.abs() <= smooth_tolerance(ux.dtype) * scale) & same_side)
        dg = _local_derivative(g, (ux + ub) * 0.5)
    return torch.where(small, dg, ratio)


class _Rescale(torch.autograd.Function):
    """Doubled batch: ``g(u)`` forward; backward multiplies by the multiplier of the pair."""

    @staticmethod
    def forward(ctx, u, g, kind, slope):  # noqa: D401 - autograd signature
        out = g(u)
        n = u.shape[0] // 2
        m = _multiplier(g, kind, slope, u[:n], out[:n], u[n:], out[n:])
        # saved m, not u: an in-place nonlinearity may overwrite u afterwards
        ctx.save_for_backward(m)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (m,) = ctx.saved_tensors
        # one multiplier for both halves, broadcast over a (2, n, ...) view: no copy of m
        paired = grad_out.reshape((2,) + tuple(m.shape)) * m
        return paired.reshape(grad_out.shape), None, None, None


class _RescaleReplay(torch.autograd.Function):
    """Input pass: ``g(u)`` forward; backward multiplies by the multiplier against the record."""

    @staticmethod
    def forward(ctx, u, g, kind, slope, ub, out_b):  # noqa: D401 - autograd signature
        out = g(u)
        ctx.save_for_backward(_multiplier(g, kind, slope, u, out, ub, out_b))
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (m,) = ctx.saved_tensors
        return grad_out * m, None, None, None, None, None


def _route_max_pool(g, d_in, d_out, idx_x, idx_b) -> torch.Tensor:
    """The max-pool rule's backward over ``n`` rows (see :class:`_RescaleMaxPool`)."""
    g = g.flatten(2)
    flat = d_in.flatten(2)
    ix, ib = idx_x.flatten(2), idx_b.flatten(2)
    d = d_out.flatten(2)
    idx = torch.where(d >= 0, ix, ib)
    div = flat.gather(2, idx)
    # |div| >= |d|, so the quotient is bounded by |g|: only an exact 0 (then d == 0 too)
    # needs the fallback, at any scale and in float16 alike
    ok = div != 0
    val = torch.where(ok, g * d / torch.where(ok, div, torch.ones_like(div)), g)
    idx = torch.where(ok, idx, ix)
    return torch.zeros_like(flat).scatter_add_(2, idx, val).view_as(d_in)


class _RescaleMaxPool(torch.autograd.Function):
    """Max pooling forward; backward routes each window's ``delta_out`` to one maximum.

    Per window ``j`` with ``d = out_j(x) - out_j(x')``: ``grad_j * d`` goes to the
    window's maximum for x, ``i*``, when ``d >= 0`` and to the maximum for the
    baseline, ``k*``, when ``d < 0``, divided by that element's ``delta_in``. The
    divisor is at least ``|d|`` (``delta_in[i*] >= d`` and ``delta_in[k*] <= d``),
    so every multiplier lies in ``[0, 1]``. Where the divisor is 0 (so is ``d``)
    the plain gradient goes to ``i*``. Overlapping windows add up.
    This one runs on the doubled batch; :class:`_RescaleMaxPoolReplay` on the input pass.
    """

    @staticmethod
    def forward(ctx, u, pool_idx):
        out, idx = pool_idx(u)
        n = u.shape[0] // 2
        # saved differences, not u: an in-place op may overwrite u afterwards
        ctx.save_for_backward(u[:n] - u[n:], out[:n] - out[n:], idx[:n], idx[n:])
        ctx.mark_non_differentiable(idx)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        d_in, d_out, idx_x, idx_b = ctx.saved_tensors
        gx = _route_max_pool(grad_out[: d_in.shape[0]], d_in, d_out, idx_x, idx_b)
        return torch.cat([gx, torch.zeros_like(gx)]), None


class _RescaleMaxPoolReplay(torch.autograd.Function):
    """Input pass of :class:`_RescaleMaxPool`: the baseline's values and indices are recorded."""

    @staticmethod
    def forward(ctx, u, pool_idx, ub, out_b, idx_b):
        out, idx = pool_idx(u)
        ctx.save_for_backward(u - ub, out - out_b, idx, idx_b.expand_as(idx))
        ctx.mark_non_differentiable(idx)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        d_in, d_out, idx_x, idx_b = ctx.saved_tensors
        return _route_max_pool(grad_out, d_in, d_out, idx_x, idx_b), None, None, None, None


# --- the table of intercepted functions ---------------------------------------------
def _py(fn: Callable, kind: str = "other", slope_arg: Optional[str] = None) -> Tuple:
    return ("python", fn, inspect.signature(fn), kind, slope_arg)


# Python-level torch.nn.functional entries (they dispatch __torch_function__ themselves
# and carry an ``inplace`` flag); binding their signature normalises every call form.
_PY_FUNCS = [
    _py(F.relu, "relu"), _py(F.relu6, "pwl"), _py(F.hardtanh, "pwl"),
    _py(F.leaky_relu, "leaky", "negative_slope"),
    _py(F.elu), _py(F.selu), _py(F.celu), _py(F.silu), _py(F.mish), _py(F.hardswish),
    _py(F.hardsigmoid, "pwl"), _py(F.sigmoid), _py(F.tanh),
]

# C-level functions and Tensor methods (positional arguments after the input).
# Value: (out-of-place function, kind, in-place?)
_BUILTINS: Dict[Any, Tuple[Callable, str, bool]] = {}


def _builtin(oop: Callable, kind: str, *inplace_forms: Any, also: Tuple = ()) -> None:
    _BUILTINS[oop] = (oop, kind, False)
    for f in also:
        _BUILTINS[f] = (oop, kind, False)
    for f in inplace_forms:
        _BUILTINS[f] = (oop, kind, True)


_builtin(torch.relu, "relu", torch.relu_, torch.Tensor.relu_, also=(torch.Tensor.relu,))
_builtin(torch.sigmoid, "other", torch.sigmoid_, torch.Tensor.sigmoid_, also=(torch.Tensor.sigmoid,))
_builtin(torch.tanh, "other", torch.tanh_, torch.Tensor.tanh_, also=(torch.Tensor.tanh,))
_builtin(torch.prelu, "pwl")
_builtin(torch.selu, "other", torch.selu_)
_builtin(torch.celu, "other", torch.celu_)
_builtin(torch._C._nn.gelu, "other")
_builtin(torch._C._nn.softplus, "other")
_builtin(torch._C._nn.silu, "other", torch._C._nn.silu_)
_builtin(torch._C._nn.mish, "other", torch._C._nn.mish_)
_builtin(torch._C._nn.elu, "other", torch._C._nn.elu_)
_builtin(torch._C._nn.hardtanh, "pwl", torch._C._nn.hardtanh_)
_builtin(torch._C._nn.hardswish, "other", torch._C._nn.hardswish_)
_builtin(torch._C._nn.hardsigmoid, "pwl", torch._C._nn.hardsigmoid_)
_builtin(torch._C._nn.log_sigmoid, "other")
_builtin(torch._C._nn.leaky_relu, "leaky", torch._C._nn.leaky_relu_)
if hasattr(torch._C._nn, "relu6"):
    _builtin(torch._C._nn.relu6, "pwl", torch._C._nn.relu6_)

_PY_TABLE = {entry[1]: entry for entry in _PY_FUNCS}

# max pooling: func -> (signature to bind the call with or None, values-only function,
# whether the call returns indices by construction)
_MAX_POOLS: Dict[Any, Tuple[Any, Callable, bool]] = {}
for _name in ("max_pool1d", "max_pool2d", "max_pool3d", "adaptive_max_pool1d",
              "adaptive_max_pool2d", "adaptive_max_pool3d"):
    _values, _with = getattr(F, _name), getattr(F, _name + "_with_indices")
    _sig = inspect.signature(_with)
    _MAX_POOLS[_values] = (_sig, _values, False)
    _MAX_POOLS[_with] = (_sig, _values, True)
for _name in ("max_pool1d", "max_pool2d", "max_pool3d"):
    if hasattr(torch, _name):  # C-level, same positional geometry as F's
        _MAX_POOLS[getattr(torch, _name)] = (None, getattr(F, _name), False)

_REJECTED = {
    F.softmax: "torch.nn.functional.softmax", F.log_softmax: "torch.nn.functional.log_softmax",
    torch.softmax: "torch.softmax", torch.log_softmax: "torch.log_softmax",
    torch.Tensor.softmax: "Tensor.softmax", torch.Tensor.log_softmax: "Tensor.log_softmax",
    F.softmin: "torch.nn.functional.softmin", F.glu: "torch.nn.functional.glu",
}


def _name(func: Any) -> str:
    return f"{getattr(func, '__module__', None) or 'torch'}.{getattr(func, '__name__', func)}"


class _Mismatch(Exception):
    """The input pass does not make the baseline pass's calls: use the doubled batch."""


#: calls that fell back to the doubled batch so far (tests read it)
fallback_count = 0


#: what the mode does with an intercepted call: the doubled batch, or the two passes
PHASES = ("doubled", "record", "replay")


class RescaleMode(TorchFunctionMode):
    """Replace every nonlinearity called on the batch by its Rescale version.

    Args:
        rows: the rows of the activations that get the rule: ``2 N`` in the
            ``"doubled"`` phase (input half first), the baseline's rows (``N`` or
            1) in ``"record"``, ``N`` in ``"replay"``.
        phase: one of :data:`PHASES`.
        records: the list that the ``"record"`` pass fills and the ``"replay"``
            pass reads in order (one entry per intercepted call).
    """

    def __init__(self, rows: int, phase: str = "doubled", records: Optional[List] = None):
        super().__init__()
        self.rows, self.phase = rows, phase
        self.records = records if records is not None else []
        self.pos = 0

    def _paired(self, func: Any, u: Any) -> bool:
        """True when ``u`` is an activation of the batch (and so needs the rule)."""
        if not isinstance(u, torch.Tensor) or not u.requires_grad:
            return False
        if u.dim() == 0 or u.shape[0] != self.rows:
            raise ModelError(
                f"DeepLIFT: {_name(func)} received a tensor of shape {tuple(u.shape)} whose first "
                f"axis is not the batch ({self.rows} rows); DeepLIFT needs models that keep "
                "the batch axis first and examples independent."
            )
        return True

    # --- record / replay -------------------------------------------------------------
    def _record(self, func: Any, *tensors: torch.Tensor) -> None:
        # version counters tell whether the model later changes a record in place
        self.records.append((func, tensors, tuple(t._version for t in tensors)))

    def _replay(self, func: Any, u: torch.Tensor) -> Tuple[torch.Tensor, ...]:
        if self.pos >= len(self.records):
            raise _Mismatch
        rec_func, tensors, versions = self.records[self.pos]
        self.pos += 1
        ub = tensors[0]
        if (rec_func is not func or ub.shape[1:] != u.shape[1:] or ub.shape[0] not in (1, u.shape[0])
                or any(t._version != v for t, v in zip(tensors, versions))):
            raise _Mismatch
        return tensors

    def finish(self) -> None:
        """After the replay pass: every record must have been used."""
        if self.phase == "replay" and self.pos != len(self.records):
            raise _Mismatch

    def _elementwise(self, func: Any, u: torch.Tensor, g: Callable, kind: str, slope: float,
                     inplace: bool) -> torch.Tensor:
        if self.phase == "doubled":
            out = _Rescale.apply(u, g, kind, slope)
        elif self.phase == "record":
            out = g(u)
            # an in-place call overwrites u below, so that record needs its own copy
            self._record(func, u.detach().clone() if inplace else u.detach(), out.detach())
        else:
            ub, out_b = self._replay(func, u)
            out = _RescaleReplay.apply(u, g, kind, slope, ub, out_b)
        return u.copy_(out) if inplace else out

    def _max_pool(self, func: Any, u: torch.Tensor, pool_idx: Callable) -> torch.Tensor:
        if self.phase == "doubled":
            return _RescaleMaxPool.apply(u, pool_idx)
        if self.phase == "record":
            out, idx = pool_idx(u)
            self._record(func, u.detach(), out.detach(), idx)
            return out
        ub, out_b, idx_b = self._replay(func, u)
        return _RescaleMaxPoolReplay.apply(u, pool_idx, ub, out_b, idx_b)

    def __torch_function__(self, func, types, args=(), kwargs=None):
        kwargs = kwargs or {}
        if func in _PY_TABLE:
            _, fn, sig, kind, slope_arg = _PY_TABLE[func]
            bound = sig.bind(*args, **kwargs)
            u = bound.arguments.pop("input")
            if not self._paired(func, u):
                return func(*args, **kwargs)
            inplace = bool(bound.arguments.pop("inplace", False))
            rest = dict(bound.arguments)
            slope = float(rest.get(slope_arg, 0.01)) if slope_arg else 0.0
            if kind == "leaky" and slope_arg not in rest:
                slope = float(sig.parameters[slope_arg].default)
            return self._elementwise(func, u, lambda v: fn(v, **rest), kind, slope, inplace)
        if func in _BUILTINS:
            oop, kind, inplace = _BUILTINS[func]
            u, rest = args[0], args[1:]
            if not self._paired(func, u):
                return func(*args, **kwargs)
            slope = float(rest[0]) if kind == "leaky" and rest else 0.01
            return self._elementwise(func, u, lambda v: oop(v, *rest, **kwargs), kind, slope, inplace)
        if func in _MAX_POOLS:
            sig, values, with_indices = _MAX_POOLS[func]
            u = args[0]
            if not self._paired(func, u):
                return func(*args, **kwargs)
            if sig is None:
                rest, kw, want_idx = args[1:], dict(kwargs), False
            else:
                bound = sig.bind(*args, **kwargs)
                bound.arguments.pop("input")
                # pop it in every case: ``values`` gets return_indices=True below
                asked = bool(bound.arguments.pop("return_indices", False))
                want_idx = with_indices or asked
                rest, kw = (), dict(bound.arguments)
            out = self._max_pool(func, u, lambda v: values(v, *rest, return_indices=True, **kw))
            if want_idx:
                with torch.no_grad():
                    _, idx = values(u, *rest, return_indices=True, **kw)
                return out, idx
            return out
        if func in _REJECTED and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            raise ModelError(
                f"DeepLIFT: {_REJECTED[func]} is called inside the model; the Rescale rule is "
                "defined for element-wise nonlinearities and max pooling only. Explain the "
                "logits before the softmax (remove it from forward), or use Integrated Gradients."
            )
        return func(*args, **kwargs)


def _label_grad(out: torch.Tensor, xg: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    n = xg.shape[0]
    score = out[:n].gather(1, labels.reshape(-1, 1).long()).sum()
    (grad,) = torch.autograd.grad(score, xg)
    return grad


def deeplift_grad(f: Callable, x: torch.Tensor, baseline: torch.Tensor, labels: torch.Tensor, *,
                  doubled: bool = False) -> torch.Tensor:
    """DeepLIFT multipliers of each example's label logit with respect to ``x``.

    Runs the baseline pass, then the input pass and one backward pass over ``n``
    rows (see the module docstring); falls back to the doubled batch where the two
    passes do not make the same calls.

    Args:
        f: the model's inference-mode logits function; x: ``(n, ...)``;
        baseline: ``(n, ...)``, or ``(1, ...)`` for a baseline shared by all rows
            (its pass then runs one row); labels: ``(n,)`` integer classes.
        doubled: run the doubled batch ``cat([x, baseline])`` directly (tests,
            benchmarks).

    Returns:
        Multipliers shaped like ``x`` (attribution = multipliers * (x - baseline)).
    """
    n = x.shape[0]
    b = baseline.detach().to(x.dtype)
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        if not doubled:
            records: List = []
            # the baseline requires grad only so that "an activation of the batch" (requires
            # grad) means the same in both passes; its graph is dropped unused
            with RescaleMode(b.shape[0], "record", records):
                f(b.requires_grad_(True).clone())  # copies: the model may write into its input
            replay = RescaleMode(n, "replay", records)
            try:
                with replay:
                    out = f(xg.clone())
                replay.finish()
            except _Mismatch:
                global fallback_count
                fallback_count += 1
            else:
                return _label_grad(out, xg, labels)
        with RescaleMode(2 * n):
            out = f(torch.cat([xg, b.detach().expand_as(x)]))
        return _label_grad(out, xg, labels)
