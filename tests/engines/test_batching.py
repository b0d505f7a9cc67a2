import numpy as np
import pytest

from influcoder.engines.batching import length_batches


def reference_batches(lengths, max_batch, max_padding, max_tokens=None):
    """The rule spelled out: walk the items by length, start a new batch when the current one
    is full, would be more than max_padding padding with the next item in it, or would then
    hold more than max_tokens positions."""
    order = sorted(range(len(lengths)), key=lambda i: (lengths[i], i))
    batches = []
    for i in order:
        if batches:
            trial = batches[-1] + [i]
            padded = len(trial) * max(lengths[j] for j in trial)
            waste = 1 - sum(lengths[j] for j in trial) / padded
            fits = max_tokens is None or padded <= max_tokens
            if len(trial) <= max_batch and waste <= max_padding + 1e-12 and fits:
                batches[-1] = trial
                continue
        batches.append([i])
    return batches


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("max_batch, max_padding", [(1, 0.2), (4, 0.0), (8, 0.2), (16, 0.5)])
def test_matches_the_rule_and_covers_every_item(seed, max_batch, max_padding):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, size=int(rng.integers(0, 40))).tolist()
    batches = length_batches(lengths, max_batch, max_padding)
    assert batches == reference_batches(lengths, max_batch, max_padding)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:
        assert len(b) <= max_batch
        assert (
            len(b) * max(lengths[i] for i in b) * (1 - max_padding)
            <= sum(lengths[i] for i in b) + 1e-9
        )


@pytest.mark.parametrize("seed", range(20))
@pytest.mark.parametrize("max_batch, max_tokens", [(64, 1), (64, 300), (4, 700), (64, 2000)])
def test_token_budget_matches_the_rule(seed, max_batch, max_tokens):
    rng = np.random.default_rng(seed)
    lengths = rng.integers(1, 300, size=int(rng.integers(0, 40))).tolist()
    batches = length_batches(lengths, max_batch, 0.5, max_tokens=max_tokens)
    assert batches == reference_batches(lengths, max_batch, 0.5, max_tokens)
    assert sorted(i for b in batches for i in b) == list(range(len(lengths)))
    for b in batches:  # within budget, unless one item alone is over it
        assert len(b) * max(lengths[i] for i in b) <= max_tokens or len(b) == 1


def test_splits_mixed_lengths_and_fills_equal_ones():
    assert length_batches([256, 57, 192, 65], max_batch=8) == [[1, 3], [2, 0]]
    assert length_batches([10] * 10, max_batch=4) == [[0, 1, 2, 3], [4, 5, 6, 7], [8, 9]]
    # a cap near 1 only limits the batch size
    assert length_batches([1, 100, 1000], max_batch=8, max_padding=0.999) == [[0, 1, 2]]
    # a token budget: two of 100 fit in 250 positions, a third does not; 300 is alone
    assert length_batches([100, 100, 100, 300], max_batch=8, max_tokens=250) == [[0, 1], [2], [3]]


@pytest.mark.parametrize(
    "kwargs, message",
    [
        ({"max_batch": 0}, "max_batch"),
        ({"max_batch": 2, "max_padding": 1.0}, "max_padding"),
        ({"max_batch": 2, "max_padding": -0.1}, "max_padding"),
        ({"max_batch": 2, "max_tokens": 0}, "max_tokens"),
    ],
)
def test_rejects_bad_settings(kwargs, message):
    with pytest.raises(ValueError, match=message):
        length_batches([3, 4], **kwargs)


def test_rejects_empty_items():
    with pytest.raises(ValueError, match="lengths must be >= 1, got 0 at index 1"):
        length_batches([3, 0], max_batch=2)
