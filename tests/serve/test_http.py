"""The server over real HTTP: uvicorn on a free loopback port, requests from httpx, some of
them at once (the batcher's path), and the gate (token, size limit) on the wire."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

from .conftest import TOKEN

httpx = pytest.importorskip("httpx")

AUTH = {"authorization": f"Bearer {TOKEN}"}


def test_real_server(live_server):
    with httpx.Client(base_url=live_server, timeout=30) as c:
        assert c.get("/api/health").status_code == 401
        assert c.get("/api/health", headers=AUTH).json()["status"] == "ok"
        page = c.get("/")
        assert page.status_code == 200 and "text/html" in page.headers["content-type"]
        r = c.post(
            "/api/attribute", headers=AUTH, json={"text": "The capital of France is Paris.", "k": 3}
        )
        assert r.status_code == 200 and [h["rank"] for h in r.json()["hits"]] == [1, 2, 3]
        assert "encode;dur=" in r.headers["server-timing"]
        big = c.post("/api/attribute", headers=AUTH, json={"text": "z" * 1_100_000})
        assert big.status_code == 413
        bad = c.post(
            "/api/attribute", headers={**AUTH, "content-type": "application/json"}, content=b"{oops"
        )
        assert bad.status_code == 400 and bad.json()["error"] == "malformed JSON body"
        kept = c.post("/api/filter/kept", params={"token": TOKEN}, json={"remove": ["p0"]})
        assert kept.status_code == 200 and len(kept.text.splitlines()) == 23


def test_concurrent_requests_are_batched_and_all_answered(live_server):
    texts = [f"how do I cook {w}" for w in ("bread", "an egg", "cake", "fish")] * 8

    def ask(text):
        with httpx.Client(base_url=live_server, timeout=60) as c:
            r = c.post("/api/attribute", headers=AUTH, json={"text": text, "k": 2})
            return r.status_code, r.json()

    with ThreadPoolExecutor(16) as pool:
        answers = list(pool.map(ask, texts))
    assert all(status == 200 for status, _ in answers)
    by_text = {}
    for text, (_, body) in zip(texts, answers):  # the same query, the same answer
        by_text.setdefault(text, set()).add(tuple(h["id"] for h in body["hits"]))
    assert all(len(v) == 1 for v in by_text.values())
    assert max(body["timing_ms"]["batch"] for _, body in answers) >= 1


def test_onnx_encoder_runs_unlocked_and_concurrently(
    serve_index, service, tiny_encoder, tmp_path, monkeypatch
):
    """With the torch-free ONNX encoder (the default where ONNX Runtime is installed) the
    batch workers encode at once, unlocked, on one sleeping thread each: many queries at once
    get the answers the torch encoder gives."""
    pytest.importorskip("onnxruntime")
    pytest.importorskip("onnx")
    from influcoder.attribution.attributor import text_query
    from influcoder.encoders.backends import query_encoder
    from influcoder.encoders.onnx_query import LightEncoder
    from influcoder.serve.server import open_service
    from influcoder.serve.service import QueryItem

    monkeypatch.setenv("INFLUCODER_CACHE", str(tmp_path / "cache"))
    query_encoder(str(tiny_encoder), backend="onnx", max_seq_length=64)  # exports it
    onnx = open_service(serve_index, backend="onnx", workers=3, max_batch=4)
    try:
        assert isinstance(onnx.attributor.encoder, LightEncoder)  # not behind the lock
        items = [
            QueryItem(text_query(f"{w} the {x}"), 5)
            for w in ("cook", "boil", "steal")
            for x in ("egg", "bread", "money", "cake", "road", "moon")
        ]
        futures = [onnx.submit(item) for item in items]
        got = [f.result(timeout=60) for f in futures]
        want = service.attribute(items)
        assert max(f.batch_size for f in futures) > 1
        for g, w in zip(got, want):
            assert [h["id"] for h in g["hits"]] == [h["id"] for h in w["hits"]]
            np.testing.assert_allclose(
                [h["score"] for h in g["hits"]], [h["score"] for h in w["hits"]], atol=1e-5
            )
    finally:
        onnx.close()
