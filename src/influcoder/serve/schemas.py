"""The JSON bodies the server accepts (pydantic models: validation and the OpenAPI page).

A query is ``{"prompt": ..., "response": ...}`` (a sample, prompt optional) or ``{"text":
...}`` (a model output alone, as ``attribute --text`` takes it); ``id`` names it (a gradient
store sample's id lets ``--ground-truth`` compare rankings). Unknown top-level fields are
refused, so a misspelt ``top_k`` is an error rather than silently ignored; a query's own
unknown fields (the other columns of an uploaded row) are ignored.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from influcoder.attribution.settings import DEFAULT_GROUP_TEMPERATURE
from influcoder.io.samples import Sample, content_id
from influcoder.metrics import Aggregate

#: The largest ``k`` of one query, and the most rows an aggregate returns.
MAX_K = 1000
MAX_ROWS = 10_000
#: Queries per batch request, and per aggregate.
MAX_BATCH = 256
MAX_AGGREGATE = 10_000
MAX_BINS = 200


class Query(BaseModel):
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
        return Sample(id=self.id or content_id(self.prompt, response), prompt=self.prompt,
                      response=response)


Filters = dict[str, str | list[str]]
FILTERS_HELP = ("metadata field -> value (or list of values, any may match); every field "
                "must match. Values compare as text")


class _Options(BaseModel):
    model_config = ConfigDict(extra="forbid")
    k: int = Field(10, ge=1, le=MAX_K, description="hits per query (fewer if the pool, or "
                                                   "the filtered pool, is smaller)")
    filters: Filters = Field(default_factory=dict, description=FILTERS_HELP)
    bins: int = Field(30, ge=0, le=MAX_BINS, description="histogram bins of the query's "
                                                          "scores over the pool (0: none)")
    group_by: str | None = Field(None, description="a metadata field: the query's influence "
                                 "per group of it (n, mean, sum, max, softmax) over every pool "
                                 "score, filters aside; samples without it are the group "
                                 "'(missing)'")
    temperature: float = Field(DEFAULT_GROUP_TEMPERATURE, gt=0, description="of the softmax "
                               "group score (AirRep's, see influcoder.attribution.groups)")

    def filter_tuples(self) -> dict[str, tuple[str, ...]]:
        return {name: (v,) if isinstance(v, str) else tuple(v)
                for name, v in self.filters.items()}


class AttributeRequest(Query, _Options):
    """One query and how to answer it."""

    model_config = ConfigDict(extra="forbid")


class BatchRequest(_Options):
    """Several queries, answered alike."""

    queries: list[Query] = Field(min_length=1, max_length=MAX_BATCH)


class AggregateRequest(BaseModel):
    """A set of unwanted outputs: the pool ranked by total influence on them."""

    model_config = ConfigDict(extra="forbid")
    queries: list[Query] = Field(min_length=1, max_length=MAX_AGGREGATE)
    how: Aggregate = Field("mean", description="mean, sum or max over the queries")
    k: int = Field(100, ge=1, le=MAX_ROWS, description="rows of the ranking returned")


class KeptRequest(BaseModel):
    """The pool without some samples, as ``filter`` writes it."""

    model_config = ConfigDict(extra="forbid")
    remove: list[str] = Field(description="ids of the pool samples to leave out")
    format: Literal["jsonl", "json", "csv", "parquet"] = "jsonl"
