"""Attribution against an index: the most influential pool samples for each query, one
score per pool sample over many queries, and the data-cleaning filter built on it.

Scores are cosines of encoder embeddings (the distilled stand-in for gradient influence):
1 means the same direction, 0 unrelated, negative opposed. Their absolute level depends on
the encoder (a general-purpose MiniLM gives unrelated chat texts 0.0-0.3), so every score
comes with a **z-score**: how many standard deviations it lies above the average score of the
whole pool for that query (from the pool's mean and covariance, stored with the index). A z of
4 or more is rare by chance in any pool; see docs/ATTRIBUTION.md for choosing a threshold.

Queries are :class:`~influcoder.data.Sample` objects (encoded as prompt, blank line,
response, exactly like the pool) or plain strings, taken as a *response* with an empty prompt:
the model output whose origin is asked about.

Aggregates (:meth:`Attributor.aggregate`), one score per pool sample over all queries:

* ``mean`` (the default for filtering): a sample's average cosine to the queries. It rewards
  samples that resemble the unwanted behaviour as a whole, and its noise shrinks as queries
  are added. Equal to the cosine with the queries' mean vector, times its length.
* ``sum``: ``mean`` times the number of queries (the same ranking; a scale that grows with
  the query set).
* ``max``: a sample's strongest cosine to any one query. It finds a sample that drives one
  example (a near-copy of it), but its noise floor rises with the number of queries.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .data import FORMATS, Fields, Sample, content_id, encoder_text, read_rows, row_to_sample
from .errors import InflucoderError, InputError
from .fast_encoder import FastEncoder, encoder_fingerprint
from .index import Index, Source, check_encoder
from .store import atomic_write_bytes

AGGREGATES = ("mean", "sum", "max")
OUTPUT_FORMATS = ("jsonl", "json", "csv", "parquet")


# ---------------------------------------------------------------------------------------------
# Queries


def text_query(text: str, prompt: str = "") -> Sample:
    """A query from a response text (and optionally the prompt it answered)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("empty query text")
    return Sample(id=content_id(prompt, text), prompt=prompt, response=text)


def as_queries(queries) -> list[Sample]:
    """Samples from a list of :class:`Sample` or strings (see :func:`text_query`)."""
    out = [q if isinstance(q, Sample) else text_query(q) for q in queries]
    if not out:
        raise InputError("no queries")
    return out


def query_from_row(row, fields: Fields, path: str, line: int) -> Sample:
    """A data row as a query: like a pool sample, except that the prompt may be missing or
    empty (a response-only query)."""
    if isinstance(row, dict) and fields.messages not in row and not row.get(fields.prompt):
        response = row.get(fields.response)
        if not isinstance(response, str) or not response.strip():
            raise InputError("missing or empty (a query needs at least a response)", path=path,
                             line=line, field=fields.response)
        raw_id = row.get(fields.id)
        meta = {k: v for k, v in row.items() if k not in (fields.id, fields.prompt,
                                                          fields.response)}
        return Sample(id=content_id("", response) if raw_id in (None, "") else str(raw_id),
                      prompt="", response=response, meta=meta)
    return row_to_sample(row, fields, path, line)


def read_queries(source: str | None = None, texts=(), *, prompt: str = "",
                 fields: Fields | None = None, limit: int | None = None) -> list[Sample]:
    """Queries from a data file (rows as in a pool, the prompt optional), ``-`` (stdin: a
    line holding a JSON object is such a row, any other non-empty line a response text), a
    ``.txt`` file (one response text per line) and ``texts`` (response texts, each with
    ``prompt``)."""
    fields = fields or Fields()
    out: list[Sample] = []
    if source == "-" or (source is not None and Path(source).suffix.lower() == ".txt"):
        name = "<stdin>" if source == "-" else source
        try:
            lines = sys.stdin.read().splitlines() if source == "-" else \
                Path(source).read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError) as e:
            raise InputError(f"cannot read: {e}", path=name) from None
        for lineno, line in enumerate(lines, start=1):
            if not line.strip():
                continue
            row = None
            if line.lstrip().startswith("{"):
                try:
                    row = json.loads(line)
                except json.JSONDecodeError:
                    row = None
            out.append(query_from_row(row, fields, name, lineno) if isinstance(row, dict)
                       else text_query(line))
    elif source is not None:
        out.extend(query_from_row(row, fields, source, line) for line, row in read_rows(source))
    out.extend(text_query(t, prompt) for t in texts)
    if limit is not None:
        out = out[:limit]
    if not out:
        raise InputError("no queries", path=source)
    return out


