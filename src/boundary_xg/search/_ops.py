"""Composites of the boundary search, written once over the backend primitives.

Per-example norms, the steepest-ascent direction of a norm, projections onto
norm balls, clipping to (per-channel) bounds, random starts and the attack
losses. Every function takes the backend ``B`` first and works on batches
``(N, ...)``; per-example scalars have shape ``(N,)``.
"""

from __future__ import annotations

from typing import Any

from ..backends import Backend
from ..ops import expand_rows

NORMS = ("l2", "linf")
_TINY = 1e-12


def flat_axes(B: Backend, t: Any) -> tuple:
    """Every axis but the batch axis."""
    return tuple(range(1, len(t.shape)))  # rank only: shapes may be unknown under tf.function


def per_sample_norm(B: Backend, t: Any, norm: str = "l2") -> Any:
    """``||t_n||`` over all but the batch axis, shape ``(N,)`` (``norm``: "l2" or "linf")."""
    if norm == "l2":
        return B.sqrt(B.sum(t * t, axis=flat_axes(B, t)))
    return B.max(B.abs(t), axis=flat_axes(B, t))


def l2_distance(B: Backend, a: Any, b: Any) -> Any:
    """Per-example L2 distance between two batches, shape ``(N,)``."""
    return per_sample_norm(B, a - b, "l2")


def ascent_direction(B: Backend, g: Any, norm: str) -> Any:
    """The unit step of steepest ascent: ``g / ||g||_2`` (L2) or ``sign(g)`` (Linf)."""
    if norm == "l2":
        n = per_sample_norm(B, g, "l2")
        return g / expand_rows(B, B.maximum(n, B.zeros_like(n) + _TINY), len(g.shape))
    return B.sign(g)


def project(B: Backend, delta: Any, eps: Any, norm: str) -> Any:
    """Project perturbations onto the ``eps`` ball (``eps`` a scalar tensor or ``(N,)``)."""
    nd = len(delta.shape)
    if norm == "l2":
        n = per_sample_norm(B, delta, "l2")
        factor = B.minimum(eps / B.maximum(n, B.zeros_like(n) + _TINY), B.zeros_like(n) + 1.0)
        return delta * expand_rows(B, factor, nd)
    e = expand_rows(B, eps, nd)
    return B.maximum(B.minimum(delta, e), -e)


def clip_to(B: Backend, t: Any, lo: Any, hi: Any) -> Any:
    """Clip ``t`` into ``[lo, hi]`` (tensors broadcastable to ``t``; may be infinite)."""
    return B.maximum(B.minimum(t, hi), lo)


def random_start(B: Backend, rng: Any, x: Any, eps: Any, norm: str) -> Any:
    """A uniform random perturbation in the ``eps`` ball around ``x`` (not yet clipped).

    L2: uniform in the ball, drawn as the first ``n`` coordinates of a uniform
    point on the unit sphere of dimension ``n + 2`` (in high dimension it lies
    almost on the sphere, as in foolbox). Linf: ``U(-eps, eps)`` per coordinate.
    """
    shape = B.shape(x)
    nd = len(shape)
    if norm == "l2":
        n = 1
        for d in shape[1:]:
            n *= d
        z = B.normal(rng, (shape[0], n + 2), like=x)
        z = z / expand_rows(B, per_sample_norm(B, z, "l2"), 2)
        u = B.reshape(z[:, :n], shape)
        return u * expand_rows(B, eps, nd)
    u = B.uniform(rng, shape, like=x) * 2.0 - 1.0
    return u * expand_rows(B, eps, nd)


def cross_entropy(B: Backend, logits: Any, labels: Any) -> Any:
    """Per-example cross-entropy of ``labels`` on ``logits`` (the PGD loss), ``(N,)``."""
    return B.logsumexp(logits, axis=1) - B.take_along_axis(logits, labels)


def margin(B: Backend, logits: Any, onehot: Any) -> Any:
    """``F_y - max_{j != y} F_j`` per example (the CW loss term), ``(N,)``."""
    own = B.sum(logits * onehot, axis=1)
    other = B.max(logits - onehot * 1e9, axis=1)
    return own - other


