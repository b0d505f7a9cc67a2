"""Which training samples get gradients (``fit --sampling``): a seeded random sample, or a
coverage sample spread over the whole file.

``coverage``: the untrained encoder embeds every training sample, k-means (FAISS, from seeded
greedy k-means++ starts) cuts
the embeddings into as many clusters as samples wanted, and each centroid takes its nearest
sample not yet taken. The ground truth then covers every region of the training set the index
will hold, rare ones included, where a random sample follows the density. The price is one
pass of the untrained encoder over the file (the index stage makes one with the distilled
encoder anyway). On the learning curve coverage gave no more fidelity on unseen samples than
random (docs/DISTILLATION.md), so ``random`` is the default.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

SAMPLINGS = ("random", "coverage")
#: k-means iterations; FAISS's own default is 25.
KMEANS_ITERATIONS = 20
#: Nearest samples looked up per centroid before falling back to a full scan.
_NEIGHBOURS = 16


def random_indices(n: int, k: int, seed: int) -> np.ndarray:
    """Sorted indices of a seeded sample of ``k`` of ``n`` without replacement."""
    return np.sort(np.random.default_rng(seed).choice(n, size=k, replace=False))


def kmeans_plus_plus(x: np.ndarray, k: int, seed: int) -> np.ndarray:
    """``k`` seeded starting centroids by greedy k-means++ (scikit-learn's: each next one the
    best of a few candidates drawn by squared distance to the nearest taken). FAISS starts
    from random rows, which on a skewed file rarely include a small cluster, and Lloyd's
    iterations then never find it."""
    from sklearn.cluster import kmeans_plusplus

    centres, _ = kmeans_plusplus(x, k, random_state=seed)
    return np.ascontiguousarray(centres, dtype=np.float32)


def coverage_indices(embeddings: np.ndarray, k: int, seed: int) -> np.ndarray:
    """Sorted indices of ``k`` rows of ``embeddings`` ``[n, d]``, one per k-means cluster: the
    row nearest each centroid (taken in centroid order; a row already taken passes to the
    centroid's next nearest). Deterministic for a seed on one machine."""
    import faiss

    x = np.ascontiguousarray(embeddings, dtype=np.float32)
    n = len(x)
    if not 1 <= k <= n:
        raise ValueError(f"k must be in [1, {n}], got {k}")
    if k == n:
        return np.arange(n)
    kmeans = faiss.Kmeans(x.shape[1], k, niter=KMEANS_ITERATIONS, seed=seed, verbose=False)
    kmeans.cp.min_points_per_centroid = 1  # few points per cluster is the point here
    kmeans.train(x, init_centroids=kmeans_plus_plus(x, k, seed))
    index = faiss.IndexFlatL2(x.shape[1])
    index.add(x)
    _, nearest = index.search(kmeans.centroids, min(_NEIGHBOURS, n))
    taken = np.zeros(n, dtype=bool)
    picked = []
    for c, candidates in enumerate(nearest):
        free = [i for i in candidates if i >= 0 and not taken[i]]
        if free:
            i = int(free[0])
        else:  # every near one taken: the nearest of the rest
            d = ((x - kmeans.centroids[c]) ** 2).sum(axis=1)
            d[taken] = np.inf
            i = int(np.argmin(d))
        taken[i] = True
        picked.append(i)
    return np.sort(np.array(picked))


def sample_indices(
    samples: Sequence,
    k: int,
    sampling: str,
    seed: int,
    *,
    encoder: str,
    device: str = "cpu",
) -> np.ndarray:
    """Sorted indices of the ``k`` of ``samples`` whose gradients are taken, by ``sampling``
    (:data:`SAMPLINGS`); ``encoder`` (the untrained one) embeds them for ``coverage``."""
    if sampling not in SAMPLINGS:
        raise ValueError(f"sampling must be one of {SAMPLINGS}, got {sampling!r}")
    n = len(samples)
    if sampling == "random" or k >= n:
        return random_indices(n, min(k, n), seed)
    return coverage_indices(untrained_embeddings(samples, encoder, device), k, seed)


def untrained_embeddings(samples: Sequence, encoder: str, device: str = "cpu") -> np.ndarray:
    """``[n, d]`` embeddings of ``samples`` by ``encoder`` (a bundled name or a directory), the
    ones a coverage sample is drawn on."""
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.directory import resolve_encoder
    from influcoder.encoders.views import sample_encoder

    enc = sample_encoder(
        resolve_encoder(encoder), lambda p: FastEncoder(p, backend="torch", device=device)
    )
    return enc.encode_samples(list(samples))
