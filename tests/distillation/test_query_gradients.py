"""Query gradients, pool embeddings, on tiny models through the CLI: ``distill`` saves the
head's principal directions (the gradient basis, equal to those recomputed from the stores);
``attribute --query-gradients`` equals a slow reference (collect the queries ``--like`` the
pool, project by hand, cosine against the encoder's pool embeddings); encoders without a
basis and stores of another setup are refused by name."""

from __future__ import annotations

import json

import numpy as np
import pytest
from click.testing import CliRunner

from influcoder.cli import cli

from ..conftest import write_jsonl
from .conftest import FILLER, TOPIC_WORDS


def _rows(prefix, n, offset=0):
    """Samples in the tiny encoder's vocabulary (so its embeddings differ), a topic each."""
    rows = []
    for i in range(offset, offset + n):
        words = TOPIC_WORDS[i % len(TOPIC_WORDS)]
        prompt = f"{words[i % 6]} {FILLER[i % 24]} {words[(i + 1) % 6]}"
        response = f"{words[(i + 2) % 6]} {FILLER[(i * 5) % 24]} {words[(i + 3) % 6]}"
        rows.append({"id": f"{prefix}{i}", "prompt": prompt, "response": response})
    return rows


def run(*args):
    r = CliRunner().invoke(cli, [str(a) for a in args], catch_exceptions=False)
    return r


def ok(*args):
    r = run(*args)
    assert r.exit_code == 0, r.output
    return r.output


