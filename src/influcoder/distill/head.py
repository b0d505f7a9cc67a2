"""A linear head that maps encoder embeddings into the gradients' principal space, in closed form.

Distillation by ranking losses teaches an encoder *which* pool samples a query prefers; this
module instead regresses each sample's position in gradient space. The ground truth is the
cosine of L2-normalised gradient vectors, i.e. their dot products, and those vectors are
low-rank in what matters: their top principal directions keep almost all of each query's
ranking. So every sample that has a ground-truth vector (pool samples and queries alike:
regression needs no pairing) gives one regression example, embedding -> principal
coordinates, and a ridge regression fits the map in a fraction of a second.

The steps:

1. **Targets** (:func:`principal_directions`): the rows are L2-normalised and their top
   ``components`` right singular vectors taken *without centring*. Centring would drop the
   direction that all gradients share, yet each query's ranking of the pool depends on it
   (``<g_p, g_q>`` includes ``<mean, g_q>``-like terms). The coordinates ``Z = G V_k`` keep
   the dot products of ``G`` projected onto those directions; no whitening, which measured
   worse (the small directions are mostly noise, and whitening blows them up).
2. **Ridge** (:func:`ridge`): ``W = argmin ||X_c W - Z_c||^2 + alpha ||W||^2`` on centred
   embeddings and targets, the intercept unpenalised; solved through the smaller of the two
   normal systems (``d x d`` or ``n x n``), exactly.
3. **Alpha** (:func:`fit_head`): ``folds``-fold cross-validation on *both* axes. Fold ``f``
   holds out pool fold ``f`` and query fold ``f``, fits the principal directions and the
   ridge on every sample outside both, and scores the held-out pool fold against the held-out
   query fold. The criterion is per-anchor Spearman (mean over queries of the Spearman over
   the pool, see :func:`~influcoder.evaluation.metrics.per_anchor_spearman`) averaged over
   the folds, the figure distillation also selects on; ties go to the larger alpha. The head
   is then refitted on every sample with the chosen alpha.
4. **Similarity** (``similarity``): outputs compared by ``cosine`` or by ``dot`` product
   (ridge shrinks what it is unsure of, and the pool-wide ranking depends on that scale);
   ``auto`` scores both on the same folds and keeps the higher mean of per-anchor and
   aggregated Spearman (measured in docs/DISTILLATION.md, ``benchmarks/head_similarity.py``).
   **Kind** (``kinds``): the linear head or an RBF kernel ridge head
   (:mod:`influcoder.distill.kernel`), chosen on the same folds like alpha.
5. **Saving** (:func:`append_head`): a sentence-transformers ``Dense`` layer with identity
   activation (weight ``W^T``, bias ``b``) appended to the encoder, then a ``Normalize`` for
   cosine, or ``similarity_fn_name = "dot"`` for the dot product, so the result stays a plain
   sentence-transformers directory: ``SentenceTransformer(path)`` loads it and ``encode``,
   ``index`` and ``attribute`` use it unchanged
   (:func:`~influcoder.attribution.encoders.encoder_similarity`).

Costs: one encoder pass over the samples, then per fold a Gram matrix of the ``[n, dim]``
ground truth and its eigendecomposition (``O(n^2 * dim + n^3)``: ~5 s for 1,500 samples of
8192 dims on one core) and a ``min(n, d)``-sized solve per alpha. The ground-truth vectors
are held in memory as float64 (``n * dim * 8`` bytes).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

from influcoder.attribution.encoders import SIMILARITIES
from influcoder.attribution.heads import HeadMap
from influcoder.distill.kernel import (
    DEFAULT_GAMMA_FACTORS,
    DEFAULT_KERNEL_ALPHAS,
    MAX_KERNEL_SAMPLES,
    KernelHead,
    fit_kernel_head,
    kernel_predictions,
)
from influcoder.evaluation.metrics import aggregated_spearman, per_anchor_spearman
from influcoder.groundtruth.influence import normalize_rows

#: Ridge strengths tried by default: the validation-best on the demo's stores was 1 to 10 for
#: both the untrained and the distilled MiniLM, never at either end of this grid.
DEFAULT_ALPHAS = (0.1, 0.3, 1.0, 3.0, 10.0, 30.0, 100.0)
DEFAULT_COMPONENTS = 128
DEFAULT_FOLDS = 4
#: The kinds of head :func:`fit_head` chooses between: linear ridge, RBF kernel ridge.
FIT_KINDS = ("ridge", "rbf")


def _rows(x, name: str) -> np.ndarray:
    """``x`` as a finite 2-D float64 array with at least one row, or a ValueError naming it."""
    arr = np.asarray(x, dtype=np.float64)
    if arr.ndim != 2 or arr.shape[0] == 0:
        raise ValueError(f"{name} must be a non-empty 2-D array, got shape {arr.shape}")
    if not np.isfinite(arr).all():
        raise ValueError(f"{name} contains NaN or infinite values")
    return arr


def unit_rows(x: np.ndarray) -> np.ndarray:
    """Rows scaled to length 1, in float64 (the ground truth's own normalisation)."""
    return normalize_rows(x).astype(np.float64)


def principal_directions(vectors, components: int) -> np.ndarray:
    """The top ``components`` right singular vectors of the L2-normalised, *uncentred* rows.

    Returns ``[k, dim]`` orthonormal rows, ``k = min(components, rank)``; the principal
    coordinates of a vector ``g`` are ``V @ unit(g)``.

    Computed from the eigenvectors of the smaller Gram matrix (``G G^T`` when there are fewer
    rows than dimensions, then ``V = U^T G / s``): one matrix product and an ``n x n``
    eigendecomposition, several times faster than a full SVD of ``G`` (1,500 x 8192: ~22 s
    for the SVD on one core). Squaring the matrix costs precision only in the smallest
    directions, which are cut: those below ``1e-6`` of the largest singular value are
    dropped.
    """
    if components < 1:
        raise ValueError(f"components must be >= 1, got {components}")
    g = unit_rows(_rows(vectors, "vectors"))
    rows_first = g.shape[0] <= g.shape[1]
    evals, evecs = np.linalg.eigh(g @ g.T if rows_first else g.T @ g)
    order = np.argsort(evals)[::-1][:components]
    s = np.sqrt(np.clip(evals[order], 0.0, None))
    keep = s > 1e-6 * s[0]
    if not rows_first:
        return evecs[:, order[keep]].T
    return (g.T @ evecs[:, order[keep]] / s[keep]).T


def ridge(x, y, alpha: float) -> tuple[np.ndarray, np.ndarray]:
    """Closed-form ridge regression of ``y`` on ``x`` with an unpenalised intercept.

    Minimises ``||x W + b - y||^2 + alpha ||W||^2``. Centring ``x`` and ``y`` removes ``b``,
    then ``W = (X^T X + alpha I)^-1 X^T Y``, computed as ``X^T (X X^T + alpha I)^-1 Y`` when
    there are fewer samples than features (the same matrix, a smaller solve).

    Args:
        x: ``[n, d]`` inputs. y: ``[n, k]`` targets. alpha: strength, > 0.

    Returns:
        ``(weight [k, d], bias [k])`` in ``torch.nn.Linear``'s layout: ``pred = x @ weight.T +
        bias``.
    """
    x, y = _rows(x, "x"), _rows(y, "y")
    if x.shape[0] != y.shape[0]:
        raise ValueError(f"x and y must have the same rows, got {x.shape[0]} and {y.shape[0]}")
    if not alpha > 0:
        raise ValueError(f"alpha must be > 0, got {alpha}")
    x_mean, y_mean = x.mean(axis=0), y.mean(axis=0)
    xc, yc = x - x_mean, y - y_mean
    n, d = xc.shape
    if n < d:
        w = xc.T @ np.linalg.solve(xc @ xc.T + alpha * np.eye(n), yc)
    else:
        w = np.linalg.solve(xc.T @ xc + alpha * np.eye(d), xc.T @ yc)
    return w.T, y_mean - x_mean @ w


@dataclass
class LinearHead:
    """A fitted head: ``head(e) = e @ weight.T + bias``, compared by ``similarity``
    (``cosine`` or ``dot``).

    ``validation`` maps each alpha tried to its cross-validated per-anchor Spearman;
    ``encoder_validation`` is the encoder's own cosine on the same folds, for comparison;
    ``similarity_validation`` each similarity scored: its cross-validated ``per_anchor`` and
    ``aggregated`` Spearman at its best alpha.
    """

    weight: np.ndarray
    bias: np.ndarray
    alpha: float
    components: int
    validation: dict[float, float] = field(default_factory=dict)
    encoder_validation: float = float("nan")
    similarity: str = "cosine"
    similarity_validation: dict[str, dict[str, float]] = field(default_factory=dict)
    kinds_validation: dict[str, float] = field(default_factory=dict)

    def __call__(self, embeddings) -> np.ndarray:
        return _rows(embeddings, "embeddings") @ self.weight.T + self.bias

    def head_map(self) -> HeadMap:
        return HeadMap("linear", {"weight": self.weight, "bias": self.bias})

    def card(self) -> dict:
        """What the encoder card records about the head."""
        return {"kind": "ridge", "alpha": self.alpha, "components": self.components,
                "similarity": self.similarity,
                "similarity_validation": self.similarity_validation,
                "kinds_validation_per_anchor_spearman": self.kinds_validation,
                "in_features": int(self.weight.shape[1]),
                "selection": "per-anchor Spearman, folds of pool x queries",
                "validation_per_anchor_spearman": {str(a): v for a, v in self.validation.items()},
                "encoder_validation_per_anchor_spearman": self.encoder_validation}


def cosine_matrix(a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """``[len(a), len(b)]`` cosines of the rows of ``a`` and ``b``."""
    return unit_rows(a) @ unit_rows(b).T


def principal_coordinates(vectors, components: int) -> np.ndarray:
    """``[n, k]`` coordinates of the normalised ``vectors`` on their own top ``components``
    principal directions (:func:`principal_directions`): the regression targets."""
    return unit_rows(vectors) @ principal_directions(vectors, components).T


def head_scores(pool: np.ndarray, queries: np.ndarray, similarity: str) -> np.ndarray:
    """``[len(pool), len(queries)]`` scores of head outputs compared by ``similarity``."""
    if similarity not in SIMILARITIES:
        raise ValueError(f"similarity must be one of {SIMILARITIES}, got {similarity!r}")
    return pool @ queries.T if similarity == "dot" else cosine_matrix(pool, queries)


def validation_folds(n_pool: int, n_query: int, folds: int,
                     seed: int = 0) -> list[tuple[np.ndarray, np.ndarray]]:
    """``folds`` pairs ``(pool indices, query indices)``, each sorted: a seeded permutation of
    each axis dealt round-robin, so the folds partition the pool and the queries."""
    rng = np.random.default_rng(seed)
    pool, query = rng.permutation(n_pool), rng.permutation(n_query)
    return [(np.sort(pool[f::folds]), np.sort(query[f::folds])) for f in range(folds)]


def fit_head(pool_embeddings, pool_vectors, query_embeddings, query_vectors, *,
             components: int = DEFAULT_COMPONENTS, alphas: Sequence[float] = DEFAULT_ALPHAS,
             folds: int = DEFAULT_FOLDS, seed: int = 0, similarity: str = "cosine",
             kinds: Sequence[str] = ("ridge",),
             gamma_factors: Sequence[float] = DEFAULT_GAMMA_FACTORS,
             kernel_alphas: Sequence[float] = DEFAULT_KERNEL_ALPHAS) -> LinearHead | KernelHead:
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
        kinds: ``ridge`` (linear, :class:`LinearHead`) and/or ``rbf`` (kernel ridge,
            :class:`~influcoder.distill.kernel.KernelHead`, at each of ``gamma_factors`` and
            ``kernel_alphas``); the
            best setting by per-anchor Spearman wins (ties: ridge, the stronger alpha). ``rbf``
            is dropped from a choice above :data:`~influcoder.distill.kernel.MAX_KERNEL_SAMPLES`
            samples, and refused alone.

    Raises:
        ValueError: mismatched shapes, too few samples for the folds, an empty alpha grid.
    """
    xp, xq = _rows(pool_embeddings, "pool_embeddings"), _rows(query_embeddings, "query_embeddings")
    gp, gq = _rows(pool_vectors, "pool_vectors"), _rows(query_vectors, "query_vectors")
    if len(xp) != len(gp) or len(xq) != len(gq):
        raise ValueError(f"embeddings and vectors must match: pool {len(xp)} vs {len(gp)}, "
                         f"queries {len(xq)} vs {len(gq)}")
    if xp.shape[1] != xq.shape[1] or gp.shape[1] != gq.shape[1]:
        raise ValueError("pool and queries must share the embedding and the vector dimension")
    if not alphas or not kernel_alphas or not gamma_factors:
        raise ValueError("an empty grid of alphas or gamma factors")
    if similarity not in ("auto", *SIMILARITIES):
        raise ValueError(f"similarity must be 'auto' or one of {SIMILARITIES}, got "
                         f"{similarity!r}")
    if not kinds or any(k not in FIT_KINDS for k in kinds):
        raise ValueError(f"kinds must be a non-empty subset of {FIT_KINDS}, got {kinds!r}")
    if folds < 2 or min(len(xp), len(xq)) < 2 * folds:
        raise ValueError(f"{folds}-fold validation needs folds >= 2 and at least {2 * folds} "
                         f"pool samples and queries, got {len(xp)} and {len(xq)}")
    if "rbf" in kinds and len(xp) + len(xq) > MAX_KERNEL_SAMPLES:
        if tuple(kinds) == ("rbf",):
            raise ValueError(f"the rbf head forms a kernel over every training sample; "
                             f"{len(xp) + len(xq)} are more than {MAX_KERNEL_SAMPLES}")
        kinds = tuple(k for k in kinds if k != "rbf")
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
        for setting, pred in _predictions(x, z, held, kinds, alphas,
                                          (gamma_factors, kernel_alphas)):
            for c in candidates:
                scored = head_scores(pred[:len(vp)], pred[len(vp):], c)
                scores[c].setdefault(setting, []).append(
                    (per_anchor_spearman(gt, scored), aggregated_spearman(gt, scored)))
    best = {}  # candidate -> (setting, per-anchor by setting, its figures at that setting)
    for c, by_setting in scores.items():
        validation = {st: float(np.mean([f[0] for f in v])) for st, v in by_setting.items()}
        # ties: ridge before rbf, the stronger alpha, the smaller gamma
        setting = max(validation, key=lambda st: (np.nan_to_num(validation[st], nan=-np.inf),
                                                  st[0] == "ridge", st[-1], -st[1]))
        best[c] = (setting, validation, {"per_anchor": validation[setting], "aggregated": float(
            np.mean([f[1] for f in by_setting[setting]]))})
    kept = max(candidates, key=lambda c: (np.nan_to_num(np.mean(list(best[c][2].values())),
                                                        nan=-np.inf), c == "cosine"))
    setting, validation, _ = best[kept]
    fields = {"encoder_validation": float(np.mean(encoder_scores)), "similarity": kept,
              "similarity_validation": {c: figures for c, (_, _, figures) in best.items()},
              "kinds_validation": {k: max(v for st, v in validation.items() if st[0] == k)
                                   for k in kinds}}
    x, z = np.vstack([xp, xq]), principal_coordinates(np.vstack([gp, gq]), components)
    if setting[0] == "rbf":
        return fit_kernel_head(x, z, setting[1], setting[2], validation={
            st[1:]: v for st, v in validation.items() if st[0] == "rbf"}, **fields)
    weight, bias = ridge(x, z, setting[-1])
    return LinearHead(weight, bias, setting[-1], int(z.shape[1]),
                      {st[-1]: v for st, v in validation.items() if st[0] == "ridge"}, **fields)


def _predictions(x, z, held, kinds, alphas, kernel_grid):
    """``(setting, predictions for held)`` of every setting fitted on ``(x, z)``: settings are
    ``("ridge", 0.0, alpha)`` and ``("rbf", gamma factor, alpha)``."""
    if "ridge" in kinds:
        for alpha in map(float, alphas):
            weight, bias = ridge(x, z, alpha)
            yield ("ridge", 0.0, alpha), held @ weight.T + bias
    if "rbf" in kinds:
        yield from kernel_predictions(x, z, held, kernel_grid[1], kernel_grid[0])


def fit_views(features: dict[tuple[str, ...], tuple[np.ndarray, np.ndarray]], pool_vectors,
              query_vectors, **kwargs) -> tuple[tuple[str, ...], LinearHead | KernelHead,
                                             dict[str, float]]:
    """A head per candidate set of views (:mod:`influcoder.attribution.views`), on the same
    folds; returns ``(the views kept, its head, each candidate's best cross-validated
    per-anchor Spearman)``. The best figure wins, ties go to fewer views (one pass fewer).

    Args:
        features: views -> ``(pool [n, d], queries [m, d])`` embeddings (each view's unit
            vectors, concatenated in the views' order).
        pool_vectors, query_vectors, kwargs: as for :func:`fit_head`.
    """
    if not features:
        raise ValueError("no views to fit a head on")
    heads = {views: fit_head(xp, pool_vectors, xq, query_vectors, **kwargs)
             for views, (xp, xq) in features.items()}
    figures = {views: h.similarity_validation[h.similarity]["per_anchor"]
               for views, h in heads.items()}
    kept = max(figures, key=lambda views: (figures[views], -len(views)))
    return kept, heads[kept], {"+".join(v): f for v, f in figures.items()}


def append_head(encoder, head: LinearHead, *, normalize: bool | None = None,
                unit_input: bool = False):
    """Append ``head`` to ``encoder`` (in place) as [``Normalize`` +] ``Dense`` (identity)
    [+ ``Normalize``].

    Returns the encoder, whose ``encode`` now yields ``head(previous output)`` (unit length
    when ``normalize``), and whose ``save`` writes a plain sentence-transformers directory.
    ``normalize=None`` follows ``head.similarity``: ``cosine`` appends ``Normalize``, ``dot``
    does not and sets the encoder's ``similarity_fn_name`` to ``"dot"``, which its saved
    directory records (how indexes then compare its vectors). ``unit_input``: the head was
    fitted on the encoder's outputs scaled to unit length, so a ``Normalize`` goes before it.
    """
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    dim = encoder.get_embedding_dimension()
    if dim is not None and dim != head.weight.shape[1]:
        raise ValueError(f"the head takes {head.weight.shape[1]}-dim embeddings, the encoder "
                         f"emits {dim}")
    device = next(encoder.parameters()).device
    if unit_input:
        encoder.append(Normalize())
    dense = Dense(head.weight.shape[1], head.weight.shape[0],
                  activation_function=torch.nn.Identity(),
                  init_weight=torch.tensor(np.ascontiguousarray(head.weight), dtype=torch.float32),
                  init_bias=torch.tensor(head.bias, dtype=torch.float32))
    encoder.append(dense.to(device))
    if normalize is None and head.similarity == "dot":
        encoder.similarity_fn_name = "dot"
    if normalize or (normalize is None and head.similarity == "cosine"):
        encoder.append(Normalize())
    return encoder


def embed(encoder, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """``[n, d]`` float64 outputs of ``encoder`` for ``texts``, exactly as its modules emit
    them (no extra normalisation: the head is fitted on what it will be appended to)."""
    out = encoder.encode(list(texts), batch_size=batch_size, convert_to_numpy=True,
                         normalize_embeddings=False, show_progress_bar=False)
    return np.asarray(out, dtype=np.float64)


def training_head(encoder, pool_texts: Sequence[str], query_texts: Sequence[str], pool_vectors,
                  query_vectors, train_pool: np.ndarray, train_query: np.ndarray, *,
                  components: int = DEFAULT_COMPONENTS,
                  seed: int = 0) -> tuple[LinearHead, np.ndarray, np.ndarray]:
    """The head joint distillation starts from, and every sample's regression target.

    The principal directions and the ridge fit (alpha cross-validated as in :func:`fit_head`)
    see the training rows ``train_pool`` and ``train_query`` only, so validation stays unseen.
    Returns ``(head, pool_targets, query_targets)``: the targets are ``[n, k]`` float32
    principal coordinates for *every* row (validation rows included, for completeness; the
    trainer only reads the training rows).
    """
    folds = min(DEFAULT_FOLDS, len(train_pool) // 2, len(train_query) // 2)
    if folds < 2:
        raise ValueError(f"joint training's head needs at least 4 training pool samples and 4 "
                         f"training queries, got {len(train_pool)} and {len(train_query)}")
    gp, gq = _rows(pool_vectors, "pool_vectors"), _rows(query_vectors, "query_vectors")
    head = fit_head(embed(encoder, [pool_texts[i] for i in train_pool]), gp[train_pool],
                    embed(encoder, [query_texts[j] for j in train_query]), gq[train_query],
                    components=components, folds=folds, seed=seed)
    directions = principal_directions(np.vstack([gp[train_pool], gq[train_query]]), components)
    return (head, (unit_rows(gp) @ directions.T).astype(np.float32),
            (unit_rows(gq) @ directions.T).astype(np.float32))
