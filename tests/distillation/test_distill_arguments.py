"""DistillArguments: defaults, validation, serialisation."""

from __future__ import annotations

import json
from dataclasses import fields

import pytest

from influcoder.distillation.settings import DistillArguments


def test_defaults():
    args = DistillArguments()
    assert (args.epochs, args.lr, args.batch_pool, args.batch_query) == (3, 2e-4, 32, 64)
    assert (args.hard_fraction, args.temperature, args.target_temperature) == (0.0, 0.05, None)
    assert (args.pearson_weight, args.kl_weight, args.val_fraction) == (0.3, 1.0, 0.1)
    assert args.aggregate_weight == 0.0
    assert (args.patience, args.seed) == (2, 0)
    assert (args.max_seq_length, args.steps_per_epoch) == (256, None)
    assert (args.head, args.head_components) == ("auto", 128)


def test_epochs_0_is_allowed_with_a_head():
    assert DistillArguments(epochs=0).epochs == 0


def test_every_field_has_help():
    assert all(f.metadata.get("help") for f in fields(DistillArguments))


def test_to_dict_is_json_and_round_trips():
    args = DistillArguments(epochs=5, hard_fraction=0.25, steps_per_epoch=7)
    assert DistillArguments(**json.loads(json.dumps(args.to_dict()))) == args


@pytest.mark.parametrize(
    "bad",
    [
        {"epochs": -1},
        {"epochs": 0, "head": "none"},
        {"head": "mlp"},
        {"head_components": 0},
        {"lr": 0.0},
        {"batch_pool": 1},
        {"batch_query": 0},
        {"hard_fraction": -0.1},
        {"hard_fraction": 1.5},
        {"temperature": 0.0},
        {"target_temperature": 0.0},
        {"pearson_weight": -0.1},
        {"pearson_weight": 0.0, "kl_weight": 0.0},
        {"aggregate_weight": -1.0},
        {"val_fraction": 0.0},
        {"val_fraction": 1.0},
        {"patience": 0},
        {"max_seq_length": 0},
        {"steps_per_epoch": 0},
        {"micro_batch": -1},
        {"freeze_layers": -1},
        {"validate_queries": "train"},
    ],
)
def test_invalid_settings_raise_value_error(bad):
    with pytest.raises(ValueError):
        DistillArguments(**bad)


def test_a_former_head_name_is_refused_naming_the_new_one():
    with pytest.raises(ValueError, match="head 'ridge' is now called 'linear'"):
        DistillArguments(head="ridge")
    assert DistillArguments(head="linear").head == "linear"
