"""The gradient ranking beside the encoder's (``serve --ground-truth POOL_STORE``).

The encoder is a stand-in for gradient influence. When a gradient store of the pool exists
(``influcoder collect``), a query that is one of its samples has a true ranking: the cosine of
its sketched gradient with every pool sample's. Shown beside the encoder's ranking with two
agreement figures, a user sees how far the stand-in can be trusted on *this* query:

* Spearman's correlation of the two score vectors over the pool samples both know
  (:func:`influcoder.metrics.spearman`);
* overlap@k: the share of the gradient's top ``k`` that the encoder's top ``k`` also holds.

The query itself is left out of both (every sample is its own nearest neighbour).

Cost: the store's vectors are not held in memory (a sketched gradient is thousands of
dimensions), so each such query streams the store from disk once, shard by shard; only
queries whose id is in the store pay it.
"""

from __future__ import annotations

import numpy as np

from influcoder.errors import StoreError
from influcoder.io.stores import Store
from influcoder.serve.scores import top_rows
from influcoder.similarity import normalize_rows


class GroundTruth:
    """A pool gradient store, matched to the index's pool by sample id."""

    def __init__(self, path, pool_ids: list[str]):
        self.store = Store(path)
        if self.store.kind != "gradients":
            raise StoreError(
                f"{path}: a store of {self.store.kind}, not of gradients (make one "
                f"with `influcoder collect`)"
            )
        ids = self.store.ids
        self.row_of = {i: r for r, i in enumerate(ids)}
        pool_row = {i: r for r, i in enumerate(pool_ids)}
        both = [(r, pool_row[i]) for r, i in enumerate(ids) if i in pool_row]
        if len(both) < 2:
            raise StoreError(
                f"{path}: shares {len(both)} sample ids with the index; a ground "
                f"truth must be a gradient store of the index's pool"
            )
        self.store_rows = np.array([a for a, _ in both], dtype=np.int64)
        self.pool_rows = np.array([b for _, b in both], dtype=np.int64)
        self.ids = [ids[r] for r in self.store_rows]

    def info(self) -> dict:
        return {"path": str(self.store.path), "n": self.store.n, "n_common": len(self.ids)}

    def __contains__(self, sample_id: str) -> bool:
        return sample_id in self.row_of

    def gradient_scores(self, sample_id: str) -> np.ndarray:
        """Cosine of the sample's gradient with every gradient of the store (store order)."""
        row = self.row_of[sample_id]
        k = row // self.store.shard_rows
        g = normalize_rows(self.store.shard(k)[row - self.store.shard_range(k)[0]][None])[0]
        out = np.empty(self.store.n, dtype=np.float32)
        for start, chunk in self.store.iter_chunks():
            out[start : start + len(chunk)] = normalize_rows(chunk) @ g
        return out

    def compare(self, sample_id: str, encoder_scores: np.ndarray, k: int) -> dict:
        """The two rankings of the pool for the query ``sample_id`` and their agreement;
        ``encoder_scores`` are its encoder scores over the pool (pool row order)."""
        if sample_id not in self:
            return {
                "in_store": False,
                "message": f"the query id '{sample_id}' is not one of the {self.store.n} "
                f"samples of the gradient store {self.store.path}, so there is "
                f"no gradient ranking to compare with",
            }
        from influcoder.metrics import spearman

        keep = np.array([i != sample_id for i in self.ids])
        ids = [i for i, kept in zip(self.ids, keep) if kept]
        grad = self.gradient_scores(sample_id)[self.store_rows][keep]
        enc = np.asarray(encoder_scores, dtype=np.float32)[self.pool_rows][keep]
        k = min(k, len(ids))
        top_g, top_e = top_rows(grad, len(ids)), top_rows(enc, len(ids))
        rank_g = np.empty(len(ids), dtype=np.int64)
        rank_e = np.empty(len(ids), dtype=np.int64)
        rank_g[top_g] = np.arange(1, len(ids) + 1)
        rank_e[top_e] = np.arange(1, len(ids) + 1)
        overlap = len(set(top_g[:k].tolist()) & set(top_e[:k].tolist())) / k

        def listing(order, scores, other_rank, other):
            return [
                {
                    "rank": rank,
                    "id": ids[i],
                    "score": float(scores[i]),
                    f"{other}_rank": int(other_rank[i]),
                }
                for rank, i in enumerate(order[:k].tolist(), start=1)
            ]

        rho = spearman(grad, enc)
        return {
            "in_store": True,
            "query_id": sample_id,
            "n_common": len(ids),
            "k": k,
            "spearman": None if np.isnan(rho) else rho,
            "overlap_at_k": overlap,
            "gradient": listing(top_g, grad, rank_e, "encoder"),
            "encoder": listing(top_e, enc, rank_g, "gradient"),
        }
