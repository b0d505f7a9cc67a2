"""Attribution against an index: the most influential pool samples for each query, one
score per pool sample over many queries, and the data-cleaning filter built on it.

Scores are cosines of encoder embeddings (the distilled stand-in for gradient influence):
1 means the same direction, 0 unrelated, negative opposed. Their absolute level depends on
the encoder (a general-purpose MiniLM gives unrelated chat texts 0.0-0.3), so every score
comes with a **z-score**: how many standard deviations it lies above the average score of the
whole pool for that query (from the pool's mean and covariance, stored with the index). A z of
4 or more is rare by chance in any pool; see docs/ATTRIBUTION.md for choosing a threshold.

Queries are :class:`~influcoder.io.samples.Sample` objects (encoded as prompt, blank line,
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

import json
import os
import sys
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.attribution.index import Index, check_encoder, open_index
from influcoder.attribution.query_gradients import QueryGradients, check_dim
from influcoder.encoders.backends import FastEncoder, encoder_fingerprint, query_encoder
from influcoder.encoders.onnx_query import LightEncoder
from influcoder.errors import InflucoderError, InputError
from influcoder.io.samples import Fields, Sample, content_id, read_rows, row_to_sample
from influcoder.metrics import AGGREGATES


def text_query(text: str, prompt: str = "") -> Sample:
    """A query from a response text (and optionally the prompt it answered)."""
    if not isinstance(text, str) or not text.strip():
        raise InputError("empty query text")
    return Sample(id=content_id(prompt, text), prompt=prompt, response=text)


def as_queries(queries) -> list[Sample]:
    """Samples from a list of :class:`Sample` or strings (see :func:`text_query`); one
    string or sample alone is one query."""
    if isinstance(queries, (str, Sample)):
        queries = [queries]
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
            raise InputError(
                "missing or empty (a query needs at least a response)",
                path=path,
                line=line,
                field=fields.response,
            )
        raw_id = row.get(fields.id)
        meta = {
            k: v for k, v in row.items() if k not in (fields.id, fields.prompt, fields.response)
        }
        return Sample(
            id=content_id("", response) if raw_id in (None, "") else str(raw_id),
            prompt="",
            response=response,
            meta=meta,
        )
    return row_to_sample(row, fields, path, line)


def read_queries(
    source: str | None = None,
    texts=(),
    *,
    prompt: str = "",
    fields: Fields | None = None,
    limit: int | None = None,
) -> list[Sample]:
    """Queries from a data file (rows as in a pool, the prompt optional), ``-`` (stdin: a
    line holding a JSON object is such a row, any other non-empty line a response text), a
    ``.txt`` file (one response text per line) and ``texts`` (response texts, each with
    ``prompt``)."""
    fields = fields or Fields()
    out: list[Sample] = []
    if source == "-" or (source is not None and Path(source).suffix.lower() == ".txt"):
        name = "<stdin>" if source == "-" else source
        try:
            lines = (
                sys.stdin.read().splitlines()
                if source == "-"
                else Path(source).read_text(encoding="utf-8").splitlines()
            )
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
            out.append(
                query_from_row(row, fields, name, lineno)
                if isinstance(row, dict)
                else text_query(line)
            )
    elif source is not None:
        out.extend(query_from_row(row, fields, source, line) for line, row in read_rows(source))
    out.extend(text_query(t, prompt) for t in texts)
    if limit is not None:
        out = out[:limit]
    if not out:
        raise InputError("no queries", path=source)
    return out


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
        return [
            Hit(rank, int(r), s.id, float(self.scores[r]), float(self.z[r]), s)
            for rank, (r, s) in enumerate(zip(rows, samples), start=1)
        ]


class Attributor:
    """Queries -> influential pool samples, through an index and its encoder.

    Example::

        >>> attributor = Attributor.load("runs/index")
        >>> [result] = attributor.attribute(["The capital of France is Paris."], k=3)
        >>> [(h.rank, h.id, round(h.score, 3)) for h in result.hits]
        [(1, 's0', 0.912), (2, 's7', 0.604), (3, 's3', 0.311)]
        >>> ranking = attributor.aggregate(unwanted_examples, how="mean")
    """

    def __init__(
        self,
        index: Index,
        encoder: FastEncoder | LightEncoder | QueryGradients,
        encoder_name: str | None = None,
    ):
        self.index = index
        self.encoder = encoder
        #: the encoder's name or directory (the index's own when None)
        self.encoder_name = encoder_name or index.encoder_name

    def with_query_gradients(self, store, *, device: str = "cpu") -> Attributor:
        """The same index and encoder with each query's own gradient, taken like the gradient
        store ``store``, on the encoder's gradient basis
        (:class:`~influcoder.attribution.query_gradients.QueryGradients`)."""
        queries = QueryGradients(self.encoder_dir, store, device=device)
        check_dim(queries.basis, self.index.dim, self.encoder_name)
        return type(self)(self.index, queries, self.encoder_name)

    @property
    def encoder_dir(self) -> str:
        """The encoder's directory (a bundled name resolved)."""
        from influcoder.encoders.directory import resolve_encoder

        return resolve_encoder(self.encoder_name)

    def pooler(self, option: str | None = None):
        """The encoder's learned pooler (:mod:`influcoder.encoders.pooler`), or None when it
        has none; with ``option``, its absence is refused (InputError naming ``option`` and
        the encoder's folder)."""
        from influcoder.encoders.pooler import read_pooler, require_pooler

        path = self.encoder_dir
        if option is not None:
            return require_pooler(path, option)
        return read_pooler(path) if os.path.isdir(path) else None

    @classmethod
    def load(
        cls,
        index_dir: Index | str | os.PathLike,
        encoder: str | os.PathLike | None = None,
        *,
        backend: str = "auto",
        batch_size: int | None = None,
        nprobe: int | None = None,
        ef_search: int | None = None,
        threads: int | None = None,
        device: str = "cpu",
        query_gradients: str | os.PathLike | None = None,
    ) -> Attributor:
        """Open an index (an :class:`Index` or its directory) with its encoder (``encoder``:
        None means the one it was built with; another one must have the same fingerprint).
        ``backend="auto"`` encodes queries with ONNX Runtime where it is installed
        (float32-exact; no torch is imported once the encoder's export is cached, see
        :mod:`influcoder.encoders.onnx_query`; ``threads``: its ONNX Runtime threads, see
        :class:`~influcoder.encoders.onnx_query.LightEncoder`), always on the CPU; the torch
        back ends run on ``device`` (a ``--device`` value). ``query_gradients``: a gradient
        store taken like the encoder's ground truth; queries are then their own gradients in
        the encoder's gradient basis (:mod:`influcoder.attribution.query_gradients`), the
        decoder running on ``device``."""
        search = {k: v for k, v in (("nprobe", nprobe), ("ef_search", ef_search)) if v is not None}
        index = open_index(index_dir, **search)
        encoder = None if encoder is None else os.fspath(encoder)
        name = encoder or index.encoder_name
        try:
            fingerprint = encoder_fingerprint(name)
        except InflucoderError as e:
            if encoder is not None:
                raise
            raise InflucoderError(
                f"the index was built with the encoder '{name}', which is "
                f"not found here ({e}); pass its new location with "
                f"--encoder"
            ) from None
        check_encoder({**index.meta, "path": str(index.path)}, name, fingerprint)
        if query_gradients is not None:
            return cls(index, None, name).with_query_gradients(query_gradients, device=device)
        encoder = query_encoder(
            name,
            backend=backend,
            fingerprint=fingerprint,
            max_seq_length=index.setup["max_seq_length"],
            batch_size=batch_size or index.arguments.batch_size,
            threads=threads,
            device=device,
        )
        return cls(index, encoder, name)

    def encode(self, queries) -> tuple[list[Sample], np.ndarray]:
        samples = as_queries(queries)
        return samples, self.encoder.encode_samples(samples)

    def _clamp(self, k: int) -> int:
        if k < 1:
            raise ValueError(f"k must be >= 1, got {k}")
        if k > self.index.n:
            warnings.warn(
                f"k={k} is more than the pool's {self.index.n} samples; returning "
                f"all {self.index.n}",
                stacklevel=3,
            )
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
        sums, top_query, top_score = pool_sums_and_best(self.index, q)
        scores = top_score.astype(np.float64) if how == "max" else sums
        if how == "mean":
            scores /= len(samples)
        sd = scores.std()
        z = (scores - scores.mean()) / sd if sd > 0 else np.zeros_like(scores)
        order = np.lexsort((np.arange(n), -scores))
        return Ranking(how, samples, scores, z, top_query, top_score, order)


