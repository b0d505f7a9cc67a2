"""The server's gate (plain ASGI, so it costs microseconds): the token, the body's size,
media type and encoding, HEAD, and the timing header.

* With a token, every request under ``/api`` must carry it, as ``Authorization: Bearer
  TOKEN`` or ``?token=TOKEN``; otherwise 401. The page and its static files are public (they
  hold no data), and so is the OpenAPI description of the API.
* A body larger than ``max_body`` bytes gets 413, whether it says its length up front or
  streams it; the body is read whole here and handed on, so no endpoint sees a partial one.
  A body must be UTF-8 (400 otherwise: JSON must be UTF-8; the routes refuse one not sent as
  ``Content-Type: application/json`` with 415, with no type too, see :func:`json_media_type`).
  A NUL byte counts as not UTF-8: JSON text never holds one raw, and UTF-16 or UTF-32 text
  (which Python's JSON parser would otherwise guess and accept) always does.
* ``HEAD`` on a GET route is answered as GET without the body (RFC 9110), status and headers
  alike.
* Every response gets ``Server-Timing`` (total, and the parts an endpoint recorded in
  ``request.state.timing``: queue, encode, search; ``rest`` is the total less those), which
  ``benchmarks/bench_serve.py`` reads to say where the time goes.
"""

from __future__ import annotations

import hmac
import json
import time
from urllib.parse import parse_qs


async def send_error(send, status: int, message: str, headers=()) -> None:
    """A JSON error response, ``{"error": message}``, from plain ASGI."""
    body = json.dumps({"error": message}).encode("utf-8")
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
                *headers,
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})


def timing_header(timing: dict, total_ms: float) -> bytes:
    parts = dict(timing)
    parts["rest"] = max(0.0, total_ms - sum(parts.values()))
    parts["total"] = total_ms
    return ", ".join(f"{name};dur={ms:.3f}" for name, ms in parts.items()).encode()


def replay(body: bytes, receive):
    """An ASGI ``receive`` that yields ``body`` (already read) once, then the real stream
    (which then only says whether the client disconnected)."""
    delivered = False

    async def receive_body():
        nonlocal delivered
        if not delivered:
            delivered = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return receive_body


def json_media_type(value: str | None) -> str | None:
    """Why a ``Content-Type`` is not UTF-8 JSON, or None if it is (the routes' check, so that
    a method a path does not take is a 405 first)."""
    if value is None:
        return "the request has no Content-Type; send 'Content-Type: application/json'"
    kind, *params = value.lower().split(";")
    kind = kind.strip()
    if kind != "application/json" and not kind.endswith("+json"):
        return f"the body must be JSON: send 'Content-Type: application/json', not '{kind}'"
    for param in params:
        name, _, charset = param.partition("=")
        if name.strip() == "charset" and charset.strip().strip('"') not in ("utf-8", "utf8"):
            return f"the body must be UTF-8 JSON, not charset={charset.strip()}"
    return None


def utf8_problem(body: bytes) -> str | None:
    """Why ``body`` is not UTF-8 JSON text, or None if it is."""
    try:
        body.decode("utf-8")
    except UnicodeDecodeError as e:
        return f"request body is not UTF-8 (byte {e.start}: {e.reason})"
    nul = body.find(b"\x00")
    if nul >= 0:
        return f"request body is not UTF-8 JSON (a NUL byte at {nul}: UTF-16 or UTF-32?)"
    return None


def without_body(send):
    """An ASGI ``send`` that drops the response body (HEAD), keeping its headers."""

    async def send_head(message):
        if message["type"] == "http.response.body":
            message = {**message, "body": b""}
        await send(message)

    return send_head


class Guard:
    """ASGI middleware: see the module docstring."""

    def __init__(self, app, *, token: str | None, max_body: int):
        self.app, self.max_body = app, max_body
        self.token = token.encode("utf-8") if token else None

    def _authorised(self, scope) -> bool:
        for name, value in scope.get("headers", ()):
            if (
                name == b"authorization"
                and value[:7].lower() == b"bearer "
                and hmac.compare_digest(value[7:].strip(), self.token)
            ):
                return True
        query = parse_qs(scope.get("query_string", b"").decode("latin-1"))
        return any(
            hmac.compare_digest(t.encode("utf-8"), self.token) for t in query.get("token", ())
        )

    async def _read_body(self, scope, receive) -> bytes | None:
        """The whole body, or None once it passes ``max_body``."""
        for name, value in scope.get("headers", ()):
            if name == b"content-length" and value.isdigit() and int(value) > self.max_body:
                return None
        chunks, size, more = [], 0, True
        while more:
            message = await receive()
            if message["type"] == "http.disconnect":
                break
            chunk = message.get("body", b"")
            size += len(chunk)
            if size > self.max_body:
                return None
            chunks.append(chunk)
            more = message.get("more_body", False)
        return b"".join(chunks)

    async def __call__(self, scope, receive, send):
        if scope["type"] != "http":
            return await self.app(scope, receive, send)
        start = time.perf_counter()
        if self.token and scope["path"].startswith("/api") and not self._authorised(scope):
            return await send_error(
                send,
                401,
                "missing or wrong token: send 'Authorization: Bearer TOKEN' or add ?token=TOKEN",
                [(b"www-authenticate", b"Bearer")],
            )
        if scope["method"] == "HEAD":
            scope, send = {**scope, "method": "GET"}, without_body(send)
        if scope["method"] in ("POST", "PUT", "PATCH"):
            body = await self._read_body(scope, receive)
            if body is None:
                return await send_error(
                    send, 413, f"request body larger than {self.max_body} bytes"
                )
            if problem := utf8_problem(body):
                return await send_error(send, 400, problem)
            receive = replay(body, receive)
        timing: dict = {}
        scope.setdefault("state", {})["timing"] = timing

        async def send_timed(message):
            if message["type"] == "http.response.start":
                total = (time.perf_counter() - start) * 1e3
                message = {
                    **message,
                    "headers": [
                        *message.get("headers", ()),
                        (b"server-timing", timing_header(timing, total)),
                    ],
                }
            await send(message)

        await self.app(scope, receive, send_timed)
