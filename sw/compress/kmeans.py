"""k-means for weight sharing and product quantization (float64, torch).

:func:`kmeans` is plain Euclidean k-means through scikit-learn (``sklearn.cluster.KMeans``:
k-means++ seeding, Lloyd iterations, seeded), followed by "And the Bit Goes Down"'s
empty-cluster rule (:func:`split_empty`: split the most populated cluster:
``c_empty = c_m + e``, ``c_m -= e``, ``e ~ eps * N(0, 1)``, then re-assign) should any cluster
end up empty (fewer distinct values than k).

:func:`pq_em` is the activation-aware EM (unchanged, torch): with sampled layer inputs ``X``
(all block positions stacked, width ``d``), ``||X (v - c)||^2 = ||(v - c) L||^2`` for
``X^T X = L L^T``, so the E-step is Euclidean k-means on ``V L`` against ``C L``; the M-step
is the cluster mean (the least-squares solution when ``X`` has full column rank).
"""

from __future__ import annotations

import warnings
from collections.abc import Callable

import torch

# scikit-learn's KMeans settings, measured against the former hand-written torch k-means
# (30 iterations, one thread, best of 3): n=36864 d=1 k=16 571 -> 140 ms, n=9216 121 -> 48 ms,
# n=2304 27 -> 25 ms, at 14-30% lower inertia; below ~2000 values sklearn's fixed ~12 ms per
# call dominates (bench/bench_compress.py's "cluster s" column: the whole ResNet-8 kmeans row).
# "lloyd" rather than "elkan": elkan only paid off on large scalar layers and was 3-4x slower on
# PQ-sized data (n=4096, d=9, k=256). One k-means++ start already reaches a lower inertia than
# the former random-rows init; n_init=3 lowered it further but not the accuracy, at 2x the time.
KMEANS_ALGORITHM = "lloyd"
KMEANS_N_INIT = 1

__all__ = ["assign", "split_empty", "kmeans", "clamp_k", "pq_em", "gram_factor",
           "output_error"]


def assign(x: torch.Tensor, c: torch.Tensor, chunk: int = 65536) -> torch.Tensor:
    """Index of the nearest centroid (squared Euclidean) for each row of ``x``."""
    out = torch.empty(x.shape[0], dtype=torch.int64)
    cn = (c * c).sum(1)
    for i in range(0, x.shape[0], chunk):
        xb = x[i:i + chunk]
        dist = cn[None, :] - 2.0 * xb @ c.T
        out[i:i + chunk] = dist.argmin(1)
    return out


def split_empty(x: torch.Tensor, c: torch.Tensor, a: torch.Tensor, eps: float,
                gen: torch.Generator, *, max_splits: int | None = None
                ) -> tuple[torch.Tensor, torch.Tensor, int]:
    """Resolve empty clusters by splitting the most populated one; returns (c, a, splits).

    Stops after ``max_splits`` (default 4k) attempts (e.g. fewer distinct points than k).
    """
    k = c.shape[0]
    limit = 4 * k if max_splits is None else max_splits
    splits = 0
    counts = torch.bincount(a, minlength=k)
    while bool((counts == 0).any()) and splits < limit:
        empty = torch.nonzero(counts == 0).reshape(-1)
        e_idx = int(empty[torch.randint(len(empty), (1,), generator=gen)])
        m = int(counts.argmax())
        noise = torch.randn(c.shape[1], generator=gen, dtype=c.dtype) * eps
        c = c.clone()
        c[e_idx] = c[m] + noise
        c[m] = c[m] - noise
        a = assign(x, c)
        counts = torch.bincount(a, minlength=k)
        splits += 1
    return c, a, splits


def _means(x: torch.Tensor, a: torch.Tensor, c: torch.Tensor) -> torch.Tensor:
    k = c.shape[0]
    sums = torch.zeros_like(c).index_add_(0, a, x)
    counts = torch.bincount(a, minlength=k).to(x.dtype)
    return torch.where(counts[:, None] > 0, sums / counts.clamp(min=1)[:, None], c)


