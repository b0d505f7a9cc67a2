"""The server against its OpenAPI description, by hand, over real HTTP: every error's status,
media type and body as declared, the cleaned file's media types, HEAD on every GET route, a
body that is not UTF-8 JSON refused saying what to send, and bad requests sent together with
good ones never failing them."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import pytest

from .conftest import TOKEN

httpx = pytest.importorskip("httpx")
jsonschema = pytest.importorskip("jsonschema")

AUTH = {"authorization": f"Bearer {TOKEN}"}
JSON = {**AUTH, "content-type": "application/json"}
QUERY = "The capital of France is Paris."


@pytest.fixture(scope="module")
def client(live_server):
    with httpx.Client(base_url=live_server, timeout=60) as c:
        yield c


@pytest.fixture(scope="module")
def spec(client):
    return client.get("/openapi.json").json()


def declared(spec, method: str, path: str, status: int, media: str = "application/json"):
    """The body schema ``spec`` declares for this answer (KeyError: not declared)."""
    content = spec["paths"][path][method.lower()]["responses"][str(status)]["content"]
    return {**content[media]["schema"], "components": spec["components"]}


def assert_as_declared(spec, method, path, response, status):
    assert response.status_code == status, response.text
    media = response.headers["content-type"].split(";")[0]
    jsonschema.validate(response.json(), declared(spec, method, path, status, media))


@pytest.mark.parametrize(
    "path, headers, body, status",
    [
        ("/api/attribute", JSON, b"{oops", 400),
        ("/api/attribute", JSON, b'{"text": "caf\xe9"}', 400),
        ("/api/attribute", JSON, '{"text": "Paris"}'.encode("utf-16-le"), 400),
        ("/api/attribute", JSON, b'{"text": "a", "filters": {"colour": "red"}}', 400),
        ("/api/filter/kept", JSON, b'{"remove": ["not-an-id"]}', 400),
        ("/api/attribute", {"content-type": "application/json"}, b'{"text": "a"}', 401),
        ("/api/attribute", JSON, b'{"text": "' + b"z" * 1_100_000 + b'"}', 413),
        ("/api/attribute", AUTH, b'{"text": "a"}', 415),
        ("/api/aggregate", {**AUTH, "content-type": "text/plain"}, b'{"queries": []}', 415),
        ("/api/attribute", JSON, b'{"text": "a", "k": 0}', 422),
        ("/api/attribute/batch", JSON, b'{"queries": [{"text": 5}]}', 422),
        ("/api/aggregate", JSON, b'{"queries": [], "how": "median"}', 422),
    ],
)
def test_every_error_is_declared_with_its_body(client, spec, path, headers, body, status):
    r = client.post(path, headers=headers, content=body)
    assert_as_declared(spec, "POST", path, r, status)


def test_the_declared_422_body_names_each_field(client, spec):
    r = client.post("/api/attribute", headers=JSON, content=b'{"text": "a", "k": 0, "bins": -1}')
    assert_as_declared(spec, "POST", "/api/attribute", r, 422)
    assert {d["field"] for d in r.json()["detail"]} == {"k", "bins"}
    schema = declared(spec, "POST", "/api/attribute", 422)
    with pytest.raises(jsonschema.ValidationError):  # the shape is declared, not "anything"
        jsonschema.validate({"error": "x", "detail": [{"loc": ["k"]}]}, schema)


def test_get_errors_and_the_cleaned_files_media_types(client, spec):
    assert_as_declared(spec, "GET", "/api/health", client.get("/api/health"), 401)
    r = client.get("/api/samples/nope", headers=AUTH)
    assert_as_declared(spec, "GET", "/api/samples/{sample_id}", r, 404)
    media = spec["paths"]["/api/filter/kept"]["post"]["responses"]["200"]["content"]
    for fmt in ("jsonl", "json", "csv", "parquet"):
        r = client.post("/api/filter/kept", headers=AUTH, json={"remove": ["p1"], "format": fmt})
        assert r.status_code == 200
        assert r.headers["content-type"].split(";")[0] in media, fmt


def test_head_answers_like_get_without_a_body(client):
    for path in ("/api/health", "/api/info", "/api/samples/p1", "/openapi.json", "/"):
        got, head = client.get(path, headers=AUTH), client.head(path, headers=AUTH)
        assert head.status_code == got.status_code == 200, path
        assert head.content == b""
        assert head.headers["content-type"] == got.headers["content-type"]
    assert client.head("/api/samples/nope", headers=AUTH).status_code == 404
    assert client.head("/api/health").status_code == 401
    r = client.delete("/api/health", headers=AUTH)
    assert r.status_code == 405 and r.headers["allow"] == "GET, HEAD"


def test_the_token_is_declared_as_a_security_scheme(client, spec, service):
    """Clients generated from the description send the token: both ways the server takes it
    are declared schemes, either one required on every /api operation; a server without a
    token declares none."""
    from influcoder.serve.app import create_app

    assert spec["components"]["securitySchemes"] == {
        "bearer": {
            "type": "http",
            "scheme": "bearer",
            "description": "Authorization: Bearer TOKEN",
        },
        "token": {"type": "apiKey", "in": "query", "name": "token", "description": "?token=TOKEN"},
    }
    operations = [(p, op) for p, ops in spec["paths"].items() for op in ops.values()]
    assert operations and all(p.startswith("/api") for p, _ in operations)
    assert all(op["security"] == [{"bearer": []}, {"token": []}] for _, op in operations)
    assert client.get("/api/health", params={"token": TOKEN}).status_code == 200
    assert client.get("/api/health", params={"token": "wrong"}).status_code == 401
    assert client.get("/openapi.json").status_code == 200  # the description stays public
    open_spec = create_app(service).openapi()
    assert "securitySchemes" not in open_spec.get("components", {})
    assert not any("security" in op for ops in open_spec["paths"].values() for op in ops.values())


@pytest.mark.parametrize("encoding", ["utf-16-le", "utf-16-be", "utf-32-le"])
def test_a_body_not_in_utf8_is_refused_naming_utf8(client, encoding):
    """Python's JSON parser guesses UTF-16 and UTF-32 from the NUL bytes and accepted them."""
    body = f'{{"text": "{QUERY}"}}'.encode(encoding)
    r = client.post("/api/attribute", headers=JSON, content=body)
    assert r.status_code == 400 and "not UTF-8" in r.json()["error"]


