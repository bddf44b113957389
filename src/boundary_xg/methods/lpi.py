"""LPI: Local Path Integration (Yang, Akhtar, Wen, Mian, "Local Path Integration for
Attribution", AAAI 2023), with attribution re-calibration.

Path methods that draw their references from the whole data distribution (EG)
integrate over paths from far-away inputs. LPI draws them *locally*: from the
part of a user-supplied ``background`` set that the input belongs to, where the
parts are clusters formed in the model's output space. Then it integrates like
IG_Uniform, over the full grid of ``M`` references x ``k`` quadrature nodes
(:mod:`boundary_xg.methods.recalibration`).

The choices the paper (and the reference code, which has no LPI)
leaves open, made here and documented in docs/recalibration.md:

* **space**: the model's logits ``F(b)`` of each background row (the reference
  code's hooks load centres of shape ``(clusters, classes)`` and assign an input
  by the L2 distance of its logit vector);
* **clusters**: k-means (Lloyd) with ``num_clusters`` centres (default
  ``min(10, len(background))``), k-means++ initialisation seeded with 0, in
  float64 on the host, at most 100 iterations, an emptied cluster re-seeded
  with the point farthest from its centre, so every cluster has members;
  computed once per (model, background, num_clusters) and cached (the cache key
  holds the model's weight identities and three checksums of the background;
  :func:`clear_cache` after changing weights in place);
* **assignment**: each input goes to the centre nearest to its logits (L2);
* **references**: ``num_references`` (default 10) rows drawn uniformly **with
  replacement** from the input's cluster (as EG draws from its background),
  with ``seed``, on the model's device;
* **path**: straight lines, the quadrature rule of IG (default Gauss-Legendre
  with ``steps = 5``), ``1/M sum_m IG(x; r_m)``.

Cost: ``M * k`` passes plus one forward per input (its cluster), plus one
forward of the background the first time a (model, background) pair is seen.
"""

from __future__ import annotations

import threading
import weakref
from typing import Any, Callable, Dict, Optional, Tuple

import numpy as np

from ..backends import Backend
from ..errors import InputError
from ..ops import objective_of, predict, resolve_batch_size
from .expected_gradients import convert_background
from .recalibration import check_gap_options, grid_attribution
from .registry import MethodSpec, register

DEFAULT_NUM_CLUSTERS = 10
DEFAULT_NUM_REFERENCES = 10
#: Lloyd iterations at most (they stop earlier once no assignment changes)
KMEANS_ITERATIONS = 100

_CACHE: "weakref.WeakKeyDictionary[Any, Dict[Tuple, Tuple[np.ndarray, np.ndarray]]]" = weakref.WeakKeyDictionary()
_CACHE_LOCK = threading.Lock()


def clear_cache() -> None:
    """Forget every cached clustering (e.g. after changing a model's weights in place)."""
    with _CACHE_LOCK:
        _CACHE.clear()


def lpi(
    B: Backend, f: Callable, x: Any, labels: Any, *, background: Any, num_references: int = 10,
    steps: int = 5, rule: str = "gausslegendre", num_clusters: Optional[int] = None,
    seed: Optional[int] = None, recalibrate: Optional[str] = None,
    batch_size: Optional[int] = None, return_gap: bool = False,
) -> Any:
    """Local Path Integration (module docstring), shaped like ``x``.

    Args:
        B: the backend; f: the logits function (its objective is explained).
        x: inputs ``(N, ...)``; labels: ``(N,)`` class indices.
        background: ``(R, ...)`` inputs (converted by the front end), e.g. a sample
            of the training set; the references are drawn from it.
        num_references: ``M`` references per input (default 10).
        steps: ``k`` quadrature nodes per path (default 5).
        rule: quadrature rule of IG (default ``"gausslegendre"``).
        num_clusters: k-means clusters of the background's logits (default
            ``min(10, R)``).
        seed: seed of the reference draws (the clustering always uses seed 0).
        recalibrate: None, ``"valid_ip"`` or ``"valid_ref"``.
        batch_size: model inputs per forward/backward.
        return_gap: also return ``sum(attr) - (Phi(x) - mean_m Phi(r_m))``, ``(N,)``.

    Returns:
        Attributions shaped like ``x``, or ``(attributions, gap)``.
    """
    check_gap_options(return_gap, recalibrate, "LPI")
    bs = resolve_batch_size(batch_size)
    rows = B.shape(background)[0]
    k_clusters = min(DEFAULT_NUM_CLUSTERS, rows) if num_clusters is None else int(num_clusters)
    centres, members = clusters(B, f, background, k_clusters, bs)
    order = np.argsort(members, kind="stable")
    count = np.bincount(members, minlength=k_clusters)
    start = np.concatenate([[0], np.cumsum(count)[:-1]])
    order_t, start_t, count_t = (B.asarray(v.astype(np.int64), like=labels) for v in (order, start, count))
    centres_t = B.asarray(centres, like=x)
    # each input's cluster: the centre nearest to its logits (one forward of x)
    logits = predict(B, f, x, bs)
    centres_t = B.cast(centres_t, logits)
    diff = B.reshape(logits, (-1, 1, B.shape(logits)[1])) - B.reshape(centres_t, (1, k_clusters, -1))
    cluster = B.argmax(-B.sum(diff * diff, axis=2), axis=1)  # (N,)
    n, m = B.shape(x)[0], int(num_references)
    # M draws per input, uniformly with replacement among its cluster's rows
    f32 = B.asarray([0.0], like=x, dtype="float32")
    u = B.uniform(B.rng(seed, like=x), (n * m,), like=f32)
    ex = B.arange(0, n * m, like=labels) // m
    size = B.gather(count_t, B.gather(cluster, ex))
    pos = B.minimum(B.cast(u * B.cast(size, f32), like=size), size - 1)  # "min": u * size may round up
    picks = B.gather(order_t, B.gather(start_t, B.gather(cluster, ex)) + pos)
    example = tuple(B.shape(x)[1:])

    def draw(n0: int, n1: int) -> Any:
        refs = B.gather(background, picks[n0 * m:n1 * m])
        return B.reshape(refs, (n1 - n0, m) + example)
    return grid_attribution(B, f, x, labels, draw, num_references=m, steps=steps, rule=rule,
                            recalibrate=recalibrate, batch_size=batch_size, return_gap=return_gap)


