"""Group-removal retraining: the adapter trained once without each group of a pool field (a
source, a category), and group aggregates judged by how well they rank what each removal did.

``validate --group-removal FIELD`` adds one run per group of at least ``--group-min-size``
samples (the pool minus that group, the first seed) to the run store; ``lds --group-removal
FIELD`` then reads them. A group's measured effect on a query is its run's loss minus the
full-pool run's (same seed): how much the model needed the group for that query. A method's
prediction is its pool scores aggregated over the group's members (``mean``, ``sum``, ``max``,
``softmax``, and ``learned`` for an encoder with a learned pooler, as ``attribute --group-by``
computes them, :mod:`influcoder.attribution.groups`). The figure is the Spearman correlation
over groups, per query, averaged over queries, with a 95% bootstrap interval over the queries
(the groups are fixed).

Cost: one training run per group. Small groups move the loss little against the runs' own
noise, hence the minimum size.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from influcoder.attribution.groups import group_stats, pool_groups
from influcoder.attribution.settings import DEFAULT_GROUP_TEMPERATURE, MISSING_GROUP
from influcoder.errors import InputError
from influcoder.io.samples import Sample
from influcoder.metrics import column_spearman
from influcoder.validation.runstore import FULL_LABEL, Run, RunStore, without

#: Label prefix of a group-removal run.
GROUP_LABEL = "without group"
DEFAULT_GROUP_MIN_SIZE = 5


def removal_groups(
    samples: Sequence[Sample], field: str, min_size: int = DEFAULT_GROUP_MIN_SIZE
) -> list[tuple[str, np.ndarray]]:
    """``[(value, pool rows)]`` of every group of ``field`` with at least ``min_size``
    samples (samples without the field are no group), by value; an InputError naming the
    field and the sizes when fewer than 3 groups are left (nothing to rank)."""
    groups = pool_groups(samples, field)
    sizes = groups.sizes
    kept = [
        (name, np.flatnonzero(groups.codes == g))
        for g, name in enumerate(groups.names)
        if name != MISSING_GROUP and sizes[g] >= min_size
    ]
    if len(kept) < 3:
        raise InputError(
            f"--group-removal '{field}': {len(kept)} groups of at least {min_size} samples "
            f"(group sizes: {sorted(sizes.tolist(), reverse=True)[:10]}...); ranking groups "
            "needs 3 or more: lower --group-min-size or choose another field"
        )
    return sorted(kept, key=lambda item: item[0])


def group_runs(
    n_pool: int, groups: Sequence[tuple[str, np.ndarray]], field: str, seed: int
) -> list[Run]:
    """One run per group: the pool without it, trained with ``seed``."""
    return [
        Run(f"{GROUP_LABEL} {field}={name}", without(n_pool, rows), seed) for name, rows in groups
    ]


def full_seed(store: RunStore) -> int:
    """The seed of the store's full-pool run (the smallest, when several seeds were run):
    the seed ``validate`` trains its group-removal runs with (its first ``--seeds``)."""
    n_pool = store.manifest["pool"]["n"]
    seeds = []
    for path in store.files():
        record = store.read_file(path)
        if record.get("label") == FULL_LABEL and len(record["keep"]) == n_pool:
            seeds.append(record["seed"])
    if not seeds:
        raise InputError(f"{store.path}: no full-pool run saved; run influcoder validate first")
    return min(seeds)


def group_effects(
    store: RunStore, runs: Sequence[Run], parts: Sequence[tuple[str, np.ndarray]], seed: int
) -> np.ndarray:
    """``[groups, measured queries]``: each group run's loss minus the full-pool run's (the
    columns as :func:`~influcoder.validation.saved.measured_queries` orders them). A run not
    in the store is an error naming the command that trains it."""
    full = Run(FULL_LABEL, tuple(range(store.manifest["pool"]["n"])), seed)
    missing = [r.label for r in [full, *runs] if not store.has(r)]
    if missing:
        raise InputError(
            f"{store.path}: no saved run '{missing[0]}' (and {len(missing) - 1} more); "
            "train them with influcoder validate ... --group-removal FIELD --runs "
            f"{store.path}"
        )

    def losses(run):
        read = store.read(run)
        return np.concatenate([np.asarray(read[name])[pos] for name, pos in parts])

    base = losses(full)
    return np.stack([losses(r) - base for r in runs])


def score_groups(
    scores: Mapping[str, np.ndarray],
    codes: np.ndarray,
    groups: Sequence[tuple[str, np.ndarray]],
    effects: np.ndarray,
    *,
    learned: Mapping[str, np.ndarray] | None = None,
    temperature: float = DEFAULT_GROUP_TEMPERATURE,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """One row per method and aggregate: the mean over queries of the Spearman correlation
    over the groups between the method's aggregate and the measured ``effects``.

    Args:
        scores: method -> ``[n_pool, queries]`` scores (the columns of ``effects``).
        codes: each pool sample's group code (:func:`~influcoder.attribution.groups.pool_groups`
            over the whole field); only ``groups`` are ranked.
        groups: the removed groups, in the order of ``effects``' rows.
        effects: ``[groups, queries]`` from :func:`group_effects`.
        learned: method -> its pool samples' learned-pooler weights, for ``learned``.
    """
    rows = []
    # each removed group's own code: the rows removed share one
    picked = np.array([codes[r[0]] for _, r in groups])
    rng = np.random.default_rng(seed)
    n_q = effects.shape[1]
    draws = [rng.integers(0, n_q, n_q) for _ in range(n_boot)]
    for method, s in scores.items():
        stats = group_stats(
            np.asarray(s, dtype=np.float64).T,
            codes,
            int(codes.max()) + 1,
            temperature=temperature,
            learned=(learned or {}).get(method),
        )
        for aggregate, values in stats.items():
            per_query = np.nan_to_num(column_spearman(effects, values[:, picked].T), nan=0.0)
            boot = [per_query[d].mean() for d in draws]
            low, high = np.quantile(boot, [0.025, 0.975]) if draws else (np.nan, np.nan)
            rows.append(
                {
                    "method": method,
                    "aggregate": aggregate,
                    "group_spearman": float(per_query.mean()),
                    "low": float(low),
                    "high": float(high),
                    "groups": len(groups),
                    "queries": n_q,
                }
            )
    return rows


def group_removal_rows(
    store: RunStore,
    scores: Mapping[str, np.ndarray],
    queries: Sequence[Sample],
    pool: Sequence[Sample],
    field: str,
    *,
    min_size: int = DEFAULT_GROUP_MIN_SIZE,
    learned: Mapping[str, np.ndarray] | None = None,
    temperature: float = DEFAULT_GROUP_TEMPERATURE,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """:func:`score_groups` on every query the runs measured (``scores``: method ->
    ``[n_pool, len(queries)]``), the groups of ``field`` in ``pool`` that
    ``validate --group-removal`` removed. ``learned``: method -> ``(pooler, its pool samples'
    logits)`` (:func:`learned_logits`), for the ``learned`` aggregate."""
    from influcoder.validation.saved import measured_queries

    groups = removal_groups(pool, field, min_size)
    codes = pool_groups(pool, field).codes
    n_groups = int(codes.max()) + 1
    weights = {
        m: pooler.member_weights(logits, codes, n_groups)
        for m, (pooler, logits) in (learned or {}).items()
    }
    cols, parts = measured_queries(store, queries)
    train_seed = full_seed(store)
    effects = group_effects(
        store, group_runs(len(pool), groups, field, train_seed), parts, train_seed
    )
    return score_groups(
        {m: np.asarray(s)[:, cols] for m, s in scores.items()},
        codes,
        groups,
        effects,
        learned=weights,
        temperature=temperature,
        n_boot=n_boot,
        seed=seed,
    )


def learned_logits(encoders: Mapping[str, str], pool_vectors: Mapping[str, np.ndarray]) -> dict:
    """method -> ``(pooler, logits of its pool embeddings)`` for each encoder (name ->
    directory or bundled name) that carries a learned pooler (``distill-runs --pooling
    attention``)."""
    import os

    from influcoder.encoders.directory import resolve_encoder
    from influcoder.encoders.pooler import read_pooler

    out = {}
    for name, encoder in encoders.items():
        path = resolve_encoder(encoder)
        pooler = read_pooler(path) if os.path.isdir(path) else None
        if pooler is not None and name in pool_vectors:
            out[name] = (pooler, pooler.logits(np.asarray(pool_vectors[name])))
    return out
