"""The server's JSON API through a test client, as a person (or a script) uses it: answers
against numpy references, metadata filters, aggregation, the cleaned file, the gradient
comparison, and every way a request can be wrong, with the server still serving after."""

from __future__ import annotations

import csv
import hashlib
import io
import json

import numpy as np
import pytest
from click.testing import CliRunner
from scipy.stats import spearmanr

from influcoder.cli import cli
from influcoder.errors import InflucoderError
from influcoder.io.samples import Sample
from influcoder.serve.app import create_app
from influcoder.serve.server import check_binding, is_loopback

from .conftest import NOT_IN_STORE

fastapi = pytest.importorskip("fastapi")
from fastapi.testclient import TestClient  # noqa: E402

QUERY = "The capital of France is Paris."


@pytest.fixture(scope="module")
def client(service):
    with TestClient(create_app(service)) as c:
        yield c


def reference(service, prompt, response):
    """Every pool score of a query, from the stored vectors (numpy, no server code)."""
    q = service.attributor.encoder.encode_samples([Sample("q", prompt, response)])
    return (service.index.vectors() @ q[0]).astype(np.float64), q


def top(scores, k, mask=None):
    rows = np.arange(len(scores)) if mask is None else np.flatnonzero(mask)
    return rows[np.lexsort((rows, -scores[rows]))][:k]


def test_health_info_and_page(client):
    assert client.get("/api/health").json() == {
        "status": "ok",
        "n": 24,
        "encoder": client.get("/api/info").json()["encoder"],
    }
    info = client.get("/api/info").json()
    assert info["facets"] == {"topic": {"t0": 8, "t1": 8, "t2": 8}}
    assert info["ground_truth"]["n_common"] == 23
    assert info["fidelity"] is None  # the tiny encoder was never distilled: no estimate
    page = client.get("/")
    assert page.status_code == 200 and "/static/app.js" in page.text
    for path in ("/", "/static/app.js", "/static/app.css"):  # no CDN: works offline
        text = client.get(path).text.replace("http://www.w3.org/2000/svg", "")
        assert "http://" not in text and "https://" not in text and "//cdn" not in text


def test_attribute_equals_numpy(client, service):
    r = client.post("/api/attribute", json={"prompt": "", "response": QUERY, "k": 5, "bins": 12})
    assert r.status_code == 200
    body = r.json()
    scores, q = reference(service, "", QUERY)
    rows = top(scores, 5)
    assert [h["row"] for h in body["hits"]] == rows.tolist()
    assert [h["id"] for h in body["hits"]] == [f"p{r}" for r in rows]
    np.testing.assert_allclose([h["score"] for h in body["hits"]], scores[rows], atol=1e-5)
    # percentile: the share of the pool scoring at or below, from every score
    np.testing.assert_allclose(
        [h["percentile"] for h in body["hits"]],
        [100 * np.mean(scores <= scores[r] + 1e-7) for r in rows],
    )
    assert body["hits"][0]["percentile"] == 100.0
    z = service.index.z_scores(q, scores[rows][None])[0]
    np.testing.assert_allclose([h["z"] for h in body["hits"]], z, atol=1e-4)
    counts, edges = np.histogram(scores.astype(np.float32), bins=12)
    assert body["histogram"]["counts"] == counts.tolist()
    np.testing.assert_allclose(body["histogram"]["edges"], edges, atol=1e-5)
    assert body["hits"][0]["meta"] == {"topic": f"t{rows[0] % 3}"}
    assert body["hits"][0]["response"] == service.samples[rows[0]].response
    # "text" is a response alone, like attribute --text
    same = client.post("/api/attribute", json={"text": QUERY, "k": 5}).json()
    assert [h["id"] for h in same["hits"]] == [h["id"] for h in body["hits"]]
    assert same["query"]["id"] == body["query"]["id"]


def test_percentile_against_numpy_for_many_hits(client, service):
    """Past 64 hits the percentile is found by binary search; same answer."""
    from influcoder.serve.scores import percentiles

    rng = np.random.default_rng(1)
    pool = rng.standard_normal(1000).astype(np.float32)
    values = pool[rng.choice(1000, 100, replace=False)]
    want = [100 * np.mean(pool <= v) for v in values]
    np.testing.assert_allclose(percentiles(pool, values), want)
    np.testing.assert_allclose(percentiles(pool, values[:10]), want[:10])


