"""The PyTorch backend: the only module of boundary_xg that imports torch.

Gradients come from ``torch.autograd.grad`` with respect to the input only, so no
weight gradient is computed and no ``.grad`` field of the model is touched. The
model runs under ``eval()`` semantics inside :meth:`TorchBackend.session`, and the
``training`` flag of every sub-module is put back afterwards (also after an
error): restoring the flags one by one, not with ``model.train(flag)``, keeps a
model whose sub-modules were in mixed modes exactly as it was.
"""

from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple

import numpy as np
import torch

from ...errors import SoftmaxOutputWarning
from .._protocol import Backend
from . import IDENTITY
from ...errors import warn

_SOFTMAX_LAYERS = (torch.nn.Softmax, torch.nn.LogSoftmax)
#: float dtypes NumPy shares memory with (all_finite tests CPU tensors of these in NumPy)
_NUMPY_FLOATS = (torch.float16, torch.float32, torch.float64)




def _torch_dtype(dtype: Any) -> Any:
    if dtype is None or isinstance(dtype, torch.dtype):
        return dtype
    return getattr(torch, np.dtype(dtype).name)


def _refuse_torchscript(f: Any) -> None:
    """DeepLIFT's interception cannot see inside TorchScript: refuse rather than be wrong."""
    scripted = (torch.jit.ScriptModule, torch.jit.ScriptFunction)
    found = isinstance(f, scripted) or (
        isinstance(f, torch.nn.Module) and any(isinstance(m, scripted) for m in f.modules())
    )
    if found:
        from ...errors import ModelError

        raise ModelError(
            "DeepLIFT: the model is (or contains) a TorchScript module (torch.jit.script, "
            "torch.jit.trace or torch.jit.load); its nonlinearities run inside the TorchScript "
            "interpreter, where the Rescale rule cannot replace them, and the result would "
            "silently be wrong. Pass the eager torch.nn.Module (the model before scripting), "
            "or use a gradient method such as Integrated Gradients, which works on TorchScript."
        )


