"""Conformance of every registered, installed backend: each primitive against NumPy, exact signatures.

A new backend passes this file before anything else; it needs no model of its own
(a linear function written with the tensor operators stands in for one).
"""

from __future__ import annotations

import functools
import inspect

import numpy as np
import pytest

from conftest import BACKENDS
from boundary_xg import backends
from boundary_xg.backends import CAPABILITIES, Backend

RNG = np.random.default_rng(0)
A = RNG.normal(size=(4, 3)).astype(np.float32)
B2 = RNG.normal(size=(4, 3)).astype(np.float32)


@pytest.fixture(params=BACKENDS)
def B(request) -> Backend:
    return backends.get_backend(request.param)


def np_(B, t):
    return np.asarray(B.to_numpy(t))


def _protocol_methods():
    return [n for n, f in inspect.getmembers(Backend, inspect.isfunction) if not n.startswith("_")]


def test_signatures_equal_the_protocol_exactly(B):
    for name in _protocol_methods():
        want = inspect.signature(getattr(Backend, name))
        got = inspect.signature(getattr(type(B), name))
        assert list(want.parameters.values()) == list(got.parameters.values()), (B.name, name, want, got)


def test_core_primitives_are_implemented(B):
    """Everything outside the capabilities is overridden (or has a written-once default)."""
    capability_methods = {"deeplift_grad", "resolve_layer", "layer_names", "layer_name", "default_layer",
                          "capture_layers", "bias_terms", "resize", "xdnn_kernels", "data_plan",
                          "process_group"}
    for name in _protocol_methods():
        if name in capability_methods:
            continue
        src = inspect.getsource(getattr(type(B), name))
        assert "raise NotImplementedError" not in src, (B.name, name)


def test_identity_matches_the_backend(B):
    ident = backends.identity(B.name)
    assert B.image_layout == ident.image_layout and B.capabilities == ident.capabilities
    assert set(B.capabilities) <= set(CAPABILITIES)
    for alias in ident.aliases:
        assert backends.get_backend(alias) is B


def test_conversion(B):
    t = B.asarray(A)
    assert B.is_tensor(t) and not B.is_tensor(A) and B.is_floating(t)
    assert B.dtype_name(t) == "float32" and B.shape(t) == (4, 3)
    np.testing.assert_array_equal(np_(B, t), A)
    i = B.asarray(np.arange(3), dtype="int64")
    assert not B.is_floating(i) and B.dtype_name(i) == "int64"
    d = B.asarray(A, dtype=np.float64)
    assert B.dtype_name(d) == "float64"
    assert B.dtype_name(B.asarray(A.astype(np.float64), like=t)) == "float32"
    assert B.dtype_name(B.cast(d, t)) == "float32"
    assert B.device_of(B.asarray(A, device=B.device_of(t))) == B.device_of(t)
    assert B.all_finite(t) and not B.all_finite(B.asarray(np.array([1.0, np.nan], np.float32)))
    np.testing.assert_array_equal(backends.to_numpy(t), A)


@pytest.mark.parametrize("dtype", ["float16", "float32", "float64", "bfloat16"])
def test_all_finite_finds_every_non_finite_value(B, dtype):
    """Each of NaN, +inf, -inf anywhere in a 4-D tensor (also a strided view, also a
    tensor recording gradients): all_finite reads the values wherever the test runs."""
    x = RNG.normal(size=(3, 4, 5, 2))
    t = B.asarray(x, dtype=dtype)
    if B.dtype_name(t) != dtype:
        pytest.skip(f"{B.name} has no {dtype}")
    assert B.all_finite(t) and B.all_finite(B.asarray(np.arange(6), dtype="int64"))
    for bad in (np.nan, np.inf, -np.inf):
        y = x.copy()
        y[2, 3, 4, 1] = bad
        u = B.asarray(y, dtype=dtype)
        assert not B.all_finite(u), (dtype, bad)
        assert not B.all_finite(B.reshape(u, (3, -1))[:, 1::2]), (dtype, bad)  # a strided view
        if B.name == "torch":
            assert not B.all_finite(u.requires_grad_()), (dtype, bad)


