"""``filter``: remove the pool samples most influential on unwanted outputs.

The pool is ranked by aggregated influence over the unwanted queries
(:meth:`~influcoder.attribution.attributor.Attributor.aggregate`); the top share (``top_k``,
``fraction`` or ``threshold``) is removed and every other row is written back *as it was in
the source file*, in the source's format, with the removed rows beside it for review.
"""

from __future__ import annotations

import logging
import math
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.attribution.attributor import Attributor, Ranking
from influcoder.attribution.build import Source
from influcoder.attribution.index import Index
from influcoder.errors import InputError
from influcoder.io.samples import Fields, Sample, read_rows, row_to_sample
from influcoder.io.tables import output_format, write_table

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class FilterResult:
    """What :func:`filter_pool` did."""

    out: Path
    removed_path: Path
    n_pool: int
    removed: list[dict]
    rule: str
    cutoff: float | None

    @property
    def n_removed(self) -> int:
        return len(self.removed)

    @property
    def removed_ids(self) -> list[str]:
        """The ids of the removed pool samples, best (highest score) first."""
        return [r["id"] for r in self.removed]


def removed_path_for(out: str | os.PathLike) -> Path:
    """``clean.jsonl`` -> ``clean.removed.jsonl``."""
    out = Path(out)
    return out.with_name(out.stem + ".removed.jsonl")


def _rebuilt_row(sample: Sample, fields: Fields) -> dict:
    """A row in the source's own field names, from a sample (when the source is gone)."""
    if sample.messages is not None:
        row = {
            fields.id: sample.id,
            fields.messages: [dict(m) for m in sample.messages]
            + [{"role": "assistant", "content": sample.response}],
        }
    else:
        row = {fields.id: sample.id, fields.prompt: sample.prompt, fields.response: sample.response}
    return {**row, **sample.meta}


def _segment_rows(index: Index, seg: int) -> list[dict]:
    """The rows a segment was built from, as they are in its source file (checked against
    the index), or rebuilt from its samples where the source cannot be read again."""
    store = index.segments[seg]
    source = Source(**index.meta["segments"][seg]["source"])
    fields = Fields(**source.fields)
    samples = store.samples
    if source.path is None or source.format in (None, "hf") or not Path(source.path).is_file():
        logger.info(
            f"segment {seg}: source {source.path or '<stdin or samples>'} cannot be read again; "
            f"writing its rows as rebuilt from the index"
        )
        return [_rebuilt_row(s, fields) for s in samples]
    rows = []
    for line, row in read_rows(source.path):
        if len(rows) == len(samples):
            break
        got, want = row_to_sample(row, fields, source.path, line), samples[len(rows)]
        if (got.id, got.prompt, got.response) != (want.id, want.prompt, want.response):
            raise InputError(
                f"changed since it was indexed (sample '{got.id}' here, "
                f"'{want.id}' in the index); restore it or rebuild the index",
                path=source.path,
                line=line,
            )
        rows.append(row)
    if len(rows) != len(samples):
        raise InputError(
            f"has {len(rows)} samples, the index {len(samples)}: changed since "
            f"it was indexed; restore it or rebuild the index",
            path=source.path,
        )
    return rows


def parquet_schema(index: Index, out_fmt: str):
    """The schema of the single Parquet source, to write kept rows with the same types."""
    sources = [Source(**s["source"]) for s in index.meta["segments"]]
    if (
        out_fmt != "parquet"
        or len(sources) != 1
        or sources[0].format != "parquet"
        or not Path(sources[0].path).is_file()
    ):
        return None
    import pyarrow.parquet as pq

    return pq.read_schema(sources[0].path)


def check_not_input(paths: list[Path], index: Index, inputs) -> None:
    """Refuse to write any of ``paths`` over the pool's source files, ``inputs`` or the index
    (``filter`` and ``select`` write their results with it)."""
    protected = {
        Path(s["source"]["path"]).resolve()
        for s in index.meta["segments"]
        if s["source"]["path"] and s["source"]["format"] != "hf"
    }
    protected |= {Path(p).resolve() for p in inputs if p and p != "-"}
    root = index.path.resolve()
    for p in paths:
        r = p.resolve()
        if r in protected or r == root or root in r.parents:
            raise InputError(
                "is an input of this run (the pool's data, the queries, or the "
                "index); choose another --out",
                path=str(p),
            )