def kmeans(x: torch.Tensor, k: int, *, iters: int = 50, seed: int = 0, eps: float = 1e-8,
           init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Euclidean k-means of the rows of ``x`` (scikit-learn, seeded by ``seed``): at most
    ``iters`` Lloyd iterations from a k-means++ start (or from ``init``); returns (centroids
    (k, d) float64, assignments (n,) int64), no cluster empty unless fewer than k points
    differ (then :func:`split_empty` has done what it can)."""
    from sklearn.cluster import KMeans
    from sklearn.exceptions import ConvergenceWarning

    x = x.detach().to(torch.float64).cpu()
    if k > x.shape[0]:
        raise ValueError(f"k={k} is larger than the number of vectors ({x.shape[0]})")
    start = "k-means++" if init is None else init.detach().to(torch.float64).cpu().numpy()
    km = KMeans(n_clusters=k, init=start, n_init=KMEANS_N_INIT if init is None else 1,
                max_iter=max(1, iters), tol=0.0, random_state=seed, algorithm=KMEANS_ALGORITHM)
    with warnings.catch_warnings():
        # fewer distinct values than k: sklearn warns, the split below handles it
        warnings.simplefilter("ignore", ConvergenceWarning)
        km.fit(x.numpy())
    c = torch.from_numpy(km.cluster_centers_.astype("float64", copy=True))
    a = assign(x, c)
    gen = torch.Generator().manual_seed(seed)
    c, a, _ = split_empty(x, c, a, eps, gen)
    return c, a


def clamp_k(k: int, n_sub: int, threshold: int = 4) -> int:
    """The paper's clamp: k <= the largest power of two strictly below n_sub / threshold
    (at least 2)."""
    p = 1
    while p * 2 < n_sub / threshold:
        p *= 2
    return max(2, min(k, p))


def gram_factor(xb: torch.Tensor, ridge: float = 1e-6) -> torch.Tensor:
    """``L`` with ``L L^T = X^T X / n + ridge * mean(diag) * I`` (``xb``: (n, d) stacked)."""
    g = xb.T @ xb / max(1, xb.shape[0])
    g = g + ridge * (torch.diagonal(g).mean() + 1e-30) * torch.eye(g.shape[0], dtype=g.dtype)
    return torch.linalg.cholesky(g)


def pq_em(v: torch.Tensor, k: int, *, sample_x: Callable[[int], torch.Tensor] | None,
          iters: int = 50, seed: int = 0, eps: float = 1e-8,
          log: list[float] | None = None) -> tuple[torch.Tensor, torch.Tensor, int]:
    """EM on sub-vectors ``v`` (n, d). ``sample_x(i)`` returns iteration i's stacked inputs
    (m, d); None means plain weight k-means (X = I). Returns (centroids, assignments, splits).
    """
    v = v.to(torch.float64)
    gen = torch.Generator().manual_seed(seed)
    if k > v.shape[0]:
        raise ValueError(f"k={k} is larger than the number of sub-vectors ({v.shape[0]})")
    c = v[torch.randperm(v.shape[0], generator=gen)[:k]].clone()
    splits = 0
    a = None
    for i in range(iters):
        lf = (gram_factor(sample_x(i).to(torch.float64)) if sample_x is not None
              else torch.eye(v.shape[1], dtype=torch.float64))
        vt = v @ lf
        a = assign(vt, c @ lf)
        ct, a, s = split_empty(vt, c @ lf, a, eps, gen)
        splits += s
        c = torch.linalg.solve_triangular(lf.T, ct.T, upper=True, left=True).T if s else c
        c = _means(v, a, c)
        if log is not None:
            log.append(float((((v - c[a]) @ lf) ** 2).sum()))
    if a is None:
        a = assign(v, c)
    return c, a, splits


def output_error(x: torch.Tensor, w: torch.Tensor, w_hat: torch.Tensor) -> float:
    """Relative layer-output error ``||X (W - W_hat)^T||^2 / ||X W^T||^2`` (x: (m, R) im2col
    rows, w: (C_out, R))."""
    x = x.to(torch.float64)
    y = x @ w.to(torch.float64).T
    e = x @ (w.to(torch.float64) - w_hat.to(torch.float64)).T
    return float((e ** 2).sum() / (y ** 2).sum().clamp(min=1e-300))