# ---------------------------------------------------------------------------------------------
# Results


@dataclass(frozen=True)
class Hit:
    """One pool sample in a result: its place, scores and text."""

    rank: int
    row: int
    id: str
    score: float
    z: float
    sample: Sample


@dataclass(frozen=True)
class Attribution:
    """The top pool samples for one query, best first."""

    query: Sample
    hits: list[Hit]


@dataclass(frozen=True)
class Ranking:
    """One aggregate score per pool sample (``scores`` in pool row order).

    ``z``: standard deviations above the pool's mean aggregate score; ``top_query`` and
    ``top_query_score``: the query each sample scores highest with (why it ranks where it
    does); ``order``: pool rows, best first (ties: lower row first)."""

    how: str
    queries: list[Sample]
    scores: np.ndarray
    z: np.ndarray
    top_query: np.ndarray
    top_query_score: np.ndarray
    order: np.ndarray

    def top(self, index: Index, k: int | None = None) -> list[Hit]:
        rows = self.order if k is None else self.order[:k]
        samples = [index.sample(int(r)) for r in rows]
        return [Hit(rank, int(r), s.id, float(self.scores[r]), float(self.z[r]), s)
                for rank, (r, s) in enumerate(zip(rows, samples), start=1)]


# ---------------------------------------------------------------------------------------------
# The attributor


class Attributor:
    """Queries -> influential pool samples, through an index and its encoder.

    Example::

        >>> attributor = Attributor.load("runs/index")
        >>> [result] = attributor.attribute(["The capital of France is Paris."], k=3)
        >>> [(h.rank, h.id, round(h.score, 3)) for h in result.hits]
        [(1, 's0', 0.912), (2, 's7', 0.604), (3, 's3', 0.311)]
        >>> ranking = attributor.aggregate(unwanted_examples, how="mean")
    """

    def __init__(self, index: Index, encoder: FastEncoder):
        self.index = index
        self.encoder = encoder

    @classmethod
    def load(cls, index_dir: str | os.PathLike, encoder: str | None = None, *,
             backend: str = "auto", batch_size: int | None = None, nprobe: int | None = None,
             ef_search: int | None = None) -> "Attributor":
        """Open an index with its encoder (``encoder``: None means the one it was built
        with; another one must have the same fingerprint)."""
        index = Index(index_dir, nprobe=nprobe, ef_search=ef_search)
        name = encoder or index.encoder_name
        try:
            fingerprint = encoder_fingerprint(name)
        except InflucoderError as e:
            if encoder is not None:
                raise
            raise InflucoderError(f"the index was built with the encoder '{name}', which is "
                                  f"not found here ({e}); pass its new location with "
                                  f"--encoder") from None
        check_encoder({**index.meta, "path": str(index.path)}, name, fingerprint)
        fast = FastEncoder(name, backend=backend, max_seq_length=index.setup["max_seq_length"],
                           batch_size=batch_size or index.arguments.batch_size)
        return cls(index, fast)

    def encode(self, queries) -> tuple[list[Sample], np.ndarray]:
        samples = as_queries(queries)
        return samples, self.encoder.encode([encoder_text(s) for s in samples])

    def _clamp(self, k: int) -> int:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > self.index.n:
            warnings.warn(f"k={k} is more than the pool's {self.index.n} samples; returning "
                          f"all {self.index.n}", stacklevel=3)
        return min(k, self.index.n)

    def attribute(self, queries, k: int = 10) -> list[Attribution]:
        """The ``k`` pool samples most similar to each query (a ``k`` larger than the pool
        is clamped, with a warning)."""
        k = self._clamp(k)
        samples, q = self.encode(queries)
        scores, rows = self.index.search(q, k)
        z = self.index.z_scores(q, scores)
        out = []
        for j, query in enumerate(samples):
            hits = []
            for rank, (r, s, zz) in enumerate(zip(rows[j], scores[j], z[j]), start=1):
                if r < 0:
                    break
                sample = self.index.sample(int(r))
                hits.append(Hit(rank, int(r), sample.id, float(s), float(zz), sample))
            out.append(Attribution(query, hits))
        return out

    def aggregate(self, queries, how: str = "mean") -> Ranking:
        """One score per pool sample over all queries (exact: every pool vector is read)."""
        if how not in AGGREGATES:
            raise ValueError(f"how must be one of {AGGREGATES}, got {how!r}")
        samples, q = self.encode(queries)
        n = self.index.n
        scores = np.empty(n, dtype=np.float64)
        top_query = np.empty(n, dtype=np.int64)
        top_score = np.empty(n, dtype=np.float32)
        for start, chunk in self.index.iter_chunks():
            s = chunk @ q.T
            stop = start + len(chunk)
            best = s.argmax(axis=1)
            top_query[start:stop] = best
            top_score[start:stop] = s[np.arange(len(s)), best]
            if how == "max":
                scores[start:stop] = top_score[start:stop]
            else:
                scores[start:stop] = s.sum(axis=1, dtype=np.float64)
        if how == "mean":
            scores /= len(samples)
        sd = scores.std()
        z = (scores - scores.mean()) / sd if sd > 0 else np.zeros_like(scores)
        order = np.lexsort((np.arange(n), -scores))
        return Ranking(how, samples, scores, z, top_query, top_score, order)