def test_metadata_filter(client, service):
    scores, _ = reference(service, "", QUERY)
    topics = np.array([s.meta["topic"] for s in service.samples])
    body = client.post(
        "/api/attribute", json={"text": QUERY, "k": 4, "filters": {"topic": "t1"}}
    ).json()
    assert body["n_candidates"] == 8
    assert [h["row"] for h in body["hits"]] == top(scores, 4, topics == "t1").tolist()
    assert {h["meta"]["topic"] for h in body["hits"]} == {"t1"}
    # percentiles stay against the whole pool
    np.testing.assert_allclose(
        [h["percentile"] for h in body["hits"]],
        [100 * np.mean(scores <= scores[h["row"]] + 1e-7) for h in body["hits"]],
    )
    both = client.post(
        "/api/attribute", json={"text": QUERY, "k": 30, "filters": {"topic": ["t0", "t2"]}}
    ).json()
    assert len(both["hits"]) == 16 and {h["meta"]["topic"] for h in both["hits"]} == {"t0", "t2"}
    none = client.post("/api/attribute", json={"text": QUERY, "filters": {"topic": "zz"}})
    assert none.status_code == 200 and none.json()["hits"] == []
    bad = client.post("/api/attribute", json={"text": QUERY, "filters": {"colour": "red"}})
    assert bad.status_code == 400 and "unknown metadata field 'colour'" in bad.json()["error"]


def test_query_gradient_is_refused_by_a_server_without_a_store(client):
    """Without --query-gradients a request may not ask for the query's own gradient (400,
    naming the option); false or absent is the encoder's answer."""
    assert client.get("/api/info").json()["query_gradients"] is None
    bad = client.post("/api/attribute", json={"text": QUERY, "query_gradient": True})
    assert bad.status_code == 400 and "--query-gradients STORE" in bad.json()["error"]
    for body in ({"text": QUERY}, {"text": QUERY, "query_gradient": False}):
        r = client.post("/api/attribute", json=body)
        assert r.status_code == 200 and r.json()["query_gradient"] is False


def test_group_by_equals_the_reference(client, service):
    from tests.references import reference_group_stats

    scores, _ = reference(service, "", QUERY)
    topics = [s.meta["topic"] for s in service.samples]
    body = client.post(
        "/api/attribute", json={"text": QUERY, "k": 3, "group_by": "topic", "temperature": 0.5}
    ).json()
    groups = body["groups"]
    assert groups["field"] == "topic" and groups["n_missing"] == 0
    assert groups["missing_group"] == "(missing)" and groups["temperature"] == 0.5
    expected = reference_group_stats(scores, topics, temperature=0.5)
    assert [g["softmax"] for g in groups["rows"]] == sorted(
        (g["softmax"] for g in groups["rows"]), reverse=True
    )
    assert {g["group"] for g in groups["rows"]} == set(expected)
    for g in groups["rows"]:
        for name in ("n", "mean", "sum", "max", "softmax"):
            assert g[name] == pytest.approx(expected[g["group"]][name], abs=1e-5), name
    # the filters choose the hits; the groups stay over the whole pool
    filtered = client.post(
        "/api/attribute",
        json={"text": QUERY, "group_by": "topic", "temperature": 0.5, "filters": {"topic": "t1"}},
    ).json()
    assert filtered["groups"] == groups
    assert client.post("/api/attribute", json={"text": QUERY}).json()["groups"] is None
    batch = client.post(
        "/api/attribute/batch",
        json={"queries": [{"text": QUERY}], "group_by": "topic", "temperature": 0.5},
    ).json()
    assert batch["results"][0]["groups"] == groups
    bad = client.post("/api/attribute", json={"text": QUERY, "group_by": "colour"})
    assert bad.status_code == 400 and "unknown metadata field 'colour'" in bad.json()["error"]
    bad = client.post("/api/attribute", json={"text": QUERY, "group_by": "topic", "temperature": 0})
    assert bad.status_code == 422 and "temperature" in bad.json()["error"]


