"""The Backend protocol: the primitives every algorithm in boundary_xg is written over.

An algorithm (a method, the boundary search) receives a backend ``B`` and an
inference-mode model call ``f`` and only ever uses ``B``'s primitives and the
tensor operators (``+ - * / // %``, which both frameworks overload). That keeps
every algorithm written once; the folders ``backends/<framework>/``
are the only modules that import a framework.

Conventions
-----------
* Tensors stay on the model's device; ``to_numpy`` is for the exit only.
* ``value_and_grad(fn, x)`` differentiates ``sum(fn(x))`` with respect to ``x``;
  ``fn`` returns one scalar per example, shape ``(N,)``. Examples are independent
  in inference mode, so this is the per-example gradient.
* Random numbers come from explicit generator objects made by ``rng(seed)``.
"""

from __future__ import annotations

import abc
import contextlib
import functools
from typing import Any, Callable, Dict, FrozenSet, Optional, Sequence, Tuple

from ..errors import CapabilityError

#: named capabilities beyond the core primitives: what a backend may provide, and
#: the primitives each one stands for. Methods name the ones they need in the
#: registry (``MethodSpec.needs``); the front end checks them before running.
CAPABILITIES: Dict[str, str] = {
    "deeplift": "DeepLIFT's Rescale kernel, deeplift_grad",
    "layers": "running the model while capturing layers: resolve_layer, layer_names, layer_name, "
              "default_layer, capture_layers, bias_terms, resize",
    "xdnn": "the X-DNN toolkit's scan, bias stripping and architecture builders, xdnn_kernels()",
    "state_dict_checkpoints": "PyTorch state-dict checkpoints: xdnn_kernels().read_checkpoint, "
                              "state_keys, load_state",
    "datasets": "reading the framework's dataset objects in a dataset run, data_plan(data)",
    "distributed": "agreeing on work and waiting for each other across processes, process_group()",
    "model_files": "loading the framework's model files and weights for the command line: "
                   "model_files() (load_model_file, load_weights)",
}


def as_written(fn: Callable) -> Callable:
    """Mark ``fn`` for :meth:`Backend.jit` as free of data-dependent Python control flow.

    It is then compiled as written (TensorFlow: without autograph), so that an
    error it raises while it is traced (e.g. GradCAM's ``InputError`` for a layer
    without spatial extent) reaches the caller with its own type and message.
    """
    fn.jit_as_written = True
    return fn