# ---------------------------------------------------------------------------------------------
# Writing tables


def output_format(path: str | os.PathLike) -> str:
    fmt = FORMATS.get(Path(path).suffix.lower())
    if fmt not in OUTPUT_FORMATS:
        raise InputError(f"unknown output type '{Path(path).suffix}': use .jsonl, .json, .csv "
                         f"or .parquet", path=str(path))
    return fmt


def _cell(value):
    if value is None or isinstance(value, (str, int, float, bool)):
        return value
    return json.dumps(value, ensure_ascii=False)


def write_table(path: str | os.PathLike, rows: list[dict], *, schema=None) -> None:
    """Write ``rows`` atomically as JSONL, JSON, CSV or Parquet (by the extension). CSV cells
    that are lists or objects are written as JSON."""
    fmt = output_format(path)
    if fmt == "jsonl":
        data = "".join(json.dumps(r, ensure_ascii=False) + "\n" for r in rows).encode("utf-8")
    elif fmt == "json":
        data = (json.dumps(rows, ensure_ascii=False, indent=1) + "\n").encode("utf-8")
    elif fmt == "csv":
        columns = list(dict.fromkeys(k for r in rows for k in r))
        buf = io.StringIO(newline="")
        writer = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
        writer.writeheader()
        writer.writerows({k: _cell(v) for k, v in r.items()} for r in rows)
        data = buf.getvalue().encode("utf-8")
    else:
        import pyarrow as pa
        import pyarrow.parquet as pq

        table = pa.Table.from_pylist(rows, schema=schema)
        sink = io.BytesIO()
        pq.write_table(table, sink)
        data = sink.getvalue()
    Path(path).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_bytes(path, data)


def attribution_rows(results: list[Attribution]) -> list[dict]:
    return [{"query_id": r.query.id, "query_prompt": r.query.prompt,
             "query_response": r.query.response, "rank": h.rank, "id": h.id,
             "score": h.score, "z": h.z, "prompt": h.sample.prompt,
             "response": h.sample.response} for r in results for h in r.hits]


def ranking_rows(ranking: Ranking, index: Index, k: int | None = None) -> list[dict]:
    return [{"rank": h.rank, "id": h.id, "score": h.score, "z": h.z, "aggregate": ranking.how,
             "top_query_id": ranking.queries[ranking.top_query[h.row]].id,
             "top_query_score": float(ranking.top_query_score[h.row]),
             "prompt": h.sample.prompt, "response": h.sample.response}
            for h in ranking.top(index, k)]


# ---------------------------------------------------------------------------------------------
# Filtering


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


def removed_path_for(out: str | os.PathLike) -> Path:
    """``clean.jsonl`` -> ``clean.removed.jsonl``."""
    out = Path(out)
    return out.with_name(out.stem + ".removed.jsonl")


def _rebuilt_row(sample: Sample, fields: Fields) -> dict:
    """A row in the source's own field names, from a sample (when the source is gone)."""
    if sample.messages is not None:
        row = {fields.id: sample.id, fields.messages: [dict(m) for m in sample.messages]
               + [{"role": "assistant", "content": sample.response}]}
    else:
        row = {fields.id: sample.id, fields.prompt: sample.prompt,
               fields.response: sample.response}
    return {**row, **sample.meta}


