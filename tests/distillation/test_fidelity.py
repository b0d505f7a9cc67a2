"""The held-out fidelity estimate: samples kept out of distillation altogether, the saved
encoder scored on them, and the figures equal to a separate evaluation of that encoder."""

from __future__ import annotations

import json

import numpy as np
import pytest

from influcoder.distillation.fidelity import (
    MIN_HOLDOUT_POOL,
    MIN_HOLDOUT_QUERIES,
    holdout_split,
)
from influcoder.errors import InflucoderError

from .test_head import _gradient_store, _word_samples


def test_holdout_split_is_seeded_disjoint_and_refuses_too_little():
    a = holdout_split(100, 40, 0.25, seed=3)
    b = holdout_split(100, 40, 0.25, seed=3)
    assert all(np.array_equal(getattr(a, f), getattr(b, f)) for f in ("held_pool", "held_query"))
    assert not np.array_equal(a.held_pool, holdout_split(100, 40, 0.25, seed=4).held_pool)
    assert (len(a.held_pool), len(a.held_query)) == (25, 10)
    for train, held, n in ((a.train_pool, a.held_pool, 100), (a.train_query, a.held_query, 40)):
        assert not set(train) & set(held) and sorted([*train, *held]) == list(range(n))
    assert holdout_split(100, 40, 0.0, seed=0) is None
    # the default applies where it holds out enough, else no estimate
    default = holdout_split(100, 40, None, seed=0)
    assert default is not None and (len(default.held_pool), len(default.held_query)) == (10, 4)
    assert holdout_split(94, 40, None, seed=0) is None
    assert holdout_split(100, 34, None, seed=0) is None
    # a share the user chose that holds out too little is refused, naming what is needed
    with pytest.raises(ValueError, match=f"at least {MIN_HOLDOUT_POOL} pool samples and "):
        holdout_split(60, 20, 0.1, seed=0)
    with pytest.raises(ValueError, match=f"{MIN_HOLDOUT_QUERIES} queries held out"):
        holdout_split(200, 20, 0.1, seed=0)


def _stores(tmp_path, tiny_encoder, n_pool=48, n_query=20):
    """Gradients a random linear map of the tiny encoder's embeddings, so a head learns them."""
    from influcoder.distillation.export import embed
    from influcoder.io.samples import encoder_text

    pool_s, query_s = _word_samples(n_pool, 10, "p"), _word_samples(n_query, 11, "q")
    w = np.random.default_rng(5).standard_normal((32, 16))
    grads = [embed(tiny_encoder, [encoder_text(s) for s in ss]) @ w for ss in (pool_s, query_s)]
    return (
        _gradient_store(tmp_path / "gp", pool_s, grads[0]),
        _gradient_store(tmp_path / "gq", query_s, grads[1]),
    )


