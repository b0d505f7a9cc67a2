"""The JSON the server accepts and answers (pydantic models: validation, the response
models of every route, and so the OpenAPI description).

A query is ``{"prompt": ..., "response": ...}`` (a sample, prompt optional) or ``{"text":
...}`` (a model output alone, as ``attribute --text`` takes it); ``id`` names it (a gradient
store sample's id lets ``--ground-truth`` compare rankings). Unknown top-level fields are
refused, so a misspelt ``top_k`` is an error rather than silently ignored; a query's own
unknown fields (the other columns of an uploaded row) are ignored.

The answers' models forbid extra fields, so a field the service adds without a model here is a
500 in the tests, never an undocumented key.
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from influcoder.attribution.settings import (
    DEFAULT_GROUP_AGGREGATE,
    DEFAULT_GROUP_TEMPERATURE,
    GroupAggregate,
)
from influcoder.io.samples import Sample, content_id
from influcoder.metrics import Aggregate

#: The largest ``k`` of one query, and the most rows an aggregate returns.
MAX_K = 1000
MAX_ROWS = 10_000
#: Queries per batch request, and per aggregate.
MAX_BATCH = 256
MAX_AGGREGATE = 10_000
MAX_BINS = 200


def _refuse_surrogates(value, where: str = "") -> None:
    """A ValueError naming the first string (or key) in ``value`` that holds an unpaired
    surrogate: valid JSON (``"\\ud800"``) but no text, which no tokenizer, hash or answer
    can take."""
    if isinstance(value, str):
        try:
            value.encode("utf-8")
        except UnicodeEncodeError:
            raise ValueError(
                f"{where or 'a string'} holds an unpaired surrogate escape "
                f"(\\ud800-\\udfff): not text"
            ) from None
    elif isinstance(value, dict):
        for key, item in value.items():
            _refuse_surrogates(key, "a field name")
            _refuse_surrogates(item, f"field {key!r}" if isinstance(key, str) else where)
    elif isinstance(value, list):
        for item in value:
            _refuse_surrogates(item, where)


class _Request(BaseModel):
    @model_validator(mode="before")
    @classmethod
    def _text_only(cls, data):
        _refuse_surrogates(data)
        return data


class Query(_Request):
    """One model output to explain."""

    model_config = ConfigDict(extra="ignore")
    id: str | None = Field(None, description="the query's id (default: a hash of its text)")
    prompt: str = Field("", description="the prompt the response answered (may be empty)")
    response: str | None = Field(None, description="the model's output")
    text: str | None = Field(None, description="instead of response: an output alone")

    @model_validator(mode="after")
    def _one_text(self):
        if (self.response is None) == (self.text is None):
            raise ValueError("give exactly one of 'response' and 'text'")
        if not (self.response if self.text is None else self.text).strip():
            raise ValueError("the query text is empty")
        if self.text is not None and self.prompt:
            raise ValueError("'text' is a response alone; with a prompt, send 'response'")
        return self

    def sample(self) -> Sample:
        response = self.response if self.text is None else self.text
        return Sample(
            id=self.id or content_id(self.prompt, response), prompt=self.prompt, response=response
        )


Filters = dict[str, str | list[str]]
FILTERS_HELP = (
    "metadata field -> value (or list of values, any may match); every field "
    "must match. Values compare as text"
)


class _Options(_Request):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(
        10,
        ge=1,
        le=MAX_K,
        description="hits per query (fewer if the pool, or the filtered pool, is smaller)",
    )
    filters: Filters = Field(default_factory=dict, description=FILTERS_HELP)
    bins: int = Field(
        30,
        ge=0,
        le=MAX_BINS,
        description="histogram bins of the query's scores over the pool (0: none)",
    )
    group_by: str | None = Field(
        None,
        description="a metadata field: the query's influence "
        "per group of it (n, mean, sum, max, softmax, and learned when the encoder "
        "carries a learned pooler) over every pool score, filters aside; samples without "
        "it are the group '(missing)'",
    )
    group_aggregate: GroupAggregate = Field(
        DEFAULT_GROUP_AGGREGATE,
        description="the group score the groups are listed by; learned: the encoder's "
        "learned pooler (distill-runs --pooling attention), refused (400) without one "
        "(see group_aggregates in /info)",
    )
    query_gradient: bool | None = Field(
        None,
        description="true: compare the query's own gradient (the server's decoder, about a "
        "second) instead of the encoder's embedding; false: the encoder's; null: true where "
        "the server offers it (query_gradients in /info), refused (400) where it does not",
    )
    temperature: float = Field(
        DEFAULT_GROUP_TEMPERATURE,
        ge=1e-6,
        le=1e6,
        allow_inf_nan=False,
        description="of the softmax group score (AirRep's, see influcoder.attribution.groups); "
        "finite, between 1e-6 and 1e6 (a smaller one makes the scores over it overflow)",
    )

    def filter_tuples(self) -> dict[str, tuple[str, ...]]:
        return {name: (v,) if isinstance(v, str) else tuple(v) for name, v in self.filters.items()}


class AttributeRequest(Query, _Options):
    """One query and how to answer it."""

    model_config = ConfigDict(extra="forbid")


class BatchRequest(_Options):
    """Several queries, answered alike."""

    queries: list[Query] = Field(min_length=1, max_length=MAX_BATCH)


class AggregateRequest(_Request):
    """A set of unwanted outputs: the pool ranked by total influence on them."""

    model_config = ConfigDict(extra="forbid")
    queries: list[Query] = Field(min_length=1, max_length=MAX_AGGREGATE)
    how: Aggregate = Field("mean", description="mean, sum or max over the queries")
    k: int = Field(100, ge=1, le=MAX_ROWS, description="rows of the ranking returned")


class KeptRequest(_Request):
    """The pool without some samples, as ``filter`` writes it."""

    model_config = ConfigDict(extra="forbid")
    remove: list[str] = Field(description="ids of the pool samples to leave out")
    format: Literal["jsonl", "json", "csv", "parquet"] = "jsonl"


# -- answers


class _Answer(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ErrorResponse(_Answer):
    """Every error but 422: 400 (malformed JSON, not UTF-8, a request the pool cannot
    answer), 401 (token), 404, 405, 413 (body too large), 415 (not JSON)."""

    error: str = Field(description="what went wrong, for a person")
    detail: list[str] | None = Field(
        None, description="400 for malformed JSON: the parser's messages"
    )


class FieldProblem(_Answer):
    field: str = Field(description="the field, dotted (``queries.0.text``); empty: the body")
    message: str


class ValidationErrorResponse(_Answer):
    """422: a field missing, of the wrong type or out of range."""

    error: str = Field(description="what went wrong, for a person (the first problems)")
    detail: list[FieldProblem] = Field(description="each field's problem")


class Health(_Answer):
    status: Literal["ok"]
    n: int = Field(description="pool samples in the index")
    encoder: str


class GroundTruthInfo(_Answer):
    path: str = Field(description="the pool's gradient store")
    n: int = Field(description="samples in the store")
    n_common: int = Field(description="of them in the index's pool")


class Figure(_Answer):
    value: float
    low: float = Field(description="the interval's lower end")
    high: float = Field(description="the interval's upper end")


class FidelityInfo(_Answer):
    n_pool: int = Field(description="held-out pool samples, never distilled on")
    n_queries: int = Field(description="held-out queries, never distilled on")
    holdout_fraction: float
    level: float = Field(description="the intervals' coverage (bootstrap)")
    per_anchor_spearman: Figure
    aggregated_spearman: Figure
    recall_at_10: Figure
    untrained_per_anchor_spearman: float | None = Field(
        description="the encoder it was distilled from, on the same block"
    )
    more_ground_truth: str | None = Field(
        description="whether more ground truth is likely to help (half vs all of it)"
    )


class Info(_Answer):
    status: Literal["ok"]
    n: int
    dim: int
    kind: str = Field(description="the index's search: flat, ivf or hnsw")
    encoder: str
    backend: str
    index: str = Field(description="the index's folder")
    fields: list[str] = Field(description="the pool's metadata fields")
    facets: dict[str, dict[str, int]] = Field(
        description="field -> value -> pool samples, for fields with few values (filters)"
    )
    group_aggregates: list[GroupAggregate] = Field(
        description="the group aggregates offered (learned: the encoder carries a pooler)"
    )
    ground_truth: GroundTruthInfo | None
    query_gradients: str | None = Field(
        description="the gradient store queries' own gradients are taken like (serve "
        "--query-gradients; then the default of query_gradient); null: none offered"
    )
    fidelity: FidelityInfo | None = Field(
        description="the encoder's held-out fidelity estimate, from its card "
        "(distill --holdout-fraction); null when it has none"
    )


class PoolSample(_Answer):
    row: int
    id: str
    prompt: str
    response: str
    meta: dict[str, Any]


class Hit(_Answer):
    rank: int
    row: int
    id: str
    prompt: str
    response: str
    meta: dict[str, Any]
    score: float
    z: float = Field(description="the score's z-score over the pool's scores for this query")
    percentile: float = Field(description="share of the pool scoring at or below (percent)")


class QueryEcho(_Answer):
    id: str
    prompt: str
    response: str


class ScoreSummary(_Answer):
    mean: float
    min: float
    max: float


class Histogram(_Answer):
    edges: list[float] = Field(description="bins + 1 edges over the scores' range")
    counts: list[int]


class GradientHit(_Answer):
    rank: int
    id: str
    score: float
    encoder_rank: int


class EncoderHit(_Answer):
    rank: int
    id: str
    score: float
    gradient_rank: int


class GroundTruthComparison(_Answer):
    """The gradient ranking of the query beside the encoder's (the query left out)."""

    in_store: Literal[True]
    query_id: str
    n_common: int
    k: int
    spearman: float | None = Field(description="of the two score vectors; null if undefined")
    overlap_at_k: float
    gradient: list[GradientHit]
    encoder: list[EncoderHit]