def test_creation(B):
    t = B.asarray(A)
    np.testing.assert_array_equal(np_(B, B.zeros_like(t)), np.zeros_like(A))
    c = B.constant([1.5, -2.0], like=t)
    np.testing.assert_array_equal(np_(B, c), np.array([1.5, -2.0], np.float32))
    assert B.dtype_name(c) == "float32"
    r = B.arange(2, 6, like=t)
    np.testing.assert_array_equal(np_(B, r), np.arange(2, 6))
    assert B.dtype_name(r) == "int64"


def test_random_numbers_follow_the_contract(B):
    """One contract: a generator object per call, seeded; the same seed gives the same numbers."""
    t = B.asarray(A)
    a = np_(B, B.normal(B.rng(3, t), (2000,), t))
    b = np_(B, B.normal(B.rng(3, t), (2000,), t))
    np.testing.assert_array_equal(a, b)
    assert abs(a.mean()) < 0.1 and abs(a.std() - 1) < 0.1
    g = B.rng(4, t)
    first, second = np_(B, B.uniform(g, (2000,), t)), np_(B, B.uniform(g, (2000,), t))
    assert not np.array_equal(first, second)  # the generator advances
    assert first.min() >= 0 and first.max() < 1 and abs(first.mean() - 0.5) < 0.05


def test_shape_and_indexing(B):
    t = B.asarray(A)
    np.testing.assert_array_equal(np_(B, B.reshape(t, (3, 4))), A.reshape(3, 4))
    np.testing.assert_array_equal(np_(B, B.broadcast_to(B.asarray(A[:1]), (4, 3))), np.broadcast_to(A[:1], (4, 3)))
    idx = B.asarray(np.array([2, 0, 2]), dtype="int64")
    np.testing.assert_array_equal(np_(B, B.gather(t, idx)), A[[2, 0, 2]])
    acc = B.zeros_like(t)
    added = np.zeros_like(A)
    np.add.at(added, [1, 3, 1], A[:3])
    np.testing.assert_allclose(np_(B, B.index_add(acc, B.asarray(np.array([1, 3, 1]), dtype="int64"),
                                                  B.asarray(A[:3]))), added, rtol=1e-6)
    upd = A.copy()
    upd[[3, 0]] = B2[:2]
    got = B.index_update(B.asarray(A), B.asarray(np.array([3, 0]), dtype="int64"), B.asarray(B2[:2]))
    np.testing.assert_array_equal(np_(B, got), upd)
    col = B.asarray(np.array([0, 2, 1, 0]), dtype="int64")
    np.testing.assert_array_equal(np_(B, B.take_along_axis(t, col)), A[np.arange(4), [0, 2, 1, 0]])
    # above 2-D: one sub-array per row (DeepFool's nearest class among each row's k)
    A3 = np.arange(4 * 3 * 2, dtype=np.float32).reshape(4, 3, 2)
    np.testing.assert_array_equal(np_(B, B.take_along_axis(B.asarray(A3), col)), A3[np.arange(4), [0, 2, 1, 0]])
    np.testing.assert_array_equal(np_(B, B.concat([t, t], axis=1)), np.concatenate([A, A], 1))
    np.testing.assert_array_equal(np_(B, B.one_hot(col, 3, like=t)), np.eye(3, dtype=np.float32)[[0, 2, 1, 0]])


