"""Query gradients, pool embeddings: each query's own gradient, put in the encoder's gradient
basis (:mod:`influcoder.encoders.basis`), searched against the index of encoder embeddings.

The encoder predicts an unseen query's gradient worst of all: on the demo's runs, swapping
its prediction for the query's true gradient (projected on the head's directions) takes LDS
from 0.33 to about 0.48 of the gradient's 0.515, while swapping the pool side instead gains
nothing (``benchmarks/lds_gap.py``). Taking the query's gradient costs starting the decoder
(about 5 s on a 2-core CPU once the GGUF decoder's dequantised copy is kept, see
:mod:`influcoder.groundtruth.decoder_cache`) and one forward and backward pass per query
(about 0.2-0.7 s there), where the encoder takes milliseconds; no pool gradient is needed and
the index stays as it is.

The gradients are taken exactly as the ground truth's were, by a decoder kept loaded between
calls (:class:`~influcoder.groundtruth.resident.ResidentCollector`: the bytes ``collect --like
STORE`` writes; STORE: the gradient store the encoder was distilled from, or any store
collected ``--like`` it; its setup must equal the one the basis records).
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np

from influcoder.encoders.basis import GradientBasis, load_basis
from influcoder.encoders.directory import encoder_similarity
from influcoder.errors import InflucoderError, StoreError
from influcoder.io.devices import DEFAULT_DEVICE
from influcoder.io.samples import Sample
from influcoder.io.stores import Store, open_store, setup_differences

OPTION = "--query-gradients"


def check_setup(basis: GradientBasis, store: Store, encoder_dir) -> None:
    """Refuse a store whose gradients were not taken as the basis's ground truth's."""
    if store.kind != "gradients":
        raise StoreError(f"{OPTION} {store.path}: a store of {store.kind}, not of gradients")
    diffs = setup_differences(basis.setup, store.setup)
    if diffs:
        raise StoreError(
            f"{OPTION} {store.path}: its gradients were taken otherwise than the ground truth "
            f"the encoder {encoder_dir} was distilled from (basis vs store):\n  "
            + "\n  ".join(diffs)
            + "\nGive the store the encoder was distilled from, or one collected --like it."
        )


def check_dim(basis: GradientBasis, dim: int, encoder_dir) -> None:
    """Refuse a basis whose directions are not as many as the encoder's output dimensions."""
    if basis.directions.shape[0] != dim:
        raise InflucoderError(
            f"{OPTION}: the encoder {encoder_dir} emits {dim}-dimensional embeddings but its "
            f"gradient basis has {basis.directions.shape[0]} directions: the basis belongs to "
            "another head"
        )


def stored_query_scores(encoder_dir, pool_embeddings, queries: Store) -> np.ndarray:
    """``[pool, queries]`` scores of query gradients already taken (the vectors of the
    gradient store ``queries``) in the gradient basis of the encoder in ``encoder_dir``,
    against that encoder's embeddings of the pool: what :class:`QueryGradients` gives, without
    the backward passes (``lds --query-gradients``)."""
    basis = load_basis(encoder_dir, OPTION)
    check_setup(basis, queries, encoder_dir)
    check_dim(basis, np.shape(pool_embeddings)[1], encoder_dir)
    z = basis.query_vectors(queries.vectors(), encoder_similarity(str(encoder_dir)))
    return np.asarray(pool_embeddings, dtype=np.float64) @ np.asarray(z, dtype=np.float64).T


class QueryGradients:
    """A query encoder whose ``encode_samples`` takes each query's gradient and returns its
    coordinates in the gradient basis of the encoder in ``encoder_dir`` (unit rows unless the
    encoder compares by ``dot``), comparable with that encoder's embeddings of the pool.

    Args:
        encoder_dir: a distilled encoder directory with a gradient basis.
        store: a gradient store whose setup (model, adapter, LoRA, sketch, template) the
            basis records; its adapter is the one the query gradients are taken with.
        model: where the store's decoder is now, if it moved (its fingerprint is checked).
        device: where the decoder runs.
    """

    def __init__(
        self,
        encoder_dir: str | os.PathLike,
        store: str | os.PathLike,
        *,
        model: str | None = None,
        device: str = DEFAULT_DEVICE,
    ):
        self.basis = load_basis(encoder_dir, OPTION)
        self.like = open_store(store)
        check_setup(self.basis, self.like, encoder_dir)
        self.similarity = encoder_similarity(str(encoder_dir))
        from influcoder.groundtruth.resident import ResidentCollector  # imports PEFT: seconds

        self.collector = ResidentCollector(self.like, model=model, device=device)
        self.dim = int(self.basis.directions.shape[0])
        self.backend = "query-gradients"

    def load(self) -> QueryGradients:
        """Load the decoder now rather than on the first query (a server does, at start)."""
        self.collector.load()
        return self

    def gradients(self, samples: Sequence[Sample]) -> np.ndarray:
        """``[n, dim]`` sketched, normalised gradients of ``samples``, the vectors ``collect
        --like`` the store writes; the decoder stays loaded for the next call."""
        return self.collector.vectors(samples)

    def encode_samples(self, samples: Sequence[Sample]) -> np.ndarray:
        return self.basis.query_vectors(self.gradients(samples), self.similarity)
