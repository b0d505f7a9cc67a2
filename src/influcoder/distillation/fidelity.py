"""The fidelity estimate every distilled encoder carries: a seeded share of the pool samples AND
of the queries is held out of distillation altogether (no training step, no validation, no head
fit sees their gradients), and the encoder *as saved* is scored on held-out pool x held-out
queries against the ground truth, with bootstrap intervals.

Trade-off: the saved encoder is trained and fitted on a little less ground truth than it could
be, so that the figure describes that very encoder on samples it never saw, which is what an
index of a whole training set mostly holds. The head's cross-validation cannot say this after
fine-tuning: its folds are samples the encoder trained on.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.metrics import (
    aggregated_spearman,
    bootstrap_interval,
    per_anchor_spearman,
    recall_at_k,
)

logger = logging.getLogger(__name__)

#: The share held out when the user leaves it to us (``holdout_fraction=None``), applied only
#: where it holds out at least the minimum below; otherwise no estimate, with a note.
DEFAULT_HOLDOUT_FRACTION = 0.1
#: Held-out pool samples the estimate needs (``recall@10`` ranks ten of them).
MIN_HOLDOUT_POOL = 10
#: Held-out queries the estimate needs (a per-anchor figure over fewer says little).
MIN_HOLDOUT_QUERIES = 4
FIDELITY_K = 10
#: Bootstrap resamples and coverage of the card's intervals.
RESAMPLES = 1000
LEVEL = 0.95
# Mixed with the run's seed so the held-out draw is its own stream, apart from the split and
# the blocks that :func:`~influcoder.distillation.trainer.distill` draws from the seed.
_STREAM = 31


def fidelity_metrics(k: int = FIDELITY_K) -> dict:
    """Name -> metric of the estimate: per-anchor and aggregated Spearman, ``recall@k``."""
    return {
        "per_anchor_spearman": per_anchor_spearman,
        "aggregated_spearman": aggregated_spearman,
        f"recall@{k}": lambda gt, pred: recall_at_k(gt, pred, k),
    }


@dataclass(frozen=True)
class Holdout:
    """Sorted indices of the pool samples and queries distilled on (``train_*``) and held out
    (``held_*``), and the share held out."""

    fraction: float
    train_pool: np.ndarray
    held_pool: np.ndarray
    train_query: np.ndarray
    held_query: np.ndarray


def holdout_split(n_pool: int, n_query: int, fraction: float | None, seed: int) -> Holdout | None:
    """The held-out samples of a run, or ``None`` when there is no estimate.

    ``fraction=None``: :data:`DEFAULT_HOLDOUT_FRACTION` where it holds out at least
    :data:`MIN_HOLDOUT_POOL` pool samples and :data:`MIN_HOLDOUT_QUERIES` queries, else none
    (logged). ``0``: none. Any other share: ``round(fraction * n)`` of each side, refused with a
    ``ValueError`` when that is below the minimum or leaves too little to distil on.
    """
    chosen = fraction is not None
    fraction = DEFAULT_HOLDOUT_FRACTION if fraction is None else float(fraction)
    if fraction == 0:
        return None
    if not 0 < fraction < 1:
        raise ValueError(f"holdout_fraction must be in [0, 1), got {fraction}")
    n_held_pool, n_held_query = round(fraction * n_pool), round(fraction * n_query)
    if n_held_pool < MIN_HOLDOUT_POOL or n_held_query < MIN_HOLDOUT_QUERIES:
        if not chosen:
            logger.info(
                f"no held-out fidelity estimate: {fraction:g} of {n_pool} pool samples and "
                f"{n_query} queries is fewer than {MIN_HOLDOUT_POOL} and {MIN_HOLDOUT_QUERIES}"
            )
            return None
        raise ValueError(
            f"holdout_fraction={fraction:g} of {n_pool} pool samples and {n_query} queries "
            f"holds out {n_held_pool} and {n_held_query}; the fidelity estimate needs at "
            f"least {MIN_HOLDOUT_POOL} pool samples and {MIN_HOLDOUT_QUERIES} queries held "
            f"out: collect more ground truth, raise --holdout-fraction, or give "
            f"--holdout-fraction 0 to distil on everything without an estimate"
        )
    rng = np.random.default_rng([seed, _STREAM])
    pool, query = rng.permutation(n_pool), rng.permutation(n_query)
    return Holdout(
        fraction,
        np.sort(pool[n_held_pool:]),
        np.sort(pool[:n_held_pool]),
        np.sort(query[n_held_query:]),
        np.sort(query[:n_held_query]),
    )


def fidelity_figures(gt: np.ndarray, pred: np.ndarray, *, seed: int = 0) -> dict[str, dict]:
    """Each metric of :func:`fidelity_metrics` of ``pred`` against ``gt`` (``[pool, query]``):
    ``{"value", "low", "high"}``, the interval a :data:`LEVEL` percentile bootstrap resampling
    pool samples and queries (:func:`~influcoder.metrics.bootstrap_interval`)."""
    k = min(FIDELITY_K, gt.shape[0])
    out = {}
    for name, metric in fidelity_metrics(k).items():
        low, high = bootstrap_interval(
            metric, gt, pred, n_resamples=RESAMPLES, level=LEVEL, seed=seed
        )
        out[name] = {"value": float(metric(gt, pred)), "low": low, "high": high}
    return out


def encoder_block_scores(encoder: str, pool, queries, *, device: str = "cpu") -> np.ndarray:
    """``[len(pool), len(queries)]`` scores of the encoder directory or bundled name
    ``encoder`` on samples, as every stage reads it (its views, head and similarity; torch,
    float32)."""
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.directory import resolve_encoder
    from influcoder.encoders.views import sample_encoder

    enc = sample_encoder(
        resolve_encoder(str(encoder)),
        lambda path: FastEncoder(path, backend="torch", device=device),
    )
    pool_emb = enc.encode_samples(pool).astype(np.float32)
    if not isinstance(queries, np.ndarray):
        queries = enc.encode_samples(queries)
    return (pool_emb @ queries.astype(np.float32).T).astype(np.float64)


def measure(
    out: str | Path,
    base_encoder: str,
    holdout: Holdout,
    pool_samples: Sequence,
    query_samples: Sequence,
    gt: np.ndarray,
    *,
    seed: int,
    device: str = "cpu",
    query_vectors: np.ndarray | None = None,
) -> dict:
    """The card's ``fidelity`` entry: the saved encoder at ``out`` and the ``base_encoder`` it
    started from, scored on the held-out block of ``gt`` (the full ``[pool, query]`` ground
    truth; the samples are every pool sample and query, in its order). With every query's
    gradient (``query_vectors``, rows in ``query_samples``' order) and a gradient basis in
    ``out``, also ``query_gradients``: the saved encoder's pool embeddings against the
    held-out queries' own gradients, as ``attribute --query-gradients`` ranks."""
    from influcoder.encoders.basis import has_basis, load_basis
    from influcoder.encoders.directory import encoder_similarity

    pool = [pool_samples[i] for i in holdout.held_pool]
    queries = [query_samples[j] for j in holdout.held_query]
    block = gt[np.ix_(holdout.held_pool, holdout.held_query)].astype(np.float64)
    sides = {"encoder": (str(out), queries), "untrained": (base_encoder, queries)}
    if query_vectors is not None and has_basis(out):
        own = np.asarray(query_vectors)[holdout.held_query]
        own = load_basis(out).query_vectors(own, encoder_similarity(str(out)))
        sides["query_gradients"] = (str(out), own)
    figures = {
        name: fidelity_figures(
            block, encoder_block_scores(enc, pool, side, device=device), seed=seed
        )
        for name, (enc, side) in sides.items()
    }
    return {
        "holdout_fraction": holdout.fraction,
        "seed": seed,
        "pool_ids": [s.id for s in pool],
        "query_ids": [s.id for s in queries],
        "n_pool": len(pool),
        "n_queries": len(queries),
        "interval": {
            "level": LEVEL,
            "resamples": RESAMPLES,
            "over": "held-out pool samples and queries, resampled independently",
        },
        **figures,
    }


def summary(fidelity: dict) -> str:
    """One line of a card's ``fidelity`` entry, for ``distill`` and ``info``."""

    def one(figures: dict) -> str:
        return ", ".join(
            f"{name.removesuffix('_spearman').replace('_', '-')} {f['value']:+.3f} "
            f"[{f['low']:+.2f}, {f['high']:+.2f}]"
            for name, f in figures.items()
        )

    untrained = fidelity.get("untrained", {})
    return (
        f"held-out fidelity ({fidelity['n_pool']} pool samples x {fidelity['n_queries']} "
        f"queries never distilled on, {fidelity['interval']['level']:.0%} intervals): "
        + one(fidelity["encoder"])
        + (
            f"; untrained per-anchor {untrained['per_anchor_spearman']['value']:+.3f}"
            if "per_anchor_spearman" in untrained
            else ""
        )
        + (
            "; with --query-gradients " + one(fidelity["query_gradients"])
            if "query_gradients" in fidelity
            else ""
        )
    )


def advice_line(fidelity: dict) -> str | None:
    """Whether more ground truth is likely to help (:mod:`influcoder.distillation.advice`), one
    line for ``distill`` and ``info``; ``None`` when the card has no such entry."""
    advice = fidelity.get("more_ground_truth")
    if not isinstance(advice, dict):
        return None
    half, full = advice["half"], advice["all"]
    return (
        f"{advice['sentence']} (head refitted on {half['n_pool']} x {half['n_queries']} and "
        f"{full['n_pool']} x {full['n_queries']} pool samples x queries)"
    )


def card_section(fidelity: dict) -> str:
    """The model card's section on the held-out estimate (markdown)."""
    own = fidelity.get("query_gradients")

    def cell(f: dict) -> str:
        return f"{f['value']:.3f} [{f['low']:.3f}, {f['high']:.3f}]"

    rows = [
        f"| {name} | {cell(f)} | {fidelity['untrained'][name]['value']:.3f} |"
        + (f" {cell(own[name])} |" if own else "")
        for name, f in fidelity["encoder"].items()
    ]
    return "\n".join(
        [
            "",
            "## Fidelity on samples it never saw",
            "",
            f"{fidelity['n_pool']} pool samples and {fidelity['n_queries']} queries "
            f"({fidelity['holdout_fraction']:g} of each, seed {fidelity['seed']}) were held out "
            "of distillation: no training step, validation or head fit saw their gradients. "
            "This encoder's scores on them against the gradient ground truth "
            f"({fidelity['interval']['level']:.0%} bootstrap intervals over the held-out pool "
            "samples and queries), beside the encoder it started from"
            + (
                " and, last, with each held-out query's own gradient in place of its "
                "embedding (`attribute --query-gradients`):"
                if own
                else ":"
            ),
            "",
            "| metric | this encoder | untrained |" + (" with query gradients |" if own else ""),
            "|---|---|---|" + ("---|" if own else ""),
            *rows,
            "",
            *(
                [
                    f"More ground truth: {advice_line(fidelity)}; the head fitted on a seeded "
                    "half of the training pool samples and queries and on all of them, on this "
                    "encoder's embeddings, scored on the same held-out block (the interval: a "
                    "paired bootstrap over the held-out queries).",
                    "",
                ]
                if advice_line(fidelity)
                else []
            ),
        ]
    )
