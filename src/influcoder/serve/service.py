"""What the server answers, without HTTP: attribution with percentiles, metadata filters and
histograms, aggregation over a query set, sample look-up, and the cleaned pool as a file.

Everything is read-only. The service holds every pool vector in memory (``n x dim`` float32:
150 MB at 100,000 x 384) because a percentile needs the query's score against *every* pool
sample anyway; the top ``k`` then comes from those exact scores too, so the server's results
are exact for every FAISS kind, and a metadata filter is a mask over them, not a post-filter
that can run out of hits; a ``group_by`` field adds the query's influence per group of that
field (:mod:`influcoder.attribution.groups`, over every pool score). Encoding and z-scores are
the :class:`Attributor`'s, aggregation is
:meth:`Attributor.aggregate`, the cleaned file is :func:`split_pool`'s (what ``filter``
writes).
"""

from __future__ import annotations

import threading
import time
from collections import Counter
from dataclasses import dataclass, field

import numpy as np

from influcoder.attribution.attributor import Attributor, Hit
from influcoder.attribution.filter import parquet_schema, split_pool
from influcoder.attribution.groups import (
    GroupAttribution,
    PoolGroups,
    group_stats,
    index_samples,
    learned_weights,
    meta_key,
    pool_groups,
)
from influcoder.attribution.settings import (
    DEFAULT_GROUP_AGGREGATE,
    DEFAULT_GROUP_TEMPERATURE,
    GROUP_AGGREGATES,
    GROUP_STATS,
    LEARNED_AGGREGATE,
    MISSING_GROUP,
)
from influcoder.encoders.onnx_query import LightEncoder
from influcoder.errors import InputError
from influcoder.io.samples import Sample
from influcoder.io.tables import table_bytes
from influcoder.serve.batcher import Batcher
from influcoder.serve.fidelity import encoder_fidelity
from influcoder.serve.scores import histogram, percentiles, top_rows

#: A metadata field with at most this many distinct values is offered as a filter menu.
FACET_VALUES = 50


@dataclass(frozen=True)
class QueryItem:
    """One query to attribute: ``filters`` maps a metadata field to the values allowed."""

    sample: Sample
    k: int = 10
    filters: dict[str, tuple[str, ...]] = field(default_factory=dict)
    bins: int = 30
    group_by: str | None = None
    temperature: float = DEFAULT_GROUP_TEMPERATURE
    group_aggregate: str = DEFAULT_GROUP_AGGREGATE
    #: compare the query's own gradient; None: where the server offers it
    query_gradient: bool | None = None


def sample_dict(sample: Sample, row: int) -> dict:
    return {
        "row": row,
        "id": sample.id,
        "prompt": sample.prompt,
        "response": sample.response,
        "meta": sample.meta,
    }


def hit_dict(hit: Hit, percentile: float) -> dict:
    return {
        "rank": hit.rank,
        **sample_dict(hit.sample, hit.row),
        "score": hit.score,
        "z": hit.z,
        "percentile": float(percentile),
    }


class _LockedEncoder:
    """The attributor's encoder behind a lock: batches and aggregates may encode at the same
    time, and a torch encoder's tokenizer may not be entered twice (ONNX Runtime sessions
    and the ``tokenizers`` of :class:`LightEncoder` may, so it runs unlocked)."""

    def __init__(self, encoder, lock: threading.Lock):
        self._encoder, self._lock = encoder, lock

    def encode_samples(self, samples):
        with self._lock:
            return self._encoder.encode_samples(samples)

    def __getattr__(self, name):
        return getattr(self._encoder, name)


