"""The HTTP face of a :class:`~influcoder.serve.service.Service`: a FastAPI app
with the JSON API under ``/api``, the web page at ``/`` and the OpenAPI page at ``/docs``.

No route writes anything: the index is opened read-only, and the cleaned training file is
built in memory and sent back. Errors are JSON, ``{"error": "...", "detail": ...}``: 400 for
malformed JSON, a body that is not UTF-8 or a request the pool cannot answer (an unknown
metadata field, an id not in the pool), 404 for an unknown sample or path, 413 for a body over
the limit (see guard.py), 422 for a field missing or out of range; anything else is a bug,
answered 500 and logged, and the server keeps serving.
"""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse, Response
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from influcoder.errors import InflucoderError
from influcoder.serve.guard import Guard
from influcoder.serve.schemas import (
    AggregateRequest,
    AttributeRequest,
    BatchRequest,
    KeptRequest,
)
from influcoder.serve.service import QueryItem, Service

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: The default request body limit (bytes).
MAX_BODY = 1_000_000
MEDIA_TYPES = {"jsonl": "application/x-ndjson", "json": "application/json",
               "csv": "text/csv; charset=utf-8", "parquet": "application/vnd.apache.parquet"}


def _error(status: int, message: str, detail=None) -> JSONResponse:
    body = {"error": message}
    if detail is not None:
        body["detail"] = detail
    return JSONResponse(body, status_code=status)


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    kinds = {e.get("type") for e in errors}
    if "json_invalid" in kinds:
        return _error(400, "malformed JSON body", [e.get("msg") for e in errors])
    detail = [{"field": ".".join(str(x) for x in e.get("loc", ()) if x != "body"),
               "message": e.get("msg")} for e in errors]
    shown = "; ".join(f"{d['field'] or 'body'}: {d['message']}" for d in detail[:3])
    return _error(422, f"invalid request: {shown}", detail)


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(
        HTTPException, lambda request, exc: _error(exc.status_code, str(exc.detail)))
    app.add_exception_handler(InflucoderError, lambda request, exc: _error(400, str(exc)))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception(f"{request.method} {request.url.path} failed")
        return _error(500, f"internal error ({type(exc).__name__}); see the server's log")

    app.add_exception_handler(Exception, unexpected)


def _record(request: Request, future, result: dict) -> None:
    """Put a query's time into the ``Server-Timing`` header and its ``timing_ms`` field."""
    timing = result["timing_ms"]
    timing["queue"] = future.queued_s * 1e3
    request.state.timing.update(queue=timing["queue"], encode=timing["encode"],
                                search=timing["search"])


def _docs(app: FastAPI) -> None:
    """The OpenAPI page from the swagger-ui-bundle package's files: no CDN, works offline
    (FastAPI's own page loads Swagger UI from the internet)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(openapi_url="/openapi.json", title="influcoder API",
                                   swagger_js_url="/docs-assets/swagger-ui-bundle.js",
                                   swagger_css_url="/docs-assets/swagger-ui.css",
                                   swagger_favicon_url="/docs-assets/favicon-32x32.png")


def create_app(service: Service, *, token: str | None = None,
               max_body: int = MAX_BODY) -> FastAPI:
    """The app over ``service``; ``token``: required on every ``/api`` request (None: open)."""
    app = FastAPI(title="influcoder", docs_url=None, redoc_url=None,
                  description="Which training samples made the model say this? Attribution "
                              "against an influcoder index. Every /api request needs the "
                              "server's token if it was started with one.")
    app.state.service = service
    _install_error_handlers(app)
    _docs(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    @app.get("/api/health", summary="Liveness: the pool's size and the encoder")
    def health():
        return {"status": "ok", "n": service.index.n, "encoder": service.index.encoder_name}

    @app.get("/api/info", summary="The index, its metadata fields and the ground truth")
    def info():
        return service.info()

    @app.post("/api/attribute", summary="The pool samples most influential on one output")
    async def attribute(body: AttributeRequest, request: Request):
        item = QueryItem(body.sample(), body.k, body.filter_tuples(), body.bins, body.group_by,
                         body.temperature)
        future = service.submit(item)
        result = await asyncio.wrap_future(future)
        _record(request, future, result)
        return JSONResponse(result)

    @app.post("/api/attribute/batch", summary="The same for several outputs")
    async def attribute_batch(body: BatchRequest):
        filters = body.filter_tuples()
        futures = [service.submit(QueryItem(q.sample(), body.k, filters, body.bins, body.group_by,
                                             body.temperature))
                   for q in body.queries]
        results = await asyncio.gather(*(asyncio.wrap_future(f) for f in futures))
        for future, result in zip(futures, results):
            result["timing_ms"]["queue"] = future.queued_s * 1e3
        return JSONResponse({"results": results})

    @app.post("/api/aggregate", summary="The pool ranked by total influence on a set of "
                                        "outputs (what `filter` removes)")
    def aggregate(body: AggregateRequest):
        return JSONResponse(service.aggregate([q.sample() for q in body.queries], body.how,
                                              min(body.k, service.index.n)))

    @app.get("/api/samples/{sample_id:path}", summary="One pool sample by its id")
    def sample(sample_id: str):
        found = service.sample(sample_id)
        if found is None:
            return _error(404, f"no pool sample has the id '{sample_id}'")
        return found

    @app.post("/api/filter/kept", summary="The cleaned training file: the pool's rows as in "
                                          "its source files, without the removed ids")
    def kept(body: KeptRequest):
        data, n = service.kept_file(body.remove, body.format)
        return Response(data, media_type=MEDIA_TYPES[body.format], headers={
            "content-disposition": f'attachment; filename="clean.{body.format}"',
            "x-kept-rows": str(n), "x-removed-rows": str(len(set(body.remove)))})

    app.add_middleware(Guard, token=token, max_body=max_body)
    return app
