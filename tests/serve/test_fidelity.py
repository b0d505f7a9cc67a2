"""/info's held-out fidelity estimate: read from the encoder's card as the API describes it,
null for an encoder without one, and null (not a failed server) for a malformed entry."""

from __future__ import annotations

import json

from influcoder.encoders.settings import CARD_NAME
from influcoder.serve.fidelity import encoder_fidelity
from influcoder.serve.schemas import FidelityInfo


def _figure(value):
    return {"value": value, "low": value - 0.05, "high": value + 0.05}


def card_fidelity() -> dict:
    """A card's ``fidelity`` entry as distill writes it (the fields /info reads)."""
    return {
        "holdout_fraction": 0.1,
        "seed": 0,
        "n_pool": 24,
        "n_queries": 8,
        "pool_ids": [],
        "query_ids": [],
        "interval": {"level": 0.95, "resamples": 1000, "over": "..."},
        "encoder": {
            "per_anchor_spearman": _figure(0.35),
            "aggregated_spearman": _figure(0.5),
            "recall@10": _figure(0.4),
        },
        "untrained": {"per_anchor_spearman": _figure(0.18)},
        "more_ground_truth": {"sentence": "flat: ... at this size"},
    }


def test_the_cards_estimate_as_info_answers_it(tmp_path):
    (tmp_path / CARD_NAME).write_text(json.dumps({"fidelity": card_fidelity()}))
    got = encoder_fidelity(str(tmp_path))
    assert FidelityInfo.model_validate(got).model_dump() == got
    assert (got["n_pool"], got["n_queries"], got["level"]) == (24, 8, 0.95)
    assert got["per_anchor_spearman"] == _figure(0.35)
    assert got["recall_at_10"] == _figure(0.4)
    assert got["untrained_per_anchor_spearman"] == 0.18
    assert got["more_ground_truth"] == "flat: ... at this size"


def test_none_without_an_estimate_and_for_a_malformed_one(tmp_path, caplog):
    assert encoder_fidelity("all-minilm-l6-v2") is None  # a bundled name: no card here
    assert encoder_fidelity(str(tmp_path)) is None  # a directory without a card
    (tmp_path / CARD_NAME).write_text(json.dumps({"settings": {}}))
    assert encoder_fidelity(str(tmp_path)) is None  # distilled with --holdout-fraction 0
    broken = card_fidelity()
    del broken["encoder"]["recall@10"]
    (tmp_path / CARD_NAME).write_text(json.dumps({"fidelity": broken}))
    assert encoder_fidelity(str(tmp_path)) is None
    assert "recall@10" in caplog.text and CARD_NAME in caplog.text