class Backend(abc.ABC):
    """Abstract backend: a subclass per framework implements every core primitive below.

    The core primitives are abstract (a backend missing one cannot be instantiated);
    the fast paths have written-once fallbacks; the capabilities raise
    :class:`~boundary_xg.errors.CapabilityError` unless the backend provides them.
    """

    #: short name used by ``backend=`` and in messages ("torch", "tensorflow")
    name: str = "abstract"
    #: the capabilities of :data:`CAPABILITIES` this backend provides
    capabilities: FrozenSet[str] = frozenset()
    #: the layout of image batches the framework's models usually take
    image_layout: str = "NCHW"
    #: input elements per chunk by default on a CPU (see ops.default_batch_size):
    #: past it the activations leave the caches and each row gets slower
    cpu_chunk_elements: int = 2 ** 19

    # --- conversion and devices -------------------------------------------------------
    @abc.abstractmethod
    def is_tensor(self, obj: Any) -> bool:
        """True when ``obj`` is a native tensor of this framework."""
        raise NotImplementedError

    @abc.abstractmethod
    def asarray(self, data: Any, like: Any = None, dtype: Any = None, device: Any = None) -> Any:
        """Convert ``data`` (NumPy, list, scalar or tensor) to a tensor on ``like``'s device.

        ``dtype`` may be a NumPy dtype, a framework dtype or "int64"; when None the
        dtype of ``like`` (if given and ``data`` is floating) or of ``data`` is kept.
        ``device`` (a value of :meth:`model_device`) places it when there is no ``like``.
        """
        raise NotImplementedError

    @abc.abstractmethod
    def is_floating(self, t: Any) -> bool:
        """True when ``t`` has a floating dtype."""
        raise NotImplementedError

    @abc.abstractmethod
    def to_numpy(self, t: Any) -> Any:
        """Copy a tensor to a NumPy array (the exit of an API call only)."""
        raise NotImplementedError

    @abc.abstractmethod
    def dtype_name(self, t: Any) -> str:
        """The dtype as a NumPy-style string ("float32", "int64", ...)."""
        raise NotImplementedError

    @abc.abstractmethod
    def cast(self, t: Any, like: Any) -> Any:
        """Cast ``t`` to ``like``'s dtype."""
        raise NotImplementedError

    def device_of(self, t: Any) -> Any:
        """The device of tensor ``t``, where it must match the model's (None: not checked)."""
        return None

    @abc.abstractmethod
    def model_device(self, model: Any) -> Any:
        """The device the model's weights live on (None: the framework's default)."""
        raise NotImplementedError

    @abc.abstractmethod
    def on_accelerator(self, t: Any) -> bool:
        """True when tensor ``t`` lives on a GPU/TPU (sizes the default chunks)."""
        raise NotImplementedError

    @abc.abstractmethod
    def model_dtype(self, model: Any) -> Any:
        """The floating dtype the model computes in (default float32)."""
        raise NotImplementedError

    @abc.abstractmethod
    def all_finite(self, t: Any) -> bool:
        """True when ``t`` has no NaN or infinity (one host sync: API entry only)."""
        raise NotImplementedError

    # --- the model --------------------------------------------------------------------
    @abc.abstractmethod
    def session(self, model: Any, *, mode: str = "eval") -> contextlib.AbstractContextManager:
        """Context manager yielding ``f``, the model's logits function ``(N, ...) -> (N, C)``.

        ``mode="eval"`` runs the model with inference semantics (dropout off,
        batch-norm running statistics); ``mode="as_is"`` leaves it as the user set
        it (training with attribution priors). Everything changed is restored on
        exit, also when an error is raised.
        """
        raise NotImplementedError

    def entry_context(self) -> contextlib.AbstractContextManager:
        """Context entered once around a whole API call, before any conversion.

        It undoes caller state in which the algorithms cannot run (torch: an
        enclosing ``torch.inference_mode()``, under which no gradient can be taken).
        """
        return contextlib.nullcontext()

    def no_grad(self) -> contextlib.AbstractContextManager:
        """Context in which model calls record nothing for gradients (forward-only loops that
        make their own inputs, so need no copy as :meth:`forward` makes)."""
        return contextlib.nullcontext()

    def fingerprint(self, model: Any) -> Tuple:
        """A cheap key that changes when the model's weights are replaced or reshaped."""
        return (id(model),)

    @abc.abstractmethod
    def named_weights(self, model: Any) -> list:
        """``(name, tensor)`` for every weight and buffer of ``model``, in a stable order
        (what identifies a model's numbers in a run's ``run.json``); empty for a plain callable."""
        raise NotImplementedError

    @abc.abstractmethod
    def forward(self, f: Callable, x: Any) -> Any:
        """``f(x)`` without recording anything for gradients."""
        raise NotImplementedError

    def jit(self, fn: Callable, owner: Any, *static: Any, fuse: bool = False) -> Callable:
        """``fn`` with its leading arguments ``static`` bound, compiled where that is faster.

        Compiled versions are cached per ``owner`` (the logits function ``f``), so a
        second call on the same model does not compile again. Functions marked with
        :func:`as_written` are compiled without source conversion. ``fuse=True``
        asks for one fused kernel where the backend has a fusing compiler
        (TensorFlow: XLA, where available): for elementwise and small-map work with
        static shapes, not for a model's pass.
        """
        return functools.partial(fn, *static)

    # --- autodiff ---------------------------------------------------------------------
    @abc.abstractmethod
    def value_and_grad(self, fn: Callable, x: Any, create_graph: bool = False) -> Tuple[Any, Any]:
        """Return ``(fn(x), d sum(fn(x)) / dx)``; ``fn(x)`` has shape ``(N,)``.

        With ``create_graph=True`` the gradient stays differentiable (double
        back-propagation, e.g. for attribution priors).
        """
        raise NotImplementedError

    @abc.abstractmethod
    def value_aux_and_grad(self, fn: Callable, x: Any) -> Tuple[Any, Any, Any]:
        """Like :meth:`value_and_grad` for ``fn(x) -> (value (N,), aux)``.

        Returns ``(value, aux, d sum(value) / dx)``; ``aux`` (e.g. the logits of the
        same forward pass) is returned without a gradient. One forward, one backward.
        """
        raise NotImplementedError

    #: :meth:`value_and_vjps` runs one forward of ``N`` rows (``False``: ``k`` tiled copies)
    vjps_share_forward: bool = False

    def value_and_vjps(self, fn: Callable, x: Any, cotangents: Any) -> Tuple[Any, Any]:
        """``fn(x)`` and ``k`` vector-Jacobian products of it: one forward, ``k`` backwards.

        Args:
            fn: ``x (N, ...) -> out (N, C)`` (e.g. the logits).
            x: ``(N, ...)`` the point.
            cotangents: ``(k, N, C)``, ``k`` known when traced.

        Returns:
            ``(out, grads)``: ``out`` ``(N, C)`` without a gradient and ``grads``
            ``(k, N, ...)``, ``grads[j] = d sum(out * cotangents[j]) / dx``.

        This default runs ``fn`` on ``k`` tiled copies of ``x`` (``k N`` rows forward
        and backward) and returns the first copy's ``out``; a backend that can run
        the ``k`` backwards through one forward of ``N`` rows overrides it.
        """
        k = int(cotangents.shape[0])
        classes = int(cotangents.shape[-1])
        xx = self.concat([x] * k) if k > 1 else x
        cc = self.reshape(cotangents, (-1, classes))

        def weighted(u):
            out = fn(u)
            return self.sum(out * cc, axis=1), out

        _, out, grad = self.value_aux_and_grad(weighted, xx)
        inner = tuple(int(d) for d in x.shape[1:])
        # the first copy's rows (a reshape: the row count may be unknown while traced)
        return self.reshape(out, (k, -1, classes))[0], self.reshape(grad, (k, -1) + inner)

    @abc.abstractmethod
    def stop_gradient(self, t: Any) -> Any:
        raise NotImplementedError

    # --- creation ---------------------------------------------------------------------
    @abc.abstractmethod
    def zeros_like(self, t: Any) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def constant(self, values: Sequence[float], like: Any) -> Any:
        """A 1-D tensor of ``values`` with ``like``'s dtype and device."""
        raise NotImplementedError

    @abc.abstractmethod
    def arange(self, start: int, stop: int, like: Any) -> Any:
        """Integer range ``[start, stop)`` on ``like``'s device (int64)."""
        raise NotImplementedError

    @abc.abstractmethod
    def one_hot(self, labels: Any, depth: int, like: Any) -> Any:
        """``(N, depth)`` one-hot rows of integer ``labels`` with ``like``'s dtype."""
        raise NotImplementedError

    # --- random numbers ---------------------------------------------------------------
    @abc.abstractmethod
    def rng(self, seed: Any, like: Any) -> Any:
        """A random generator for ``like``'s device, seeded with ``seed`` (None: random)."""
        raise NotImplementedError

    @abc.abstractmethod
    def normal(self, rng: Any, shape: Sequence[int], like: Any) -> Any:
        """Standard normal samples of ``shape`` with ``like``'s dtype and device."""
        raise NotImplementedError

    @abc.abstractmethod
    def uniform(self, rng: Any, shape: Sequence[int], like: Any) -> Any:
        """Uniform samples in ``[0, 1)`` of ``shape`` with ``like``'s dtype and device."""
        raise NotImplementedError

    # --- shape and indexing -----------------------------------------------------------
    @abc.abstractmethod
    def shape(self, t: Any) -> Tuple[int, ...]:
        """The shape as Python ints (None for a dimension a compiled step traces as unknown)."""
        raise NotImplementedError

    @abc.abstractmethod
    def reshape(self, t: Any, shape: Sequence[int]) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def broadcast_to(self, t: Any, shape: Sequence[int]) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def concat(self, ts: Sequence[Any], axis: int = 0) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def gather(self, t: Any, index: Any) -> Any:
        """Rows of ``t`` at integer ``index`` (along axis 0)."""
        raise NotImplementedError

    @abc.abstractmethod
    def take_along_axis(self, t: Any, index: Any) -> Any:
        """``t[n, index[n]]`` for ``t`` of shape ``(N, M, ...)`` and an integer ``index`` of shape ``(N,)``
        (shape ``(N, ...)``: one entry per row for a 2-D ``t``, one sub-array per row above)."""
        raise NotImplementedError

    @abc.abstractmethod
    def index_add(self, acc: Any, index: Any, rows: Any) -> Any:
        """Return ``acc`` with ``rows[k]`` added to ``acc[index[k]]`` (out of place)."""
        raise NotImplementedError

    # --- element-wise -----------------------------------------------------------------
    @abc.abstractmethod
    def abs(self, t: Any) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def sqrt(self, t: Any) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def exp(self, t: Any) -> Any:
        """Element-wise ``e ** t`` (differentiable; the contrastive objective's weights)."""
        raise NotImplementedError

    @abc.abstractmethod
    def sign(self, t: Any) -> Any:
        """Element-wise sign (-1, 0, 1)."""
        raise NotImplementedError

    @abc.abstractmethod
    def tanh(self, t: Any) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def atanh(self, t: Any) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def minimum(self, a: Any, b: Any) -> Any:
        """Element-wise minimum of two broadcastable tensors."""
        raise NotImplementedError

    @abc.abstractmethod
    def maximum(self, a: Any, b: Any) -> Any:
        """Element-wise maximum of two broadcastable tensors."""
        raise NotImplementedError

    @abc.abstractmethod
    def select(self, cond: Any, a: Any, b: Any) -> Any:
        """``where(cond, a, b)`` for ``a`` and ``b`` of one shape and ``cond`` of that shape or
        with axes of length 1 (broadcast over them, e.g. one entry per pixel for all its
        channels); exact. A separate primitive because TensorFlow's broadcasting
        ``where`` is several times slower on a CPU than its same-shape select."""
        raise NotImplementedError

    @abc.abstractmethod
    def where(self, cond: Any, a: Any, b: Any) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def not_equal(self, a: Any, b: Any) -> Any:
        """Element-wise ``a != b`` as a boolean tensor."""
        raise NotImplementedError

    @abc.abstractmethod
    def logical_and(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def logical_or(self, a: Any, b: Any) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def logical_not(self, a: Any) -> Any:
        raise NotImplementedError

    # --- reductions -------------------------------------------------------------------
    @abc.abstractmethod
    def sum(self, t: Any, axis: Any = None) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def max(self, t: Any, axis: Any = None) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def min(self, t: Any, axis: Any = None) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def argmax(self, t: Any, axis: int = -1) -> Any:
        raise NotImplementedError

    @abc.abstractmethod
    def logsumexp(self, t: Any, axis: int = -1) -> Any:
        """Numerically stable ``log(sum(exp(t)))`` along ``axis``."""
        raise NotImplementedError

    @abc.abstractmethod
    def sort(self, t: Any, axis: int = -1) -> Any:
        """Values of ``t`` sorted ascending along ``axis`` (differentiable)."""
        raise NotImplementedError

    @abc.abstractmethod
    def argsort(self, t: Any, axis: int = -1) -> Any:
        """Indices (int64) that sort ``t`` ascending along ``axis``; **stable** (ties keep
        their order), so rankings are the same in every framework."""
        raise NotImplementedError

    @abc.abstractmethod
    def invert_permutation(self, order: Any) -> Any:
        """Per row of ``order`` ``(N, P)`` (each row a permutation of ``0..P-1``, int64) its
        inverse: ``out[n, order[n, j]] = j`` (one scatter; with :meth:`argsort`, each
        element's rank)."""
        raise NotImplementedError

    @abc.abstractmethod
    def einsum(self, spec: str, *operands: Any) -> Any:
        """``numpy.einsum(spec, *operands)`` on tensors (e.g. a separable blur as two matrix products)."""
        raise NotImplementedError

    @abc.abstractmethod
    def weighted_sum(self, t: Any, w: Any, axis: int) -> Any:
        """``sum(t * w, axis)`` for a 1-D ``w`` along ``axis`` of ``t``: ``t``'s shape without ``axis``.

        One read of ``t`` (a matrix product): the product ``t * w`` is not formed.
        ``w`` is cast to ``t``'s dtype.
        """
        raise NotImplementedError

    # --- the model: copies and weights (the randomisation check) ----------------------
    @abc.abstractmethod
    def copy_model(self, model: Any) -> Any:
        """A separate model with the same architecture and weights as ``model`` (on its device).

        Raises:
            InputError: the model cannot be copied (e.g. a Keras subclassed model without a config).
        """
        raise NotImplementedError

    @abc.abstractmethod
    def parameter_layers(self, model: Any) -> list:
        """``[(name, handle), ...]`` of the layers of ``model`` that own weights (not batch-norm
        running statistics), in the order the model defines them (input side first)."""
        raise NotImplementedError

    @abc.abstractmethod
    def randomize_layer(self, model: Any, layer: Any, seed: Sequence[int]) -> None:
        """Re-draw every weight tensor of ``layer`` (a handle of :meth:`parameter_layers`) in place.

        Each tensor gets normal values with its own mean and standard deviation (the
        re-calibration code's rule), drawn by NumPy from ``seed`` in PyTorch's weight layout
        (``(out, in, kh, kw)``, ``(out, in)``) and transposed to the framework's, so that the
        same weights in both frameworks are randomised to the same weights.
        """
        raise NotImplementedError

    # --- fast paths: each has a fallback written once here over the core primitives ---
    def tanh_backward(self, y: Any, dy: Any) -> Any:
        """``dy * (1 - y^2)``: the chain rule through ``y = tanh(z)``, in one kernel."""
        # fallback written once; a backend may fuse it into one kernel
        return dy * (1 - y * y)

    def adam_update(self, d: Any, m: Any, v: Any, g: Any, lr: Any, eps: Any, beta1: float,
                    beta2: float) -> Tuple[Any, Any, Any]:
        """One Adam step on unnormalised moments; returns the new ``(d, m, v)``.

        ``m <- beta1 m + g``, ``v <- beta2 v + g^2``, ``d <- d - lr m / (sqrt(v) +
        eps)``: the moments are ``1 / (1 - beta)`` times Adam's, and the caller
        folds those factors and the bias corrections into ``lr`` and ``eps``
        (one fewer pass each than the textbook form). ``d, m, v, g`` share a
        shape, ``lr`` and ``eps`` broadcast to it (one value per row). May update
        ``d``, ``m`` and ``v`` in place: pass tensors nothing else reads.
        """
        # fallback written once over the core primitives (out of place)
        m = m * beta1 + g
        v = v * beta2 + g * g
        return d - lr * m / (self.sqrt(v) + eps), m, v

    def index_update(self, acc: Any, index: Any, rows: Any) -> Any:
        """A copy of ``acc`` with the rows at ``index`` (unique, ``(R,)``) replaced by ``rows``.

        Exact, unlike ``index_add(acc, index, rows - gather(acc, index))``, which
        cancels to 0 in float32 when ``acc`` holds a sentinel such as 1e10.
        """
        # fallback written once: clear the rows at ``index``, then add the new ones
        hit = self.index_add(self.zeros_like(acc), index, rows * 0 + 1)
        return self.index_add(self.where(hit > 0, acc * 0, acc), index, rows)

    def abs_channel_stats(self, t: Any, w: Optional[Any], axis: int,
                          times: Optional[Any] = None) -> Tuple[Any, Any, Any]:
        """The channel sum of ``|t| w`` and its extremes per example, without forming ``|t| w``.

        ``t (N, ...)`` with ``C`` channels on ``axis``; ``w (C,) >= 0`` (cast to ``t``'s
        dtype) or None for unit weights; ``times``: None or a tensor of ``t``'s shape,
        and then the term is ``|t * times|`` (FullGrad's ``x * grad_x``, not formed
        where the backend fuses). Returns ``(s, m, M)``: ``s = sum_c |t| w_c``
        (``t``'s shape without ``axis``) and the minimum and maximum of ``|t| w``
        over all axes but the first, ``(N,)`` each. FullGrad's post-processing of a
        term (``psi``: absolute value, min-max scaling, channel sum) needs nothing
        more. The extremes are exact (rounding is monotonic, so ``min(|t|) * w_c`` is
        the smallest rounded product of channel ``c``); the sum rounds as the backend adds.
        """
        # fallback written once: |t| once, its extremes and one channel sum (with
        # weights, a matrix product); a backend may fuse it into one pass (TensorFlow: XLA)
        a = self.abs(t if times is None else t * times)
        rank = len(self.shape(a))
        axis %= rank
        if w is None:
            every = tuple(range(1, rank))
            return self.sum(a, axis=axis), self.min(a, axis=every), self.max(a, axis=every)
        rest = tuple(i for i in range(1, rank) if i != axis)
        wc = self.reshape(self.cast(w, a), (1, -1))
        lo = self.min(self.min(a, axis=rest) * wc, axis=1)
        hi = self.max(self.max(a, axis=rest) * wc, axis=1)
        return self.weighted_sum(a, w, axis), lo, hi

    # --- capability "deeplift": DeepLIFT's Rescale kernel -----------------------------
    def check_deeplift_model(self, model: Any) -> None:
        """Refuse a model whose nonlinearities :meth:`deeplift_grad` cannot intercept.

        Called by the front end before any forward pass (DeepLIFT's and BDT's
        ``prepare``), so that BDT refuses before its boundary search. Default: accept.

        Raises:
            MethodError: the model cannot be explained by DeepLIFT (PyTorch: a
                TorchScript module), with the fix.
        """
        return None

    def deeplift_grad(self, f: Callable, x: Any, baseline: Any, labels: Any, times_delta: bool = False) -> Any:
        """DeepLIFT (Rescale) multipliers of each example's label logit w.r.t. ``x``.

        A forward pass of the baselines records every nonlinearity's input and
        output; a forward and a backward pass of ``x`` follow, with every
        nonlinearity's gradient replaced by the multiplier ``(g(u) - g(u')) / (u - u')``
        of its input/baseline pair. Where the two passes do not make the same
        calls, ``x`` and ``baseline`` run as one doubled batch ``(2n, ...)``.

        Args:
            f: the logits function from :meth:`session`; x: ``(n, ...)``;
            baseline: ``(n, ...)``, or ``(1, ...)`` shared by all rows;
            labels: ``(n,)`` integer classes.
            times_delta: return the attributions ``m * (x - baseline)`` instead
                (computed with the multipliers, in the same compiled call).

        Returns:
            Multipliers ``m`` shaped like ``x``, or the attributions.

        Raises:
            MethodError: the model calls a nonlinearity the rule does not cover
                (softmax inside the network), naming it.
        """
        raise self._missing('deeplift')

    # --- capability "layers": running the model while capturing layers (GradCAM, FullGrad) ---
    def resolve_layer(self, model: Any, layer: Any) -> Any:
        """The layer of ``model`` that the user's ``layer=`` names (a handle for the methods below).

        PyTorch: a sub-module or its dotted name (``"layer4"``, ``"features.28"``);
        Keras: a layer object, its name or its index in ``model.layers``.

        Raises:
            InputError: the model has no such layer; the message lists the names.
        """
        raise self._missing('layers')

    def layer_names(self, model: Any) -> list:
        """The names of every layer of ``model`` (what ``layer=`` accepts as a string)."""
        raise self._missing('layers')

    def layer_name(self, model: Any, layer: Any) -> str:
        """The name of the handle ``layer`` in ``model`` (for messages)."""
        raise self._missing('layers')

    def default_layer(self, model: Any, x: Any) -> Any:
        """GradCAM's default layer: the output of the last block with spatial extent.

        Runs the model once on ``x`` (one example) in inference mode to see which
        layers have spatial outputs.
        """
        raise self._missing('layers')

    def capture_layers(self, f: Callable, layers: Sequence[Any], x: Any, labels: Any,
                       wrt_input: bool = False, pre_activation: bool = False,
                       strict: bool = True, values: bool = True,
                       reduce: Optional[Callable[[int, Any], Any]] = None) -> Tuple[Any, list, list, Any]:
        """One forward and backward of ``f`` at ``x``, capturing the outputs of ``layers``.

        Args:
            f: the logits function from :meth:`session`; layers: handles from
                :meth:`resolve_layer`, :meth:`default_layer` or :meth:`bias_terms`.
            x: ``(N, ...)``; labels: ``(N,)`` integer classes.
            wrt_input: also return the gradient with respect to ``x``.
            pre_activation: capture layers that fuse an activation (Keras'
                ``Conv2D(activation="relu")``) before it.
            strict: raise for a layer that does not run or that the logits do not
                depend on; False gives it no entries or zero gradients (FullGrad
                collects every bias of the model, used or not).
            values: return the outputs; False may return None for them and save
                a copy of each output (FullGrad needs only the gradients).
            reduce: ``reduce(i, grad) -> result``: ``grads[i]`` then holds the
                results for the gradients of ``layers[i]`` (zeros where the logits
                do not depend on it) instead of the gradients, which are not kept:
                PyTorch (``values=False``) runs it in the backward pass as each
                gradient arrives, TensorFlow in the graph of the caller's compiled
                step (call it from one: the capture is then not compiled apart).

        Returns:
            ``(scores (N,), outputs, grads, grad_x)``: ``outputs[i]`` and
            ``grads[i]`` hold one tensor per call of ``layers[i]`` (call order),
            the layer's output and the gradient of ``sum(scores)`` with respect
            to it; ``grad_x`` is None unless ``wrt_input``. The model's hooks and
            layers are as they were afterwards, also after an error.

        Raises:
            InputError: a layer that did not run or that the logits do not depend on.
        """
        raise self._missing('layers')

    def bias_terms(self, model: Any) -> list:
        """``(layer, bias (C,), channel axis)`` for every layer of ``model`` that adds a bias.

        Convolutions and dense layers with a bias, batch norm with its effective
        bias ``beta - mean * gamma / sqrt(var + eps)`` from its running statistics.
        """
        raise self._missing('layers')

    def resize(self, t: Any, size: Tuple[int, int], align_corners: bool = False) -> Any:
        """Bilinear resize of a batch of maps in :attr:`image_layout` to spatial ``size``."""
        raise self._missing('layers')

    # --- capability "xdnn" (and "state_dict_checkpoints") -----------------------------
    def xdnn_kernels(self) -> Any:
        """The module of X-DNN kernels: ``scan(model)``, ``strip_bias(model)``, ``build(...)``.

        Capability ``"xdnn"``; with ``"state_dict_checkpoints"`` also
        ``read_checkpoint(path)``, ``state_keys(model)``, ``load_state(model, state, strict)``.
        """
        raise self._missing("xdnn")

    # --- capability "datasets" --------------------------------------------------------
    def data_plan(self, data: Any) -> Any:
        """How a dataset run reads ``data`` (a :class:`~boundary_xg.backends._data.DataPlan`),
        or None when ``data`` is no dataset object of this framework. Capability ``"datasets"``."""
        raise self._missing("datasets")

    # --- capability "distributed" -----------------------------------------------------
    def process_group(self, local_rank: int, timeout_s: float) -> Any:
        """Join (or start) the launcher's process group: an object with ``rank``, ``world``,
        ``broadcast(obj)``, ``gather(obj)`` and ``close()``. Capability ``"distributed"``."""
        raise self._missing("distributed")

    # --- capability "model_files" -----------------------------------------------------
    def model_files(self) -> Any:
        """The module that reads the framework's model and weight files for the command line.

        Capability ``"model_files"``. It provides ``load_model_file(path)`` (the model
        in inference mode, loaded without running arbitrary code) and
        ``load_weights(model, path)`` (never pickled code), both raising
        :class:`~boundary_xg.errors.ModelFileError` with the fix; optionally
        ``runtime_report()``, ``claim_device(local_rank)`` and
        ``place_model(model, device, local_rank)``, which replace the fallbacks below.
        """
        raise self._missing("model_files")

    # --- versions and devices (fallbacks written once) ---------------------------------
    def runtime_report(self) -> Dict[str, Any]:
        """``{"version": str, "devices": [str, ...]}`` for ``boundary-xg backends``.

        Fallback: the framework module's ``__version__`` and ``["cpu"]``.
        """
        own = self._files_hook("runtime_report")
        if own is not None:
            return own()
        import sys

        from ._identity import lookup_identity

        ident = lookup_identity(self.name)
        mod = sys.modules.get(ident.framework) if ident is not None else None
        return {"version": str(getattr(mod, "__version__", "?")), "devices": ["cpu"]}

    def claim_device(self, local_rank: int) -> None:
        """Before a model is built in a process started by a launcher (``torchrun``), keep
        this process on its own accelerator (``local_rank``). Fallback: nothing to do."""
        own = self._files_hook("claim_device")
        if own is not None:
            own(local_rank)

    def place_model(self, model: Any, device: str = "auto", local_rank: int = 0) -> Any:
        """``model`` on ``device`` (``"auto"``: this process's accelerator when there is one).

        Fallback: the model as it is (frameworks that place work by themselves).
        """
        own = self._files_hook("place_model")
        return model if own is None else own(model, device, local_rank)

    def _files_hook(self, name: str) -> Optional[Callable]:
        """The function ``name`` of :meth:`model_files`' module, or None."""
        if "model_files" not in self.capabilities:
            return None
        return getattr(self.model_files(), name, None)

    # --- helpers ----------------------------------------------------------------------
    def _missing(self, capability: str) -> CapabilityError:
        """The error for a capability this backend does not provide."""
        return CapabilityError(
            f"the {self.name!r} backend does not provide the capability {capability!r} "
            f"({CAPABILITIES.get(capability, '')}).")
