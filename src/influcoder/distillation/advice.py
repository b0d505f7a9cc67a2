"""Whether more ground truth is likely to help, read off the held-out block
(``distill --holdout-fraction``): the head is fitted again on half of the training ground
truth (a seeded half of the pool samples and of the queries: half the gradients, the unit
collection pays for) and on all of it, both on the final encoder's text embeddings, and the two
are scored on the held-out block. A rise from half to all says the curve still climbs at this
size.

Trade-off: closed form, so seconds and no second fine-tuning; but only the head sees half the
data, the encoder under it was fine-tuned on all of it, so the rise is what more ground truth
buys the head on this encoder (a lower bound of what a new distillation would gain).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from influcoder.metrics import column_spearman

#: Smallest rise of held-out per-anchor Spearman from half to all the ground truth that counts:
#: below it, doubling the gradients buys less than the spread the docs see between splits of
#: one recipe, even when the bootstrap says the rise is real.
MIN_RISE = 0.01
#: Paired bootstrap resamples of the held-out queries, and the interval's coverage.
RESAMPLES = 1000
LEVEL = 0.95
# Mixed with the run's seed: the half is its own stream, apart from the held-out draw.
_STREAM = 32


def half_indices(n_pool: int, n_query: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    """Sorted positions of a seeded half (rounded down) of ``n_pool`` and of ``n_query``."""
    rng = np.random.default_rng([seed, _STREAM])
    return (
        np.sort(rng.permutation(n_pool)[: n_pool // 2]),
        np.sort(rng.permutation(n_query)[: n_query // 2]),
    )


def per_query_spearman(gt: np.ndarray, pred: np.ndarray) -> np.ndarray:
    """Each held-out query's Spearman over the pool (a constant column counts 0, as in
    :func:`~influcoder.metrics.per_anchor_spearman`, whose mean this is)."""
    return np.nan_to_num(column_spearman(gt, pred), nan=0.0)


def paired_rise(gt: np.ndarray, half: np.ndarray, full: np.ndarray, *, seed: int = 0) -> dict:
    """``{"value", "low", "high"}``: per-anchor Spearman of ``full`` minus that of ``half``
    (both ``[pool, query]`` scores against ``gt``), and its :data:`LEVEL` interval from a
    paired bootstrap over the queries (each resample draws the same queries for both)."""
    diff = per_query_spearman(gt, full) - per_query_spearman(gt, half)
    rng = np.random.default_rng(seed)
    means = diff[rng.integers(0, len(diff), size=(RESAMPLES, len(diff)))].mean(axis=1)
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return {"value": float(diff.mean()), "low": float(low), "high": float(high)}


def verdict(half: float, full: float, rise: dict) -> tuple[bool, str]:
    """``(rising, sentence)``: rising when the rise is at least :data:`MIN_RISE` and its
    interval lies above 0 (larger than the bootstrap noise of the difference)."""
    rising = rise["value"] >= MIN_RISE and rise["low"] > 0
    interval = f"[{rise['low']:+.2f}, {rise['high']:+.2f}]"
    if rising:
        return True, (
            f"held-out per-anchor rose {half:.2f} -> {full:.2f} from half to all the ground "
            f"truth {interval}: more ground truth is likely to help"
        )
    return False, (
        f"flat: held-out per-anchor {half:.2f} -> {full:.2f} from half to all the ground truth "
        f"{interval}: more ground truth is unlikely to help much at this size"
    )


def more_ground_truth(
    fit: Callable,
    train: tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray],
    held: tuple[np.ndarray, np.ndarray],
    gt: np.ndarray,
    *,
    seed: int,
) -> dict:
    """The card's ``fidelity["more_ground_truth"]`` entry.

    Args:
        fit: ``fit(pool_emb, pool_vectors, query_emb, query_vectors) -> head``, a head whose
            ``head(embeddings)`` are compared by ``head.similarity``.
        train: the training pool's embeddings and gradient vectors, the training queries'.
        held: the held-out pool's and queries' embeddings.
        gt: the held-out ground truth ``[pool, query]``.
        seed: the run's seed (the half and the bootstrap).
    """
    from influcoder.distillation.head_fit import head_scores

    pe, pv, qe, qv = train
    hp, hq = half_indices(len(pe), len(qe), seed)

    def scores(head) -> np.ndarray:
        return head_scores(head(held[0]), head(held[1]), head.similarity)

    half = scores(fit(pe[hp], pv[hp], qe[hq], qv[hq]))
    full = scores(fit(pe, pv, qe, qv))
    values = {
        name: float(per_query_spearman(gt, s).mean()) for name, s in (("half", half), ("all", full))
    }
    rise = paired_rise(gt, half, full, seed=seed)
    rising, sentence = verdict(values["half"], values["all"], rise)
    return {
        "per_anchor_spearman": values,
        "rise": rise,
        "rising": rising,
        "min_rise": MIN_RISE,
        "sentence": sentence,
        "half": {"n_pool": len(hp), "n_queries": len(hq)},
        "all": {"n_pool": len(pe), "n_queries": len(qe)},
        "interval": {
            "level": LEVEL,
            "resamples": RESAMPLES,
            "over": "held-out queries, paired (the same draw for half and all)",
        },
    }


def head_advice(
    model,
    train_embeddings: tuple[np.ndarray, np.ndarray],
    train_vectors: tuple[np.ndarray, np.ndarray],
    held_samples: tuple[list, list],
    gt: np.ndarray,
    args,
) -> dict | None:
    """:func:`more_ground_truth` for a run of ``args`` (:class:`DistillArguments`): heads of the
    kinds ``args.head`` allows (linear for ``none``), fitted like distillation's own on
    ``model``'s unit-length text embeddings; ``None`` when half the training samples are too
    few for the head's cross-validation (2 folds of 2 pool samples and 2 queries)."""
    from influcoder.distillation.export import embed
    from influcoder.distillation.head_fit import DEFAULT_FOLDS, fit_head
    from influcoder.distillation.settings import HEAD_CHOICES
    from influcoder.io.samples import encoder_text
    from influcoder.similarity import unit_rows

    pe, qe = (unit_rows(e) for e in train_embeddings)
    if min(len(pe) // 2, len(qe) // 2) < 4:
        return None
    kinds = HEAD_CHOICES[args.head] if args.head != "none" else ("linear",)

    def fit(p_emb, p_vec, q_emb, q_vec):
        return fit_head(
            p_emb,
            p_vec,
            q_emb,
            q_vec,
            components=args.head_components,
            landmarks=args.head_landmarks,
            folds=min(DEFAULT_FOLDS, len(p_emb) // 2, len(q_emb) // 2),
            seed=args.seed,
            similarity=args.head_similarity,
            kinds=kinds,
        )

    held = tuple(unit_rows(embed(model, [encoder_text(s) for s in ss])) for ss in held_samples)
    entry = more_ground_truth(
        fit, (pe, train_vectors[0], qe, train_vectors[1]), held, gt, seed=args.seed
    )
    return {**entry, "head_kinds": list(kinds)}
