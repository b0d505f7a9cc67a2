"""Scoring methods against saved training runs, without retraining (``influcoder lds``).

:func:`score_runs` takes a run store (:mod:`influcoder.validation.runstore`), each method's
scores of the pool against a query store's samples, and computes every method's LDS on the
store's LDS subset runs: on the held-out set (the figure ``validate`` reports, computed by
this very function there) and, with ``by``, per value of a sample field over every query the
runs measured (e.g. chat / reasoning / harmful), or per value of each of several fields.
Scoring takes seconds; the runs took hours.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

import numpy as np

from influcoder.errors import StoreError
from influcoder.io.samples import Sample
from influcoder.io.stores import samples_digest
from influcoder.validation.effects import lds, lds_by_kind, paired_lds_difference
from influcoder.validation.runstore import RunStore

HELDOUT = "heldout"


def query_columns(runs: RunStore, queries: Sequence[Sample], name: str) -> np.ndarray | None:
    """Columns of ``queries`` holding evaluation set ``name``'s samples, in its order; None
    when some are not among ``queries``. Raises when all are there but differ."""
    where = {s.id: i for i, s in enumerate(queries)}
    info = runs.manifest["eval"][name]
    if not all(i in where for i in info["ids"]):
        return None
    cols = np.array([where[i] for i in info["ids"]], dtype=np.int64)
    if samples_digest([queries[c] for c in cols]) != info["samples_sha256"]:
        raise StoreError(
            f"{runs.path}: the queries given hold the ids of evaluation set "
            f"'{name}' but other texts; give the query store the runs measured"
        )
    return cols


def measured_queries(
    runs: RunStore, queries: Sequence[Sample]
) -> tuple[np.ndarray, list[tuple[str, np.ndarray]]]:
    """Every query column the runs measured: ``(columns, [(set name, its positions)])`` over
    the evaluation sets found whole among ``queries`` (each column once)."""
    cols, parts, seen = [], [], set()
    for name in runs.manifest["eval"]:
        found = query_columns(runs, queries, name)
        if found is None:
            continue
        positions = [k for k, c in enumerate(found) if int(c) not in seen]
        seen.update(int(c) for c in found)
        cols += [int(found[k]) for k in positions]
        parts.append((name, np.asarray(positions, dtype=np.int64)))
    return np.asarray(cols, dtype=np.int64), parts


def measured_losses(
    losses: Mapping[str, np.ndarray], parts: Sequence[tuple[str, np.ndarray]]
) -> np.ndarray:
    """``[runs, measured queries]``: the per-set losses (name -> ``[runs, set size]``) put in
    the column order of :func:`measured_queries`' ``parts``."""
    return np.concatenate([losses[name][:, pos] for name, pos in parts], axis=1)


