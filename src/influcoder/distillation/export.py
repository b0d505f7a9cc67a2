"""A fitted linear head appended to a sentence-transformers encoder, so the result stays a
plain sentence-transformers directory.

5. **Saving** (:func:`append_head`): a sentence-transformers ``Dense`` layer with identity
   activation (weight ``W^T``, bias ``b``) appended to the encoder, then a ``Normalize`` for
   cosine, or ``similarity_fn_name = "dot"`` for the dot product, so the result stays a plain
   sentence-transformers directory: ``SentenceTransformer(path)`` loads it and ``encode``,
   ``index`` and ``attribute`` use it unchanged
   (:func:`~influcoder.encoders.directory.encoder_similarity`).
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np

from influcoder.distillation.linear import LinearHead


def append_head(
    encoder, head: LinearHead, *, normalize: bool | None = None, unit_input: bool = False
):
    """Append ``head`` to ``encoder`` (in place) as [``Normalize`` +] ``Dense`` (identity)
    [+ ``Normalize``].

    Returns the encoder, whose ``encode`` now yields ``head(previous output)`` (unit length
    when ``normalize``), and whose ``save`` writes a plain sentence-transformers directory.
    ``normalize=None`` follows ``head.similarity``: ``cosine`` appends ``Normalize``, ``dot``
    does not and sets the encoder's ``similarity_fn_name`` to ``"dot"``, which its saved
    directory records (how indexes then compare its vectors). ``unit_input``: the head was
    fitted on the encoder's outputs scaled to unit length, so a ``Normalize`` goes before it.
    """
    import torch
    from sentence_transformers.sentence_transformer.modules import Dense, Normalize

    dim = encoder.get_embedding_dimension()
    if dim is not None and dim != head.weight.shape[1]:
        raise ValueError(
            f"the head takes {head.weight.shape[1]}-dim embeddings, the encoder emits {dim}"
        )
    device = next(encoder.parameters()).device
    if unit_input:
        encoder.append(Normalize())
    dense = Dense(
        head.weight.shape[1],
        head.weight.shape[0],
        activation_function=torch.nn.Identity(),
        init_weight=torch.tensor(np.ascontiguousarray(head.weight), dtype=torch.float32),
        init_bias=torch.tensor(head.bias, dtype=torch.float32),
    )
    encoder.append(dense.to(device))
    if normalize is None and head.similarity == "dot":
        encoder.similarity_fn_name = "dot"
    if normalize or (normalize is None and head.similarity == "cosine"):
        encoder.append(Normalize())
    return encoder


def embed(encoder, texts: Sequence[str], *, batch_size: int = 32) -> np.ndarray:
    """``[n, d]`` float64 outputs of ``encoder`` for ``texts``, exactly as its modules emit
    them (no extra normalisation: the head is fitted on what it will be appended to)."""
    out = encoder.encode(
        list(texts),
        batch_size=batch_size,
        convert_to_numpy=True,
        normalize_embeddings=False,
        show_progress_bar=False,
    )
    return np.asarray(out, dtype=np.float64)
