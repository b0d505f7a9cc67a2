"""Fixtures shared by the ground-truth tests."""

from __future__ import annotations

import pytest


@pytest.fixture()
def tokenized(tiny_tokenizer):
    """The small conversations of tests/conftest.py, tokenized for the tiny Llama (64 tokens
    at most, unequal lengths: batches get padded)."""
    from influcoder.groundtruth.tokenize import tokenize_samples
    from influcoder.io.samples import Sample

    from ..conftest import SMALL_PAIRS

    return tokenize_samples(
        tiny_tokenizer,
        [Sample(id=str(i), prompt=p, response=r) for i, (p, r) in enumerate(SMALL_PAIRS)],
        max_length=64,
    )