def clusters(B: Backend, f: Callable, background: Any, num_clusters: int,
             batch_size: Optional[int] = None) -> Tuple[np.ndarray, np.ndarray]:
    """k-means of the background's logits: ``(centres (K, C) float64, member (R,) int)``.

    Cached per logits function ``f`` (its weights' identities), background
    checksums and ``num_clusters``.
    """
    # the objective does not change the logits: the cache belongs to the plain logits function
    owner = f.__wrapped__ if objective_of(f) != "logit" else f
    key = (B.fingerprint(owner), num_clusters) + _checksums(B, background)
    try:
        with _CACHE_LOCK:
            hit = _CACHE.setdefault(owner, {}).get(key)
    except TypeError:  # f cannot be weakly referenced: no caching
        hit, owner = None, None
    if hit is not None:
        return hit
    logits = B.to_numpy(predict(B, f, background, resolve_batch_size(batch_size))).astype(np.float64)
    result = kmeans(logits, num_clusters, seed=0)
    if owner is not None:
        with _CACHE_LOCK:
            _CACHE.setdefault(owner, {})[key] = result
    return result


def _checksums(B: Backend, t: Any) -> Tuple:
    """Shape, dtype and three sums of ``t`` (plain, squared, row-position weighted): one host sync."""
    shape = B.shape(t)
    rows = B.cast(B.reshape(t, (shape[0], -1)), B.asarray([0.0], like=t, dtype="float32"))
    pos = B.cast(B.reshape(B.arange(1, shape[0] + 1, like=t), (-1, 1)), rows)
    sums = B.concat([B.reshape(B.sum(rows), (1,)), B.reshape(B.sum(rows * rows), (1,)),
                     B.reshape(B.sum(rows * pos), (1,))])
    return (tuple(shape), B.dtype_name(t)) + tuple(float(v) for v in B.to_numpy(sums))


def kmeans(points: np.ndarray, k: int, seed: int = 0,
           iterations: int = KMEANS_ITERATIONS) -> Tuple[np.ndarray, np.ndarray]:
    """Lloyd's k-means with k-means++ seeding: ``(centres (k, d), member (n,))``; no cluster is empty.

    Args:
        points: ``(n, d)`` float array, ``n >= k``.
        k: number of clusters; seed: the initialisation's seed.
    """
    rng = np.random.default_rng(seed)
    n = points.shape[0]
    centres = np.empty((k, points.shape[1]))
    centres[0] = points[rng.integers(n)]
    d2 = ((points - centres[0]) ** 2).sum(1)
    for i in range(1, k):  # k-means++: the next centre with probability ~ squared distance
        total = d2.sum()
        j = rng.choice(n, p=d2 / total) if total > 0 else rng.integers(n)
        centres[i] = points[j]
        d2 = np.minimum(d2, ((points - centres[i]) ** 2).sum(1))
    member = np.full(n, -1)
    for _ in range(iterations):
        dist = ((points[:, None, :] - centres[None, :, :]) ** 2).sum(2)
        new = dist.argmin(1)
        for c in range(k):  # an empty cluster takes the point farthest from its own centre
            if not np.any(new == c):  # (among clusters that keep a member)
                spare = np.bincount(new, minlength=k)[new] > 1
                far = int(np.argmax(np.where(spare, dist[np.arange(n), new], -1.0)))
                new[far] = c
        if np.array_equal(new, member):
            break
        member = new
        for c in range(k):
            centres[c] = points[member == c].mean(0)
    return centres, member


def prepare_lpi(B: Backend, model: Any, x: Any, options: Dict[str, Any]) -> None:
    """The front end's pre-check of LPI: converts ``background`` in place.

    Raises:
        InputError: no or a malformed ``background`` (see EG), or more clusters
            than background rows.
    """
    bg = convert_background(B, options.get("background"), x, "LPI")
    rows = B.shape(bg)[0]
    k = options.get("num_clusters")
    if k is not None and k > rows:
        raise InputError(
            f"num_clusters={k} but background has {rows} rows; each cluster needs a row. Pass "
            "fewer clusters or a larger background."
        )
    options["background"] = bg


register(MethodSpec(
    name="local_path_integration", short="LPI", func=lpi,
    defaults={"background": None, "num_references": DEFAULT_NUM_REFERENCES, "steps": 5,
              "rule": "gausslegendre", "num_clusters": None, "seed": None},
    aliases=("lpi_method",), supports_gap=True, recalibrate=True, prepare=prepare_lpi,
    passes=lambda o: int(o["num_references"]) * int(o["steps"]),
    summary=("IG over `num_references` (10) references drawn from the input's cluster of `background` "
             "(k-means of the background's logits, `num_clusters` (10), cached), `steps` (5), `rule`, "
             '`seed`, `recalibrate`, `return_gap`'),
    cost="M x k + a forward (+ the background's forward once)", in_demo=True,
    paper="Yang, Akhtar, Wen, Mian, Local Path Integration for Attribution, AAAI 2023",
))