def select(
    ranking: Ranking,
    *,
    top_k: int | None = None,
    fraction: float | None = None,
    threshold: float | None = None,
) -> tuple[np.ndarray, str]:
    """Rows to remove (best first) under exactly one rule, and the rule in words."""
    given = [r for r in (top_k, fraction, threshold) if r is not None]
    if len(given) != 1:
        raise ValueError("give exactly one of top_k, fraction, threshold")
    n = len(ranking.scores)
    if top_k is not None:
        if not 1 <= top_k < n:
            raise ValueError(f"top_k must be between 1 and {n - 1} (the pool holds {n})")
        return ranking.order[:top_k], f"the {top_k} highest {ranking.how} scores"
    if fraction is not None:
        if not 0 < fraction < 1:
            raise ValueError("fraction must be between 0 and 1")
        count = min(n - 1, max(1, math.ceil(fraction * n)))
        return ranking.order[:count], f"the top {fraction:.2%} by {ranking.how} score"
    count = int((ranking.scores >= threshold).sum())
    if count == n:
        raise ValueError(
            f"threshold {threshold} would remove every pool sample (lowest "
            f"{ranking.how} score {ranking.scores.min():.4f}); raise it"
        )
    return ranking.order[:count], f"{ranking.how} score >= {threshold}"


def split_pool(index: Index, rows_removed) -> tuple[list[dict], dict[int, dict]]:
    """The pool's rows as they are in the files it was built from (see
    :func:`_segment_rows`), split into those kept (in pool order) and those removed
    (``{pool row: original row}``). Reads only; ``filter_pool`` and the server's download of
    a cleaned file both build on it."""
    gone = {int(r) for r in rows_removed}
    kept, originals = [], {}
    for seg in range(len(index.segments)):
        rows = _segment_rows(index, seg)
        offset = int(index.offsets[seg])
        for i, row in enumerate(rows):
            if offset + i in gone:
                originals[offset + i] = row
            else:
                kept.append(row)
    return kept, originals


def filter_pool(
    attributor: Attributor,
    queries,
    out: str | os.PathLike,
    *,
    top_k: int | None = None,
    fraction: float | None = None,
    threshold: float | None = None,
    how: str = "mean",
    inputs=(),
) -> FilterResult:
    """Remove from the pool the samples that most resemble ``queries`` (examples of
    unwanted behaviour) and write the rest to ``out``.

    The pool is scored exactly (every vector) with the ``how`` aggregate; exactly one of
    ``top_k`` (that many), ``fraction`` (that share of the pool) and ``threshold`` (every
    score at least this) chooses what goes. ``out`` gets the kept rows, in pool order, as they
    are in the files the index was built from (format by ``out``'s extension);
    ``<out stem>.removed.jsonl`` gets the removed ones, best first, each with its scores and
    why. ``out`` may not be one of the inputs (``inputs``: more paths to protect); both files
    are written atomically.
    """
    out = Path(out)
    fmt = output_format(out)
    removed_path = removed_path_for(out)
    check_not_input([out, removed_path], attributor.index, inputs)
    index = attributor.index
    ranking = attributor.aggregate(queries, how)
    rows_removed, rule = select(ranking, top_k=top_k, fraction=fraction, threshold=threshold)
    kept, originals = split_pool(index, rows_removed)
    n_queries = len(ranking.queries)
    removed = []
    for rank, r in enumerate(rows_removed.tolist(), start=1):
        seg, _ = index.locate(r)
        query = ranking.queries[ranking.top_query[r]]
        removed.append(
            {
                "rank": rank,
                "id": index.sample(r).id,
                "score": float(ranking.scores[r]),
                "z": float(ranking.z[r]),
                "aggregate": how,
                "rule": rule,
                "why": (
                    f"{how} {index.score_name} {ranking.scores[r]:.4f} over {n_queries} "
                    f"queries, rank {rank} of {index.n} (z {ranking.z[r]:+.1f}); closest query "
                    f"'{query.id}' ({ranking.top_query_score[r]:.4f})"
                ),
                "top_query": {"id": query.id, "score": float(ranking.top_query_score[r])},
                "segment": index.meta["segments"][seg]["name"],
                "source": index.meta["segments"][seg]["source"]["path"],
                "row": originals[r],
            }
        )
    write_table(out, kept, schema=parquet_schema(index, fmt))
    write_table(removed_path, removed)
    cutoff = float(ranking.scores[rows_removed[-1]]) if len(rows_removed) else None
    return FilterResult(out, removed_path, index.n, removed, rule, cutoff)
