"""The ``learned`` group aggregate end to end: ``distill-runs --pooling attention`` on a tiny
run store, an index of its encoder, ``attribute --group-by --group-aggregate learned`` through
the CLI (checked against the attention pooling of the group's members), the real HTTP server
answering it, and the clean refusals without a pooler."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch

from influcoder.distillation.pooling import AttentionPooling
from influcoder.encoders.directory import load_encoder
from influcoder.io.samples import encoder_text, load_samples

from ..serve.conftest import TOKEN, running
from ..tiny_encoders import pool_rows
from .test_distill_runs import TRAIN, run, stores  # noqa: F401

httpx = pytest.importorskip("httpx")
AUTH = {"authorization": f"Bearer {TOKEN}"}
QUERY = "The capital of France is Paris."


@pytest.fixture(scope="module")
def learned_index(stores, tiny_encoder, tmp_path_factory):  # noqa: F811
    tmp = tmp_path_factory.mktemp("learned")
    encoder = tmp / "airrep"
    r = run("distill-runs", stores / "v/runs", stores / "pool", stores / "heldout", "-o", encoder,
            "--encoder", tiny_encoder, "--pooling", "attention", "--pooling-lr", "0.5", *TRAIN)  # fmt: skip
    assert r.exit_code == 0, r.output
    data = tmp / "pool.jsonl"
    data.write_text("".join(json.dumps(row) + "\n" for row in pool_rows()))
    for name, enc in (("index", encoder), ("plain", tiny_encoder)):
        r = run("index", enc, data, "--out", tmp / name, "--dtype", "float32", "--backend", "torch")
        assert r.exit_code == 0, r.output
    return tmp


def expected_learned(folder, data):
    """The attention pooling of each topic's members, as training computes it."""
    card = json.loads((folder / "influcoder_runs.json").read_text())
    model = load_encoder(str(folder))
    pool_samples = load_samples(data)
    texts = [encoder_text(s) for s in pool_samples]
    pool = model.encode(texts, normalize_embeddings=True, convert_to_tensor=True).double()
    query = model.encode([QUERY], normalize_embeddings=True, convert_to_tensor=True).double()
    topics = sorted({s.meta["topic"] for s in pool_samples})
    members = torch.tensor(
        [[float(s.meta["topic"] == t) for s in pool_samples] for t in topics], dtype=torch.float64
    )
    pooling = AttentionPooling(pool.shape[1], card["pooling"]["temperature"]).double()
    with torch.no_grad():
        pooling.weight.copy_(torch.tensor(card["pooling"]["weight"], dtype=torch.float64))
        scores = pooling(members, pool, query)[:, 0].numpy()
    return dict(zip(topics, scores))


def test_attribute_group_by_learned_through_the_cli(learned_index, tmp_path):
    out = tmp_path / "groups.json"
    r = run("attribute", learned_index / "index", "--text", QUERY, "--group-by", "topic",
            "--group-aggregate", "learned", "--backend", "torch", "-o", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    rows = json.loads(out.read_text())
    learned = [row["learned"] for row in rows]
    assert learned == sorted(learned, reverse=True) and {r["group"] for r in rows} == {
        "t0",
        "t1",
        "t2",
    }
    expected = expected_learned(learned_index / "airrep", learned_index / "pool.jsonl")
    for row in rows:
        np.testing.assert_allclose(row["learned"], expected[row["group"]], rtol=1e-4, atol=1e-5)
    # the table shows learned beside the other aggregates
    r = run("attribute", learned_index / "index", "--text", QUERY, "--group-by", "topic",
            "--backend", "torch")  # fmt: skip
    assert r.exit_code == 0 and "softmax   learned  group" in r.output, r.output


def test_learned_without_a_pooler_is_refused(learned_index):
    r = run("attribute", learned_index / "plain", "--text", QUERY, "--group-by", "topic",
            "--group-aggregate", "learned", "--backend", "torch")  # fmt: skip
    assert r.exit_code == 2, r.output
    assert "--group-aggregate learned: the encoder" in r.output
    assert "carries no learned pooler" in r.output and "Traceback" not in r.output


def test_the_server_ranks_groups_by_the_learned_pooler(learned_index):
    from influcoder.serve.server import open_service

    body = {"text": QUERY, "group_by": "topic", "group_aggregate": "learned"}
    for name, pooled in (("index", True), ("plain", False)):
        service = open_service(learned_index / name, backend="torch")
        try:
            with running(service) as url, httpx.Client(base_url=url, timeout=60) as c:
                info = c.get("/api/info", headers=AUTH).json()
                assert ("learned" in info["group_aggregates"]) is pooled
                r = c.post("/api/attribute", headers=AUTH, json=body)
                if pooled:
                    assert r.status_code == 200, r.text
                    groups = r.json()["groups"]
                    learned = [row["learned"] for row in groups["rows"]]
                    assert groups["aggregate"] == "learned" and None not in learned
                    assert learned == sorted(learned, reverse=True)
                else:
                    assert r.status_code == 400, r.text
                    message = r.json()["error"]
                    assert "group_aggregate 'learned'" in message and "no learned pooler" in message
                    plain = c.post(
                        "/api/attribute", headers=AUTH, json={**body, "group_aggregate": "softmax"}
                    )
                    assert (
                        plain.status_code == 200
                        and plain.json()["groups"]["rows"][0]["learned"] is None
                    )
        finally:
            service.close()


def test_evaluate_group_by_shows_learned_beside_the_other_aggregates(
    learned_index, tiny_encoder, tmp_path
):
    from influcoder.io.samples import load_samples

    from ..conftest import write_store

    samples = load_samples(learned_index / "pool.jsonl")
    rng = np.random.default_rng(1)
    pool = write_store(tmp_path / "gpool", rng.normal(size=(len(samples), 8)), samples)
    queries = write_store(tmp_path / "gq", rng.normal(size=(6, 8)), samples[:6])
    out = tmp_path / "eval"
    r = run("evaluate", pool.path, queries.path, "-e", f"airrep={learned_index / 'airrep'}",
            "-e", f"plain={tiny_encoder}", "--baselines", "none", "--group-by", "topic",
            "--device", "cpu", "--out", out)  # fmt: skip
    assert r.exit_code == 0, r.output
    assert "group_spearman by aggregate" in r.output and "  learned" in r.output
    by = json.loads((out / "results.json").read_text())["groups"]["by_aggregate"]
    assert set(by["airrep"]) == {"mean", "sum", "max", "softmax", "learned"}
    assert set(by["plain"]) == set(by["gradient"]) == {"mean", "sum", "max", "softmax"}
    assert by["gradient"]["softmax"] == 1.0  # the reference ranking is the gradient's softmax
    assert all(-1 <= v <= 1 for v in by["airrep"].values())
