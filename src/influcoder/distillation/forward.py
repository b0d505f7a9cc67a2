"""The training forward pass: a block's texts encoded in micro-batches of similar length.

Each training step encodes every text of its block (pool samples and queries) with gradients.
Encoded as one batch, every text is padded to the block's longest, and on CPU the padding is
paid in full: in the demo's blocks (68 texts, median ~25 tokens, some at the 128-token cap)
most positions were padding. :func:`block_embeddings` sorts the texts by token count, cuts
them with :func:`~influcoder.engines.batching.length_batches` (at most 20% padding per
micro-batch), runs each micro-batch through the encoder and puts the rows back in input
order; the loss then sees the same ``[n, d]`` embeddings and one backward pass reaches every
micro-batch. On the demo's texts a step took about a third of the time
(``benchmarks/distill_step.py`` prints the ratio).

What changes: nothing a text's embedding depends on. The attention mask hides padding and
mean pooling averages only real tokens, so in evaluation mode the embeddings and the
gradients equal the one-batch ones up to float rounding (``tests/distillation/test_forward.py``
checks both against :func:`padded_embeddings`, the reference). In training mode dropout draws
its masks in another order, so a run differs from a one-batch run as two seeds would.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
from sentence_transformers.util import batch_to_device

from influcoder.distillation.settings import DEFAULT_MICRO_BATCH
from influcoder.engines.batching import length_batches, token_lengths


def padded_embeddings(encoder, texts: Sequence[str]) -> torch.Tensor:
    """``[len(texts), d]`` sentence embeddings of ``texts`` as one padded batch (the reference)."""
    features = batch_to_device(encoder.preprocess(list(texts)), encoder.device)
    return encoder(features)["sentence_embedding"]


def block_embeddings(
    encoder, texts: Sequence[str], *, micro_batch: int = DEFAULT_MICRO_BATCH
) -> torch.Tensor:
    """``[len(texts), d]`` sentence embeddings of ``texts``, in input order, computed in
    length-sorted micro-batches of at most ``micro_batch`` texts (module docstring);
    differentiable like :func:`padded_embeddings`. ``micro_batch`` 0: one padded batch."""
    texts = list(texts)
    if not texts:
        raise ValueError("no texts to embed")
    if micro_batch == 0:
        return padded_embeddings(encoder, texts)
    batches = length_batches(
        token_lengths(encoder.tokenizer, texts, encoder.max_seq_length), micro_batch
    )
    if len(batches) == 1:
        return padded_embeddings(encoder, texts)
    rows = torch.cat([padded_embeddings(encoder, [texts[i] for i in batch]) for batch in batches])
    order = torch.tensor([i for batch in batches for i in batch], device=rows.device)
    return rows[torch.argsort(order)]


def sample_embeddings(
    encoder, items: Sequence, *, micro_batch: int = DEFAULT_MICRO_BATCH
) -> torch.Tensor:
    """Differentiable embeddings of samples: ``items`` are texts (one view: ``[n, d]``, as
    :func:`block_embeddings`) or tuples of one text per view (``distill --views
    text+response``: every view's text in the same length-sorted pass, then each sample's
    views scaled to unit length and concatenated, ``[n, views * d]``, the layout of
    :class:`~influcoder.encoders.views.ViewedEncoder` before its head)."""
    items = list(items)
    if not items or isinstance(items[0], str):
        return block_embeddings(encoder, items, micro_batch=micro_batch)
    views = len(items[0])
    out = block_embeddings(encoder, [t for item in items for t in item], micro_batch=micro_batch)
    return torch.nn.functional.normalize(out.view(len(items), views, -1), dim=-1).flatten(1)


def encode_items(encoder, items: Sequence, *, batch_size: int = 32) -> torch.Tensor:
    """:func:`sample_embeddings` without gradients, through ``encoder.encode`` (validation):
    unit rows for one view, unit views concatenated for several."""
    items = list(items)
    views = [items] if not items or isinstance(items[0], str) else list(zip(*items))
    parts = [
        encoder.encode(
            list(texts),
            batch_size=batch_size,
            convert_to_tensor=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )
        for texts in views
    ]
    return torch.cat(parts, dim=1)
