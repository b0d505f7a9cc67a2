"""Query gradients, pool embeddings: each query's own gradient, put in the encoder's gradient
basis (:mod:`influcoder.encoders.basis`), searched against the index of encoder embeddings.

The encoder predicts an unseen query's gradient worst of all: on the demo's runs, swapping
its prediction for the query's true gradient (projected on the head's directions) takes LDS
from 0.33 to about 0.48 of the gradient's 0.515, while swapping the pool side instead gains
nothing (``benchmarks/lds_gap.py``). Taking the query's gradient costs loading the decoder
(about 25 s per call for the bundled GGUF on a 2-core CPU) and one forward and backward pass
per query (about 0.2 s there), where the encoder takes milliseconds; no pool gradient is
needed and the index stays as it is.

The gradients are taken exactly as the ground truth's were: ``collect --like STORE`` into a
temporary folder (STORE: the gradient store the encoder was distilled from, or any store
collected ``--like`` it; its setup must equal the one the basis records).
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from collections.abc import Sequence
from pathlib import Path

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
        self.model, self.device = model, device
        self.dim = int(self.basis.directions.shape[0])

    def gradients(self, samples: Sequence[Sample]) -> np.ndarray:
        """``[n, dim]`` sketched, normalised gradients of ``samples``, as ``collect --like``
        the store takes them (in a temporary store, removed after)."""
        from influcoder.groundtruth.collect import collect

        # ids only need to be unique here: two queries may be the same text
        renamed = [dataclasses.replace(s, id=f"q{i}") for i, s in enumerate(samples)]
        with tempfile.TemporaryDirectory(prefix="influcoder-query-gradients-") as tmp:
            store = collect(
                renamed,
                Path(tmp) / "queries",
                like=self.like,
                model=self.model,
                progress=False,
                device=self.device,
            )
            return store.vectors()

    def encode_samples(self, samples: Sequence[Sample]) -> np.ndarray:
        return self.basis.query_vectors(self.gradients(samples), self.similarity)