def test_elementwise_and_reductions(B):
    t, u = B.asarray(A), B.asarray(B2)
    pos = B.asarray(np.abs(A) + 0.1)
    small = B.asarray(np.clip(A, -0.9, 0.9))
    for got, want in [
        (B.abs(t), np.abs(A)), (B.sqrt(pos), np.sqrt(np.abs(A) + 0.1)), (B.sign(t), np.sign(A)),
        (B.minimum(t, u), np.minimum(A, B2)), (B.maximum(t, u), np.maximum(A, B2)),
        (B.tanh(t), np.tanh(A)), (B.atanh(small), np.arctanh(np.clip(A, -0.9, 0.9))),
        (B.where(B.not_equal(t, u), t, u), np.where(A != B2, A, B2)),
        (B.select(B.not_equal(t, u), t, u), np.where(A != B2, A, B2)),
        (B.sum(t), A.sum()), (B.sum(t, axis=1), A.sum(1)), (B.sum(t, axis=(0, 1)), A.sum((0, 1))),
        (B.max(t, axis=0), A.max(0)), (B.min(t), A.min()),
        (B.logsumexp(t, axis=-1), np.log(np.exp(A).sum(-1))),
        (B.sort(t, axis=-1), np.sort(A, -1)),
        (B.stop_gradient(t), A),
    ]:
        np.testing.assert_allclose(np_(B, got), want, rtol=2e-6, atol=2e-6)
    np.testing.assert_array_equal(np_(B, B.argmax(t, axis=-1)), A.argmax(-1))
    m, n = B.not_equal(t, u), B.not_equal(t, t)
    np.testing.assert_array_equal(np_(B, B.logical_and(m, n)), np.zeros_like(A, bool))
    np.testing.assert_array_equal(np_(B, B.logical_or(m, n)), A != B2)
    np.testing.assert_array_equal(np_(B, B.logical_not(n)), np.ones_like(A, bool))


def test_orders_and_ranks(B):
    """argsort is stable (ties keep their index order, also -0.0 against 0.0) and
    invert_permutation inverts each row: the rankings of the metrics, the same in every framework."""
    keys = np.array([[0.5, -1.0, 0.5, 2.0, 0.0, 0.5], [3.0, 3.0, 3.0, -0.0, 0.0, 1.0]], np.float32)
    order = B.argsort(B.asarray(keys), axis=1)
    want = np.argsort(keys, axis=1, kind="stable")
    np.testing.assert_array_equal(np_(B, order), want)
    np.testing.assert_array_equal(np_(B, B.argsort(B.asarray(keys.T), axis=0)), want.T)
    inv = np.empty_like(want)
    np.put_along_axis(inv, want, np.arange(6)[None].repeat(2, 0), axis=1)
    np.testing.assert_array_equal(np_(B, B.invert_permutation(order)), inv)


def test_fast_paths_equal_their_written_once_fallbacks(B):
    """The fused kernels give what the protocol's composite gives (the fallback a new backend gets)."""
    y, dy = B.asarray(np.tanh(A)), B.asarray(B2)
    np.testing.assert_allclose(np_(B, B.tanh_backward(y, dy)), np_(B, Backend.tanh_backward(B, y, dy)),
                               rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np_(B, B.tanh_backward(y, dy)), B2 * (1 - np.tanh(A) ** 2), rtol=1e-5, atol=1e-6)
    idx = B.asarray(np.array([3, 0]), dtype="int64")
    np.testing.assert_array_equal(np_(B, B.index_update(B.asarray(A), idx, B.asarray(B2[:2]))),
                                  np_(B, Backend.index_update(B, B.asarray(A), idx, B.asarray(B2[:2]))))
    vals = (A, B2, np.abs(B2), A * 0.5)  # d, m, v, g; fresh copies: a fast path may update in place
    lr, eps = B.asarray(np.full((4, 1), 0.1, np.float32)), B.asarray(np.full((4, 1), 1e-8, np.float32))
    fast = [np_(B, r).copy() for r in B.adam_update(*[B.asarray(v.copy()) for v in vals], lr, eps, 0.9, 0.999)]
    slow = [np_(B, r) for r in Backend.adam_update(B, *[B.asarray(v.copy()) for v in vals], lr, eps, 0.9, 0.999)]
    for f, s in zip(fast, slow):
        np.testing.assert_allclose(f, s, rtol=1e-5, atol=1e-6)
    m = 0.9 * B2 + A * 0.5
    v = 0.999 * np.abs(B2) + (A * 0.5) ** 2
    np.testing.assert_allclose(fast[0], A - 0.1 * m / (np.sqrt(v) + 1e-8), rtol=1e-5, atol=1e-6)


