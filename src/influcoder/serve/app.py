"""The HTTP face of a :class:`~influcoder.serve.service.Service`: a FastAPI app
with the JSON API under ``/api`` (:mod:`influcoder.serve.routes`), the web page at ``/`` and
the OpenAPI page at ``/docs``.

No route writes anything: the index is opened read-only, and the cleaned training file is
built in memory and sent back. Errors are JSON, ``{"error": "...", "detail": ...}``: 400 for
malformed JSON, a body that is not UTF-8 or a request the pool cannot answer (an unknown
metadata field, an id not in the pool), 401 without the token, 404 for an unknown sample or
path, 405 (with ``Allow``) for a method a path does not take, 413 for a body over the limit
and 415 for one that is not ``application/json`` (see guard.py), 422 for a field missing or
out of range (``detail``: each field's problem); every one is declared in the OpenAPI
description with its body's shape. Anything else is a bug, answered 500 and logged, and
the server keeps serving.
"""

from __future__ import annotations

import logging
from pathlib import Path

from fastapi import FastAPI, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import FileResponse, JSONResponse
from fastapi.staticfiles import StaticFiles
from starlette.exceptions import HTTPException

from influcoder.errors import InflucoderError
from influcoder.serve.guard import Guard
from influcoder.serve.routes import error, router
from influcoder.serve.service import Service

logger = logging.getLogger(__name__)

STATIC = Path(__file__).parent / "static"
#: The default request body limit (bytes).
MAX_BODY = 1_000_000


def _validation_error(request: Request, exc: RequestValidationError) -> JSONResponse:
    errors = exc.errors()
    kinds = {e.get("type") for e in errors}
    if "json_invalid" in kinds:
        return error(400, "malformed JSON body", [e.get("msg") for e in errors])
    detail = [
        {
            "field": ".".join(str(x) for x in e.get("loc", ()) if x != "body"),
            "message": e.get("msg"),
        }
        for e in errors
    ]
    shown = "; ".join(f"{d['field'] or 'body'}: {d['message']}" for d in detail[:3])
    return error(422, f"invalid request: {shown}", detail)


def _http_error(request: Request, exc: HTTPException) -> JSONResponse:
    response = error(exc.status_code, str(exc.detail))
    headers = dict(exc.headers or {})  # 405: Allow (RFC 9110 requires it)
    allow = [m.strip() for m in headers.get("Allow", "").split(",") if m.strip()]
    if "GET" in allow and "HEAD" not in allow:  # the guard answers HEAD wherever GET is
        headers["Allow"] = ", ".join([*allow, "HEAD"])
    response.headers.update(headers)
    return response


def _install_error_handlers(app: FastAPI) -> None:
    app.add_exception_handler(RequestValidationError, _validation_error)
    app.add_exception_handler(HTTPException, _http_error)
    app.add_exception_handler(InflucoderError, lambda request, exc: error(400, str(exc)))

    async def unexpected(request: Request, exc: Exception) -> JSONResponse:
        logger.exception(f"{request.method} {request.url.path} failed")
        return error(500, f"internal error ({type(exc).__name__}); see the server's log")

    app.add_exception_handler(Exception, unexpected)


def _docs(app: FastAPI) -> None:
    """The OpenAPI page from the swagger-ui-bundle package's files: no CDN, works offline
    (FastAPI's own page loads Swagger UI from the internet)."""
    from fastapi.openapi.docs import get_swagger_ui_html
    from swagger_ui_bundle import swagger_ui_path

    app.mount("/docs-assets", StaticFiles(directory=str(swagger_ui_path)), name="docs-assets")

    @app.get("/docs", include_in_schema=False)
    def docs():
        return get_swagger_ui_html(
            openapi_url="/openapi.json",
            title="influcoder API",
            swagger_js_url="/docs-assets/swagger-ui-bundle.js",
            swagger_css_url="/docs-assets/swagger-ui.css",
            swagger_favicon_url="/docs-assets/favicon-32x32.png",
        )


#: How the token may be sent (guard.py accepts either): the OpenAPI security schemes.
SECURITY_SCHEMES = {
    "bearer": {"type": "http", "scheme": "bearer", "description": "Authorization: Bearer TOKEN"},
    "token": {"type": "apiKey", "in": "query", "name": "token", "description": "?token=TOKEN"},
}


def _declare_token(app: FastAPI) -> None:
    """Declare the token in the OpenAPI description, as either scheme, on every ``/api``
    operation (the page, its files and the description itself stay public), so that clients
    generated from it send it."""
    generate = app.openapi

    def openapi() -> dict:
        if app.openapi_schema is None:
            schema = generate()  # cached by FastAPI in app.openapi_schema
            schema.setdefault("components", {})["securitySchemes"] = SECURITY_SCHEMES
            for path, operations in schema["paths"].items():
                if path.startswith("/api"):
                    for operation in operations.values():
                        operation["security"] = [{name: []} for name in SECURITY_SCHEMES]
        return app.openapi_schema

    app.openapi = openapi


def create_app(service: Service, *, token: str | None = None, max_body: int = MAX_BODY) -> FastAPI:
    """The app over ``service``; ``token``: required on every ``/api`` request (None: open)."""
    app = FastAPI(
        title="influcoder",
        docs_url=None,
        redoc_url=None,
        description="Which training samples made the model say this? Attribution "
        "against an influcoder index. Every /api request needs the "
        "server's token if it was started with one (declared as a security scheme then).",
    )
    app.state.service = service
    _install_error_handlers(app)
    _docs(app)
    app.mount("/static", StaticFiles(directory=str(STATIC)), name="static")

    @app.get("/", include_in_schema=False)
    def page():
        return FileResponse(STATIC / "index.html")

    app.include_router(router)
    if token:
        _declare_token(app)
    app.add_middleware(Guard, token=token, max_body=max_body)
    return app