def pool_sums_and_best(index, q: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Each pool row's sum of scores over the unit query vectors ``q`` (``n_query x dim``;
    float64), its best query and that query's score: every pool vector of ``index``, read
    once."""
    n = index.n
    sums = np.empty(n, dtype=np.float64)
    top_query = np.empty(n, dtype=np.int64)
    top_score = np.empty(n, dtype=np.float32)
    for start, chunk in index.iter_chunks():
        s = chunk @ q.T
        stop = start + len(chunk)
        best = s.argmax(axis=1)
        top_query[start:stop] = best
        top_score[start:stop] = s[np.arange(len(s)), best]
        sums[start:stop] = s.sum(axis=1, dtype=np.float64)
    return sums, top_query, top_score


def attribution_rows(results: list[Attribution]) -> list[dict]:
    return [
        {
            "query_id": r.query.id,
            "query_prompt": r.query.prompt,
            "query_response": r.query.response,
            "rank": h.rank,
            "id": h.id,
            "score": h.score,
            "z": h.z,
            "prompt": h.sample.prompt,
            "response": h.sample.response,
        }
        for r in results
        for h in r.hits
    ]


def ranking_rows(ranking: Ranking, index: Index, k: int | None = None) -> list[dict]:
    return [
        {
            "rank": h.rank,
            "id": h.id,
            "score": h.score,
            "z": h.z,
            "aggregate": ranking.how,
            "top_query_id": ranking.queries[ranking.top_query[h.row]].id,
            "top_query_score": float(ranking.top_query_score[h.row]),
            "prompt": h.sample.prompt,
            "response": h.sample.response,
        }
        for h in ranking.top(index, k)
    ]