def score_runs(
    runs: RunStore,
    scores: Mapping[str, np.ndarray],
    queries: Sequence[Sample],
    *,
    by: str | Sequence[str] | None = None,
    count: int | None = None,
    fraction: float | None = None,
    subset_seed: int | None = None,
    train_seed: int | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """Each method's LDS on the saved LDS runs of ``runs``.

    Args:
        runs: the run store.
        scores: method -> ``[n_pool, len(queries)]`` scores against ``queries``.
        queries: the query samples (a query store's), among them the held-out set's.
        by: a sample field: also report LDS per value of it over every measured query; or a
            sequence of fields, each reported so.
        count, fraction, subset_seed, train_seed: which LDS runs (the first ``count`` of the
            series of that subset fraction, subset seed and training seed; needed only when
            the store holds several series).
        n_boot, seed: bootstrap resamples and their seed.

    Returns:
        one row per method: ``method``, ``lds``, ``lds_low``, ``lds_high``, ``lds_subsets``,
        ``lds_queries`` (held-out queries) and, with ``by``, ``lds_by``: value ->
        ``{lds, low, high, n}`` for one field, field -> value -> that for a sequence.
    """
    n_pool = runs.manifest["pool"]["n"]
    for method, s in scores.items():
        if np.shape(s) != (n_pool, len(queries)):
            raise ValueError(
                f"scores of '{method}' must be [pool, queries] = "
                f"{(n_pool, len(queries))}, got {np.shape(s)}"
            )
    heldout = query_columns(runs, queries, HELDOUT)
    if heldout is None:
        raise StoreError(
            f"{runs.path}: the queries given do not hold the held-out samples the "
            "runs measured; give the HELDOUT store of the validation"
        )
    subsets, losses = runs.lds_runs(
        count=count, fraction=fraction, seed=subset_seed, train_seed=train_seed
    )
    fields = [] if by is None else [by] if isinstance(by, str) else list(by)
    kinds = {}
    if fields:
        cols, parts = measured_queries(runs, queries)
        measured = measured_losses(losses, parts)
    for field in fields:
        if not any(field in queries[c].meta for c in cols):
            raise StoreError(f"{runs.path}: no query the runs measured has the field '{field}'")
        kinds[field] = [str(queries[c].meta.get(field)) for c in cols]
    rows = []
    for method, s in scores.items():
        s = np.asarray(s, dtype=float)
        score = lds(s[:, heldout], subsets, losses[HELDOUT], n_boot=n_boot, seed=seed)
        row = {
            "method": method,
            "lds": score["lds"],
            "lds_low": score["low"],
            "lds_high": score["high"],
            "lds_subsets": len(subsets),
            "lds_queries": len(heldout),
        }
        per_field = {
            field: lds_by_kind(s[:, cols], subsets, measured, values, n_boot=n_boot, seed=seed)
            for field, values in kinds.items()
        }
        if per_field:
            row["lds_by"] = per_field[by] if isinstance(by, str) else per_field
        rows.append(row)
    return rows


def paired_rows(
    runs: RunStore,
    scores: Mapping[str, np.ndarray],
    queries: Sequence[Sample],
    pairs: Sequence[tuple[str, str]],
    *,
    by: str | Sequence[str] | None = None,
    which: Mapping | None = None,
    n_boot: int = 1000,
    seed: int = 0,
) -> list[dict]:
    """For each pair ``(a, b)`` of methods: ``a``'s LDS minus ``b``'s with a paired bootstrap
    interval (:func:`~influcoder.validation.effects.paired_lds_difference`), on the held-out
    set and, with ``by``, per value of each field over every measured query; ``which``: the
    series of LDS runs, as :meth:`~influcoder.validation.runstore.RunStore.lds_runs` takes it.
    Rows: ``a``, ``b``, ``queries`` (``held-out`` or ``FIELD=VALUE``), ``n``, ``difference``,
    ``low``, ``high``; none, and no run read, without pairs."""
    unknown = sorted({m for pair in pairs for m in pair} - set(scores))
    if unknown:
        raise ValueError(f"--paired names no method {unknown}; the methods: {sorted(scores)}")
    if not pairs:
        return []
    subsets, losses = runs.lds_runs(**(which or {}))
    blocks = [("held-out", query_columns(runs, queries, HELDOUT), losses[HELDOUT])]
    if by is not None:
        cols, parts = measured_queries(runs, queries)
        measured = measured_losses(losses, parts)
        for field in [by] if isinstance(by, str) else by:
            values = np.array([str(queries[c].meta.get(field)) for c in cols])
            for value in sorted(set(values.tolist())):
                keep = values == value
                blocks.append((f"{field}={value}", cols[keep], measured[:, keep]))
    rows = []
    for a, b in pairs:
        for name, cols, block_losses in blocks:
            pair = (np.asarray(scores[a])[:, cols], np.asarray(scores[b])[:, cols])
            d = paired_lds_difference(pair, subsets, block_losses, n_boot=n_boot, seed=seed)
            rows.append({"a": a, "b": b, "queries": name, "n": int(len(cols)), **d})
    return rows


def lds_per_field(row: Mapping, by: str | Sequence[str] | None) -> dict[str, dict]:
    """A row's ``lds_by`` as field -> value -> ``{lds, low, high, n}``, whether
    :func:`score_runs` was given one field (``by`` a str) or several."""
    if by is None or "lds_by" not in row:
        return {}
    return {by: row["lds_by"]} if isinstance(by, str) else dict(row["lds_by"])


def lds_table(rows: Sequence[dict], by: str | Sequence[str] | None = None) -> list[dict]:
    """Rows for a terminal table: LDS and its interval, then each kind's (named
    ``FIELD=VALUE`` when ``by`` holds several fields)."""
    out = []
    for row in rows:
        line = {
            "method": row["method"],
            "lds": row["lds"],
            "lds_95%": f"[{row['lds_low']:+.3f}, {row['lds_high']:+.3f}]",
        }
        for field, values in lds_per_field(row, by).items():
            for kind, v in values.items():
                name = kind if isinstance(by, str) else f"{field}={kind}"
                line[f"lds_{name}"] = v["lds"]
                line[f"{name}_95%"] = f"[{v['low']:+.3f}, {v['high']:+.3f}]"
        out.append(line)
    return out