def test_autodiff_on_a_linear_function(B):
    """value_and_grad, value_aux_and_grad, forward and jit on f(x) = x @ w (the gradient is w)."""
    w = B.asarray(B2[0])  # (3,)
    t = B.asarray(A)

    def fn(x):
        return B.sum(x * w, axis=1)

    val, grad = B.value_and_grad(fn, t)
    np.testing.assert_allclose(np_(B, val), A @ B2[0], rtol=1e-5)
    np.testing.assert_allclose(np_(B, grad), np.broadcast_to(B2[0], A.shape), rtol=1e-6)

    def fn_aux(x):
        s = B.sum(x * w, axis=1)
        return s, s * 2

    val2, aux, grad2 = B.value_aux_and_grad(fn_aux, t)
    np.testing.assert_allclose(np_(B, aux), 2 * (A @ B2[0]), rtol=1e-5)
    np.testing.assert_allclose(np_(B, grad2), np_(B, grad), rtol=1e-6)
    np.testing.assert_allclose(np_(B, B.forward(fn, t)), A @ B2[0], rtol=1e-5)

    def scaled(k, x):
        return fn(x) * k

    np.testing.assert_allclose(np_(B, B.jit(scaled, fn, 3.0)(t)), 3 * (A @ B2[0]), rtol=1e-5)

    def shaped(shape, flag, x):
        return B.reshape(x, shape) * (2.0 if flag else 1.0)

    # plain bound values (shapes, flags) built anew each call reuse the compiled function
    # (a compiled function per call would trace every time); other values give their own
    first = B.jit(shaped, fn, (4, 3), True)
    if not isinstance(first, functools.partial):  # a backend that compiles (and caches)
        assert B.jit(shaped, fn, tuple([4, 3]), True) is first
        assert B.jit(shaped, fn, (4, 3), 1) is not first
    np.testing.assert_allclose(np_(B, first(t)), 2 * A, rtol=1e-6)
    np.testing.assert_allclose(np_(B, B.jit(shaped, fn, (12,), False)(t)), A.reshape(12), rtol=1e-6)


def test_value_and_vjps_on_a_linear_map(B):
    """value_and_vjps of f(x) = x @ W (3 -> 2): out = x @ W, grads[j] = cot[j] @ W.T (closed form),
    and the backend's path equals the protocol's tiled fallback."""
    W = B2[:3, :2]  # (3, 2)
    w = B.asarray(W)
    t = B.asarray(A)  # (4, 3)
    cot = RNG.normal(size=(5, 4, 2)).astype(np.float32)  # k = 5 cotangents

    def fn(x):
        return B.einsum("ni,io->no", x, w)

    out, grads = B.value_and_vjps(fn, t, B.asarray(cot))
    np.testing.assert_allclose(np_(B, out), A @ W, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(np_(B, grads), cot @ W.T, rtol=1e-5, atol=1e-6)
    out2, grads2 = Backend.value_and_vjps(B, fn, t, B.asarray(cot))
    np.testing.assert_allclose(np_(B, out2), np_(B, out), rtol=1e-6, atol=1e-7)
    np.testing.assert_allclose(np_(B, grads2), np_(B, grads), rtol=1e-6, atol=1e-7)


def test_a_missing_capability_is_a_clear_error(B):
    from boundary_xg.errors import CapabilityError

    missing = sorted(set(CAPABILITIES) - set(B.capabilities))
    for cap in missing:
        with pytest.raises(CapabilityError, match=cap):
            backends.require(B, [cap], method="a test method")


def test_a_backend_missing_a_core_primitive_cannot_be_made():
    class Half(Backend):
        name = "half"

    with pytest.raises(TypeError, match="abstract"):
        Half()