def test_batch_equals_single(client):
    queries = [{"text": QUERY}, {"prompt": "How do I boil an egg?", "response": "Boil it."}]
    batch = client.post("/api/attribute/batch", json={"queries": queries, "k": 3}).json()
    assert len(batch["results"]) == 2
    for q, result in zip(queries, batch["results"]):
        single = client.post("/api/attribute", json={**q, "k": 3}).json()
        assert [h["id"] for h in result["hits"]] == [h["id"] for h in single["hits"]]
        np.testing.assert_allclose(
            [h["score"] for h in result["hits"]], [h["score"] for h in single["hits"]], atol=1e-6
        )


def test_aggregate_equals_attributor(client, service):
    unwanted = ["I will help you build a weapon.", "Steal the money from the bank."]
    body = client.post(
        "/api/aggregate", json={"queries": [{"text": t} for t in unwanted], "how": "max", "k": 5}
    ).json()
    ranking = service.attributor.aggregate(unwanted, "max")
    assert [r["row"] for r in body["rows"]] == ranking.order[:5].tolist()
    np.testing.assert_allclose(
        [r["score"] for r in body["rows"]], ranking.scores[ranking.order[:5]], atol=1e-6
    )
    assert body["n_queries"] == 2 and body["how"] == "max"


def test_sample_lookup(client):
    got = client.get("/api/samples/p3").json()
    assert got == {
        "row": 3,
        "id": "p3",
        "prompt": "What is the capital of Germany?",
        "response": "Berlin is the capital.",
        "meta": {"topic": "t0"},
    }
    missing = client.get("/api/samples/nope")
    assert missing.status_code == 404 and "'nope'" in missing.json()["error"]


def _tree_digest(path):
    h = hashlib.sha256()
    for p in sorted(path.rglob("*")):
        h.update(str(p.relative_to(path)).encode())
        if p.is_file():
            h.update(p.read_bytes())
    return h.hexdigest()


def test_kept_file_is_what_filter_writes_and_nothing_is_written(client, serve_pool, serve_index):
    before = _tree_digest(serve_pool.parent)
    r = client.post("/api/filter/kept", json={"remove": ["p1", "p5"]})
    assert r.status_code == 200 and r.headers["x-kept-rows"] == "22"
    assert "attachment" in r.headers["content-disposition"]
    originals = [json.loads(line) for line in serve_pool.read_text().splitlines()]
    assert [json.loads(line) for line in r.text.splitlines()] == [
        row for row in originals if row["id"] not in ("p1", "p5")
    ]
    as_csv = client.post("/api/filter/kept", json={"remove": ["p0"], "format": "csv"})
    rows = list(csv.DictReader(io.StringIO(as_csv.text)))
    assert len(rows) == 23 and rows[0]["id"] == "p1" and rows[0]["topic"] == "t1"
    bad = client.post("/api/filter/kept", json={"remove": ["p1", "ghost"]})
    assert bad.status_code == 400 and "'ghost'" in bad.json()["error"]
    for path in ("/api/attribute", "/api/aggregate"):
        client.post(
            path,
            json={"text": QUERY} if path.endswith("attribute") else {"queries": [{"text": QUERY}]},
        )
    assert _tree_digest(serve_pool.parent) == before  # the pool, index and store untouched


def test_ground_truth_beside_the_encoder(client, service, gradient_store):
    from influcoder.io.stores import Store

    body = client.post(
        "/api/attribute",
        json={
            "id": "p4",
            "prompt": "How do I boil an egg?",
            "response": "Boil the egg in water for nine minutes.",
            "k": 5,
        },
    ).json()
    gt = body["ground_truth"]
    assert gt["in_store"] and gt["query_id"] == "p4" and gt["k"] == 5
    store = Store(gradient_store)
    g = store.vectors() / np.linalg.norm(store.vectors(), axis=1, keepdims=True)
    ids = [i for i in store.ids if i != "p4"]
    grad = np.array([g[store.ids.index(i)] @ g[store.ids.index("p4")] for i in ids])
    scores, _ = reference(
        service, "How do I boil an egg?", "Boil the egg in water for nine minutes."
    )
    enc = np.array([scores[int(i[1:])] for i in ids])
    assert gt["n_common"] == len(ids) == 22
    assert gt["spearman"] == pytest.approx(spearmanr(grad, enc).statistic, abs=1e-6)
    top_g = {ids[i] for i in np.argsort(-grad, kind="stable")[:5]}
    top_e = {ids[i] for i in np.argsort(-enc, kind="stable")[:5]}
    assert gt["overlap_at_k"] == pytest.approx(len(top_g & top_e) / 5)
    assert {r["id"] for r in gt["gradient"]} == top_g and {r["id"] for r in gt["encoder"]} == top_e
    other = client.post("/api/attribute", json={"id": NOT_IN_STORE[0], "text": QUERY}).json()
    assert other["ground_truth"]["in_store"] is False
    assert "is not one of the 23 samples" in other["ground_truth"]["message"]


