"""``select``: the pool samples most helpful to a set of target examples (the LESS use case:
choose the training data for a target task), written in the pool's own format.

A pool sample's helpfulness to a target is the encoder's cosine between them (the distilled
stand-in for the gradient cosine LESS uses). Two ways to spend a budget of ``count`` samples:

* **aggregate** (default): one score per pool sample over the targets, the top ``count``.
  ``max`` (the default) keeps a sample that strongly matches any one target; ``mean`` (equal
  to the cosine with the targets' mean vector times its length) keeps samples that match the
  target set as a whole; ``sum`` is ``mean`` times the number of targets (the same ranking).
  LESS (Xia et al. 2024, github.com/princeton-nlp/LESS, ``less/data_selection/matching.py``)
  averages the scores over each subtask's examples and takes the maximum over subtasks:
  ``max`` is LESS with each target its own subtask, ``mean`` with all targets one subtask.
* **spread**: round robin over the targets in their order; each in turn takes its best pool
  sample not chosen yet (by its own cosine), until ``count`` are chosen. Each target gets
  ``count // T`` or one more, so none is left uncovered when ``count >= T`` (an aggregate can
  give every place to the samples of a few targets that the pool happens to match well).

The fast path searches the FAISS index and stops as soon as the answer is proven exact:

* ``mean``/``sum``: one search with the targets' mean (or sum) vector, ``k = count``: its
  inner product with a unit pool vector is the mean (sum) of the cosines.
* ``max``: the top ``k`` of each target; a sample's best score among the lists it is in is its
  true maximum whenever it is above every target's ``k``-th score (a sample missing from a
  target's list scores at most that list's ``k``-th with it); once the ``count``-th best
  candidate is above all of them the selection is exact, else ``k`` doubles.
* ``spread``: the top ``k`` of each target; a target that runs out of its list before the
  round robin ends doubles ``k`` and the round robin starts again (``k = count`` always
  suffices: fewer than ``count`` samples are ever taken before a target's turn).

``k`` starts at :data:`~influcoder.attribution.settings.SELECT_FIRST_K` (or twice the
per-target share, if larger). An exact (flat) FAISS search reads every pool vector anyway: on
a flat index ``max`` scans the stored vectors chunk by chunk instead (one pass, no widening;
2-15 times faster than the widening search in ``benchmarks/bench_select.py``), and the
widening search serves ``hnsw``/``ivf``. On a flat index (the default) the selection equals the brute
force over the whole score matrix (``tests/references.py``; ties in FAISS's order); on an
``hnsw``/``ivf`` index it is as approximate as their search.
"""

from __future__ import annotations

import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.attribution.attributor import Attributor, pool_sums_and_best
from influcoder.attribution.filter import check_not_input, parquet_schema, split_pool
from influcoder.attribution.index import Index
from influcoder.attribution.settings import DEFAULT_SELECT_AGGREGATE, SELECT_FIRST_K
from influcoder.errors import InputError, StoreError
from influcoder.io.samples import Sample
from influcoder.io.tables import output_format, write_table
from influcoder.metrics import AGGREGATES

#: A margin for comparing FAISS's scores (float32 sums in its own order) with each other.
_EPS = 1e-6


@dataclass(frozen=True)
class Selection:
    """Chosen pool rows, best first (``spread``: in the order chosen). ``scores``: what each
    was chosen by (its aggregate, or with ``spread`` its cosine to the target that took it);
    ``target``: that target, or the one it is closest to; ``target_score``: its cosine to
    it; ``k``: the neighbours searched per query in the end (0: every pool vector was
    scanned)."""

    how: str
    rows: np.ndarray
    scores: np.ndarray
    target: np.ndarray
    target_score: np.ndarray
    k: int


def selection_count(n: int, *, fraction: float | None = None, count: int | None = None) -> int:
    """How many of ``n`` pool samples to choose: exactly one of ``fraction`` (in (0, 1],
    rounded up) and ``count`` (1 to ``n``)."""
    if (fraction is None) == (count is None):
        raise ValueError("give exactly one of fraction and count")
    if count is not None:
        if not 1 <= count <= n:
            raise ValueError(f"count must be between 1 and {n} (the pool's size), got {count}")
        return int(count)
    if not 0 < fraction <= 1:
        raise ValueError(f"fraction must be in (0, 1], got {fraction}")
    return max(1, min(n, math.ceil(fraction * n - 1e-9)))


def _first_k(n: int, count: int, n_targets: int, first_k: int) -> int:
    return min(n, max(first_k, 2 * math.ceil(count / n_targets)))