class TorchBackend(Backend):
    """Backend for ``torch.nn.Module`` models (and plain callables on torch tensors)."""

    name = IDENTITY.name
    image_layout = IDENTITY.image_layout
    capabilities = IDENTITY.capabilities

    # --- conversion and devices -------------------------------------------------------
    def is_tensor(self, obj: Any) -> bool:
        return isinstance(obj, torch.Tensor)

    def asarray(self, data: Any, like: Any = None, dtype: Any = None, device: Any = None) -> Any:
        if device is None and isinstance(like, torch.Tensor):
            device = like.device
        tdtype = _torch_dtype(dtype)
        if isinstance(data, torch.Tensor):
            if data.is_inference():
                # inference-mode tensors cannot enter autograd; a normal copy can
                with torch.inference_mode(False):
                    data = data.clone()
            return data.to(device=device if device is not None else data.device,
                           dtype=tdtype if tdtype is not None else data.dtype)
        arr = np.asarray(data)
        if tdtype is None and isinstance(like, torch.Tensor) and arr.dtype.kind == "f":
            tdtype = like.dtype
        return torch.as_tensor(arr, dtype=tdtype, device=device)

    def is_floating(self, t: Any) -> bool:
        return t.is_floating_point()

    def to_numpy(self, t: Any) -> Any:
        t = t.detach().cpu()
        # NumPy has no bfloat16: widen (exactly) to float32
        return (t.float() if t.dtype == torch.bfloat16 else t).numpy()

    def dtype_name(self, t: Any) -> str:
        return str(t.dtype).replace("torch.", "")

    def cast(self, t: Any, like: Any) -> Any:
        return t.to(like.dtype)

    def device_of(self, t: Any) -> Any:
        return t.device

    def model_device(self, model: Any) -> Any:
        if isinstance(model, torch.nn.Module):
            for p in model.parameters():
                return p.device
            for b in model.buffers():
                return b.device
        return None

    def on_accelerator(self, t: Any) -> bool:
        return t.device.type != "cpu"

    def model_dtype(self, model: Any) -> Any:
        if isinstance(model, torch.nn.Module):
            for p in model.parameters():
                if p.is_floating_point():
                    return p.dtype
        return torch.float32

    def all_finite(self, t: Any) -> bool:
        if not t.is_floating_point():
            return True
        if t.device.type == "cpu" and t.dtype in _NUMPY_FLOATS:
            # NumPy on a view of the same memory: torch's isfinite().all() took 4.3 ms on
            # 256x3x32x32 float32 (one thread), NumPy 0.27 ms, and every call checks its inputs
            try:
                return bool(np.isfinite(t.detach().numpy()).all())
            except (RuntimeError, TypeError):  # a view NumPy cannot share (negative/conjugate bit)
                pass
        return bool(torch.isfinite(t).all())

    # --- the model --------------------------------------------------------------------
    @contextlib.contextmanager
    def session(self, model: Any, *, mode: str = "eval") -> Iterator[Callable]:
        if not isinstance(model, torch.nn.Module):
            yield model
            return
        flags = [(m, m.training) for m in model.modules()]
        # as_is runs train-mode modules as they are: batch norm then updates its running
        # statistics, which are put back afterwards (the model is left as it was found)
        buffers = [] if mode == "eval" else [(b, b.detach().clone()) for b in model.buffers()]
        try:
            # model.eval() only where some module trains: it sets every module's flag
            # through nn.Module.__setattr__, which on a small model costs as much as
            # the rest of a call's checks
            if mode == "eval" and any(flag for _, flag in flags):
                model.eval()
            yield self._logits_fn(model)
        finally:
            for m, flag in flags:
                if m.training is not flag:  # put back only what changed (the same state)
                    m.training = flag
            for b, saved in buffers:
                # through .data: no version bump, so a graph kept for double
                # back-propagation (xgradient_for_training) stays usable
                b.data.copy_(saved)

    def _logits_fn(self, model: torch.nn.Module) -> Callable:
        if isinstance(model, torch.nn.Sequential) and len(model) > 1 and isinstance(
            model[-1], _SOFTMAX_LAYERS
        ):
            warn(
                f"the model ends in {type(model[-1]).__name__}; boundary_xg explains the "
                "pre-softmax logit (the Sequential without its last layer).",
                SoftmaxOutputWarning
            )
            return model[:-1]  # a new Sequential sharing the same modules
        return model

    def entry_context(self) -> Any:
        # gradients cannot be taken under torch.inference_mode(); tensors made inside
        # inference_mode(False) are ordinary ones (the input's copy: see asarray)
        if torch.is_inference_mode_enabled():
            return torch.inference_mode(False)
        return contextlib.nullcontext()

    def no_grad(self) -> Any:
        return torch.no_grad()

    def fingerprint(self, model: Any) -> Tuple:
        if not isinstance(model, torch.nn.Module):
            return (id(model),)
        return tuple((id(p), tuple(p.shape)) for p in model.parameters())

    def named_weights(self, model: Any) -> list:
        if not isinstance(model, torch.nn.Module):
            return []
        return list(model.state_dict().items())

    def forward(self, f: Callable, x: Any) -> Any:
        with torch.no_grad():
            # a copy: a model that writes into its input (nn.ReLU(inplace=True) first)
            # must not change x, which later passes (and the caller) still read
            return f(x.clone())

    # --- autodiff ---------------------------------------------------------------------
    def value_and_grad(self, fn: Callable, x: Any, create_graph: bool = False) -> Tuple[Any, Any]:
        with torch.enable_grad():
            if create_graph and x.requires_grad:
                xg = x
            else:
                xg = x.detach().requires_grad_(True)
            # through a copy: a model that writes into its input cannot do so on a leaf
            value = fn(xg.clone())
            (grad,) = torch.autograd.grad(value.sum(), xg, create_graph=create_graph)
        if not create_graph:
            value = value.detach()
        return value, grad

    def value_aux_and_grad(self, fn: Callable, x: Any) -> Tuple[Any, Any, Any]:
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            value, aux = fn(xg.clone())  # a copy: see value_and_grad
            (grad,) = torch.autograd.grad(value.sum(), xg)
        return value.detach(), aux.detach(), grad

    vjps_share_forward = True

    def value_and_vjps(self, fn: Callable, x: Any, cotangents: Any) -> Tuple[Any, Any]:
        # one forward of N rows; the k backwards as one vmapped backward (is_grads_batched):
        # measured on the small CNN of bench/boundary.py (9 x 7 rows of 3x32x32, one thread)
        # 0.59-0.66 of the time of 63 tiled forward+backward rows, gradients bit for bit equal
        with torch.enable_grad():
            xg = x.detach().requires_grad_(True)
            out = fn(xg.clone())  # a copy: see value_and_grad
            try:
                (grads,) = torch.autograd.grad(out, xg, grad_outputs=cotangents, is_grads_batched=True)
            except RuntimeError:
                # an operation vmap cannot batch (e.g. a custom autograd.Function without vmap
                # support): the k backwards through k tiled copies, as the protocol's default
                return super().value_and_vjps(fn, x, cotangents)
        return out.detach(), grads

    def stop_gradient(self, t: Any) -> Any:
        return t.detach()

    # --- creation ---------------------------------------------------------------------
    def zeros_like(self, t: Any) -> Any:
        return torch.zeros_like(t)

    def constant(self, values: Sequence[float], like: Any) -> Any:
        return torch.as_tensor(np.asarray(values), dtype=like.dtype, device=like.device)

    def arange(self, start: int, stop: int, like: Any) -> Any:
        return torch.arange(start, stop, device=like.device)

    def one_hot(self, labels: Any, depth: int, like: Any) -> Any:
        return torch.nn.functional.one_hot(labels.long(), int(depth)).to(like.dtype)

    # --- random numbers ---------------------------------------------------------------
    def rng(self, seed: Any, like: Any) -> Any:
        gen = torch.Generator(device=like.device)
        if seed is None:
            gen.seed()
        else:
            gen.manual_seed(int(seed))
        return gen

    def normal(self, rng: Any, shape: Sequence[int], like: Any) -> Any:
        return torch.randn(tuple(shape), generator=rng, device=like.device, dtype=like.dtype)

    def uniform(self, rng: Any, shape: Sequence[int], like: Any) -> Any:
        return torch.rand(tuple(shape), generator=rng, device=like.device, dtype=like.dtype)

    # --- shape and indexing -----------------------------------------------------------
    def shape(self, t: Any) -> Tuple[int, ...]:
        return tuple(t.shape)

    def reshape(self, t: Any, shape: Sequence[int]) -> Any:
        return t.reshape(tuple(shape))

    def broadcast_to(self, t: Any, shape: Sequence[int]) -> Any:
        return t.broadcast_to(tuple(shape))

    def concat(self, ts: Sequence[Any], axis: int = 0) -> Any:
        return torch.cat(list(ts), dim=axis)

    def gather(self, t: Any, index: Any) -> Any:
        return t.index_select(0, index)

    def take_along_axis(self, t: Any, index: Any) -> Any:
        if t.dim() == 2:
            return t.gather(1, index.reshape(-1, 1)).reshape(-1)
        return t[torch.arange(t.shape[0], device=t.device), index.long()]

    def index_add(self, acc: Any, index: Any, rows: Any) -> Any:
        return acc.index_add(0, index, rows)

    # --- element-wise -----------------------------------------------------------------
    def abs(self, t: Any) -> Any:
        return t.abs()

    def sqrt(self, t: Any) -> Any:
        return t.sqrt()

    def exp(self, t: Any) -> Any:
        return t.exp()

    def sign(self, t: Any) -> Any:
        return torch.sign(t)

    def tanh(self, t: Any) -> Any:
        return torch.tanh(t)

    def atanh(self, t: Any) -> Any:
        return torch.atanh(t)

    def minimum(self, a: Any, b: Any) -> Any:
        return torch.minimum(a, b)

    def maximum(self, a: Any, b: Any) -> Any:
        return torch.maximum(a, b)

    def where(self, cond: Any, a: Any, b: Any) -> Any:
        return torch.where(cond, a, b)

    def not_equal(self, a: Any, b: Any) -> Any:
        return torch.ne(a, b)

    def logical_and(self, a: Any, b: Any) -> Any:
        return torch.logical_and(a, b)

    def logical_or(self, a: Any, b: Any) -> Any:
        return torch.logical_or(a, b)

    def logical_not(self, a: Any) -> Any:
        return torch.logical_not(a)

    # --- reductions -------------------------------------------------------------------
    def sum(self, t: Any, axis: Any = None) -> Any:
        return t.sum() if axis is None else t.sum(dim=axis)

    def max(self, t: Any, axis: Any = None) -> Any:
        return t.max() if axis is None else t.amax(dim=axis)

    def min(self, t: Any, axis: Any = None) -> Any:
        return t.min() if axis is None else t.amin(dim=axis)

    def argmax(self, t: Any, axis: int = -1) -> Any:
        return t.argmax(dim=axis)

    def logsumexp(self, t: Any, axis: int = -1) -> Any:
        return torch.logsumexp(t, dim=axis)

    def sort(self, t: Any, axis: int = -1) -> Any:
        return torch.sort(t, dim=axis).values

    def argsort(self, t: Any, axis: int = -1) -> Any:
        return torch.sort(t, dim=axis, stable=True).indices

    def select(self, cond: Any, a: Any, b: Any) -> Any:
        return torch.where(cond, a, b)

    def invert_permutation(self, order: Any) -> Any:
        pos = torch.arange(order.shape[1], device=order.device, dtype=order.dtype).expand_as(order)
        return torch.empty_like(order).scatter_(1, order, pos)

    def einsum(self, spec: str, *operands: Any) -> Any:
        return torch.einsum(spec, *operands)

    def weighted_sum(self, t: Any, w: Any, axis: int) -> Any:
        shape = t.shape
        axis %= len(shape)
        lead, c, trail = math.prod(shape[:axis]), shape[axis], math.prod(shape[axis + 1:])
        if w.dtype != t.dtype:
            w = w.to(t.dtype)
        # (lead, C, trail) contracted with w (C,): one batched (1, C) x (C, trail) product
        # over a view of t (NCHW, channels on axis 1: no copy); bmm with the vector
        # expanded is faster than matmul's broadcasting of a 1-D operand
        out = torch.bmm(w.reshape(1, 1, c).expand(lead, 1, c), t.reshape(lead, c, trail))
        return out.reshape(shape[:axis] + shape[axis + 1:])

    # --- the model: copies and weights (the randomisation check) ----------------------
    def copy_model(self, model: Any) -> Any:
        import copy

        try:
            return copy.deepcopy(model)
        except Exception as err:  # a module holding something that cannot be copied
            from ...errors import InputError

            raise InputError(f"the model could not be copied (copy.deepcopy: {type(err).__name__}: "
                             f"{err}); the randomisation check works on a copy.") from err

    def parameter_layers(self, model: Any) -> list:
        if not isinstance(model, torch.nn.Module):
            return []
        return [(name or type(m).__name__, m) for name, m in model.named_modules()
                if any(True for _ in m.parameters(recurse=False))]

    def randomize_layer(self, model: Any, layer: Any, seed: Sequence[int]) -> None:
        with torch.no_grad():
            for k, p in enumerate(layer.parameters(recurse=False)):
                w = p.detach().double().cpu().numpy()
                rng = np.random.default_rng(list(seed) + [k])
                new = rng.standard_normal(w.shape) * w.std() + w.mean()
                p.copy_(torch.as_tensor(new, dtype=p.dtype, device=p.device))

    # --- fast paths: each has a fallback written once here over the core primitives ---
    def tanh_backward(self, y: Any, dy: Any) -> Any:
        return torch.ops.aten.tanh_backward(dy, y)

    def adam_update(self, d: Any, m: Any, v: Any, g: Any, lr: Any, eps: Any, beta1: float,
                    beta2: float) -> Tuple[Any, Any, Any]:
        # in place, seven kernels instead of twelve: on a small CNN each kernel's launch
        # costs as much as its arithmetic
        torch.add(g, m, alpha=beta1, out=m)
        v.mul_(beta2).addcmul_(g, g)
        d.addcdiv_(m, v.sqrt().add_(eps).div_(lr), value=-1.0)
        return d, m, v

    def index_update(self, acc: Any, index: Any, rows: Any) -> Any:
        return acc.index_copy(0, index, rows)

    # --- capability "deeplift": DeepLIFT's Rescale kernel -----------------------------
    def check_deeplift_model(self, model: Any) -> None:
        _refuse_torchscript(model)

    def deeplift_grad(self, f: Callable, x: Any, baseline: Any, labels: Any, times_delta: bool = False) -> Any:
        from .rescale import deeplift_grad

        _refuse_torchscript(f)

        mult = deeplift_grad(f, x, baseline, labels)
        return mult * (x - baseline) if times_delta else mult

    # --- capability "layers": running the model while capturing layers (GradCAM, FullGrad) ---
    def resolve_layer(self, model: Any, layer: Any) -> Any:
        from .layers import resolve_layer

        return resolve_layer(model, layer)

    def layer_names(self, model: Any) -> list:
        from .layers import layer_names

        return layer_names(model)

    def layer_name(self, model: Any, layer: Any) -> str:
        from .layers import layer_name

        return layer_name(model, layer)

    def default_layer(self, model: Any, x: Any) -> Any:
        from .layers import default_layer

        # a softmax warning here is the call's one (errors.warn gives it once per call)
        with self.session(model, mode="eval") as f:
            return default_layer(model, f, x)

    def capture_layers(self, f: Callable, layers: Sequence[Any], x: Any, labels: Any,
                       wrt_input: bool = False, pre_activation: bool = False,
                       strict: bool = True, values: bool = True,
                       reduce: Optional[Callable[[int, Any], Any]] = None) -> Tuple[Any, list, list, Any]:
        from .layers import capture_layers

        return capture_layers(f, layers, x, labels, wrt_input, strict, values, reduce)

    def bias_terms(self, model: Any) -> list:
        from .layers import bias_terms

        return bias_terms(model)

    def resize(self, t: Any, size: Tuple[int, int], align_corners: bool = False) -> Any:
        from .layers import resize

        return resize(t, size, align_corners)

    # --- capability "xdnn" (and "state_dict_checkpoints") -----------------------------
    def xdnn_kernels(self) -> Any:
        from . import xdnn

        return xdnn

    # --- capability "datasets" --------------------------------------------------------
    def data_plan(self, data: Any) -> Any:
        from .data import plan

        return plan(data)

    # --- capability "distributed" -----------------------------------------------------
    def process_group(self, local_rank: int, timeout_s: float) -> Any:
        from .distributed import ProcessGroup

        return ProcessGroup(local_rank, timeout_s)

    # --- capability "model_files" -----------------------------------------------------
    def model_files(self) -> Any:
        from . import model_files

        return model_files


BACKEND = TorchBackend()