def test_a_charset_other_than_utf8_is_refused(client):
    r = client.post(
        "/api/attribute",
        headers={**AUTH, "content-type": "application/json; charset=latin-1"},
        content=f'{{"text": "{QUERY}"}}'.encode("latin-1"),
    )
    assert r.status_code == 415 and "UTF-8" in r.json()["error"]


def test_a_body_without_json_content_type_says_what_to_send(client):
    """It got "Input should be a valid dictionary" (the body was never parsed)."""
    for headers in (AUTH, {**AUTH, "content-type": "application/x-www-form-urlencoded"}):
        r = client.post("/api/attribute", headers=headers, content=b'{"text": "Paris"}')
        assert r.status_code == 415
        assert "Content-Type: application/json" in r.json()["error"]
    for kind in ("application/json; charset=UTF-8", "application/merge-patch+json"):
        r = client.post(
            "/api/attribute", headers={**AUTH, "content-type": kind}, json={"text": "a"}
        )
        assert r.status_code == 200, kind


#: Requests refused, each with its status, sent amid good ones.
BAD = [
    (b'{"text": "caf\\ud800"}', 422),
    (b'{"text": "' + b"z" * 1_100_000 + b'"}', 413),
    (b'{"text": "a", "filters": {"colour": "red"}}', 400),
    (b'{"text": "a", "group_by": "colour"}', 400),
    (b'{"text": "a", "group_by": "topic", "temperature": 1e999}', 422),
    (b'{"text": "\\u0000\\u200b"}', 200),
    ('{"text": "Paris"}'.encode("utf-16-le"), 400),
]


def test_bad_requests_sent_with_good_ones_never_fail_them(client):
    good = [
        (f'{{"text": "how do I cook {w}", "k": 2}}'.encode(), 200)
        for w in ("bread", "an egg", "cake", "fish", "rice")
    ] * 4
    sent = [x for pair in zip(good, BAD * 3) for x in pair] + good[len(BAD) * 3 :]

    def ask(body):
        return client.post("/api/attribute", headers=JSON, content=body).status_code

    with ThreadPoolExecutor(12) as pool:
        got = list(pool.map(ask, [body for body, _ in sent]))
    assert got == [status for _, status in sent]