def _segment_rows(index: Index, seg: int, log) -> list[dict]:
    """The rows a segment was built from, as they are in its source file (checked against
    the index), or rebuilt from its samples where the source cannot be read again."""
    store = index.segments[seg]
    source = Source(**index.meta["segments"][seg]["source"])
    fields = Fields(**source.fields)
    samples = store.samples
    if source.path is None or source.format in (None, "hf") or not Path(source.path).is_file():
        log(f"segment {seg}: source {source.path or '<stdin or samples>'} cannot be read again; "
            f"writing its rows as rebuilt from the index")
        return [_rebuilt_row(s, fields) for s in samples]
    rows = []
    for line, row in read_rows(source.path):
        if len(rows) == len(samples):
            break
        got, want = row_to_sample(row, fields, source.path, line), samples[len(rows)]
        if (got.id, got.prompt, got.response) != (want.id, want.prompt, want.response):
            raise InputError(f"changed since it was indexed (sample '{got.id}' here, "
                             f"'{want.id}' in the index); restore it or rebuild the index",
                             path=source.path, line=line)
        rows.append(row)
    if len(rows) != len(samples):
        raise InputError(f"has {len(rows)} samples, the index {len(samples)}: changed since "
                         f"it was indexed; restore it or rebuild the index", path=source.path)
    return rows


def _parquet_schema(index: Index, out_fmt: str):
    """The schema of the single Parquet source, to write kept rows with the same types."""
    sources = [Source(**s["source"]) for s in index.meta["segments"]]
    if out_fmt != "parquet" or len(sources) != 1 or sources[0].format != "parquet" \
            or not Path(sources[0].path).is_file():
        return None
    import pyarrow.parquet as pq

    return pq.read_schema(sources[0].path)


def _check_not_input(paths: list[Path], index: Index, inputs) -> None:
    protected = {Path(s["source"]["path"]).resolve() for s in index.meta["segments"]
                 if s["source"]["path"] and s["source"]["format"] != "hf"}
    protected |= {Path(p).resolve() for p in inputs if p and p != "-"}
    root = index.path.resolve()
    for p in paths:
        r = p.resolve()
        if r in protected or r == root or root in r.parents:
            raise InputError("is an input of this run (the pool's data, the queries, or the "
                             "index); choose another --out", path=str(p))


def select(ranking: Ranking, *, top_k: int | None = None, fraction: float | None = None,
           threshold: float | None = None) -> tuple[np.ndarray, str]:
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
        raise ValueError(f"threshold {threshold} would remove every pool sample (lowest "
                         f"{ranking.how} score {ranking.scores.min():.4f}); raise it")
    return ranking.order[:count], f"{ranking.how} score >= {threshold}"


def filter_pool(attributor: Attributor, queries, out: str | os.PathLike, *,
                top_k: int | None = None, fraction: float | None = None,
                threshold: float | None = None, how: str = "mean", inputs=(),
                log=print) -> FilterResult:
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
    _check_not_input([out, removed_path], attributor.index, inputs)
    index = attributor.index
    ranking = attributor.aggregate(queries, how)
    rows_removed, rule = select(ranking, top_k=top_k, fraction=fraction, threshold=threshold)
    gone = set(rows_removed.tolist())
    kept, originals = [], {}
    for seg in range(len(index.segments)):
        rows = _segment_rows(index, seg, log)
        offset = int(index.offsets[seg])
        for i, row in enumerate(rows):
            if offset + i in gone:
                originals[offset + i] = row
            else:
                kept.append(row)
    n_queries = len(ranking.queries)
    removed = []
    for rank, r in enumerate(rows_removed.tolist(), start=1):
        seg, _ = index.locate(r)
        query = ranking.queries[ranking.top_query[r]]
        removed.append({
            "rank": rank, "id": index.sample(r).id, "score": float(ranking.scores[r]),
            "z": float(ranking.z[r]), "aggregate": how, "rule": rule,
            "why": (f"{how} cosine {ranking.scores[r]:.4f} over {n_queries} queries, rank "
                    f"{rank} of {index.n} (z {ranking.z[r]:+.1f}); closest query "
                    f"'{query.id}' ({ranking.top_query_score[r]:.4f})"),
            "top_query": {"id": query.id, "score": float(ranking.top_query_score[r])},
            "segment": index.meta["segments"][seg]["name"],
            "source": index.meta["segments"][seg]["source"]["path"], "row": originals[r]})
    write_table(out, kept, schema=_parquet_schema(index, fmt))
    write_table(removed_path, removed)
    cutoff = float(ranking.scores[rows_removed[-1]]) if len(rows_removed) else None
    return FilterResult(out, removed_path, index.n, removed, rule, cutoff)