_NARROW = ("float16", "bfloat16")


def widened(B: Backend, x: Any, *others: Any) -> tuple:
    """``(proto, x, *others)`` with ``x`` and ``others`` in float32 where ``x`` is a 16-bit float.

    The attacks keep their iterates and state in float32 for a float16 or
    bfloat16 model and give the model its own dtype (:func:`model_logits`):
    float16 overflows CW's second moment, bfloat16 rounds ``beta2 ** t`` to 1
    and PGD's small steps to nothing. ``proto`` is ``x[:1]`` in the model's dtype.
    """
    proto = x[:1]
    if B.dtype_name(x) not in _NARROW:
        return (proto, x) + others
    return (proto,) + tuple(B.asarray(t, dtype="float32") for t in (x,) + others)


def model_logits(B: Backend, f: Any, z: Any, proto: Any) -> Any:
    """``f`` at ``z`` given in ``proto``'s dtype, logits in ``z``'s dtype (no-op casts for float32)."""
    return B.cast(f(B.cast(z, proto)), z)


def forward_logits(B: Backend, f: Any, z: Any, proto: Any) -> Any:
    """As :func:`model_logits` for a forward pass only: nothing recorded for a gradient."""
    return B.cast(B.forward(f, B.cast(z, proto)), z)


def misclassified(B: Backend, logits: Any, labels: Any) -> Any:
    """Boolean ``(N,)``: the model's top class differs from ``labels``."""
    return B.not_equal(B.argmax(logits, axis=1), labels)


def _misclassified_at(B: Backend, f: Any, z: Any, labels: Any) -> Any:
    return misclassified(B, B.forward(f, z), labels)


def misclassified_at(B: Backend, f: Any, z: Any, labels: Any) -> Any:
    """Boolean ``(N,)``: ``f`` misclassifies the points ``z`` (one forward pass).

    Compiled where the backend compiles: an eager Keras forward of the small CNN
    of ``bench/boundary.py`` costs three times a traced one, and PGD runs one per
    finished radius job.
    """
    return B.jit(_misclassified_at, f, B, f)(z, labels)


class Cost:
    """Counts the model rows actually run: ``passes`` forward+backward, ``forwards`` forward only,
    ``backwards`` backward only (further backwards through a forward already counted in ``passes``:
    :meth:`~boundary_xg.backends.Backend.value_and_vjps` where the backend shares the forward).

    Counted on the host from shapes (never from tensor values), so counting
    costs no synchronisation.
    """

    def __init__(self) -> None:
        self.passes = 0
        self.forwards = 0
        self.backwards = 0


def where_rows(B: Backend, mask: Any, a: Any, b: Any) -> Any:
    """Rows of ``a`` where ``mask`` ``(N,)`` is true, else rows of ``b`` (both ``(N, ...)``).

    Selects on a 2-D view: TensorFlow's select with a ``(N, 1)`` condition runs
    about 2.5x faster on a CPU than with ``(N, 1, 1, 1)`` (0.58 against 1.5 ms for
    256 rows of 3x32x32), and this is a step of every PGD and CW iteration.
    """
    inner = tuple(a.shape[1:])
    if len(inner) <= 1 or any(d is None for d in inner):
        # an example shape unknown while tracing (a graph relaxed over image sizes)
        return B.where(expand_rows(B, mask, len(inner) + 1), a, b)
    size = 1
    for d in inner:
        size *= int(d)
    out = B.where(expand_rows(B, mask, 2), B.reshape(a, (-1, size)), B.reshape(b, (-1, size)))
    return B.reshape(out, (-1,) + tuple(int(d) for d in inner))


def put_rows(B: Backend, full: Any, rows: Any, values: Any) -> Any:
    """``full`` with the rows at indices ``rows`` (unique) replaced by ``values`` (a new tensor)."""
    return B.index_update(full, rows, values)