def _select_mean(index: Index, q: np.ndarray, count: int, how: str) -> Selection:
    agg = q.sum(axis=0) if how == "sum" else q.mean(axis=0)
    scores, rows = index.search(agg[None].astype(np.float32), count)
    scores, rows = scores[0], rows[0]
    if (rows < 0).any():
        raise StoreError(
            f"the approximate index found only {int((rows >= 0).sum())} of the "
            f"{count} samples asked for; search wider (--nprobe/--ef-search) or "
            f"use a flat index"
        )
    order = np.lexsort((rows, -scores))
    rows, scores = rows[order], scores[order]
    per_target = index.rows(rows) @ q.T
    best = per_target.argmax(axis=1)
    return Selection(how, rows, scores, best, per_target[np.arange(len(rows)), best], count)


def _select_max(index: Index, q: np.ndarray, count: int, first_k: int) -> Selection:
    n = index.n
    k = _first_k(n, count, len(q), first_k)
    while True:
        scores, rows = index.search(q, k)
        found = rows >= 0
        r, s = rows[found], scores[found]
        t = np.nonzero(found)[0]
        # each candidate's best score over the lists it is in, and that list's target
        order = np.lexsort((-s, r))
        r, s, t = r[order], s[order], t[order]
        first = np.r_[True, r[1:] != r[:-1]]
        cand, best, target = r[first], s[first], t[first]
        # a sample missing from target j's list scores at most j's last (k-th) score with it
        bound = float(np.where(found, scores, np.inf).min(axis=1).max())
        if len(cand) >= count:
            top = np.lexsort((cand, -best))[:count]
            if k == n or best[top[-1]] > bound + _EPS:
                return Selection("max", cand[top], best[top], target[top], best[top], k)
        if k == n:
            raise StoreError(
                f"the approximate index found only {len(cand)} of the {count} "
                f"samples asked for; search wider (--nprobe/--ef-search) or use "
                f"a flat index"
            )
        k = min(n, 2 * k)


def _scan_max(index: Index, q: np.ndarray, count: int) -> Selection:
    """``max`` by reading every pool vector once (the exact alternative to widening searches
    on a flat index with many targets)."""
    _, target, best = pool_sums_and_best(index, q)
    # every row at or above the count-th score, then exactly count of them (ties: lower row)
    cutoff = np.partition(best, index.n - count)[index.n - count]
    cand = np.flatnonzero(best >= cutoff)
    top = cand[np.lexsort((cand, -best[cand]))][:count]
    return Selection("max", top, best[top], target[top], best[top], 0)


def _round_robin(rows: np.ndarray, scores: np.ndarray, count: int, n: int, final: bool):
    """Targets take turns, each its best row not taken; None when a target runs out of its
    list (and ``final`` is false: a longer one is searched)."""
    n_targets, k = rows.shape
    taken = np.zeros(n, dtype=bool)
    ptr = np.zeros(n_targets, dtype=np.int64)
    done = np.zeros(n_targets, dtype=bool)
    picks: list[tuple[int, float, int]] = []
    while len(picks) < count:
        if done.all():
            raise StoreError(
                f"the approximate index found only {len(picks)} of the {count} "
                f"samples asked for; search wider (--nprobe/--ef-search) or use "
                f"a flat index"
            )
        for j in range(n_targets):
            if len(picks) == count:
                break
            if done[j]:
                continue
            p = ptr[j]
            while p < k and (rows[j, p] < 0 or taken[rows[j, p]]):
                p += 1
            ptr[j] = p
            if p == k:
                if not final:
                    return None
                done[j] = True  # the whole pool was asked for: an approximate index's gap
                continue
            taken[rows[j, p]] = True
            picks.append((int(rows[j, p]), float(scores[j, p]), j))
    return picks


def _select_spread(index: Index, q: np.ndarray, count: int, first_k: int) -> Selection:
    n = index.n
    k = _first_k(n, count, len(q), first_k)
    while True:
        scores, rows = index.search(q, k)
        picks = _round_robin(rows, scores, count, n, final=k >= min(n, count))
        if picks is not None:
            r, s, t = (np.array(x) for x in zip(*picks))
            return Selection(
                "spread",
                r.astype(np.int64),
                s.astype(np.float32),
                t.astype(np.int64),
                s.astype(np.float32),
                k,
            )
        k = min(n, count, 2 * k)


