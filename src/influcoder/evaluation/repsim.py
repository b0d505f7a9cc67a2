"""DATE-LM's Rep-Sim as a baseline, ``repsim``: the cosine of the decoder's own representations
of a pool sample and a query (its last hidden states, the ground truth's adapter on, averaged
over the response tokens), the "why not the model's own embeddings?" rival of the gradient.

Unlike the text baselines it needs the decoder: the ground truth's stores name it, and their
samples are tokenized exactly as for the gradients
(:meth:`~influcoder.groundtruth.resident.ResidentCollector.representations`). A forward pass
per sample, no backward; its pool side is a ``hidden``-dimensional vector per sample (576 for
SmolLM2-135M).
"""

from __future__ import annotations

import time

import numpy as np

from influcoder.evaluation.baselines import MethodResult, _info
from influcoder.io.stores import Store
from influcoder.similarity import unit_rows


def repsim_scores(
    gt_pool: Store, gt_queries: Store, *, device: str = "cpu", pooling: str = "response"
) -> MethodResult:
    """``[n_pool, n_queries]`` cosines of the decoder's pooled last hidden states of the two
    stores' samples (``pooling``: ``response``, ``all`` or ``last`` tokens), with its cost."""
    from influcoder.groundtruth.resident import ResidentCollector

    start = time.perf_counter()
    collector = ResidentCollector(gt_pool, device=device).load()
    pool = collector.representations(gt_pool.samples, str(gt_pool.path), pooling)
    prepared = time.perf_counter()
    queries = collector.representations(gt_queries.samples, str(gt_queries.path), pooling)
    scores = unit_rows(pool.astype(np.float64)) @ unit_rows(queries.astype(np.float64)).T
    return scores, _info(
        time.perf_counter() - prepared, prepared - start, 4 * pool.shape[1], pooling=pooling
    )


#: The baselines that need the ground truth's decoder, by name: ``(pool store, query store,
#: device=) -> (scores, info)``.
MODEL_BASELINES = {"repsim": repsim_scores}
