"""The distillation loop on a tiny encoder and a ground truth with a planted topic structure."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from scipy.stats import spearmanr
from sentence_transformers import SentenceTransformer

from influcoder.distillation import blocks, distill, trainer
from influcoder.distillation.settings import DistillArguments
from influcoder.distillation.trainer import CARD_NAME, DistillResult

# Tiny encoder, few texts: a learning rate far above the 2e-4 default, small batches, and a
# quarter held out so the validation Spearman is not too noisy.
FAST = {
    "epochs": 4,
    "lr": 3e-3,
    "batch_pool": 16,
    "batch_query": 4,
    "val_fraction": 0.25,
    "patience": 4,
}
FIGURES = ("per_anchor_spearman", "pairwise_spearman", "aggregated_spearman")


def held_out_per_anchor(encoder, data, split) -> float:
    """Per-query Spearman over held-out pool texts, averaged over held-out queries (scipy)."""
    pool = encoder.encode([data.pool_texts[i] for i in split.val_pool], normalize_embeddings=True)
    query = encoder.encode(
        [data.query_texts[j] for j in split.val_query], normalize_embeddings=True
    )
    pred = pool @ query.T
    gt = data.gt[np.ix_(split.val_pool, split.val_query)]
    return float(np.mean([spearmanr(gt[:, j], pred[:, j]).statistic for j in range(gt.shape[1])]))


def test_distillation_learns_the_planted_structure(tiny_encoder_dir, planted):
    untrained = SentenceTransformer(tiny_encoder_dir, device="cpu")
    encoder = SentenceTransformer(tiny_encoder_dir, device="cpu")
    result = distill(
        encoder,
        planted.pool_texts,
        planted.query_texts,
        planted.gt,
        DistillArguments(**FAST),
        progress=False,
    )

    before = held_out_per_anchor(untrained, planted, result.split)
    after = held_out_per_anchor(encoder, planted, result.split)
    assert after > before + 0.2, (before, after)
    assert result.untrained["per_anchor_spearman"] == pytest.approx(before, abs=1e-4)
    assert result.best["per_anchor_spearman"] == pytest.approx(after, abs=1e-4)

    assert 1 <= result.best_epoch <= len(result.history) <= FAST["epochs"]
    assert [h["epoch"] for h in result.history] == list(range(1, len(result.history) + 1))
    assert all(set(FIGURES) | {"train_loss", "seconds"} <= set(h) for h in result.history)
    assert result.best == {k: result.history[result.best_epoch - 1][k] for k in FIGURES}
    assert not encoder.training


def test_aggregate_term_alone_learns_a_pool_wide_ranking(tiny_encoder_dir, planted):
    # A ground truth whose only structure is pool-wide: a pool text's score is set by its topic,
    # the same for every query, plus noise. Trained on the aggregated term alone, the encoder
    # has to learn it, and the held-out aggregated Spearman must show it.
    topic = np.array(
        [int(next(w for w in text.split() if w.startswith("t"))[1]) for text in planted.pool_texts]
    )
    rng = np.random.default_rng(1)
    gt = np.array([0.0, 0.2, 0.4, 0.6])[topic][:, None] + 0.05 * rng.standard_normal((80, 24))
    encoder = SentenceTransformer(tiny_encoder_dir, device="cpu")
    args = DistillArguments(
        **{**FAST, "pearson_weight": 0.0, "kl_weight": 0.0, "aggregate_weight": 1.0}
    )
    result = distill(
        encoder,
        planted.pool_texts,
        planted.query_texts,
        gt.astype(np.float32),
        args,
        progress=False,
    )
    before = result.untrained["aggregated_spearman"]
    after = result.history[-1]["aggregated_spearman"]
    assert after > before + 0.3, (before, after)


def test_split_holds_out_pool_and_queries(planted):
    split = blocks.split_indices(80, 24, 0.25, np.random.default_rng(0))
    assert split.sizes() == {"train_pool": 60, "val_pool": 20, "train_query": 18, "val_query": 6}
    assert sorted(np.concatenate([split.train_pool, split.val_pool])) == list(range(80))
    assert sorted(np.concatenate([split.train_query, split.val_query])) == list(range(24))


def test_training_blocks_use_only_training_rows_and_hard_examples(planted):
    args = DistillArguments(batch_pool=8, batch_query=3, hard_fraction=0.5, val_fraction=0.25)
    rng = np.random.default_rng(0)
    split = blocks.split_indices(80, 24, args.val_fraction, rng)
    sampler = blocks.BlockSampler(planted.gt, split, args, rng)
    assert sampler.steps_to_cover() == 8 * 6  # ceil(60 / 8) * ceil(18 / 3)
    for _ in range(20):
        pool, queries = sampler.sample()
        assert len(pool) == len(set(pool)) == 8 and len(queries) == len(set(queries)) == 3
        assert set(pool) <= set(split.train_pool) and set(queries) <= set(split.train_query)
        for q in queries:  # 4 hard slots for 3 queries: each query's best training sample is in
            best = split.train_pool[np.argmax(planted.gt[split.train_pool, q])]
            assert best in pool


def test_same_seed_same_history(tiny_encoder_dir, planted):
    def run(seed):
        encoder = SentenceTransformer(tiny_encoder_dir, device="cpu")
        args = DistillArguments(**{**FAST, "epochs": 2, "hard_fraction": 0.25, "seed": seed})
        result = distill(
            encoder, planted.pool_texts, planted.query_texts, planted.gt, args, progress=False
        )
        history = [{k: v for k, v in h.items() if k != "seconds"} for h in result.history]
        return history, result.split, encoder.encode(planted.query_texts[:3])

    (h1, s1, e1), (h2, s2, e2), (h3, s3, _) = run(0), run(0), run(1)
    assert h1 == h2
    np.testing.assert_array_equal(e1, e2)
    for name in ("train_pool", "val_pool", "train_query", "val_query"):
        np.testing.assert_array_equal(getattr(s1, name), getattr(s2, name))
    assert h3 != h1 and not np.array_equal(s3.val_pool, s1.val_pool)


def test_too_few_samples_to_split(tiny_encoder, planted):
    # 10% of 8 pool samples rounds to 1 held out; 50% of 3 queries leaves 1 to train on.
    with pytest.raises(ValueError, match="too few pool samples to split"):
        distill(
            tiny_encoder,
            planted.pool_texts[:8],
            planted.query_texts,
            planted.gt[:8],
            DistillArguments(val_fraction=0.1),
            progress=False,
        )
    with pytest.raises(ValueError, match="too few queries to split"):
        distill(
            tiny_encoder,
            planted.pool_texts,
            planted.query_texts[:3],
            planted.gt[:, :3],
            DistillArguments(val_fraction=0.5),
            progress=False,
        )


def test_ground_truth_must_match_the_texts(tiny_encoder, planted):
    with pytest.raises(ValueError, match=r"\[80, 24\]"):
        distill(tiny_encoder, planted.pool_texts, planted.query_texts, planted.gt.T, progress=False)
    gt = planted.gt.copy()
    gt[3, 4] = np.nan
    with pytest.raises(ValueError, match="non-finite"):
        distill(tiny_encoder, planted.pool_texts, planted.query_texts, gt, progress=False)


@pytest.mark.filterwarnings("ignore:no epoch beat the untrained")  # the second, 1-epoch run
def test_out_dir_is_a_loadable_encoder_with_a_card(tiny_encoder, planted, tmp_path):
    out = tmp_path / "runs" / "encoder"
    args = DistillArguments(**{**FAST, "epochs": 2})
    result = distill(
        tiny_encoder,
        planted.pool_texts,
        planted.query_texts,
        planted.gt,
        args,
        out_dir=out,
        progress=False,
        extra_card={"ground_truth": {"sha256": "abc"}},
    )
    assert isinstance(result, DistillResult)
    assert [p.name for p in out.parent.iterdir()] == ["encoder"]  # no temporary left behind

    loaded = SentenceTransformer(str(out), device="cpu")
    texts = planted.query_texts[:4]
    np.testing.assert_allclose(loaded.encode(texts), tiny_encoder.encode(texts), atol=1e-6)
    # 256 asked, capped at the tiny BERT's 64 position embeddings: a long text still encodes.
    assert loaded.max_seq_length == tiny_encoder.max_seq_length == 64
    assert loaded.encode([" ".join(planted.pool_texts)]).shape == (1, 32)

    card = json.loads((out / CARD_NAME).read_text())
    assert set(card) == trainer._CARD_KEYS | {"ground_truth"}
    assert card["ground_truth"] == {"sha256": "abc"}
    assert DistillArguments(**card["args"]) == args
    assert card["seed"] == args.seed and card["best_epoch"] == result.best_epoch
    assert card["max_seq_length"] == 64
    assert card["history"] == result.history and card["untrained"] == result.untrained
    assert card["split"] == {"train_pool": 60, "val_pool": 20, "train_query": 18, "val_query": 6}

    # Run again into the same directory: it is replaced whole.
    distill(
        SentenceTransformer(str(out), device="cpu"),
        planted.pool_texts,
        planted.query_texts,
        planted.gt,
        DistillArguments(**{**FAST, "epochs": 1}),
        out_dir=out,
        progress=False,
    )
    assert len(json.loads((out / CARD_NAME).read_text())["history"]) == 1
    assert [p.name for p in out.parent.iterdir()] == ["encoder"]


def test_extra_card_may_not_overwrite_the_card(tiny_encoder, planted, tmp_path):
    with pytest.raises(ValueError, match="history"):
        distill(
            tiny_encoder,
            planted.pool_texts,
            planted.query_texts,
            planted.gt,
            out_dir=tmp_path / "out",
            extra_card={"history": []},
            progress=False,
        )


def scripted_validation(monkeypatch, figures):
    """Make validation return ``figures`` in turn (untrained first), recording the encoder's
    weights at each call."""
    states = []
    scores = iter(figures)

    def evaluate(encoder, *args, **kwargs):
        states.append({k: v.clone() for k, v in encoder.state_dict().items()})
        return dict.fromkeys(FIGURES, next(scores))

    monkeypatch.setattr(trainer, "validation_figures", evaluate)
    return states


def test_early_stopping_restores_the_best_epoch(tiny_encoder, planted, monkeypatch, capsys):
    states = scripted_validation(monkeypatch, [0.1, 0.5, 0.4, 0.3, 0.9])
    args = DistillArguments(**{**FAST, "epochs": 4, "patience": 2, "steps_per_epoch": 2})
    result = distill(tiny_encoder, planted.pool_texts, planted.query_texts, planted.gt, args)
    assert [h["per_anchor_spearman"] for h in result.history] == [0.5, 0.4, 0.3]
    assert result.best_epoch == 1 and result.best["per_anchor_spearman"] == 0.5
    final = tiny_encoder.state_dict()
    assert all(torch.equal(final[k], v) for k, v in states[1].items())
    assert not all(torch.equal(final[k], v) for k, v in states[3].items())
    err = capsys.readouterr().err
    assert "distill" in err and "per_anchor" in err


def test_untrained_weights_kept_when_nothing_improves(tiny_encoder, planted, monkeypatch, capsys):
    states = scripted_validation(monkeypatch, [0.5, 0.2, 0.3])
    args = DistillArguments(**{**FAST, "epochs": 3, "patience": 2, "steps_per_epoch": 1})
    with pytest.warns(UserWarning, match="untrained weights are kept") as caught:
        result = distill(
            tiny_encoder, planted.pool_texts, planted.query_texts, planted.gt, args, progress=False
        )
    assert result.best_epoch == 0 and result.best == result.untrained
    # the message names the validation block and the option that enlarges it
    message = str(caught[0].message)
    assert (
        f"on {len(result.split.val_pool)} pool samples x {len(result.split.val_query)} queries"
    ) in message and "--validate-queries all" in message
    final = tiny_encoder.state_dict()
    assert all(torch.equal(final[k], v) for k, v in states[0].items())
    assert "distill" not in capsys.readouterr().err


def test_frozen_layers_stay_unchanged_and_the_rest_learns(tiny_encoder_dir, planted):
    """--freeze-layers 1: the embeddings and layer 0 come back bit for bit (never even given a
    gradient), the upper layer moved, every flag is restored; too many layers is an error
    raised before any training."""
    from influcoder.distillation.freeze import transformer_layers

    encoder = SentenceTransformer(tiny_encoder_dir, device="cpu")
    embeddings, layers = transformer_layers(encoder)
    assert len(layers) >= 2
    before = {n: p.detach().clone() for n, p in encoder.named_parameters()}
    frozen = {id(p) for m in (embeddings, layers[0]) for p in m.parameters()}
    result = distill(
        encoder,
        planted.pool_texts,
        planted.query_texts,
        planted.gt,
        DistillArguments(**{**FAST, "freeze_layers": 1}),
        progress=False,
    )
    assert result.best_epoch >= 1
    moved = set()
    for name, p in encoder.named_parameters():
        assert p.requires_grad
        if id(p) in frozen:
            assert torch.equal(p, before[name]), name
            assert p.grad is None, name
        elif not torch.equal(p, before[name]):
            moved.add(name)
    assert any(".layer.1." in n or "layers.1." in n for n in moved), sorted(moved)[:5]

    with pytest.raises(ValueError, match=f"has {len(layers)} layers"):
        distill(
            SentenceTransformer(tiny_encoder_dir, device="cpu"),
            planted.pool_texts,
            planted.query_texts,
            planted.gt,
            DistillArguments(**{**FAST, "freeze_layers": len(layers) + 1}),
            progress=False,
        )


@pytest.mark.parametrize("which", ["held-out", "all"])
def test_validation_scores_the_held_out_pool_against_the_chosen_queries(
    tiny_encoder_dir, planted, which
):
    """The untrained figures a run reports are those of the held-out pool samples against the
    held-out queries, or against every query with validate_queries='all'."""
    untrained = SentenceTransformer(tiny_encoder_dir, device="cpu")
    untrained.max_seq_length = 32
    encoder = SentenceTransformer(tiny_encoder_dir, device="cpu")
    result = distill(
        encoder,
        planted.pool_texts,
        planted.query_texts,
        planted.gt,
        DistillArguments(**{**FAST, "epochs": 1, "validate_queries": which}),
        progress=False,
    )
    queries = result.split.val_query if which == "held-out" else np.arange(len(planted.query_texts))
    expected = trainer.validation_figures(
        untrained,
        [planted.pool_texts[i] for i in result.split.val_pool],
        [planted.query_texts[j] for j in queries],
        planted.gt[np.ix_(result.split.val_pool, queries)],
        batch_size=FAST["batch_pool"],
    )
    assert result.untrained == pytest.approx(expected, abs=1e-6)