@pytest.fixture(scope="module")
def made(tiny_model_dir, tiny_encoder_dir, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("query-gradients")
    files = {
        "pool": write_jsonl(tmp / "pool.jsonl", _rows("p", 24)),
        "train": write_jsonl(tmp / "train.jsonl", _rows("t", 12, offset=100)),
        "test": write_jsonl(tmp / "test.jsonl", _rows("q", 5, offset=200)),
    }
    ok("collect", files["pool"], "-o", tmp / "gp", "--model", tiny_model_dir,
       "--sketch-dim", "64", "--max-length", "64", "-q")  # fmt: skip
    ok("collect", files["train"], "--like", tmp / "gp", "-o", tmp / "gt", "-q")
    for head in ("linear", "kernel"):
        ok("distill", tmp / "gp", tmp / "gt", "-o", tmp / f"enc_{head}", "--encoder",
           tiny_encoder_dir, "--epochs", "1", "--head", head, "--head-components", "8",
           "--holdout-fraction", "0", "--views", "text" if head == "linear" else "auto",
           "--head-similarity", "dot" if head == "linear" else "cosine", "-q")  # fmt: skip
        ok("index", tmp / f"enc_{head}", files["pool"], "-o", tmp / f"index_{head}", "--dtype",
           "float32", "--backend", "torch", "-q")  # fmt: skip
    return tmp, files


@pytest.mark.parametrize("head", ["linear", "kernel"])
def test_distill_saves_the_heads_principal_directions(made, head):
    from sentence_transformers import SentenceTransformer

    from influcoder.distillation.linear import principal_directions
    from influcoder.encoders.basis import load_basis
    from influcoder.io.stores import open_store

    tmp, _ = made
    pool, train = open_store(tmp / "gp"), open_store(tmp / "gt")
    basis = load_basis(tmp / f"enc_{head}")
    expected = principal_directions(np.vstack([pool.vectors(), train.vectors()]), 8)
    np.testing.assert_allclose(basis.directions, expected, atol=1e-6)
    assert basis.setup == pool.setup
    card = json.loads((tmp / f"enc_{head}" / "influcoder_distill.json").read_text())
    assert card["head"]["kind"] == head and card["head"]["components"] == 8
    assert card["head"]["similarity"] == ("dot" if head == "linear" else "cosine")
    if head == "linear":  # the text view's linear head is a Dense: plain ST still loads it
        assert (
            SentenceTransformer(str(tmp / "enc_linear"), device="cpu").encode(["x"]).shape[1] == 8
        )


@pytest.mark.parametrize("head", ["linear", "kernel"])
def test_attribute_with_query_gradients_equals_the_reference(made, head):
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.basis import load_basis
    from influcoder.encoders.directory import encoder_similarity
    from influcoder.encoders.views import sample_encoder
    from influcoder.groundtruth.collect import collect
    from influcoder.io.samples import load_samples
    from influcoder.io.stores import open_store

    tmp, files = made
    encoder = tmp / f"enc_{head}"
    out = tmp / f"top_{head}.jsonl"
    ok("attribute", tmp / f"index_{head}", files["test"], "--query-gradients", tmp / "gp",
       "-k", "4", "-o", out, "--device", "cpu")  # fmt: skip
    got = [json.loads(line) for line in out.read_text().splitlines()]

    # the slow reference: a query store, projected by hand, against every pool embedding
    queries = collect(
        files["test"], tmp / f"gq_{head}", like=open_store(tmp / "gp"), progress=False
    )
    g = queries.vectors().astype(np.float64)
    z = (g / np.linalg.norm(g, axis=1, keepdims=True)) @ load_basis(encoder).directions.T
    if encoder_similarity(str(encoder)) == "cosine":  # the kernel encoder's; linear's is dot
        z /= np.linalg.norm(z, axis=1, keepdims=True)
    pool_samples = load_samples(files["pool"])
    emb = sample_encoder(str(encoder), lambda p: FastEncoder(p, backend="torch"))
    scores = emb.encode_samples(pool_samples).astype(np.float64) @ z.T
    row_of = {s.id: i for i, s in enumerate(pool_samples)}
    for j, query in enumerate(queries.samples):
        hits = sorted((r for r in got if r["query_id"] == query.id), key=lambda r: r["rank"])
        assert len(hits) == 4
        for r in hits:  # each hit's score is the reference's for that pool sample
            assert r["score"] == pytest.approx(scores[row_of[r["id"]], j], abs=1e-4)
        best = np.sort(scores[:, j])[::-1][:4]  # and they are the four best (ties aside)
        np.testing.assert_allclose([r["score"] for r in hits], best, atol=1e-4)
    assert len({round(float(x), 4) for x in scores.ravel()}) > scores.size // 2  # few ties


def test_query_gradients_refuse_an_encoder_without_a_basis_and_another_setup(
    made, tiny_encoder_dir
):
    tmp, files = made
    ok("index", tiny_encoder_dir, files["pool"], "-o", tmp / "index_plain", "-q")
    r = run("attribute", tmp / "index_plain", files["test"], "--query-gradients", tmp / "gp")
    assert r.exit_code != 0 and "has no gradient basis" in r.output
    ok("collect", files["test"], "-o", tmp / "other", "--like", tmp / "gp", "-q")
    setup = json.loads((tmp / "other" / "manifest.json").read_text())
    setup["setup"]["sketch"]["seed"] = 7  # a store whose gradients were sketched otherwise
    (tmp / "other" / "manifest.json").write_text(json.dumps(setup))
    r = run("attribute", tmp / "index_linear", files["test"], "--query-gradients", tmp / "other")
    assert r.exit_code != 0
    assert "taken otherwise" in r.output and "sketch.seed: 0 vs 7" in r.output


def test_card_estimate_benchmark_scores_the_encoder_on_a_separate_test(made, tmp_path):
    """benchmarks/card_estimate.py: the card's held-out figures as recorded; the separate
    test's by hand (encoder cosines, and query gradients on the basis, against the gradients)."""
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.basis import load_basis
    from influcoder.encoders.directory import encoder_similarity
    from influcoder.encoders.views import sample_encoder
    from influcoder.io.stores import open_store
    from influcoder.metrics import per_anchor_spearman
    from influcoder.similarity import cosine_matrix, unit_rows
    from tests.benchmarks.test_bench_peers import _bench

    tmp, files = made
    enc = tmp / "enc_holdout"
    ok("distill", tmp / "gp", tmp / "gt", "-o", enc, "--encoder", made_encoder(tmp), "--epochs",
       "0", "--head", "linear", "--head-components", "8", "--holdout-fraction", "0.42",
       "--val-fraction", "0.3", "-q")  # fmt: skip
    other = write_jsonl(tmp_path / "other.jsonl", _rows("x", 10, offset=300))
    ok("collect", other, "--like", tmp / "gp", "-o", tmp_path / "xp", "-q")
    ok("collect", files["test"], "--like", tmp / "gp", "-o", tmp_path / "xq", "-q")
    out = tmp_path / "c.json"
    _bench("card_estimate").main(
        [str(enc), "--pool", str(tmp_path / "xp"), "--queries", str(tmp_path / "xq"),
         "--json", str(out)]
    )  # fmt: skip
    result = json.loads(out.read_text())
    card = json.loads((enc / "influcoder_distill.json").read_text())["fidelity"]
    assert result["card"]["encoder"] == card["encoder"] and card["n_pool"] == 10
    xp, xq = open_store(tmp_path / "xp"), open_store(tmp_path / "xq")
    gt = cosine_matrix(xp.vectors(), xq.vectors())
    emb = sample_encoder(str(enc), lambda p: FastEncoder(p, backend="torch"))
    pool_emb = emb.encode_samples(xp.samples)
    by_hand = per_anchor_spearman(gt, cosine_matrix(pool_emb, emb.encode_samples(xq.samples)))
    separate = result["separate"]
    assert separate["encoder"]["per_anchor"]["value"] == pytest.approx(by_hand, abs=1e-6)
    z = unit_rows(xq.vectors().astype(np.float64)) @ load_basis(enc).directions.T
    if encoder_similarity(str(enc)) == "cosine":
        z = unit_rows(z)
    by_hand = per_anchor_spearman(gt, pool_emb @ z.T)
    assert separate["query gradients"]["per_anchor"]["value"] == pytest.approx(by_hand, abs=1e-6)


def made_encoder(tmp):
    """The tiny encoder the module's encoders were distilled from (their card names it)."""
    return json.loads((tmp / "enc_linear" / "influcoder_distill.json").read_text())["base_encoder"]


def test_serve_with_query_gradients_answers_as_attribute_does(made):
    """``serve --query-gradients``: the decoder loads once, at start; each request's hits are
    the CLI's (which the test above checks against the slow reference), concurrent requests
    and a mix of both modes included; ``query_gradient: false`` gets the encoder's answer;
    /api/info says which store the gradients are taken like."""
    from concurrent.futures import ThreadPoolExecutor
    from pathlib import Path

    import httpx

    from influcoder.io.samples import load_samples
    from influcoder.serve.server import open_service
    from tests.serve.conftest import TOKEN, running

    tmp, files = made
    out = tmp / "top_serve_reference.jsonl"
    ok("attribute", tmp / "index_linear", files["test"], "--query-gradients", tmp / "gp",
       "-k", "4", "-o", out, "--device", "cpu")  # fmt: skip
    fast_out = tmp / "top_serve_encoder.jsonl"
    ok("attribute", tmp / "index_linear", files["test"], "-k", "4", "-o", fast_out,
       "--backend", "torch")  # fmt: skip
    expected = {True: {}, False: {}}
    for mode, path in ((True, out), (False, fast_out)):
        for line in path.read_text().splitlines():
            row = json.loads(line)
            hit = (row["rank"], row["id"], row["score"])
            expected[mode].setdefault(row["query_id"], []).append(hit)
    service = open_service(tmp / "index_linear", query_gradients=str(tmp / "gp"), backend="torch")
    assert service.exact.encoder.collector._compute is not None  # loaded at start
    auth = {"Authorization": f"Bearer {TOKEN}"}
    try:
        with running(service) as url, httpx.Client(base_url=url, timeout=60) as c:
            info = c.get("/api/info", headers=auth).json()
            assert info["backend"] == "torch"  # the encoder's, for query_gradient: false
            assert Path(info["query_gradients"]).resolve() == (tmp / "gp").resolve()

            def ask(sample_and_mode):
                sample, mode = sample_and_mode
                body = {"prompt": sample.prompt, "response": sample.response, "k": 4}
                if mode is not None:
                    body["query_gradient"] = mode
                r = c.post("/api/attribute", headers=auth, json=body)
                assert r.status_code == 200, r.text
                assert r.json()["query_gradient"] is (mode is not False)
                return sample.id, mode is not False, r.json()["hits"]

            samples = load_samples(files["test"])
            asks = [(s, m) for m in (None, True, False) for s in samples]
            with ThreadPoolExecutor(4) as pool:
                answers = list(pool.map(ask, asks))
    finally:
        service.close()
    for query_id, mode, hits in answers:
        want = sorted(expected[mode][query_id])
        assert [h["rank"] for h in hits] == [1, 2, 3, 4]
        np.testing.assert_allclose([h["score"] for h in hits], [w[2] for w in want], atol=2e-3)
        assert [h["id"] for h in hits][:1] == [w[1] for w in want][:1]


def test_python_api_takes_query_gradients(made):
    """``influcoder.attribute(..., query_gradients=STORE)`` gives the CLI's hits; an
    :class:`Attributor` loaded with a store keeps its decoder between calls."""
    from pathlib import Path

    import influcoder
    from influcoder.attribution.attributor import Attributor
    from influcoder.io.stores import open_store

    tmp, files = made
    out = tmp / "top_api_reference.jsonl"
    ok("attribute", tmp / "index_linear", files["test"], "--query-gradients", tmp / "gp",
       "-k", "3", "-o", out, "--device", "cpu")  # fmt: skip
    cli_hits = [
        (r["query_id"], r["id"], r["score"]) for r in map(json.loads, out.read_text().splitlines())
    ]
    queries = Path(files["test"])
    results = influcoder.attribute(
        tmp / "index_linear", queries, k=3, query_gradients=open_store(tmp / "gp")
    )
    got = [(res.query.id, h.id, h.score) for res in results for h in res.hits]
    assert [g[:2] for g in got] == [c[:2] for c in cli_hits]
    np.testing.assert_allclose([g[2] for g in got], [c[2] for c in cli_hits], atol=1e-6)
    attributor = Attributor.load(tmp / "index_linear", query_gradients=tmp / "gp")
    first = influcoder.attribute(attributor, queries, k=3)
    compute = attributor.encoder.collector._compute
    second = influcoder.attribute(attributor, queries, k=3)
    assert attributor.encoder.collector._compute is compute  # not loaded again
    assert [h.score for r in first for h in r.hits] == [h.score for r in second for h in r.hits]
