"""The closed-form linear head: exact ridge, alpha by validation, saved as plain ST modules, and
a planted gradient geometry that is a linear map of the embeddings, which the head recovers."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.stats import spearmanr

from influcoder.distillation.export import append_head, embed
from influcoder.distillation.head_fit import fit_head, validation_folds
from influcoder.distillation.linear import (
    LinearHead,
    principal_coordinates,
    principal_directions,
    ridge,
)
from influcoder.metrics import per_anchor_spearman


def _ridge_reference(x, y, alpha):
    """Ridge with an unpenalised intercept as one least-squares problem on the augmented
    system ``[[x, 1], [sqrt(alpha) I, 0]] @ [W; b] = [y; 0]``."""
    n, d = x.shape
    a = np.block([[x, np.ones((n, 1))], [np.sqrt(alpha) * np.eye(d), np.zeros((d, 1))]])
    sol = np.linalg.lstsq(a, np.vstack([y, np.zeros((d, y.shape[1]))]), rcond=None)[0]
    return sol[:d].T, sol[d]


@pytest.mark.parametrize("n,d", [(40, 7), (6, 15)])  # the primal and the dual solve
@pytest.mark.parametrize("alpha", [1e-3, 2.5])
def test_ridge_equals_least_squares_on_the_augmented_system(n, d, alpha):
    rng = np.random.default_rng(n + d)
    x = rng.standard_normal((n, d)) + 3.0  # off-centre, so the intercept matters
    y = rng.standard_normal((n, 4)) - 1.0
    weight, bias = ridge(x, y, alpha)
    ref_weight, ref_bias = _ridge_reference(x, y, alpha)
    np.testing.assert_allclose(weight, ref_weight, rtol=1e-9, atol=1e-10)
    np.testing.assert_allclose(bias, ref_bias, rtol=1e-9, atol=1e-10)


def test_ridge_refuses_bad_input():
    with pytest.raises(ValueError):
        ridge(np.ones((3, 2)), np.ones((4, 1)), 1.0)
    with pytest.raises(ValueError):
        ridge(np.ones((3, 2)), np.ones((3, 1)), 0.0)


def test_principal_coordinates_keep_the_dot_products_of_the_normalised_rows():
    rng = np.random.default_rng(0)
    g = rng.standard_normal((12, 5)) * np.array([5, 3, 1, 0.1, 0.01]) + 2.0
    unit = g / np.linalg.norm(g, axis=1, keepdims=True)
    z = principal_coordinates(g, 5)  # full rank: every dot product kept
    np.testing.assert_allclose(z @ z.T, unit @ unit.T, atol=1e-6)
    z2 = principal_coordinates(g, 2)  # truncated: keeps most of the ranking
    assert per_anchor_spearman(unit @ unit.T, z2 @ z2.T) > 0.9
    # Rank-deficient input: directions beyond the rank are dropped, the rest orthonormal.
    low = rng.standard_normal((10, 3)) @ rng.standard_normal((3, 8))
    v = principal_directions(low, 6)
    assert v.shape == (3, 8)
    np.testing.assert_allclose(v @ v.T, np.eye(3), atol=1e-9)
    flat = principal_coordinates(low, 6)
    unit = low / np.linalg.norm(low, axis=1, keepdims=True)
    np.testing.assert_allclose(flat @ flat.T, unit @ unit.T, atol=1e-6)


def _linear_geometry(n_pool, n_query, d=6, dim=24, noise=0.0, seed=0):
    """Embeddings ``x`` and gradients ``x @ m`` (+ noise) through a strongly anisotropic ``m``:
    the gradients' cosines rank differently from the embeddings' own."""
    rng = np.random.default_rng(seed)
    m = rng.standard_normal((d, dim)) * np.geomspace(10, 0.1, dim)
    x = rng.standard_normal((n_pool + n_query, d)) + 0.5
    g = x @ m + noise * rng.standard_normal((len(x), dim))
    return x[:n_pool], g[:n_pool], x[n_pool:], g[n_pool:]


def _scipy_figures(gp, gq, pred):
    """(per-anchor, aggregated) Spearman of ``pred`` against the cosines of ``gp`` and ``gq``,
    spelled out with scipy."""
    truth = gp @ gq.T / np.outer(np.linalg.norm(gp, axis=1), np.linalg.norm(gq, axis=1))
    return (
        np.mean([spearmanr(truth[:, j], pred[:, j]).statistic for j in range(len(gq))]),
        spearmanr(truth.mean(axis=1), pred.mean(axis=1)).statistic,
    )


def _brute_force(xp, gp, xq, gq, alphas, similarity="cosine"):
    """alpha -> (per-anchor, aggregated) on fit_head's folds, spelled out: targets from an
    independent SVD, sklearn's ridge, scipy's Spearman."""
    from sklearn.linear_model import Ridge

    expected = {}
    for alpha in alphas:
        figures = []
        for vp, vq in validation_folds(len(xp), len(xq), 4, seed=3):
            fp, fq = np.setdiff1d(np.arange(len(xp)), vp), np.setdiff1d(np.arange(len(xq)), vq)
            g = np.vstack([gp[fp], gq[fq]])
            g /= np.linalg.norm(g, axis=1, keepdims=True)
            z = g @ np.linalg.svd(g)[2][:8].T
            model = Ridge(alpha=alpha).fit(np.vstack([xp[fp], xq[fq]]), z)
            hp, hq = model.predict(xp[vp]), model.predict(xq[vq])
            if similarity == "cosine":
                hp = hp / np.linalg.norm(hp, axis=1, keepdims=True)
                hq = hq / np.linalg.norm(hq, axis=1, keepdims=True)
            figures.append(_scipy_figures(gp[vp], gq[vq], hp @ hq.T))
        expected[alpha] = np.mean(figures, axis=0)
    return expected


def test_alpha_selection_matches_a_brute_force_validation_and_takes_its_best():
    xp, gp, xq, gq = _linear_geometry(32, 24, d=10, noise=30.0, seed=1)
    alphas = (1e-4, 1.0, 30.0, 1e3)
    head = fit_head(xp, gp, xq, gq, components=8, alphas=alphas, folds=4, seed=3)
    expected = {a: f[0] for a, f in _brute_force(xp, gp, xq, gq, alphas).items()}
    assert list(head.validation) == list(alphas)
    np.testing.assert_allclose(
        [head.validation[a] for a in alphas], [expected[a] for a in alphas], atol=1e-5
    )
    assert head.alpha == max(expected, key=expected.get)
    # The planted noise makes the choice matter: the best is neither end of the grid.
    assert head.alpha not in (alphas[0], alphas[-1])


def test_auto_similarity_scores_both_like_a_brute_force_and_keeps_the_better_mean():
    xp, gp, xq, gq = _linear_geometry(32, 24, d=10, noise=30.0, seed=1)
    alphas = (1e-4, 1.0, 30.0, 1e3)
    head = fit_head(xp, gp, xq, gq, components=8, alphas=alphas, folds=4, seed=3, similarity="auto")
    means = {}
    for how in ("cosine", "dot"):
        expected = _brute_force(xp, gp, xq, gq, alphas, how)
        alpha = max(alphas, key=lambda a: (expected[a][0], a))
        got = head.similarity_validation[how]
        np.testing.assert_allclose(
            [got["per_anchor"], got["aggregated"]], expected[alpha], atol=1e-5
        )
        means[how] = float(np.mean(expected[alpha]))
    assert head.similarity == max(means, key=means.get)
    assert head.card()["similarity"] == head.similarity
    one = fit_head(xp, gp, xq, gq, components=8, alphas=alphas, folds=4, seed=3, similarity="dot")
    assert one.similarity == "dot" and list(one.similarity_validation) == ["dot"]
    with pytest.raises(ValueError, match="similarity"):
        fit_head(xp, gp, xq, gq, components=8, folds=4, similarity="euclidean")


def test_alpha_ties_go_to_the_stronger_ridge():
    # Unit gradients that are an exact linear map of the embeddings: tiny alphas rank perfectly.
    rng = np.random.default_rng(0)
    g = rng.standard_normal((48, 3))
    g /= np.linalg.norm(g, axis=1, keepdims=True)
    x = g @ np.linalg.inv(rng.standard_normal((3, 3)))
    head = fit_head(x[:24], g[:24], x[24:], g[24:], components=3, alphas=(1e-9, 1e-8), folds=3)
    assert head.validation[1e-9] == head.validation[1e-8] > 0.999
    assert head.alpha == 1e-8


def test_planted_linear_geometry_is_recovered_on_held_out_pool_and_queries():
    xp, gp, xq, gq = _linear_geometry(120, 60, noise=0.05)
    fit_p, test_p, fit_q, test_q = slice(0, 80), slice(80, None), slice(0, 40), slice(40, None)
    head = fit_head(xp[fit_p], gp[fit_p], xq[fit_q], gq[fit_q], components=24)
    truth = (
        gp[test_p]
        @ gq[test_q].T
        / np.outer(np.linalg.norm(gp[test_p], axis=1), np.linalg.norm(gq[test_q], axis=1))
    )

    def cosines(a, b):
        return (a / np.linalg.norm(a, axis=1, keepdims=True)) @ (
            b / np.linalg.norm(b, axis=1, keepdims=True)
        ).T

    untrained = per_anchor_spearman(truth, cosines(xp[test_p], xq[test_q]))
    with_head = per_anchor_spearman(truth, cosines(head(xp[test_p]), head(xq[test_q])))
    assert with_head > 0.95
    assert untrained < 0.8
    assert head.encoder_validation < 0.8 < max(head.validation.values())


def test_fit_head_refuses_too_few_samples_and_mismatches():
    xp, gp, xq, gq = _linear_geometry(6, 6)
    with pytest.raises(ValueError, match="validation needs"):
        fit_head(xp, gp, xq, gq, folds=4)
    with pytest.raises(ValueError, match="must match"):
        fit_head(xp, gp[:-1], xq, gq, folds=2)


def test_saved_head_is_a_plain_sentence_transformer_giving_head_of_encoder(tiny_encoder, tmp_path):
    from sentence_transformers import SentenceTransformer

    texts = ["t0w1 f3 f4", "t1w2 t1w3 f0", "f1 f2 t3w0 t3w1", "t2w5"]
    base = embed(tiny_encoder, texts)
    rng = np.random.default_rng(0)
    head = LinearHead(
        weight=rng.standard_normal((5, base.shape[1])),
        bias=rng.standard_normal(5),
        alpha=1.0,
        components=5,
    )
    append_head(tiny_encoder, head).save(str(tmp_path / "enc"))

    loaded = SentenceTransformer(str(tmp_path / "enc"), device="cpu")
    modules = json.loads((tmp_path / "enc" / "modules.json").read_text())
    assert [m["type"].rsplit(".", 1)[-1] for m in modules][-2:] == ["Dense", "Normalize"]
    expected = head(base)
    expected /= np.linalg.norm(expected, axis=1, keepdims=True)
    np.testing.assert_allclose(embed(loaded, texts), expected, atol=1e-5)


def test_append_head_refuses_a_head_of_another_width(tiny_encoder):
    head = LinearHead(weight=np.ones((2, 7)), bias=np.zeros(2), alpha=1.0, components=2)
    with pytest.raises(ValueError, match="7-dim"):
        append_head(tiny_encoder, head)


def _word_samples(n, seed, prefix):
    from influcoder.io.samples import Sample

    from .conftest import FILLER, TOPIC_WORDS

    rng = np.random.default_rng(seed)
    words = [w for topic in TOPIC_WORDS for w in topic] + FILLER
    return [
        Sample(
            id=f"{prefix}{i}",
            prompt=" ".join(rng.choice(words, 3)),
            response=" ".join(rng.choice(words, 3)),
        )
        for i in range(n)
    ]


def _gradient_store(path, samples, vectors):
    from influcoder.io.stores import StoreWriter

    writer = StoreWriter(
        path,
        kind="gradients",
        setup={"sketch": {"dim": vectors.shape[1]}},
        samples=samples,
        dim=vectors.shape[1],
        dtype="float32",
        shard_rows=len(samples),
    )
    writer.write_shard(0, vectors.astype(np.float32))
    return writer.finish()


def test_distill_stores_with_epochs_0_appends_a_head_that_recovers_the_planted_geometry(
    tiny_encoder_dir, tiny_encoder, tmp_path
):
    """Gradients planted as a linear map of the tiny encoder's own embeddings: the distill
    stage with no training and the linear head yields a plain ST directory whose cosines rank
    unseen pool samples for unseen queries like the planted gradients."""
    from sentence_transformers import SentenceTransformer

    from influcoder.distillation.settings import DistillArguments
    from influcoder.distillation.stores import distill_stores
    from influcoder.io.samples import encoder_text

    samples = {
        "pool": _word_samples(40, 0, "p"),
        "query": _word_samples(24, 1, "q"),
        "test_pool": _word_samples(30, 2, "tp"),
        "test_query": _word_samples(12, 3, "tq"),
    }
    emb = {k: embed(tiny_encoder, [encoder_text(s) for s in v]) for k, v in samples.items()}
    m = np.random.default_rng(4).standard_normal((emb["pool"].shape[1], 48))
    m *= np.geomspace(10, 0.1, 48)
    grads = {k: e @ m for k, e in emb.items()}
    pool = _gradient_store(tmp_path / "gp", samples["pool"], grads["pool"])
    queries = _gradient_store(tmp_path / "gq", samples["query"], grads["query"])
    result = distill_stores(
        pool,
        queries,
        tmp_path / "enc",
        DistillArguments(epochs=0, views="text", head="linear"),
        encoder=tiny_encoder_dir,
        progress=False,
    )
    assert result.best_epoch == 0 and result.history == []

    card = json.loads((tmp_path / "enc" / "influcoder_distill.json").read_text())
    # 64 samples of 48 dims, but a linear map of 32-dim embeddings: rank <= 32 caps the head.
    assert card["head"]["kind"] == "linear" and 16 <= card["head"]["components"] <= 32
    assert card["head"]["alpha"] in map(float, card["head"]["validation_per_anchor_spearman"])
    loaded = SentenceTransformer(str(tmp_path / "enc"), device="cpu")
    truth = (
        grads["test_pool"]
        @ grads["test_query"].T
        / np.outer(
            np.linalg.norm(grads["test_pool"], axis=1), np.linalg.norm(grads["test_query"], axis=1)
        )
    )
    with_head = (
        embed(loaded, [encoder_text(s) for s in samples["test_pool"]])
        @ embed(loaded, [encoder_text(s) for s in samples["test_query"]]).T
    )
    base = (
        emb["test_pool"]
        @ emb["test_query"].T
        / np.outer(
            np.linalg.norm(emb["test_pool"], axis=1), np.linalg.norm(emb["test_query"], axis=1)
        )
    )
    assert per_anchor_spearman(truth, with_head) > 0.9
    assert per_anchor_spearman(truth, base) < 0.7
    # the unit length is part of this truth: auto's folds keep cosine (dot measured 0.69 here)
    figures = card["head"]["similarity_validation"]
    assert card["head"]["similarity"] == "cosine" and set(figures) == {"cosine", "dot"}
    assert figures["cosine"]["per_anchor"] > figures["dot"]["per_anchor"]