class GroundTruthAbsent(_Answer):
    """The query's id is not a sample of the gradient store."""

    in_store: Literal[False]
    message: str


class GroupRow(_Answer):
    group: str
    n: int
    mean: float
    sum: float
    max: float
    softmax: float
    learned: float | None = Field(
        None, description="the encoder's learned pooling of the group (absent without a pooler)"
    )


class Groups(_Answer):
    field: str
    temperature: float
    aggregate: GroupAggregate = Field(description="the score the rows are listed by")
    n_missing: int = Field(description="pool samples without the field")
    missing_group: str = Field(description="the name of their group")
    rows: list[GroupRow]


class Timing(_Answer):
    encode: float
    search: float
    batch: int = Field(description="queries encoded together")
    queue: float


class Attribution(_Answer):
    """One query's most influential pool samples and where they stand in the pool."""

    query: QueryEcho
    k: int
    filters: dict[str, list[str]]
    n_pool: int
    n_candidates: int = Field(description="pool samples the filters let through")
    pool_scores: ScoreSummary
    histogram: Histogram | None
    hits: list[Hit]
    ground_truth: GroundTruthComparison | GroundTruthAbsent | None = Field(
        description="with --ground-truth: the gradient ranking beside the encoder's"
    )
    groups: Groups | None = Field(description="with group_by: the influence per group")
    query_gradient: bool = Field(description="whether the query's own gradient was compared")
    timing_ms: Timing


class BatchAttribution(_Answer):
    results: list[Attribution]


class RankedRow(_Answer):
    rank: int
    row: int
    id: str
    prompt: str
    response: str
    meta: dict[str, Any]
    score: float
    z: float
    top_query_id: str = Field(description="the query this row scores highest on")
    top_query_score: float


class Aggregation(_Answer):
    """The pool ranked by total influence on a set of queries."""

    how: Aggregate
    n_queries: int
    n_pool: int
    rows: list[RankedRow]
