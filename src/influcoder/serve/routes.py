"""The JSON API under ``/api``: one router, the service as a dependency, a response model on
every route, and the errors each route can answer written into the OpenAPI description.

Each route parses (the request models of :mod:`influcoder.serve.schemas`), calls the
:class:`~influcoder.serve.service.Service` and returns what it answered: FastAPI checks that
against the route's response model, so ``/openapi.json`` says exactly what comes back
(``tests/serve/test_fuzz.py`` holds the server to it with schemathesis).
"""

from __future__ import annotations

import asyncio
from typing import Annotated

from fastapi import APIRouter, Depends, HTTPException, Request
from fastapi.responses import JSONResponse, Response

from influcoder.serve.guard import json_media_type
from influcoder.serve.schemas import (
    AggregateRequest,
    Aggregation,
    AttributeRequest,
    Attribution,
    BatchAttribution,
    BatchRequest,
    ErrorResponse,
    Health,
    Info,
    KeptRequest,
    PoolSample,
    ValidationErrorResponse,
)
from influcoder.serve.service import QueryItem, Service

#: The cleaned file's media type per format.
MEDIA_TYPES = {
    "jsonl": "application/x-ndjson",
    "json": "application/json",
    "csv": "text/csv; charset=utf-8",
    "parquet": "application/vnd.apache.parquet",
}
_ERRORS = {
    400: "malformed JSON, a body that is not UTF-8, or a request the pool cannot "
    "answer (an unknown metadata field or id)",
    401: "the server's token is missing or wrong",
    404: "no such sample",
    413: "the body is larger than the server's limit",
    415: "the body is not sent as 'Content-Type: application/json'",
    422: "a field missing, of the wrong type or out of range",
}


def errors(*codes: int) -> dict:
    """The ``responses`` entry documenting ``codes`` with their bodies' models
    (:class:`ValidationErrorResponse` for 422, :class:`ErrorResponse` for the rest)."""
    return {
        code: {
            "model": ValidationErrorResponse if code == 422 else ErrorResponse,
            "description": _ERRORS[code],
        }
        for code in codes
    }


def error(status: int, message: str, detail=None) -> JSONResponse:
    """An :class:`ErrorResponse`."""
    body = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


def get_service(request: Request) -> Service:
    return request.app.state.service


def json_body(request: Request) -> None:
    """A body not sent as JSON is a 415 saying so (without a type FastAPI never parses it, and
    said "Input should be a valid dictionary")."""
    if problem := json_media_type(request.headers.get("content-type")):
        raise HTTPException(415, problem)


ServiceDep = Annotated[Service, Depends(get_service)]
router = APIRouter(prefix="/api", responses=errors(401))
_POSTED = errors(400, 413, 415, 422)
_JSON = [Depends(json_body)]


def _record(request: Request, future, result: dict) -> None:
    """Put a query's time into the ``Server-Timing`` header and its ``timing_ms`` field."""
    timing = result["timing_ms"]
    timing["queue"] = future.queued_s * 1e3
    request.state.timing.update(
        queue=timing["queue"], encode=timing["encode"], search=timing["search"]
    )


@router.get("/health", response_model=Health, summary="Liveness: the pool's size and the encoder")
def health(service: ServiceDep):
    return {"status": "ok", "n": service.index.n, "encoder": service.index.encoder_name}


@router.get(
    "/info", response_model=Info, summary="The index, its metadata fields and the ground truth"
)
def info(service: ServiceDep):
    return service.info()


@router.post(
    "/attribute",
    response_model=Attribution,
    responses=_POSTED,
    dependencies=_JSON,
    summary="The pool samples most influential on one output",
)
async def attribute(body: AttributeRequest, request: Request, service: ServiceDep):
    item = QueryItem(
        body.sample(),
        body.k,
        body.filter_tuples(),
        body.bins,
        body.group_by,
        body.temperature,
        body.group_aggregate,
        body.query_gradient,
    )
    future = service.submit(item)
    result = await asyncio.wrap_future(future)
    _record(request, future, result)
    return result


@router.post(
    "/attribute/batch",
    response_model=BatchAttribution,
    responses=_POSTED,
    dependencies=_JSON,
    summary="The same for several outputs",
)
async def attribute_batch(body: BatchRequest, service: ServiceDep):
    filters = body.filter_tuples()
    futures = [
        service.submit(
            QueryItem(
                q.sample(),
                body.k,
                filters,
                body.bins,
                body.group_by,
                body.temperature,
                body.group_aggregate,
                body.query_gradient,
            )
        )
        for q in body.queries
    ]
    results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
    for future, result in zip(futures, results):
        result["timing_ms"]["queue"] = future.queued_s * 1e3
    return {"results": results}


@router.post(
    "/aggregate",
    response_model=Aggregation,
    responses=_POSTED,
    dependencies=_JSON,
    summary="The pool ranked by total influence on a set of outputs (what `filter` removes)",
)
def aggregate(body: AggregateRequest, service: ServiceDep):
    return service.aggregate(
        [q.sample() for q in body.queries], body.how, min(body.k, service.index.n)
    )


@router.get(
    "/samples/{sample_id:path}",
    response_model=PoolSample,
    responses=errors(404, 422),
    summary="One pool sample by its id",
)
def sample(sample_id: str, service: ServiceDep):
    found = service.sample(sample_id)
    if found is None:
        return error(404, f"no pool sample has the id '{sample_id}'")
    return found


_FILE = {"schema": {"type": "string", "format": "binary"}}
_ROWS = {"schema": {"type": "array", "items": {"type": "object"}}}


@router.post(
    "/filter/kept",
    response_class=Response,
    dependencies=_JSON,
    responses={
        **_POSTED,
        200: {
            "description": "the cleaned file, in the format asked for",
            "content": {
                t.split(";")[0]: _ROWS if f == "json" else _FILE for f, t in MEDIA_TYPES.items()
            },
            "headers": {
                name: {"description": text, "schema": {"type": "integer"}}
                for name, text in (
                    ("x-kept-rows", "rows in the file"),
                    ("x-removed-rows", "distinct ids left out"),
                )
            },
        },
    },
    summary="The cleaned training file: the pool's rows as in its source files, without the "
    "removed ids",
)
def kept(body: KeptRequest, service: ServiceDep):
    data, n = service.kept_file(body.remove, body.format)
    return Response(
        data,
        media_type=MEDIA_TYPES[body.format],
        headers={
            "content-disposition": f'attachment; filename="clean.{body.format}"',
            "x-kept-rows": str(n),
            "x-removed-rows": str(len(set(body.remove))),
        },
    )