def test_the_card_holds_the_saved_encoders_figures_on_samples_it_never_saw(
    tiny_encoder_dir, tiny_encoder, tmp_path
):
    from safetensors.numpy import load_file
    from sentence_transformers import SentenceTransformer

    from influcoder.distillation.settings import DistillArguments
    from influcoder.distillation.stores import distill_stores
    from influcoder.encoders.directory import backbone_path
    from influcoder.evaluation.baselines import encoder_scores
    from influcoder.evaluation.evaluate import metric_rows
    from influcoder.io.samples import encoder_text
    from influcoder.workflows.describe import describe_folder

    pool, queries = _stores(tmp_path, tiny_encoder)
    out = tmp_path / "enc"
    args = DistillArguments(
        epochs=1, views="text", head="kernel", head_similarity="cosine", holdout_fraction=0.25
    )
    result = distill_stores(pool, queries, out, args, encoder=tiny_encoder_dir, progress=False)
    card = json.loads((out / "influcoder_distill.json").read_text())
    fid = card["fidelity"]
    assert fid == json.loads(json.dumps(result.fidelity))
    assert (fid["n_pool"], fid["n_queries"]) == (12, 5)
    held_p, held_q = set(fid["pool_ids"]), set(fid["query_ids"])
    assert held_p <= set(pool.ids) and held_q <= set(queries.ids)
    # what distillation saw: the split's sizes add up to the samples not held out ...
    split = card["split"]
    assert split["train_pool"] + split["val_pool"] == pool.n - 12
    assert split["train_query"] + split["val_query"] == queries.n - 5
    # ... and the kernel head's anchors are the saved backbone's embeddings of exactly those
    anchors = load_file(str(out / "head.safetensors"))["anchors"]
    backbone = SentenceTransformer(backbone_path(str(out)), device="cpu")
    samples = pool.samples + queries.samples
    emb = backbone.encode([encoder_text(s) for s in samples], normalize_embeddings=True)
    nearest = np.abs(emb[:, None, :] - anchors[None, :, :]).max(-1).min(-1)
    seen = nearest < 1e-4
    assert len(anchors) == pool.n + queries.n - 17
    assert {s.id for s, hit in zip(samples, seen) if not hit} == held_p | held_q
    # the figures are a separate evaluation of the saved encoder on the held-out ids
    ip = [i for i, s in enumerate(pool.samples) if s.id in held_p]
    iq = [j for j, s in enumerate(queries.samples) if s.id in held_q]
    gp, gq = pool.vectors()[ip], queries.vectors()[iq]
    gt = (gp / np.linalg.norm(gp, axis=1, keepdims=True)) @ (
        gq / np.linalg.norm(gq, axis=1, keepdims=True)
    ).T
    scores = encoder_scores(
        str(out), [pool.samples[i] for i in ip], [queries.samples[j] for j in iq]
    )
    (row,) = metric_rows(gt, {"saved": scores}, k=10)
    for name in ("per_anchor_spearman", "aggregated_spearman", "recall@10"):
        figure = fid["encoder"][name]
        assert figure["value"] == pytest.approx(row[name], abs=1e-6), name
        assert figure["low"] <= figure["value"] <= figure["high"]
    assert fid["untrained"]["per_anchor_spearman"]["value"] != pytest.approx(
        fid["encoder"]["per_anchor_spearman"]["value"]
    )
    # with the held-out queries' own gradients on the saved basis (--query-gradients)
    from influcoder.encoders.backends import FastEncoder
    from influcoder.encoders.basis import load_basis
    from influcoder.encoders.views import sample_encoder

    enc = sample_encoder(str(out), lambda path: FastEncoder(path, backend="torch"))
    pool_emb = enc.encode_samples([pool.samples[i] for i in ip]).astype(np.float64)
    z = (gq / np.linalg.norm(gq, axis=1, keepdims=True)) @ load_basis(out).directions.T
    z /= np.linalg.norm(z, axis=1, keepdims=True)  # the head compares by cosine
    (own,) = metric_rows(gt, {"own": (pool_emb @ z.T, {})}, k=10)
    for name in ("per_anchor_spearman", "aggregated_spearman", "recall@10"):
        assert fid["query_gradients"][name]["value"] == pytest.approx(own[name], abs=1e-5), name
    card = (out / "README.md").read_text()
    assert "| this encoder | untrained | with query gradients |" in card
    assert "## Fidelity on samples it never saw" in card
    # what it was distilled from: the decoder, the recipe, the data sizes, the head
    assert "## Distilled from" in card
    assert f"Data: {pool.n - 12} pool samples x {queries.n - 5} queries" in card
    assert card.index("## Distilled from") < card.index("## Fidelity on samples")
    info = "\n".join(describe_folder(out))
    assert "held-out fidelity (12 pool samples x 5 queries never distilled on" in info
    assert f"per-anchor {row['per_anchor_spearman']:+.3f}" in info
    with_own = info.split("with --query-gradients ", 1)[1]
    assert f"per-anchor {own['per_anchor_spearman']:+.3f}" in with_own


def test_no_estimate_when_switched_off_and_a_clear_refusal_when_too_small(
    tiny_encoder_dir, tiny_encoder, tmp_path
):
    from influcoder.distillation.settings import DistillArguments
    from influcoder.distillation.stores import distill_stores

    pool, queries = _stores(tmp_path, tiny_encoder)
    args = dict(epochs=0, views="text", head="linear", head_similarity="cosine")
    result = distill_stores(
        pool,
        queries,
        tmp_path / "enc",
        DistillArguments(**args, holdout_fraction=0),
        encoder=tiny_encoder_dir,
        progress=False,
    )
    assert result.fidelity is None
    card = json.loads((tmp_path / "enc" / "influcoder_distill.json").read_text())
    assert "fidelity" not in card and card["head"]["kind"] == "linear"
    with pytest.raises(InflucoderError, match="holdout_fraction=0.1 of 48 pool samples"):
        distill_stores(
            pool,
            queries,
            tmp_path / "enc2",
            DistillArguments(**args, holdout_fraction=0.1),
            encoder=tiny_encoder_dir,
            progress=False,
        )
    assert not (tmp_path / "enc2").exists()
    with pytest.raises(ValueError, match="holdout_fraction must be in"):
        DistillArguments(holdout_fraction=1.0)


def test_the_cli_prints_the_estimate_and_refuses_a_share_too_small(
    tiny_encoder_dir, tiny_encoder, tmp_path
):
    from click.testing import CliRunner

    from influcoder.cli import cli

    pool, queries = _stores(tmp_path, tiny_encoder)
    common = ["distill", str(pool.path), str(queries.path), "--encoder", tiny_encoder_dir, "-q"]
    common += ["--epochs", "0", "--head", "linear", "--views", "text"]
    r = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "e"), "--holdout-fraction", "0.25"])
    assert r.exit_code == 0, r.output
    assert "held-out fidelity (12 pool samples x 5 queries never distilled on" in r.output
    assert "more ground truth is" in r.output and "from half to all the ground truth" in r.output
    r = CliRunner().invoke(cli, [*common, "-o", str(tmp_path / "f"), "--holdout-fraction", "0.05"])
    assert r.exit_code == 2 and "holds out 2 and 1; the fidelity estimate needs" in r.output
    assert not (tmp_path / "f").exists()