@pytest.mark.parametrize(
    "body, status, message",
    [
        (b"{not json", 400, "malformed JSON"),
        (b'{"text": "caf\xe9"}', 400, "not UTF-8"),
        (b'{"k": 3}', 422, "exactly one of 'response' and 'text'"),
        (b'{"text": "   "}', 422, "empty"),
        (b'{"text": "x", "k": 0}', 422, "k: Input should be greater than or equal to 1"),
        (b'{"text": "x", "k": 1001}', 422, "k: Input should be less than or equal to 1000"),
        (b'{"text": "x", "top_k": 5}', 422, "top_k"),
        (b'{"text": 5}', 422, "text"),
        (b"[1, 2]", 422, "invalid request"),
    ],
)
def test_bad_requests_get_json_errors(client, body, status, message):
    r = client.post("/api/attribute", content=body, headers={"content-type": "application/json"})
    assert r.status_code == status, r.text
    assert message in r.json()["error"]
    assert client.get("/api/health").status_code == 200  # still serving


def test_body_limit_and_unknown_paths(service):
    with TestClient(create_app(service, max_body=2000)) as c:
        r = c.post("/api/attribute", json={"text": "x" * 3000})
        assert r.status_code == 413 and "larger than 2000 bytes" in r.json()["error"]

        def chunks():  # no content-length: the limit still holds
            yield b'{"text": "'
            yield b"y" * 3000
            yield b'"}'

        r = c.post("/api/attribute", content=chunks(), headers={"content-type": "application/json"})
        assert r.status_code == 413
        assert c.post("/api/attribute", json={"text": "x" * 100}).status_code == 200
        assert c.get("/api/nothing").status_code == 404
        assert c.delete("/api/samples/p1").status_code == 405


def test_a_method_a_path_does_not_take_is_405_with_allow(client):
    """RFC 9110: a 405 names the methods the path takes (the error handler used to drop
    Starlette's Allow header)."""
    for method, path, allowed in (
        ("delete", "/api/samples/p1", "GET, HEAD"),
        ("put", "/api/attribute", "POST"),
        ("post", "/api/health", "GET, HEAD"),
    ):
        r = client.request(method, path)
        assert r.status_code == 405 and r.headers["allow"] == allowed
        assert r.json() == {"error": "Method Not Allowed"}


