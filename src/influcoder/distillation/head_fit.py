"""Choosing a head by cross-validation on both axes: its alpha, its kind (linear, or kernel:
RBF kernel ridge), its similarity and its views, then fitting it on every sample.

3. **Alpha** (:func:`fit_head`): ``folds``-fold cross-validation on *both* axes. Fold ``f``
   holds out pool fold ``f`` and query fold ``f``, fits the principal directions and the
   ridge on every sample outside both, and scores the held-out pool fold against the held-out
   query fold. The criterion is per-anchor Spearman (mean over queries of the Spearman over
   the pool, see :func:`~influcoder.metrics.per_anchor_spearman`) averaged over
   the folds, the figure distillation also selects on; ties go to the larger alpha. The head
   is then refitted on every sample with the chosen alpha.
4. **Similarity** (``similarity``): outputs compared by ``cosine`` or by ``dot`` product
   (ridge shrinks what it is unsure of, and the pool-wide ranking depends on that scale);
   ``auto`` scores both on the same folds and keeps the higher mean of per-anchor and
   aggregated Spearman (measured in docs/DISTILLATION.md, ``benchmarks/head_similarity.py``).
   **Kind** (``kinds``): the linear head or the kernel head (RBF kernel ridge,
   :mod:`influcoder.distillation.kernel`, on landmarks above its exact size), chosen on the
   same folds like alpha.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from influcoder.distillation.kernel import (
    DEFAULT_GAMMA_FACTORS,
    DEFAULT_KERNEL_ALPHAS,
    MAX_KERNEL_SAMPLES,
    KernelHead,
    fit_kernel_head,
    kernel_predictions,
)
from influcoder.distillation.landmarks import DEFAULT_LANDMARKS
from influcoder.distillation.linear import (
    DEFAULT_ALPHAS,
    DEFAULT_COMPONENTS,
    LinearHead,
    check_rows,
    principal_coordinates,
    principal_directions,
    ridge,
)
from influcoder.encoders.heads import HEAD_KINDS
from influcoder.encoders.settings import SIMILARITIES
from influcoder.metrics import aggregated_spearman, per_anchor_spearman
from influcoder.similarity import cosine_matrix, unit_rows

DEFAULT_FOLDS = 4
#: The kinds of head :func:`fit_head` chooses between: linear (ridge regression), kernel (RBF
#: kernel ridge); the same words as a saved head's (:data:`~influcoder.encoders.heads.HEAD_KINDS`).
FIT_KINDS = HEAD_KINDS


def head_scores(pool: np.ndarray, queries: np.ndarray, similarity: str) -> np.ndarray:
    """``[len(pool), len(queries)]`` scores of head outputs compared by ``similarity``."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    return pool @ queries.T if similarity == "dot" else cosine_matrix(pool, queries)


