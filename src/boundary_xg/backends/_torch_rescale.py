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

Here the input and the baseline run as **one doubled batch** ``cat([x, x'])``
(row ``i`` and row ``n + i`` are a pair) under a
:class:`torch.overrides.TorchFunctionMode` that sees every call of a
nonlinearity, whichever way it is made (a module, ``F.relu``, ``torch.relu``,
``Tensor.relu_``, a reused module object). Each call is replaced by a custom
autograd Function that computes the ordinary output and, for that very call,
the multiplier between the two halves. Every call site therefore gets its own
multiplier and nothing is stored on the model; the mode is popped when the
forward pass ends (also after an error), and no hook or attribute is touched.
The model must keep the batch axis in place (row ``i`` of every activation
belongs to row ``i`` of the input), as every model in inference mode does.

Rules
-----
* Element-wise nonlinearities (ReLU, ReLU6/Hardtanh, LeakyReLU, PReLU, ELU, SELU,
  CELU, GELU, SiLU, Mish, Hardswish, Hardsigmoid, Softplus, Sigmoid, Tanh,
  LogSigmoid): Rescale, ``m = (g(u) - g(u')) / (u - u')``, falling back to the
  gradient ``g'(u)`` where ``|u - u'| < 1e-10`` (the two points coincide, the
  ratio is 0/0). Rescale is well defined for any element-wise function, and
  summation-to-delta holds exactly for it.
* Max pooling (1-3d, adaptive included): per window, the output difference
  ``d = max(u) - max(u')`` (times the incoming multiplier) is routed to one
  element and divided there by that element's ``u - u'``: to the window's
  maximum **for x** when ``d >= 0``, to the maximum **for the baseline** when
  ``d < 0``. That divisor is never smaller than ``|d|``, so every multiplier lies
  in ``[0, 1]`` like a ReLU's, and summation-to-delta holds without dividing by
  tiny numbers (which in float32 would amplify rounding errors). Overlapping
  windows add up. Where the divisor is below 1e-10 (then so is ``|d|``) the plain
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
from typing import Any, Callable, Dict, Optional, Tuple

import torch
import torch.nn.functional as F
from torch.overrides import TorchFunctionMode

from ..errors import MethodError

#: below this |u - u'| the Rescale ratio is 0/0 and the gradient is used instead
EPS = 1e-10


# --- element-wise nonlinearities ----------------------------------------------------
def _local_derivative(g: Callable, u: torch.Tensor) -> torch.Tensor:
    """``g'(u)`` element-wise (``g`` is element-wise), by one small autograd call."""
    with torch.enable_grad():
        v = u.detach().requires_grad_(True)
        y = g(v)
        (d,) = torch.autograd.grad(y, v, torch.ones_like(y))
    return d


class _Rescale(torch.autograd.Function):
    """``g(u)`` forward; backward multiplies by the Rescale multiplier of the pair."""

    @staticmethod
    def forward(ctx, u, g, kind, slope):  # noqa: D401 - autograd signature
        out = g(u)
        n = u.shape[0] // 2
        ux, ub = u[:n], u[n:]
        d_in = ux - ub
        small = d_in.abs() < EPS
        # 0/0 or x/0 where the halves coincide: torch.where below picks the gradient there
        ratio = (out[:n] - out[n:]) / d_in
        # the fallback gradient at x; ReLU-type kinks are common enough to skip autograd
        if kind == "relu":
            dg = (ux > 0).to(u.dtype)
        elif kind == "leaky":
            dg = torch.where(ux > 0, torch.ones_like(ux), torch.full_like(ux, slope))
        else:
            dg = _local_derivative(g, ux)
        m = torch.where(small, dg, ratio)
        # saved m, not u: an in-place nonlinearity may overwrite u afterwards
        ctx.save_for_backward(m)
        return out

    @staticmethod
    def backward(ctx, grad_out):
        (m,) = ctx.saved_tensors
        # one multiplier for both halves, broadcast over a (2, n, ...) view: no copy of m
        paired = grad_out.reshape((2,) + tuple(m.shape)) * m
        return paired.reshape(grad_out.shape), None, None, None


class _RescaleMaxPool(torch.autograd.Function):
    """Max pooling forward; backward routes each window's ``delta_out`` to one maximum.

    Per window ``j`` with ``d = out_j(x) - out_j(x')``: ``grad_j * d`` goes to the
    window's maximum for x, ``i*``, when ``d >= 0`` and to the maximum for the
    baseline, ``k*``, when ``d < 0``, divided by that element's ``delta_in``. The
    divisor is at least ``|d|`` (``delta_in[i*] >= d`` and ``delta_in[k*] <= d``),
    so every multiplier lies in ``[0, 1]``. Where the divisor is below ``EPS`` (so
    is ``|d|``) the plain gradient goes to ``i*``. Overlapping windows add up.
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
        n = d_in.shape[0]
        g = grad_out[:n].flatten(2)
        flat = d_in.flatten(2)
        ix, ib = idx_x.flatten(2), idx_b.flatten(2)
        d = d_out.flatten(2)
        up = d >= 0
        idx = torch.where(up, ix, ib)
        div = flat.gather(2, idx)
        ok = div.abs() >= EPS
        val = torch.where(ok, g * d / torch.where(ok, div, torch.ones_like(div)), g)
        idx = torch.where(ok, idx, ix)
        gx = torch.zeros_like(flat).scatter_add_(2, idx, val).view_as(d_in)
        return torch.cat([gx, torch.zeros_like(gx)]), None


# --- the table of intercepted functions ---------------------------------------------
def _py(fn: Callable, kind: str = "other", slope_arg: Optional[str] = None) -> Tuple:
    return ("python", fn, inspect.signature(fn), kind, slope_arg)


# Python-level torch.nn.functional entries (they dispatch __torch_function__ themselves
# and carry an ``inplace`` flag); binding their signature normalises every call form.
_PY_FUNCS = [
    _py(F.relu, "relu"), _py(F.relu6), _py(F.hardtanh), _py(F.leaky_relu, "leaky", "negative_slope"),
    _py(F.elu), _py(F.selu), _py(F.celu), _py(F.silu), _py(F.mish), _py(F.hardswish),
    _py(F.hardsigmoid), _py(F.sigmoid), _py(F.tanh),
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
_builtin(torch.prelu, "other")
_builtin(torch.selu, "other", torch.selu_)
_builtin(torch.celu, "other", torch.celu_)
_builtin(torch._C._nn.gelu, "other")
_builtin(torch._C._nn.softplus, "other")
_builtin(torch._C._nn.silu, "other", torch._C._nn.silu_)
_builtin(torch._C._nn.mish, "other", torch._C._nn.mish_)
_builtin(torch._C._nn.elu, "other", torch._C._nn.elu_)
_builtin(torch._C._nn.hardtanh, "other", torch._C._nn.hardtanh_)
_builtin(torch._C._nn.hardswish, "other", torch._C._nn.hardswish_)
_builtin(torch._C._nn.hardsigmoid, "other", torch._C._nn.hardsigmoid_)
_builtin(torch._C._nn.log_sigmoid, "other")
_builtin(torch._C._nn.leaky_relu, "leaky", torch._C._nn.leaky_relu_)
if hasattr(torch._C._nn, "relu6"):
    _builtin(torch._C._nn.relu6, "other", torch._C._nn.relu6_)

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


class RescaleMode(TorchFunctionMode):
    """Replace every nonlinearity called on the doubled batch by its Rescale version.

    Args:
        rows: ``2 N``, the rows of the doubled batch (input half first).
    """

    def __init__(self, rows: int):
        super().__init__()
        self.rows = rows

    def _paired(self, func: Any, u: Any) -> bool:
        """True when ``u`` is an activation of the doubled batch (and so needs the rule)."""
        if not isinstance(u, torch.Tensor) or not u.requires_grad:
            return False
        if u.dim() == 0 or u.shape[0] != self.rows:
            raise MethodError(
                f"DeepLIFT: {_name(func)} received a tensor of shape {tuple(u.shape)} whose first "
                f"axis is not the doubled batch ({self.rows} rows); DeepLIFT needs models that keep "
                "the batch axis first and examples independent."
            )
        return True

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
            out = _Rescale.apply(u, lambda v: fn(v, **rest), kind, slope)
            return u.copy_(out) if inplace else out
        if func in _BUILTINS:
            oop, kind, inplace = _BUILTINS[func]
            u, rest = args[0], args[1:]
            if not self._paired(func, u):
                return func(*args, **kwargs)
            slope = float(rest[0]) if kind == "leaky" and rest else 0.01
            out = _Rescale.apply(u, lambda v: oop(v, *rest, **kwargs), kind, slope)
            return u.copy_(out) if inplace else out
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
                want_idx = with_indices or bool(bound.arguments.pop("return_indices", False))
                rest, kw = (), dict(bound.arguments)
            out = _RescaleMaxPool.apply(u, lambda v: values(v, *rest, return_indices=True, **kw))
            if want_idx:
                with torch.no_grad():
                    _, idx = values(u, *rest, return_indices=True, **kw)
                return out, idx
            return out
        if func in _REJECTED and args and isinstance(args[0], torch.Tensor) and args[0].requires_grad:
            raise MethodError(
                f"DeepLIFT: {_REJECTED[func]} is called inside the model; the Rescale rule is "
                "defined for element-wise nonlinearities and max pooling only. Explain the "
                "logits before the softmax (remove it from forward), or use Integrated Gradients."
            )
        return func(*args, **kwargs)


def deeplift_grad(f: Callable, x: torch.Tensor, baseline: torch.Tensor, labels: torch.Tensor) -> torch.Tensor:
    """DeepLIFT multipliers of each example's label logit with respect to ``x``.

    Args:
        f: the model's inference-mode logits function; x, baseline: ``(n, ...)``;
        labels: ``(n,)`` integer classes.

    Returns:
        Multipliers shaped like ``x`` (attribution = multipliers * (x - baseline)).
    """
    n = x.shape[0]
    with torch.enable_grad():
        xg = x.detach().requires_grad_(True)
        z = torch.cat([xg, baseline.detach().to(x.dtype)])
        with RescaleMode(2 * n):
            out = f(z)
        score = out[:n].gather(1, labels.reshape(-1, 1).long()).sum()
        (grad,) = torch.autograd.grad(score, xg)
    return grad
