"""Attribution methods to compare against the ground truth: score matrices plus their cost.

Every method here scores pool (training) samples against query samples and returns
``(scores, info)``:

* ``scores``: a float64 ``[n_pool, n_query]`` matrix, higher meaning "more influential";
* ``info``: a dict with at least

  - ``seconds``: attribution time, what scoring these queries costs once the pool side is
    prepared (encoding or tokenising the queries, and the products against the pool);
  - ``prepare_seconds``: the one-off cost of preparing the pool side (fitting and transforming
    the pool, encoding it, reading and sketching its stored vectors, loading a model);
  - ``bytes_per_sample``: what the method must keep per pool sample to answer queries.

The methods:

==============  ==================================================================================
``random``      seeded uniform noise: the floor every method must clear
``tfidf``       cosine of TF-IDF vectors (scikit-learn) of :func:`~influcoder.io.samples.encoder_text`
``bm25``        Okapi BM25 (``k1=1.5``, ``b=0.75``) of each query's text against each pool text
``encoder``     cosine of a sentence encoder's normalised embeddings (an untrained MiniLM is the
                "semantic similarity" baseline; the distilled encoder is the method under test)
``store``       cosine of two stored vector sets (gradient or embedding stores), or the inner
                product of the unnormalised gradients (``similarity="inner"``); for gradient
                stores ``dim`` re-sketches the vectors smaller, trading storage for fidelity
==============  ==================================================================================

Timings are wall-clock on whatever machine runs them, single measurements, and include Python
overhead: compare orders of magnitude, not percentages. For ``store`` the query vectors already
exist, so its ``seconds`` leaves out the cost of computing them (for gradients, a decoder
forward and backward pass per query, which dominates); ``encoder`` computes its query
embeddings on the spot, so its ``seconds`` is the full attribution cost.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Sequence
from typing import Any

import numpy as np
import scipy.sparse as sp

from influcoder.io.samples import Sample, encoder_text
from influcoder.io.stores import DTYPES, Store, check_same_setup
from influcoder.similarity import check_similarity, scored_rows

__all__ = [
    "BASELINES",
    "MethodResult",
    "bm25_scores",
    "encoder_scores",
    "random_scores",
    "store_scores",
    "tfidf_scores",
]


#: ``(scores [n_pool, n_query], info)`` as every method returns it.
MethodResult = tuple[np.ndarray, dict[str, Any]]


BM25_K1 = 1.5


BM25_B = 0.75


_WORD = re.compile(r"\w+")


def _info(seconds: float, prepare_seconds: float, bytes_per_sample: float, **extra) -> dict:
    return {
        "seconds": float(seconds),
        "prepare_seconds": float(prepare_seconds),
        "bytes_per_sample": float(bytes_per_sample),
        **extra,
    }


def _require(samples: Sequence[Sample], what: str) -> None:
    if not samples:
        raise ValueError(f"{what} is empty: nothing to score")


def _texts(samples: Sequence[Sample], what: str) -> list[str]:
    _require(samples, what)
    return [encoder_text(s) for s in samples]


def _sparse_bytes(matrix: sp.csr_matrix) -> float:
    """Bytes per row of a CSR matrix: values, column indices and row pointers."""
    return (matrix.data.nbytes + matrix.indices.nbytes + matrix.indptr.nbytes) / matrix.shape[0]


def random_scores(
    pool: Sequence[Sample], queries: Sequence[Sample], *, seed: int = 0
) -> MethodResult:
    """Uniform random scores in [0, 1), reproducible from ``seed``.

    Its figures are what chance gives: per-anchor Spearman about 0, recall@k about
    ``k / n_pool``, AUPRC about the fraction of positives. It stores nothing per sample.
    """
    _require(pool, "pool")
    _require(queries, "queries")
    start = time.perf_counter()
    scores = np.random.default_rng(seed).random((len(pool), len(queries)))
    return scores, _info(time.perf_counter() - start, 0.0, 0.0, seed=seed)


def tfidf_scores(pool: Sequence[Sample], queries: Sequence[Sample]) -> MethodResult:
    """Cosine similarity of TF-IDF vectors of :func:`~influcoder.io.samples.encoder_text`.

    The vocabulary and IDF weights are fitted on the pool alone (the index is built before any
    query arrives), with scikit-learn's defaults: lowercase word tokens of two or more
    characters, smoothed IDF, L2-normalised rows. Query words absent from the pool are ignored.
    ``bytes_per_sample`` is the size of the sparse pool matrix per row.
    """
    from sklearn.feature_extraction.text import TfidfVectorizer

    pool_texts, query_texts = _texts(pool, "pool"), _texts(queries, "queries")
    start = time.perf_counter()
    vectorizer = TfidfVectorizer()
    pool_matrix = vectorizer.fit_transform(pool_texts).tocsr()
    prepared = time.perf_counter()
    scores = (pool_matrix @ vectorizer.transform(query_texts).T).toarray()
    return scores, _info(
        time.perf_counter() - prepared, prepared - start, _sparse_bytes(pool_matrix)
    )


def tokenize(text: str) -> list[str]:
    """The word tokens BM25 sees: maximal runs of word characters (``\\w+``), lowercased."""
    return _WORD.findall(text.lower())


def _term_counts(token_lists: list[list[str]], vocab: dict[str, int], grow: bool) -> sp.csr_matrix:
    """``[n_docs, len(vocab)]`` term counts; unknown terms extend ``vocab`` only if ``grow``."""
    rows, cols = [], []
    for i, tokens in enumerate(token_lists):
        for token in tokens:
            col = vocab.setdefault(token, len(vocab)) if grow else vocab.get(token)
            if col is not None:
                rows.append(i)
                cols.append(col)
    counts = sp.csr_matrix((np.ones(len(rows)), (rows, cols)), shape=(len(token_lists), len(vocab)))
    counts.sum_duplicates()
    return counts


def bm25_weights(
    pool_tokens: list[list[str]], *, k1: float = BM25_K1, b: float = BM25_B
) -> tuple[sp.csr_matrix, dict[str, int]]:
    """The BM25 weight of every (pool document, term) pair, and the vocabulary.

    For term ``t`` in document ``d``, with ``f`` its count in ``d``, ``|d|`` the document's length
    in tokens, ``avgdl`` the mean length over the pool, ``N`` the number of documents and ``n_t``
    the number containing ``t``::

        idf(t)  = ln(1 + (N - n_t + 0.5) / (n_t + 0.5))
        w(d, t) = idf(t) * f * (k1 + 1) / (f + k1 * (1 - b + b * |d| / avgdl))

    The ``1 +`` inside the logarithm (as in Lucene) keeps IDF positive even for terms in more
    than half the documents, so a shared word never counts against a match.
    """
    if k1 < 0 or not 0 <= b <= 1:
        raise ValueError(f"BM25 needs k1 >= 0 and 0 <= b <= 1, got k1={k1}, b={b}")
    vocab: dict[str, int] = {}
    counts = _term_counts(pool_tokens, vocab, grow=True)
    lengths = np.asarray(counts.sum(axis=1)).ravel()
    avgdl = lengths.mean() if lengths.mean() > 0 else 1.0
    n_docs = counts.shape[0]
    doc_freq = np.bincount(counts.indices, minlength=counts.shape[1])
    idf = np.log1p((n_docs - doc_freq + 0.5) / (doc_freq + 0.5))
    f = counts.data
    norm = np.repeat(k1 * (1 - b + b * lengths / avgdl), np.diff(counts.indptr))
    weights = counts.copy()
    weights.data = idf[counts.indices] * f * (k1 + 1) / (f + norm)
    return weights, vocab


def bm25_scores(
    pool: Sequence[Sample], queries: Sequence[Sample], *, k1: float = BM25_K1, b: float = BM25_B
) -> MethodResult:
    """Okapi BM25 score of each query (its :func:`~influcoder.io.samples.encoder_text`) against each
    pool sample's text, tokenised by :func:`tokenize`.

    ``score(d, q) = sum over query tokens t of w(d, t)`` (see :func:`bm25_weights`): a word that
    occurs twice in the query counts twice, and words absent from the pool count zero.
    ``bytes_per_sample`` is the size of the sparse weight matrix per pool row.
    """
    pool_texts, query_texts = _texts(pool, "pool"), _texts(queries, "queries")
    start = time.perf_counter()
    weights, vocab = bm25_weights([tokenize(t) for t in pool_texts], k1=k1, b=b)
    prepared = time.perf_counter()
    query_counts = _term_counts([tokenize(t) for t in query_texts], vocab, grow=False)
    scores = (weights @ query_counts.T).toarray()
    return scores, _info(
        time.perf_counter() - prepared, prepared - start, _sparse_bytes(weights), k1=k1, b=b
    )


#: The text baselines by name, each ``(pool, queries) -> (scores, info)``.
BASELINES: dict[str, Callable[..., MethodResult]] = {
    "random": random_scores,
    "tfidf": tfidf_scores,
    "bm25": bm25_scores,
}


def encoder_scores(
    encoder,
    pool: Sequence[Sample],
    queries: Sequence[Sample],
    *,
    batch_size: int = 32,
    device: str = "cpu",
) -> MethodResult:
    """Cosine similarity of a sentence encoder's embeddings of
    :func:`~influcoder.io.samples.encoder_text` (or of a multi-view encoder's,
    :mod:`influcoder.encoders.views`).

    Args:
        encoder: a ``SentenceTransformer``, an encoder with ``encode_samples``, or a name or
            directory, run in float32 by :class:`~influcoder.encoders.backends.FastEncoder`
            (loading then counts as preparation).
        pool, queries: the samples to score.
        batch_size: encoding batch size.
        device: where an encoder given by name is loaded (a ``--device`` value).

    ``prepare_seconds`` covers loading (if a name was given) and encoding the pool;
    ``seconds`` covers encoding the queries and the products. ``bytes_per_sample`` is one
    float32 embedding.
    """
    _require(pool, "pool")
    _require(queries, "queries")
    start = time.perf_counter()
    if isinstance(encoder, str):
        from influcoder.encoders.backends import FastEncoder
        from influcoder.encoders.directory import resolve_encoder
        from influcoder.encoders.views import sample_encoder

        # torch in float32, the reference backend; a multi-view directory runs all its views
        encoder = sample_encoder(
            resolve_encoder(encoder),
            lambda path: FastEncoder(path, backend="torch", batch_size=batch_size, device=device),
        )

    def embed(samples: Sequence[Sample]) -> np.ndarray:
        if hasattr(encoder, "encode_samples"):
            return encoder.encode_samples(samples)
        return encoder.encode(
            [encoder_text(s) for s in samples],
            batch_size=batch_size,
            convert_to_numpy=True,
            normalize_embeddings=True,
            show_progress_bar=False,
        )

    pool_emb = embed(pool).astype(np.float32)
    prepared = time.perf_counter()
    scores = pool_emb @ embed(queries).astype(np.float32).T
    return (
        scores.astype(np.float64),
        _info(
            time.perf_counter() - prepared,
            prepared - start,
            pool_emb.shape[1] * np.dtype(np.float32).itemsize,
            dim=int(pool_emb.shape[1]),
            pool_vectors=pool_emb,  # for a learned pooler's group weights; the caller pops it
        ),
    )


def _resketch(x: np.ndarray, dim: int, seed: int) -> np.ndarray:
    import torch

    from influcoder.groundtruth.sketch import CountSketch

    return CountSketch(dim, seed).project("stored", torch.from_numpy(x)).numpy()


def _prepared_vectors(
    store: Store, dim: int | None, seed: int, similarity: str = "cosine"
) -> np.ndarray:
    """Unit-length rows of ``store`` (times their norms for ``inner``), re-sketched to ``dim``
    when given, read shard by shard."""
    out = np.empty((store.n, dim or store.dim), dtype=np.float32)
    norms = store.norms() if similarity == "inner" else None
    for start, chunk in store.iter_chunks(np.float32):
        if dim is not None:
            chunk = _resketch(chunk, dim, seed)
        out[start : start + len(chunk)] = scored_rows(store, start, chunk, similarity, norms)
    return out


def store_scores(
    pool: Store,
    queries: Store,
    *,
    dim: int | None = None,
    seed: int = 0,
    similarity: str = "cosine",
) -> MethodResult:
    """Cosine of the stored vectors of ``pool`` and ``queries`` (gradient or embedding stores);
    with ``similarity="inner"``, the inner product of the gradients before normalisation
    (gradient stores that keep their rows' norms).

    With ``dim=None`` these are the scores of :func:`~influcoder.groundtruth.influence.cosine_scores` (the
    ground truth, for gradient stores), up to float32 rounding. With
    ``dim`` set, both sides are first re-sketched by a :class:`~influcoder.groundtruth.sketch.CountSketch`
    of that dimension (seeded with ``seed``), which shows what a smaller store would lose:
    storage shrinks by ``store.dim / dim`` and scores drift from the ground truth as ``dim``
    falls. Even ``dim == store.dim`` perturbs the scores a little (hash collisions).

    The two stores must share one setup (:func:`~influcoder.io.stores.check_same_setup`).
    ``prepare_seconds`` covers reading (and sketching) the pool, ``seconds`` the queries and the
    products; neither includes computing the stored vectors. ``bytes_per_sample`` is
    ``dim * itemsize`` of the store's dtype (its ``dim`` when none is given). The prepared pool
    is held in memory (``n_pool * dim`` float32).
    """
    check_same_setup(pool, queries)
    check_similarity(similarity)
    if dim is not None and (
        isinstance(dim, bool) or not isinstance(dim, int) or not 1 <= dim <= pool.dim
    ):
        raise ValueError(
            f"dim must be an integer between 1 and the stored dimension {pool.dim}, got {dim!r}"
        )
    start = time.perf_counter()
    pool_vectors = _prepared_vectors(pool, dim, seed, similarity)
    prepared = time.perf_counter()
    scores = pool_vectors @ _prepared_vectors(queries, dim, seed, similarity).T
    width = dim or pool.dim
    extra = {"dim": width, "dtype": pool.dtype, "similarity": similarity}
    if dim is not None:
        extra["sketch_seed"] = seed
    return (
        scores.astype(np.float64),
        _info(
            time.perf_counter() - prepared,
            prepared - start,
            width * np.dtype(DTYPES[pool.dtype]).itemsize,
            **extra,
        ),
    )
