"""Joint distillation (``regression_weight > 0``): the ranking terms on a trainable head's
outputs plus a cosine regression onto the gradients' principal coordinates."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from sentence_transformers import SentenceTransformer

from influcoder.distillation import distill
from influcoder.distillation.losses import cosine_regression_loss
from influcoder.distillation.settings import DistillArguments

from .conftest import TOPICS
from .test_distill_checkpoint import Killed, kill_at_step, without_seconds

ARGS = {
    "epochs": 3,
    "lr": 3e-3,
    "batch_pool": 16,
    "batch_query": 4,
    "val_fraction": 0.25,
    "patience": 3,
    "steps_per_epoch": 3,
    "head_components": 8,
    "regression_weight": 1.0,
}


def _topics(texts: list[str]) -> np.ndarray:
    return np.array([int(next(w for w in t.split() if w.startswith("t"))[1]) for t in texts])


@pytest.fixture(scope="module")
def vectors(planted):
    """Gradient vectors behind a topic geometry: each sample near its topic's direction in 16
    dims; their cosines are the ground truth."""
    rng = np.random.default_rng(1)
    centres = rng.standard_normal((TOPICS, 16))

    def rows(texts):
        return (centres[_topics(texts)] + 0.4 * rng.standard_normal((len(texts), 16))).astype(
            np.float32
        )

    pool, queries = rows(planted.pool_texts), rows(planted.query_texts)

    def unit(x):
        return x / np.linalg.norm(x, axis=1, keepdims=True)

    return pool, queries, unit(pool) @ unit(queries).T


def _run(encoder_dir, planted, vectors, out=None, **changes):
    encoder = SentenceTransformer(encoder_dir, device="cpu")
    pool, queries, gt = vectors
    result = distill(
        encoder,
        planted.pool_texts,
        planted.query_texts,
        gt,
        DistillArguments(**{**ARGS, **changes}),
        pool_vectors=pool,
        query_vectors=queries,
        out_dir=out,
        progress=False,
    )
    return encoder, result


def test_cosine_regression_loss_matches_a_row_by_row_reference():
    rng = np.random.default_rng(0)
    out, target = rng.standard_normal((7, 5)), rng.standard_normal((7, 5))
    expected = np.mean(
        [1 - a @ b / np.linalg.norm(a) / np.linalg.norm(b) for a, b in zip(out, target)]
    )
    got = cosine_regression_loss(torch.tensor(out), torch.tensor(target))
    assert got.item() == pytest.approx(expected, abs=1e-12)
    with pytest.raises(ValueError, match="same shape"):
        cosine_regression_loss(torch.zeros(3, 2), torch.zeros(3, 4))


def test_joint_training_improves_encoder_plus_head_and_returns_the_bare_encoder(
    tiny_encoder_dir, planted, vectors
):
    modules = len(SentenceTransformer(tiny_encoder_dir, device="cpu"))
    encoder, result = _run(tiny_encoder_dir, planted, vectors, epochs=4, patience=4)
    assert len(encoder) == modules  # the training head is gone: a closed-form one comes next
    # Validation scored encoder + head (unseen pool x unseen queries): training improved it.
    assert result.best_epoch > 0
    assert result.best["per_anchor_spearman"] > result.untrained["per_anchor_spearman"] + 0.05
    losses = [h["train_loss"] for h in result.history]
    assert losses[-1] < losses[0]


def test_joint_training_changes_the_encoder_unlike_ranking_alone(
    tiny_encoder_dir, planted, vectors
):
    """The regression term is live: same seed and blocks, different weights."""
    joint, _ = _run(tiny_encoder_dir, planted, vectors)
    ranking, _ = _run(tiny_encoder_dir, planted, vectors, regression_weight=0.0)
    a, b = joint.state_dict(), ranking.state_dict()
    assert a.keys() == b.keys()
    assert any(not torch.equal(a[k], b[k]) for k in a)


def test_joint_needs_vectors_and_a_head(tiny_encoder_dir, planted, vectors):
    encoder = SentenceTransformer(tiny_encoder_dir, device="cpu")
    with pytest.raises(ValueError, match="pool_vectors and query_vectors"):
        distill(
            encoder,
            planted.pool_texts,
            planted.query_texts,
            vectors[2],
            DistillArguments(**ARGS),
            progress=False,
        )
    with pytest.raises(ValueError, match="one vector per text"):
        distill(
            encoder,
            planted.pool_texts,
            planted.query_texts,
            vectors[2],
            DistillArguments(**ARGS),
            pool_vectors=vectors[0][:-1],
            query_vectors=vectors[1],
            progress=False,
        )
    with pytest.raises(ValueError, match="needs a head"):
        DistillArguments(regression_weight=1.0, head="none")
    with pytest.raises(ValueError, match=">= 0"):
        DistillArguments(regression_weight=-1.0)


def test_killed_joint_run_resumes_to_the_uninterrupted_result(
    tiny_encoder_dir, planted, vectors, tmp_path, monkeypatch
):
    whole, whole_result = _run(tiny_encoder_dir, planted, vectors, tmp_path / "whole")
    out = tmp_path / "killed"
    with monkeypatch.context() as m:
        kill_at_step(m, 2 * ARGS["steps_per_epoch"] + 1)
        with pytest.raises(Killed):
            _run(tiny_encoder_dir, planted, vectors, out)
    resumed, resumed_result = _run(tiny_encoder_dir, planted, vectors, out)
    expected, got = whole.state_dict(), resumed.state_dict()
    assert expected.keys() == got.keys()
    assert all(torch.equal(expected[k], got[k]) for k in expected)
    assert without_seconds(resumed_result.history) == without_seconds(whole_result.history)
    card = json.loads((out / "influcoder_distill.json").read_text())
    assert card["args"]["regression_weight"] == ARGS["regression_weight"]


def test_distill_stores_joint_reads_the_vectors_once_and_appends_the_head(
    tiny_encoder_dir, planted, vectors, tmp_path, monkeypatch
):
    """Through the stores: joint training, then the closed-form head (Dense [+ Normalize]),
    the stores' vectors read once for both."""
    from influcoder.distillation.stores import distill_stores
    from influcoder.io.samples import Sample
    from influcoder.io.stores import Store

    from .test_head import _gradient_store

    def samples(texts, prefix):
        return [Sample(id=f"{prefix}{i}", prompt=t, response=t) for i, t in enumerate(texts)]

    pool = _gradient_store(tmp_path / "gp", samples(planted.pool_texts, "p"), vectors[0])
    queries = _gradient_store(tmp_path / "gq", samples(planted.query_texts, "q"), vectors[1])
    reads = []
    original = Store.vectors
    monkeypatch.setattr(
        Store, "vectors", lambda self, *a, **k: reads.append(self.path) or original(self, *a, **k)
    )
    result = distill_stores(
        pool,
        queries,
        tmp_path / "enc",
        DistillArguments(**{**ARGS, "epochs": 1, "head": "linear"}),
        encoder=tiny_encoder_dir,
        progress=False,
    )
    # Once each for joint training and the head together; the queries once more for the
    # ground-truth matrix, which streams the pool in chunks against all queries.
    assert [str(p) for p in reads].count(str(pool.path)) == 1
    assert [str(p) for p in reads].count(str(queries.path)) == 2
    assert result.head is not None and result.head["kind"] == "linear"
    loaded = SentenceTransformer(str(tmp_path / "enc"), device="cpu")
    # the head's similarity (auto) decides whether a Normalize follows the Dense
    cosine = result.head["similarity"] == "cosine"
    assert [type(m).__name__ for m in loaded][-2:] == (
        ["Dense", "Normalize"] if cosine else ["Pooling", "Dense"]
    )
    assert loaded.similarity_fn_name == ("cosine" if cosine else "dot")