@pytest.mark.parametrize(
    "path, body",
    [
        ("/api/attribute", b'{"text": "caf\\ud800"}'),
        ("/api/attribute", b'{"prompt": "\\udfff", "response": "a"}'),
        ("/api/attribute", b'{"id": "\\ud800", "text": "a"}'),
        ("/api/attribute", b'{"text": "a", "filters": {"topic": ["\\ud800"]}}'),
        ("/api/attribute/batch", b'{"queries": [{"text": "a"}, {"text": "\\ud800"}]}'),
        ("/api/aggregate", b'{"queries": [{"text": "\\ud800"}]}'),
        ("/api/filter/kept", b'{"remove": ["p1", "\\ud800"]}'),
    ],
)
def test_an_unpaired_surrogate_is_a_422_not_a_500(client, path, body):
    """``"\\ud800"`` is valid JSON but no text: the tokenizer, the id hash and the answer's
    encoding all failed on it (500s); it is refused with the field named."""
    r = client.post(path, content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "unpaired surrogate" in r.json()["error"]
    assert client.post("/api/attribute", json={"text": QUERY}).status_code == 200


def test_token(service):
    with TestClient(create_app(service, token="s3cret")) as c:
        for path in ("/api/health", "/api/info", "/api/samples/p1"):
            r = c.get(path)
            assert r.status_code == 401 and "token" in r.json()["error"]
        assert c.post("/api/attribute", json={"text": QUERY}).status_code == 401
        assert c.get("/api/nothing").status_code == 401
        assert c.get("/api/health", headers={"authorization": "Bearer wrong"}).status_code == 401
        assert c.get("/api/health", headers={"authorization": "Bearer s3cret"}).status_code == 200
        assert c.get("/api/health?token=s3cret").status_code == 200
        assert c.post("/api/attribute?token=s3cret", json={"text": QUERY}).status_code == 200
        assert c.get("/").status_code == 200  # the page itself holds no data
        assert c.get("/static/app.js").status_code == 200


def test_timing_header_and_openapi_page(client):
    r = client.post("/api/attribute", json={"text": QUERY})
    parts = dict(p.split(";dur=") for p in r.headers["server-timing"].split(", "))
    assert set(parts) == {"queue", "encode", "search", "rest", "total"}
    assert float(parts["total"]) >= float(parts["encode"]) > 0
    assert r.json()["timing_ms"]["batch"] >= 1
    spec = client.get("/openapi.json").json()
    assert {
        "/api/attribute",
        "/api/attribute/batch",
        "/api/aggregate",
        "/api/samples/{sample_id}",
        "/api/filter/kept",
        "/api/health",
    } <= set(spec["paths"])
    docs = client.get("/docs").text
    assert "/docs-assets/swagger-ui-bundle.js" in docs and "cdn" not in docs.lower()
    assert client.get("/docs-assets/swagger-ui-bundle.js").status_code == 200


def test_binding_needs_a_token_beyond_loopback(serve_index):
    assert is_loopback("127.0.0.1") and is_loopback("::1") and is_loopback("localhost")
    assert not is_loopback("0.0.0.0") and not is_loopback("192.168.1.4")
    check_binding("127.0.0.1", None, False)
    check_binding("0.0.0.0", "tok", False)
    check_binding("0.0.0.0", None, True)
    with pytest.raises(InflucoderError, match="refusing to serve on '0.0.0.0' without a token"):
        check_binding("0.0.0.0", None, False)
    with pytest.raises(InflucoderError, match="not both"):
        check_binding("0.0.0.0", "tok", True)
    result = CliRunner().invoke(
        cli, ["serve", str(serve_index), "--host", "0.0.0.0"], env={"INFLUCODER_TOKEN": None}
    )
    assert result.exit_code == 2 and "without a token" in result.output
    helped = CliRunner().invoke(cli, ["serve", "--help"])
    assert helped.exit_code == 0 and "--ground-truth" in helped.output


@pytest.mark.parametrize("k", [1, 10, 64, 300])
def test_top_rows_is_exact(k):
    """The bounded search equals a full sort, ties (lower row first) and masks included."""
    from influcoder.serve.scores import top_rows

    rng = np.random.default_rng(k)
    scores = np.round(rng.standard_normal(5000), 2).astype(np.float32)  # many ties
    assert top_rows(scores, k).tolist() == top(scores, k).tolist()
    masked = np.where(rng.random(5000) < 0.995, -np.inf, scores).astype(np.float32)
    assert top_rows(masked, k).tolist() == top(masked, k, masked > -np.inf).tolist()
    assert top_rows(scores[:7], k).tolist() == top(scores[:7], k).tolist()


def test_a_bug_is_a_500_and_the_server_keeps_serving(service, monkeypatch):
    with TestClient(create_app(service), raise_server_exceptions=False) as c:
        monkeypatch.setattr(service, "sample", lambda sample_id: 1 / 0)
        r = c.get("/api/samples/p1")
        assert r.status_code == 500 and r.json()["error"].startswith("internal error")
        monkeypatch.undo()
        assert c.get("/api/samples/p1").status_code == 200


@pytest.mark.parametrize("temperature", ["1e999", "Infinity", "NaN", "5e-324"])
def test_an_unusable_temperature_is_a_422_not_a_500(client, temperature):
    """An infinite, not-a-number or subnormal temperature made the group scores infinite, and
    the answer failed to encode (a 500); it is refused with the field named."""
    body = f'{{"text": "{QUERY}", "group_by": "topic", "temperature": {temperature}}}'
    r = client.post("/api/attribute", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 422, r.text
    assert "temperature" in r.text
    assert client.post("/api/attribute", json={"text": QUERY}).status_code == 200
