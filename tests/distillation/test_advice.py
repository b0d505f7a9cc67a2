""" "More ground truth?" from the held-out block: the sentence's logic on hand-made numbers, the
paired bootstrap against its definition, and distill's card entry equal to a separate fit of
the two heads."""

from __future__ import annotations

import json

import numpy as np
import pytest

from influcoder.distillation.advice import MIN_RISE, half_indices, paired_rise, verdict
from influcoder.metrics import per_anchor_spearman

from .test_fidelity import _stores


def test_the_sentence_says_rising_only_above_the_noise_and_the_threshold():
    rising, text = verdict(0.31, 0.35, {"value": 0.04, "low": 0.02, "high": 0.06})
    assert rising
    assert text == (
        "held-out per-anchor rose 0.31 -> 0.35 from half to all the ground truth "
        "[+0.02, +0.06]: more ground truth is likely to help"
    )
    # a rise inside the bootstrap noise, one below the threshold, and a fall: all flat
    for rise in (
        {"value": 0.04, "low": -0.01, "high": 0.09},
        {"value": MIN_RISE / 2, "low": MIN_RISE / 4, "high": MIN_RISE},
        {"value": -0.03, "low": -0.05, "high": -0.01},
    ):
        rising, text = verdict(0.40, 0.40 + rise["value"], rise)
        assert not rising
        assert text.startswith("flat: held-out per-anchor 0.40 -> ")
        assert text.endswith("more ground truth is unlikely to help much at this size")


def test_paired_rise_is_the_difference_of_per_anchor_with_a_paired_interval():
    rng = np.random.default_rng(0)
    gt = rng.standard_normal((30, 12))
    full = gt + 0.5 * rng.standard_normal(gt.shape)
    half = gt + 2.0 * rng.standard_normal(gt.shape)
    rise = paired_rise(gt, half, full, seed=1)
    assert rise["value"] == pytest.approx(
        per_anchor_spearman(gt, full) - per_anchor_spearman(gt, half)
    )
    assert 0 < rise["low"] <= rise["value"] <= rise["high"]
    # the same scores on both sides: no rise and no noise, since the draws are paired
    same = paired_rise(gt, full, full, seed=1)
    assert same == {"value": 0.0, "low": 0.0, "high": 0.0}
    hp, hq = half_indices(36, 15, seed=0)
    assert (len(hp), len(hq)) == (18, 7) and np.array_equal(hp, np.unique(hp))
    assert np.array_equal(hp, half_indices(36, 15, seed=0)[0])


def test_distill_records_the_advice_equal_to_a_separate_fit(
    tiny_encoder_dir, tiny_encoder, tmp_path
):
    from influcoder.distillation.export import embed
    from influcoder.distillation.head_fit import fit_head, head_scores
    from influcoder.distillation.settings import DistillArguments
    from influcoder.distillation.stores import distill_stores
    from influcoder.io.samples import encoder_text
    from influcoder.similarity import unit_rows
    from influcoder.workflows.describe import describe_folder

    pool, queries = _stores(tmp_path, tiny_encoder)
    out = tmp_path / "enc"
    args = DistillArguments(
        epochs=0, views="text", head="linear", head_similarity="cosine", holdout_fraction=0.25
    )
    distill_stores(pool, queries, out, args, encoder=tiny_encoder_dir, progress=False)
    fid = json.loads((out / "influcoder_distill.json").read_text())["fidelity"]
    advice = fid["more_ground_truth"]
    assert advice["all"] == {"n_pool": 36, "n_queries": 15}
    assert advice["half"] == {"n_pool": 18, "n_queries": 7}
    # a separate computation: the untrained encoder's embeddings (epochs 0), heads fitted on a
    # seeded half and on all of the samples not held out, scored on the held-out block
    held_p, held_q = set(fid["pool_ids"]), set(fid["query_ids"])

    def side(store, held):
        rows = [i for i, s in enumerate(store.samples) if s.id not in held]
        heldout = [i for i, s in enumerate(store.samples) if s.id in held]
        emb = unit_rows(embed(tiny_encoder, [encoder_text(s) for s in store.samples]))
        return emb[rows], store.vectors()[rows], emb[heldout], store.vectors()[heldout]

    pe, pv, he_p, hv_p = side(pool, held_p)
    qe, qv, he_q, hv_q = side(queries, held_q)
    gt = unit_rows(hv_p) @ unit_rows(hv_q).T
    hp, hq = half_indices(36, 15, args.seed)
    figures = {}
    for name, (ip, iq) in {"half": (hp, hq), "all": (np.arange(36), np.arange(15))}.items():
        head = fit_head(pe[ip], pv[ip], qe[iq], qv[iq], folds=min(4, len(ip) // 2, len(iq) // 2))
        figures[name] = per_anchor_spearman(gt, head_scores(head(he_p), head(he_q), "cosine"))
    assert advice["per_anchor_spearman"]["half"] == pytest.approx(figures["half"], abs=1e-6)
    assert advice["per_anchor_spearman"]["all"] == pytest.approx(figures["all"], abs=1e-6)
    assert advice["rise"]["value"] == pytest.approx(figures["all"] - figures["half"], abs=1e-6)
    assert advice["sentence"] == verdict(figures["half"], figures["all"], advice["rise"])[1]
    # shown where the held-out estimate is: the model card and info
    assert f"More ground truth: {advice['sentence']}" in (out / "README.md").read_text()
    assert any(line.startswith(advice["sentence"]) for line in describe_folder(out))