def select_rows(
    index: Index,
    targets: np.ndarray,
    count: int,
    *,
    how: str = DEFAULT_SELECT_AGGREGATE,
    spread: bool = False,
    first_k: int = SELECT_FIRST_K,
    scan: bool | None = None,
) -> Selection:
    """The ``count`` pool rows most helpful to ``targets`` (unit vectors, ``T x dim``), by
    the aggregate ``how`` or, with ``spread``, round robin over the targets (see the module's
    docstring for both and for why the search is exact on a flat index). ``scan``: for
    ``max``, read every pool vector instead of searching (None: on a flat index)."""
    q = np.ascontiguousarray(targets, dtype=np.float32)
    if q.ndim != 2 or len(q) == 0:
        raise InputError("no targets")
    if q.shape[1] != index.dim:
        raise ValueError(f"targets have dimension {q.shape[1]}, the index {index.dim}")
    if not 1 <= count <= index.n:
        raise ValueError(f"count must be between 1 and {index.n}, got {count}")
    if first_k < 1:
        raise ValueError("first_k must be >= 1")
    if spread:
        return _select_spread(index, q, count, first_k)
    if how not in AGGREGATES:
        raise ValueError(f"how must be one of {AGGREGATES}, got {how!r}")
    if how == "max":
        if scan is None:
            scan = index.kind == "flat"
        return _scan_max(index, q, count) if scan else _select_max(index, q, count, first_k)
    return _select_mean(index, q, count, how)


@dataclass(frozen=True)
class SelectResult:
    """What :func:`select_pool` did: the subset in ``out``, the report in ``report_path``,
    ``coverage[j]``: how many chosen samples are target ``j``'s (see :class:`Selection`)."""

    out: Path
    report_path: Path
    n_pool: int
    targets: list[Sample]
    selected: list[dict]
    coverage: np.ndarray
    rule: str

    @property
    def n_selected(self) -> int:
        return len(self.selected)

    @property
    def selected_ids(self) -> list[str]:
        """The ids of the chosen pool samples, in the order chosen."""
        return [r["id"] for r in self.selected]

    @property
    def uncovered(self) -> list[Sample]:
        return [t for t, c in zip(self.targets, self.coverage) if c == 0]


def report_path_for(out: str | os.PathLike) -> Path:
    """``subset.jsonl`` -> ``subset.selected.jsonl``."""
    out = Path(out)
    return out.with_name(out.stem + ".selected.jsonl")


def select_pool(
    attributor: Attributor,
    targets,
    out: str | os.PathLike,
    *,
    fraction: float | None = None,
    count: int | None = None,
    how: str = DEFAULT_SELECT_AGGREGATE,
    spread: bool = False,
    inputs=(),
) -> SelectResult:
    """Choose the pool samples most helpful to ``targets`` (samples or response texts) and
    write them to ``out``, as they are in the files the index was built from, in pool order
    (format by ``out``'s extension, as ``filter`` writes its kept rows);
    ``<out stem>.selected.jsonl`` lists them in the order chosen, each with its score, its
    target and why. Exactly one of ``fraction`` and ``count``; ``out`` may not be an input
    (``inputs``: more paths to protect); both files are written atomically."""
    targets = list(targets)
    if not targets:
        raise InputError("no targets")
    out = Path(out)
    fmt = output_format(out)
    report_path = report_path_for(out)
    index = attributor.index
    check_not_input([out, report_path], index, inputs)
    n_count = selection_count(index.n, fraction=fraction, count=count)
    samples, q = attributor.encode(targets)
    sel = select_rows(index, q, n_count, how=how, spread=spread)
    _, originals = split_pool(index, sel.rows)
    rule = (
        f"{n_count} samples round robin over {len(samples)} targets, each taking its "
        f"best {index.score_name} not yet taken"
        if spread
        else f"the {n_count} highest {how} {index.score_name}s over {len(samples)} targets"
    )
    selected = []
    for rank, (r, s, t, ts) in enumerate(
        zip(sel.rows.tolist(), sel.scores, sel.target, sel.target_score), start=1
    ):
        seg, _ = index.locate(r)
        target = samples[int(t)]
        name = index.score_name
        why = (
            f"taken by target '{target.id}' in its turn, {name} {ts:.4f}"
            if spread
            else f"{how} {name} {s:.4f} over {len(samples)} targets, rank {rank} of {index.n}; "
            f"closest target '{target.id}' ({ts:.4f})"
        )
        selected.append(
            {
                "rank": rank,
                "id": index.sample(r).id,
                "score": float(s),
                "aggregate": "spread" if spread else how,
                "rule": rule,
                "why": why,
                "target": {"id": target.id, "score": float(ts)},
                "segment": index.meta["segments"][seg]["name"],
                "source": index.meta["segments"][seg]["source"]["path"],
                "row": originals[r],
            }
        )
    write_table(out, [originals[r] for r in sorted(originals)], schema=parquet_schema(index, fmt))
    write_table(report_path, selected)
    coverage = np.bincount(sel.target, minlength=len(samples))
    return SelectResult(out, report_path, index.n, samples, selected, coverage, rule)