class Service:
    """The state of one server: an :class:`Attributor`, the pool's vectors and samples, the
    metadata facets, an optional ground truth, and the batcher that answers queries."""

    def __init__(
        self,
        attributor: Attributor,
        *,
        ground_truth=None,
        max_batch: int = 16,
        workers: int = 2,
        exact: Attributor | None = None,
    ):
        self.attributor = attributor
        #: the same index with each query's own gradient (serve --query-gradients), or None;
        #: its resident collector serialises the backward passes itself
        self.exact = exact
        self.index = index = attributor.index
        # a multi-view encoder runs its backbone's encoder (``base``) once per view
        if not isinstance(getattr(attributor.encoder, "base", attributor.encoder), LightEncoder):
            attributor.encoder = _LockedEncoder(attributor.encoder, threading.Lock())
        self.vectors = index.vectors()
        self.samples = index_samples(index)
        self.row_of = {s.id: r for r, s in enumerate(self.samples)}
        self.fields, self.facets = self._facets()
        self._masks: dict[str, dict[str, np.ndarray]] = {}
        self._masks_lock = threading.Lock()
        self._groups: dict[str, PoolGroups] = {}
        #: the encoder's learned pooler (``learned`` group aggregate), None without one
        self.pooler = attributor.pooler()
        self._learned: dict[str, np.ndarray] = {}
        self.ground_truth = ground_truth
        self.query_gradients = None if exact is None else str(exact.encoder.like.path)
        self.fidelity = encoder_fidelity(getattr(attributor.encoder, "name", index.encoder_name))
        index.stats()  # read once here, not by the first request
        self.batcher = Batcher(self._attribute_batch, max_batch=max_batch, workers=workers)

    def close(self) -> None:
        self.batcher.close()

    # -- what it holds
    def _facets(self) -> tuple[list[str], dict[str, dict[str, int]]]:
        counts: dict[str, Counter] = {}
        for s in self.samples:
            for name, value in s.meta.items():
                counts.setdefault(name, Counter())[meta_key(value)] += 1
        facets = {
            name: dict(sorted(c.items())) for name, c in counts.items() if len(c) <= FACET_VALUES
        }
        return sorted(counts), facets

    def info(self) -> dict:
        index = self.index
        gt = self.ground_truth
        return {
            "status": "ok",
            "n": index.n,
            "dim": index.dim,
            "kind": index.kind,
            "encoder": index.encoder_name,
            "backend": self.attributor.encoder.backend,
            "index": str(index.path),
            "fields": self.fields,
            "facets": self.facets,
            "group_aggregates": self.group_aggregates,
            "ground_truth": None if gt is None else gt.info(),
            "query_gradients": self.query_gradients,
            "fidelity": self.fidelity,
        }

    @property
    def group_aggregates(self) -> list[str]:
        """The group aggregates this server computes (``learned`` with a pooler)."""
        names = GROUP_STATS if self.pooler is None else GROUP_AGGREGATES
        return list(names)

    def sample(self, sample_id: str) -> dict | None:
        row = self.row_of.get(sample_id)
        return None if row is None else sample_dict(self.samples[row], row)

    # -- metadata filters
    def check_filters(
        self,
        filters: dict[str, tuple[str, ...]],
        group_by: str | None = None,
        group_aggregate: str = DEFAULT_GROUP_AGGREGATE,
    ) -> None:
        """Refuse an unknown field, or the ``learned`` aggregate without a pooler, and build
        the masks (and groups) the query needs (before it is queued, so one bad request
        never fails a batch)."""
        if group_aggregate == LEARNED_AGGREGATE and self.pooler is None:
            raise InputError(
                f"group_aggregate '{LEARNED_AGGREGATE}': the encoder "
                f"{self.attributor.encoder_dir} carries no learned pooler (train one with "
                f"influcoder distill-runs --pooling attention); this server offers "
                f"{', '.join(self.group_aggregates)}"
            )
        for name in [*filters, *([group_by] if group_by is not None else [])]:
            if name not in self.fields:
                raise InputError(
                    f"unknown metadata field '{name}' (the pool has: "
                    f"{', '.join(self.fields) or 'none'})"
                )
        for name in filters:
            self._field_masks(name)
        if group_by is not None:
            self._field_groups(group_by)

    def _field_groups(self, name: str) -> PoolGroups:
        with self._masks_lock:
            if name not in self._groups:
                self._groups[name] = groups = pool_groups(self.samples, name)
                if self.pooler is not None:
                    self._learned[name] = learned_weights(self.index, groups, self.pooler)
            return self._groups[name]

    def _field_masks(self, name: str) -> dict[str, np.ndarray]:
        with self._masks_lock:
            if name not in self._masks:
                rows: dict[str, list[int]] = {}
                for r, s in enumerate(self.samples):
                    if name in s.meta:
                        rows.setdefault(meta_key(s.meta[name]), []).append(r)
                masks = {}
                for value, rs in rows.items():
                    masks[value] = np.zeros(len(self.samples), dtype=bool)
                    masks[value][rs] = True
                self._masks[name] = masks
            return self._masks[name]

    def mask(self, filters: dict[str, tuple[str, ...]]) -> np.ndarray | None:
        """Rows whose metadata match every field (any of its values); None: no filter."""
        out = None
        for name, values in filters.items():
            masks = self._field_masks(name)
            m = np.zeros(len(self.samples), dtype=bool)
            for v in values:
                if v in masks:
                    m |= masks[v]
            out = m if out is None else out & m
        return out

    # -- attribution
    def _check(self, item: QueryItem) -> None:
        if item.query_gradient and self.exact is None:
            raise InputError(
                "query_gradient: this server compares the encoder's embeddings only; start it "
                "with --query-gradients STORE (the gradient store the encoder was distilled "
                "from) to offer each query's own gradient"
            )
        self.check_filters(item.filters, item.group_by, item.group_aggregate)

    def submit(self, item: QueryItem):
        """Queue one query; a future of its answer (see :meth:`_answer`)."""
        self._check(item)
        return self.batcher.submit(item)

    def attribute(self, items: list[QueryItem]) -> list[dict]:
        """Answer queries now, in this thread (the batcher's function, for library use)."""
        for item in items:
            self._check(item)
        return self._attribute_batch(items)

    def _exact(self, item: QueryItem) -> bool:
        return self.exact is not None and item.query_gradient is not False

    def score_matrix(self, q: np.ndarray) -> np.ndarray:
        """Exact scores of unit query vectors against every pool vector: ``n_query x n``
        (computed as ``vectors @ q.T`` and transposed into rows: a quarter faster here than
        ``q @ vectors.T`` for a batch of a dozen queries)."""
        return np.ascontiguousarray((self.vectors @ np.asarray(q, dtype=np.float32).T).T)

    def _attribute_batch(self, items) -> list[dict]:
        t0 = time.perf_counter()
        exact = [self._exact(it) for it in items]
        q = np.empty((len(items), self.index.dim), dtype=np.float32)
        for mode, attributor in ((False, self.attributor), (True, self.exact)):
            rows = [j for j, e in enumerate(exact) if e == mode]
            if rows:
                q[rows] = attributor.encoder.encode_samples([items[j].sample for j in rows])
        t1 = time.perf_counter()
        scores = self.score_matrix(q)
        out = [self._answer(it, q[j], scores[j], exact[j]) for j, it in enumerate(items)]
        t2 = time.perf_counter()
        for result in out:
            result["timing_ms"] = {
                "encode": (t1 - t0) * 1e3,
                "search": (t2 - t1) * 1e3,
                "batch": len(items),
            }
        return out

    def _answer(self, item: QueryItem, q: np.ndarray, scores: np.ndarray, exact: bool) -> dict:
        mask = self.mask(item.filters)
        candidates = scores if mask is None else np.where(mask, scores, -np.inf)
        rows = top_rows(candidates, item.k)
        top = scores[rows]
        z = self.index.z_scores(q[None], top[None].astype(np.float64))[0]
        pct = percentiles(scores, top)
        hits = [
            hit_dict(Hit(rank, int(r), self.samples[r].id, float(s), float(zz), self.samples[r]), p)
            for rank, (r, s, zz, p) in enumerate(zip(rows, top, z, pct), start=1)
        ]
        query = item.sample
        gt = self.ground_truth
        lo, hi = float(scores.min()), float(scores.max())
        return {
            "query": {"id": query.id, "prompt": query.prompt, "response": query.response},
            "k": item.k,
            "filters": {k: list(v) for k, v in item.filters.items()},
            "n_pool": self.index.n,
            "n_candidates": self.index.n if mask is None else int(mask.sum()),
            "pool_scores": {"mean": float(scores.mean()), "min": lo, "max": hi},
            "histogram": histogram(scores, item.bins, lo, hi),
            "hits": hits,
            "ground_truth": None if gt is None else gt.compare(query.id, scores, item.k),
            "groups": None if item.group_by is None else self._groups_of(item, scores),
            "query_gradient": exact,
        }

    def _groups_of(self, item: QueryItem, scores: np.ndarray) -> dict:
        """The query's influence per group of ``item.group_by``, over every pool score (the
        metadata filters do not apply)."""
        groups = self._field_groups(item.group_by)
        stats = group_stats(
            scores,
            groups.codes,
            len(groups.names),
            temperature=item.temperature,
            learned=self._learned.get(item.group_by),
        )
        table = GroupAttribution(
            groups,
            item.temperature,
            {k: v[None] for k, v in stats.items()},
            item.group_aggregate,
        ).table()
        return {
            "field": item.group_by,
            "temperature": item.temperature,
            "aggregate": item.group_aggregate,
            "n_missing": groups.n_missing,
            "missing_group": MISSING_GROUP,
            "rows": table,
        }

    # -- aggregation and the cleaned file
    def aggregate(self, queries: list[Sample], how: str, k: int) -> dict:
        """The pool ranked by ``how`` over ``queries`` (the ``filter`` use case; with the
        queries' own gradients where the server offers them); the top ``k`` rows, each with
        its closest query."""
        ranking = (self.exact or self.attributor).aggregate(queries, how)
        rows = []
        for h in ranking.top(self.index, k):
            closest = ranking.queries[ranking.top_query[h.row]]
            rows.append(
                {
                    "rank": h.rank,
                    **sample_dict(h.sample, h.row),
                    "score": h.score,
                    "z": h.z,
                    "top_query_id": closest.id,
                    "top_query_score": float(ranking.top_query_score[h.row]),
                }
            )
        return {"how": how, "n_queries": len(queries), "n_pool": self.index.n, "rows": rows}

    def kept_file(self, remove_ids: list[str], fmt: str = "jsonl") -> tuple[bytes, int]:
        """The pool without ``remove_ids``, as ``filter`` writes it (rows as in the source
        files), encoded as a ``fmt`` file in memory; and how many rows it holds."""
        unknown = [i for i in remove_ids if i not in self.row_of]
        if unknown:
            shown = ", ".join(f"'{i}'" for i in unknown[:5]) + (", ..." if len(unknown) > 5 else "")
            raise InputError(f"{len(unknown)} ids are not in the pool: {shown}")
        kept, _ = split_pool(self.index, [self.row_of[i] for i in remove_ids])
        return table_bytes(kept, fmt, schema=parquet_schema(self.index, fmt)), len(kept)
