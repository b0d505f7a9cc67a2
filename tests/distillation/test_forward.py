"""Length-sorted micro-batches against one padded batch, the reference: same embeddings, same
gradients, rows in input order."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from influcoder.distillation.forward import (
    block_embeddings,
    encode_items,
    padded_embeddings,
    sample_embeddings,
)
from influcoder.engines.batching import token_lengths

from .conftest import FILLER, TOPIC_WORDS


def varied_texts(n: int, seed: int = 0) -> list[str]:
    """``n`` texts of 1 to 40 words (some past the tiny encoder's 32-token cap), in random
    order, so that the micro-batches cut across the input order."""
    rng = np.random.default_rng(seed)
    words = FILLER + [w for topic in TOPIC_WORDS for w in topic]
    return [" ".join(rng.choice(words, size=int(rng.integers(1, 41)))) for _ in range(n)]


def test_token_lengths_are_the_truncated_encoder_lengths(tiny_encoder):
    texts = ["f0 f1", " ".join(["f2"] * 100)]
    assert token_lengths(tiny_encoder.tokenizer, texts, tiny_encoder.max_seq_length) == [
        4,
        tiny_encoder.max_seq_length,
    ]


@pytest.mark.parametrize("micro_batch", [1, 4, 32])
def test_embeddings_and_gradients_equal_one_padded_batch(tiny_encoder, micro_batch):
    texts = varied_texts(23)
    tiny_encoder.eval()  # no dropout: both paths compute the same function
    weights = torch.randn(
        len(texts),
        tiny_encoder.get_embedding_dimension(),
        generator=torch.Generator().manual_seed(1),
    )

    def run(fn):
        tiny_encoder.zero_grad()
        out = fn()
        (out * weights).sum().backward()
        return out.detach(), {
            n: p.grad.clone() for n, p in tiny_encoder.named_parameters() if p.grad is not None
        }

    ref, ref_grads = run(lambda: padded_embeddings(tiny_encoder, texts))
    got, grads = run(lambda: block_embeddings(tiny_encoder, texts, micro_batch=micro_batch))
    torch.testing.assert_close(got, ref, atol=1e-5, rtol=1e-4)
    assert grads.keys() == ref_grads.keys()
    for name, grad in ref_grads.items():
        torch.testing.assert_close(grads[name], grad, atol=1e-5, rtol=1e-4, msg=name)


def test_rows_come_back_in_input_order(tiny_encoder):
    """Each row is its own text's embedding, whatever micro-batch the text landed in."""
    texts = varied_texts(17, seed=3)
    tiny_encoder.eval()
    with torch.no_grad():
        got = block_embeddings(tiny_encoder, texts, micro_batch=3)
        alone = torch.cat([padded_embeddings(tiny_encoder, [t]) for t in texts])
    torch.testing.assert_close(got, alone, atol=1e-5, rtol=1e-4)


def test_no_texts_is_an_error(tiny_encoder):
    with pytest.raises(ValueError, match="no texts"):
        block_embeddings(tiny_encoder, [])


def test_micro_batch_zero_is_the_reference(tiny_encoder):
    texts = varied_texts(9, seed=5)
    tiny_encoder.eval()
    with torch.no_grad():
        torch.testing.assert_close(
            block_embeddings(tiny_encoder, texts, micro_batch=0),
            padded_embeddings(tiny_encoder, texts),
            atol=0,
            rtol=0,
        )


def test_two_views_are_each_unit_length_and_side_by_side(tiny_encoder):
    """``(text, response)`` items: each view's embedding as encoded alone, scaled to unit
    length, concatenated; the same with gradients (training) and without (validation)."""
    texts, responses = varied_texts(9, seed=5), varied_texts(9, seed=6)
    tiny_encoder.eval()
    with torch.no_grad():
        got = sample_embeddings(tiny_encoder, list(zip(texts, responses)), micro_batch=4)
        validated = encode_items(tiny_encoder, list(zip(texts, responses)))

        def unit(batch):
            out = torch.cat([padded_embeddings(tiny_encoder, [t]) for t in batch])
            return out / out.norm(dim=1, keepdim=True)

        expected = torch.cat([unit(texts), unit(responses)], dim=1)
    torch.testing.assert_close(got, expected, atol=1e-5, rtol=1e-4)
    torch.testing.assert_close(validated, expected, atol=1e-5, rtol=1e-4)
    # one view: the plain embeddings (the loss's cosine does the scaling)
    torch.testing.assert_close(
        sample_embeddings(tiny_encoder, texts, micro_batch=4),
        block_embeddings(tiny_encoder, texts, micro_batch=4),
    )