def validation_folds(
    n_pool: int, n_query: int, folds: int, seed: int = 0
) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` pairs ``(pool indices, query indices)``, each sorted: a seeded permutation of
    each axis dealt round-robin, so the folds partition the pool and the queries."""
    rng = np.random.default_rng(seed)
    pool, query = rng.permutation(n_pool), rng.permutation(n_query)
    return [(np.sort(pool[f::folds]), np.sort(query[f::folds])) for f in range(folds)]


def fit_head(
    pool_embeddings,
    pool_vectors,
    query_embeddings,
    query_vectors,
    *,
    components: int = DEFAULT_COMPONENTS,
    alphas: Sequence[float] = DEFAULT_ALPHAS,
    folds: int = DEFAULT_FOLDS,
    seed: int = 0,
    similarity: str = "cosine",
    kinds: Sequence[str] = ("linear",),
    gamma_factors: Sequence[float] = DEFAULT_GAMMA_FACTORS,
    kernel_alphas: Sequence[float] = DEFAULT_KERNEL_ALPHAS,
    landmarks: int = DEFAULT_LANDMARKS,
) -> LinearHead | KernelHead:
    """Fit the head on every sample, with its settings chosen by cross-validation (module
    docstring): alpha, the kind of head (``kinds``) and with ``similarity="auto"`` the
    similarity.

    Args:
        pool_embeddings, query_embeddings: ``[n, d]`` encoder outputs (exactly what the
            encoder's last module emits, since the head is appended after it).
        pool_vectors, query_vectors: ``[n, dim]`` ground-truth gradient vectors of the same
            samples, in the same order (any length: they are normalised here).
        components: principal directions regressed (capped at the samples and the dimension).
        alphas: the linear head's ridge strengths to choose from.
        folds: cross-validation folds on each axis (:func:`validation_folds`); each fold
            needs >= 2 pool samples and >= 2 queries.
        seed: seed of the fold assignment.
        similarity: how the head's outputs are compared: ``cosine``, ``dot``, or ``auto``:
            both are scored on the same folds (each at its own best setting) and the one with
            the higher mean of cross-validated per-anchor and aggregated Spearman is kept (ties:
            cosine), the two rankings the tool serves (one query's; the pool-wide one).
        kinds: ``linear`` (ridge regression, :class:`LinearHead`) and/or ``kernel`` (RBF kernel ridge,
            :class:`~influcoder.distillation.kernel.KernelHead`, at each of ``gamma_factors`` and
            ``kernel_alphas``); the
            best setting by per-anchor Spearman wins (ties: linear, the stronger alpha).
        landmarks: above :data:`~influcoder.distillation.kernel.MAX_KERNEL_SAMPLES` samples the
            kernel head (its folds and its final fit) runs on this many seeded landmarks
            (:mod:`influcoder.distillation.landmarks`); 0: ``kernel`` is then dropped from a
            choice, and refused alone.

    Raises:
        ValueError: mismatched shapes, too few samples for the folds, an empty alpha grid.
    """
    xp, xq = (
        check_rows(pool_embeddings, "pool_embeddings"),
        check_rows(query_embeddings, "query_embeddings"),
    )
    gp, gq = check_rows(pool_vectors, "pool_vectors"), check_rows(query_vectors, "query_vectors")
    if len(xp) != len(gp) or len(xq) != len(gq):
        raise ValueError(
            f"embeddings and vectors must match: pool {len(xp)} vs {len(gp)}, "
            f"queries {len(xq)} vs {len(gq)}"
        )
    if xp.shape[1] != xq.shape[1] or gp.shape[1] != gq.shape[1]:
        raise ValueError("pool and queries must share the embedding and the vector dimension")
    if not alphas or not kernel_alphas or not gamma_factors:
        raise ValueError("an empty grid of alphas or gamma factors")
    if similarity not in ("auto", *SIMILARITIES):
        raise ValueError(f"similarity must be 'auto' or one of {SIMILARITIES}, got {similarity!r}")
    if not kinds or any(k not in FIT_KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {FIT_KINDS}, got {kinds!r}")
    if folds < 2 or min(len(xp), len(xq)) < 2 * folds:
        raise ValueError(
            f"{folds}-fold validation needs folds >= 2 and at least {2 * folds} "
            f"pool samples and queries, got {len(xp)} and {len(xq)}"
        )
    if landmarks < 0:
        raise ValueError(f"landmarks must be >= 0, got {landmarks}")
    on_landmarks = None  # the exact kernel
    if "kernel" in kinds and len(xp) + len(xq) > MAX_KERNEL_SAMPLES:
        if landmarks > 0:
            on_landmarks = landmarks
        elif tuple(kinds) == ("kernel",):
            raise ValueError(
                f"the exact kernel head forms a kernel over every training sample; "
                f"{len(xp) + len(xq)} are more than {MAX_KERNEL_SAMPLES}: give it "
                f"landmarks (--head-landmarks)"
            )
        else:
            kinds = tuple(k for k in kinds if k != "kernel")
    kernel_grid = (gamma_factors, kernel_alphas, on_landmarks, seed)
    candidates = SIMILARITIES if similarity == "auto" else (similarity,)
    # candidate -> setting -> one (per-anchor, aggregated) per fold
    scores: dict[str, dict[tuple, list]] = {c: {} for c in candidates}
    encoder_scores = []
    for vp, vq in validation_folds(len(xp), len(xq), folds, seed):
        fp, fq = np.setdiff1d(np.arange(len(xp)), vp), np.setdiff1d(np.arange(len(xq)), vq)
        x, g = np.vstack([xp[fp], xq[fq]]), np.vstack([gp[fp], gq[fq]])
        gt = cosine_matrix(gp[vp], gq[vq])
        encoder_scores.append(per_anchor_spearman(gt, cosine_matrix(xp[vp], xq[vq])))
        z = principal_coordinates(g, components)
        held = np.vstack([xp[vp], xq[vq]])
        for setting, pred in _predictions(x, z, held, kinds, alphas, kernel_grid):
            for c in candidates:
                scored = head_scores(pred[: len(vp)], pred[len(vp) :], c)
                scores[c].setdefault(setting, []).append(
                    (per_anchor_spearman(gt, scored), aggregated_spearman(gt, scored))
                )
    best = {}  # candidate -> (setting, per-anchor by setting, its figures at that setting)
    for c, by_setting in scores.items():
        validation = {st: float(np.mean([f[0] for f in v])) for st, v in by_setting.items()}
        # ties: linear before kernel, the stronger alpha, the smaller gamma
        setting = max(
            validation,
            key=lambda st: (
                np.nan_to_num(validation[st], nan=-np.inf),
                st[0] == "linear",
                st[-1],
                -st[1],
            ),
        )
        best[c] = (
            setting,
            validation,
            {
                "per_anchor": validation[setting],
                "aggregated": float(np.mean([f[1] for f in by_setting[setting]])),
            },
        )
    kept = max(
        candidates,
        key=lambda c: (
            np.nan_to_num(np.mean(list(best[c][2].values())), nan=-np.inf),
            c == "cosine",
        ),
    )
    setting, validation, _ = best[kept]
    fields = {
        "encoder_validation": float(np.mean(encoder_scores)),
        "similarity": kept,
        "similarity_validation": {c: figures for c, (_, _, figures) in best.items()},
        "kinds_validation": {
            k: max(v for st, v in validation.items() if st[0] == k) for k in kinds
        },
    }
    g = np.vstack([gp, gq])
    directions = principal_directions(g, components)
    x, z = np.vstack([xp, xq]), unit_rows(g) @ directions.T
    fields["directions"] = directions
    if setting[0] == "kernel":
        return fit_kernel_head(
            x,
            z,
            setting[1],
            setting[2],
            landmarks=on_landmarks,
            seed=seed,
            validation={st[1:]: v for st, v in validation.items() if st[0] == "kernel"},
            **fields,
        )
    weight, bias = ridge(x, z, setting[-1])
    return LinearHead(
        weight,
        bias,
        setting[-1],
        int(z.shape[1]),
        {st[-1]: v for st, v in validation.items() if st[0] == "linear"},
        **fields,
    )


def _predictions(x, z, held, kinds, alphas, kernel_grid):
    """``(setting, predictions for held)`` of every setting fitted on ``(x, z)``: settings are
    ``("linear", 0.0, alpha)`` and ``("kernel", gamma factor, alpha)``."""
    if "linear" in kinds:
        for alpha in map(float, alphas):
            weight, bias = ridge(x, z, alpha)
            yield ("linear", 0.0, alpha), held @ weight.T + bias
    if "kernel" in kinds:
        factors, kernel_alphas, landmarks, seed = kernel_grid
        yield from kernel_predictions(
            x, z, held, kernel_alphas, factors, landmarks=landmarks, seed=seed
        )


def fit_views(
    features: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]],
    pool_vectors,
    query_vectors,
    **kwargs,
) -> tuple[tuple[str, ...], LinearHead | KernelHead, dict[str, float]]:
    """A head per candidate set of views (:mod:`influcoder.encoders.views`), on the same
    folds; returns ``(the views kept, its head, each candidate's best cross-validated
    per-anchor Spearman)``. The best figure wins, ties go to fewer views (one pass fewer).

    Args:
        features: views -> ``(pool [n, d], queries [m, d])`` embeddings (each view's unit
            vectors, concatenated in the views' order).
        pool_vectors, query_vectors, kwargs: as for :func:`fit_head`.
    """
    if not features:
        raise ValueError("no views to fit a head on")
    heads = {
        views: fit_head(xp, pool_vectors, xq, query_vectors, **kwargs)
        for views, (xp, xq) in features.items()
    }
    figures = {
        views: h.similarity_validation[h.similarity]["per_anchor"] for views, h in heads.items()
    }
    kept = max(figures, key=lambda views: (figures[views], -len(views)))
    return kept, heads[kept], {"+".join(v): f for v, f in figures.items()}
