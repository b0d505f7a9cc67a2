"""Batches of similar length, so that padding costs little.

Both the decoder (gradients) and the encoder (embeddings) pay for every padded position. On a
CPU a larger batch buys little throughput once a matrix has a few dozen rows, while padding
four queries of 57 to 256 tokens up to 256 nearly doubles the work. :func:`length_batches`
sorts by length and closes a batch when it is full, when the next (longer) item would make
more than ``max_padding`` of the batch's positions padding, or (with ``max_tokens``) when the
batch padded to the next item's length would hold more than ``max_tokens`` positions: a token
budget bounds a batch's memory and work whatever the lengths, where a sample count lets a batch
of long samples grow to many times the memory of a batch of short ones.

The batches depend on the lengths only, so a resumed job cuts a shard exactly as the
interrupted one did.
"""

from __future__ import annotations

from collections.abc import Sequence

#: Largest share of a batch's positions that may be padding (see :func:`length_batches`).
DEFAULT_MAX_PADDING = 0.2


def token_lengths(tokenizer, texts: Sequence[str], max_length: int) -> list[int]:
    """Tokens of each text as a Hugging Face ``tokenizer`` cuts it at ``max_length`` (special
    tokens included): what :func:`length_batches` sorts an encoder's texts by."""
    ids = tokenizer(list(texts), truncation=True, max_length=max_length)["input_ids"]
    return [len(x) for x in ids]


def length_batches(
    lengths: Sequence[int],
    max_batch: int,
    max_padding: float = DEFAULT_MAX_PADDING,
    max_tokens: int | None = None,
) -> list[list[int]]:
    """Indices into ``lengths``, grouped into batches of similar length.

    Items are taken in order of length (stable for ties). The next item joins the current
    batch unless the batch holds ``max_batch`` items or, padded to the new item's length,
    more than ``max_padding`` of its positions would be padding or (``max_tokens`` given) it
    would have more than ``max_tokens`` positions. An item longer than ``max_tokens`` is a
    batch of its own.

    Args:
        lengths: tokens per item (>= 1 each).
        max_batch: most items per batch (>= 1).
        max_padding: in [0, 1); 0 batches only equal lengths, values near 1 only cap the size.
        max_tokens: most positions (items x the longest item's length) per batch, or None.

    Returns:
        Batches of indices, each ascending by length, together a permutation of
        ``range(len(lengths))``.

    Example::

        >>> length_batches([256, 57, 192, 65], max_batch=8)
        [[1, 3], [2, 0]]
        >>> length_batches([100, 100, 100, 300], max_batch=8, max_tokens=250)
        [[0, 1], [2], [3]]
    """
    if max_batch < 1:
        raise ValueError(f"max_batch must be >= 1, got {max_batch}")
    if not 0 <= max_padding < 1:
        raise ValueError(f"max_padding must be in [0, 1), got {max_padding}")
    if max_tokens is not None and max_tokens < 1:
        raise ValueError(f"max_tokens must be >= 1, got {max_tokens}")
    order = sorted(range(len(lengths)), key=lambda i: lengths[i])
    batches: list[list[int]] = []
    tokens = 0
    for i in order:
        n = lengths[i]
        if n < 1:
            raise ValueError(f"lengths must be >= 1, got {n} at index {i}")
        batch = batches[-1] if batches else None
        if (
            batch is None
            or len(batch) >= max_batch
            or tokens + n < (1 - max_padding) * n * (len(batch) + 1)
            or (max_tokens is not None and n * (len(batch) + 1) > max_tokens)
        ):
            batches.append([i])
            tokens = n
        else:
            batch.append(i)
            tokens += n
    return batches
