"""DATE-LM's Rep-Sim as a baseline, ``repsim``: the cosine of the decoder's own representations
of a pool sample and a query (its last hidden states, the ground truth's adapter on, averaged
over the response tokens), the "why not the model's own embeddings?" rival of the gradient;
``repsim-layers`` does the same with every layer's hidden states (each layer's part scaled to
unit norm), the stronger variant on the demo's validation block.

Unlike the text baselines it needs the decoder: the ground truth's stores name it, and their
samples are tokenized exactly as for the gradients
(:meth:`~influcoder.groundtruth.resident.ResidentCollector.representations`). A forward pass
per sample, no backward; its pool side is a ``hidden``-dimensional vector per sample (576 for
SmolLM2-135M; 31 x 576 with every layer).
"""

from __future__ import annotations

import functools
import time

import numpy as np

from influcoder.evaluation.baselines import MethodResult, _info
from influcoder.io.stores import Store
from influcoder.similarity import unit_rows


def repsim_scores(
    gt_pool: Store,
    gt_queries: Store,
    *,
    device: str = "cpu",
    pooling: str = "response",
    layers: str = "last",
) -> MethodResult:
    """``[n_pool, n_queries]`` cosines of the decoder's pooled hidden states of the two
    stores' samples (``pooling``: ``response``, ``all`` or ``last`` tokens; ``layers``:
    ``last``, or ``all``, every layer's, each scaled to unit norm), with its cost."""
    from influcoder.groundtruth.resident import ResidentCollector

    start = time.perf_counter()
    collector = ResidentCollector(gt_pool, device=device).load()
    pool = collector.representations(gt_pool.samples, str(gt_pool.path), pooling, layers)
    prepared = time.perf_counter()
    queries = collector.representations(gt_queries.samples, str(gt_queries.path), pooling, layers)
    scores = unit_rows(pool.astype(np.float64)) @ unit_rows(queries.astype(np.float64)).T
    return scores, _info(
        time.perf_counter() - prepared,
        prepared - start,
        4 * pool.shape[1],
        pooling=pooling,
        layers=layers,
    )


#: The baselines that need the ground truth's decoder, by name: ``(pool store, query store,
#: device=) -> (scores, info)``. ``repsim`` is DATE-LM's (the last layer); ``repsim-layers``
#: pools every layer, the stronger of the two on the demo's validation block.
MODEL_BASELINES = {
    "repsim": repsim_scores,
    "repsim-layers": functools.partial(repsim_scores, layers="all"),
}
