"""Learning from retraining runs: train an encoder so pooled subset scores order the runs as
their measured losses do (AirRep's objective).

:func:`train_on_runs` takes plain arrays: the pool's and the queries' texts, each run's
membership over the pool (``[R, n_pool]``) and its loss on each query (``[R, Q]``); reading a
run store is the caller's (:mod:`influcoder.workflows.run_distill`). Runs and queries are split
(:func:`~influcoder.distillation.run_settings.split_runs`); a step scores every training run's
subset for a batch of training queries with the set pooling
(:mod:`influcoder.distillation.pooling`) and minimises
:func:`~influcoder.distillation.losses.subset_ranking_loss`.

Trade-offs:

* A step embeds its queries and ``batch_pool`` pool samples with gradients; every other member
  of a subset uses its embedding from the last time it was computed (all of them at the start
  of an epoch, the step's samples after each step), so a step costs the same on any pool.
* Training runs without dropout, as AirRep's trainer does, so the members embedded with
  gradients and the cached ones come from the same function.
* The encoder keeps the last epoch's weights: the held-out figures recorded each epoch (LDS
  on held-out runs x held-out queries, and the ranking loss there) are the judge, so they
  choose nothing.
* The embedding used at query time is unchanged: ``E(x)`` for a query, ``E(z)`` for a pool
  sample, compared by the encoder's similarity; a trained attention pooling is saved in
  ``influcoder_runs.json`` (:mod:`influcoder.encoders.pooler` reads it) and scores groups
  (the ``learned`` group aggregate).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from influcoder.distillation.forward import block_embeddings
from influcoder.distillation.losses import subset_ranking_loss
from influcoder.distillation.pooling import SumPooling, make_pooling
from influcoder.distillation.run_settings import RunsArguments, RunsSplit, split_runs
from influcoder.distillation.trainer import CARD_NAME
from influcoder.encoders.pooler import RUNS_CARD
from influcoder.io.atomic import atomic_write_dir
from influcoder.metrics import column_spearman

RUNS_CARD_FORMAT, RUNS_CARD_VERSION = "influcoder-runs-training", 1


@dataclass
class RunsResult:
    """What :func:`train_on_runs` did: ``history`` has one entry per epoch (``epoch``,
    ``train_loss``, the held-out figures, ``seconds``, ``cpu_seconds``); ``untrained`` the
    held-out figures before training; ``pooling`` the pooling's config; ``path`` the encoder
    directory written (None when nothing was saved)."""

    split: RunsSplit
    untrained: dict[str, float]
    history: list[dict[str, float]] = field(default_factory=list)
    pooling: dict[str, Any] = field(default_factory=dict)
    path: Path | None = None

    @property
    def final(self) -> dict[str, float]:
        return self.history[-1] if self.history else self.untrained


def _unit(x: torch.Tensor, cosine: bool) -> torch.Tensor:
    return torch.nn.functional.normalize(x, dim=-1) if cosine else x


def embed_texts(encoder, texts: Sequence[str], args: RunsArguments, cosine: bool) -> torch.Tensor:
    """Embeddings without gradients, in eval mode, as the encoder's similarity compares them."""
    was = encoder.training
    encoder.eval()
    with torch.no_grad():
        out = torch.cat(
            [
                block_embeddings(encoder, texts[i : i + 64], micro_batch=args.micro_batch)
                for i in range(0, len(texts), 64)
            ]
        )
    encoder.train(was)
    return _unit(out, cosine)


def heldout_figures(
    pool: torch.Tensor,
    queries: torch.Tensor,
    members: np.ndarray,
    losses: np.ndarray,
    pooling,
    args: RunsArguments,
) -> dict[str, float]:
    """``lds`` (the mean over queries of the Spearman correlation, over the runs, of the summed
    scores and the negated losses, as ``influcoder lds`` computes it; 0 for a constant
    query) and ``ranking_loss`` (the training objective with the trained pooling)."""
    if len(members) < 2 or losses.shape[1] == 0:
        return {}
    m = torch.from_numpy(members.astype(np.float32)).to(pool.device)
    with torch.no_grad():
        summed = SumPooling()(m, pool, queries).double().cpu().numpy()
        pooled = pooling(m, pool, queries)
        loss = subset_ranking_loss(
            pooled,
            torch.from_numpy(losses).to(pooled),
            temperature=args.temperature,
            max_weight=args.max_weight,
        )
    rho = np.nan_to_num(column_spearman(-losses, summed), nan=0.0)
    return {"lds": float(rho.mean()), "ranking_loss": float(loss)}


def train_on_runs(
    encoder,
    pool_texts: Sequence[str],
    query_texts: Sequence[str],
    members: np.ndarray,
    losses: np.ndarray,
    args: RunsArguments | None = None,
    *,
    out_dir: str | Path | None = None,
    base_dir: str | Path | None = None,
    progress: bool = True,
    judge: bool = True,
    extra_card: dict[str, Any] | None = None,
    heldout: np.ndarray | None = None,
) -> RunsResult:
    """Train ``encoder`` (a ``SentenceTransformer``, in place) on retraining runs.

    Args:
        encoder: the encoder to train (untrained, or gradient-distilled to refine).
        pool_texts: the pool samples' texts, one per column of ``members``.
        query_texts: the queries' texts, one per column of ``losses``.
        members: ``[R, n_pool]`` 0/1, the pool samples each run trained on.
        losses: ``[R, Q]``, each run's measured loss on each query.
        args: settings (:class:`RunsArguments`).
        out_dir: if given, the trained encoder is saved there (a sentence-transformers
            directory, whole or not at all) with ``influcoder_runs.json``: settings, split,
            pooling, history and ``extra_card`` (e.g. the runs used).
        base_dir: the directory ``encoder`` was loaded from; its ``influcoder_distill.json``
            (a gradient distillation's card) is kept in ``out_dir``.
        progress: show a progress bar.
        judge: compute the held-out figures before training and after every epoch (False:
            the caller judges; saves encoding the pool once an epoch).
        heldout: ``[Q]`` bool, the queries to hold out (``args.heldout_where``'s, read from
            their metadata by the caller); None: a seeded share.

    Returns:
        A :class:`RunsResult`.
    """
    args = args or RunsArguments()
    members = np.asarray(members).astype(bool)
    losses = np.asarray(losses, dtype=np.float64)
    if members.ndim != 2 or members.shape[1] != len(pool_texts):
        raise ValueError(f"members must be [runs, {len(pool_texts)}], got {members.shape}")
    if losses.shape != (members.shape[0], len(query_texts)):
        raise ValueError(
            f"losses must be [runs, queries] = {(members.shape[0], len(query_texts))}, "
            f"got {losses.shape}"
        )
    if not np.isfinite(losses).all() or not members.any(axis=1).all():
        raise ValueError("losses must be finite and every run must keep a pool sample")
    split = split_runs(*losses.shape, args, heldout)
    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    limit = getattr(getattr(encoder[0], "config", None), "max_position_embeddings", None)
    encoder.max_seq_length = min(args.max_seq_length, limit or args.max_seq_length)
    cosine = getattr(encoder, "similarity_fn_name", None) in (None, "cosine")
    device = encoder.device
    pool_texts, query_texts = list(pool_texts), list(query_texts)

    train_m = torch.from_numpy(members[split.train_runs].astype(np.float32)).to(device)
    train_l = losses[split.train_runs]
    held_m = members[split.heldout_runs]
    held_l = losses[np.ix_(split.heldout_runs, split.heldout_queries)]
    held_q = [query_texts[j] for j in split.heldout_queries]
    dim = embed_texts(encoder, pool_texts[:1], args, cosine).shape[1]
    pooling = make_pooling(args.pooling, dim).to(device)

    def figures() -> dict[str, float]:
        if not judge or not held_q or len(held_m) < 2:
            return {}
        pool = embed_texts(encoder, pool_texts, args, cosine)
        return heldout_figures(
            pool, embed_texts(encoder, held_q, args, cosine), held_m, held_l, pooling, args
        )

    groups = [{"params": [p for p in encoder.parameters() if p.requires_grad], "lr": args.lr}]
    if list(pooling.parameters()):
        groups.append({"params": list(pooling.parameters()), "lr": args.pooling_lr})
    optimizer = torch.optim.AdamW(groups)
    result = RunsResult(split=split, untrained=figures())
    n_batch = -(-len(split.train_queries) // args.batch_query)
    used_pool = np.flatnonzero(members[split.train_runs].any(axis=0))
    bar = tqdm(total=args.epochs * n_batch, desc="distill-runs", unit="step", disable=not progress)
    for epoch in range(1, args.epochs + 1):
        start, cpu = time.perf_counter(), time.process_time()
        cache = embed_texts(encoder, pool_texts, args, cosine)
        encoder.eval()  # no dropout (as AirRep's trainer): the cached members have none
        order = rng.permutation(split.train_queries)
        total = 0.0
        for b in range(n_batch):
            qb = order[b * args.batch_query : (b + 1) * args.batch_query]
            pb = rng.choice(used_pool, size=min(args.batch_pool, len(used_pool)), replace=False)
            out = block_embeddings(
                encoder,
                [pool_texts[i] for i in pb] + [query_texts[j] for j in qb],
                micro_batch=args.micro_batch,
            )
            out = _unit(out, cosine)
            rows = torch.from_numpy(pb).to(device)
            pool = cache.index_copy(0, rows, out[: len(pb)])
            scores = pooling(train_m, pool, out[len(pb) :])
            loss = subset_ranking_loss(
                scores,
                torch.from_numpy(train_l[:, qb]).to(scores),
                temperature=args.temperature,
                max_weight=args.max_weight,
            )
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            cache = cache.index_copy(0, rows, out[: len(pb)].detach())
            total += loss.item()
            bar.set_postfix(loss=f"{loss.item():.4f}", refresh=False)
            bar.update()
        result.history.append(
            {
                "epoch": epoch,
                "train_loss": total / n_batch,
                **figures(),
                "seconds": time.perf_counter() - start,
                "cpu_seconds": time.process_time() - cpu,
            }
        )
    bar.close()
    encoder.eval()
    result.pooling = pooling.config()
    if out_dir is not None:
        card = {**runs_card(encoder, args, result), **(extra_card or {})}
        save_runs_encoder(encoder, out_dir, card, base_dir)
        result.path = Path(out_dir)
    return result


def runs_card(encoder, args: RunsArguments, result: RunsResult) -> dict[str, Any]:
    """The card of an encoder trained on runs: settings, split, pooling, held-out figures."""
    return {
        "format": RUNS_CARD_FORMAT,
        "format_version": RUNS_CARD_VERSION,
        "args": args.to_dict(),
        "split": result.split.to_dict(),
        "pooling": result.pooling,
        "untrained": result.untrained,
        "history": result.history,
        "max_seq_length": encoder.max_seq_length,
    }


def save_runs_encoder(encoder, out_dir, card: dict, base_dir=None) -> None:
    """Save ``encoder`` with ``card`` as ``influcoder_runs.json`` (and the base encoder's
    ``influcoder_distill.json``, when it has one); the directory appears whole or not at
    all."""
    base_card = None if base_dir is None else Path(base_dir) / CARD_NAME

    def fill(tmp: Path) -> None:
        encoder.save(str(tmp))
        if base_card is not None and base_card.is_file():
            shutil.copyfile(base_card, tmp / CARD_NAME)
        (tmp / RUNS_CARD).write_text(
            json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )

    Path(out_dir).parent.mkdir(parents=True, exist_ok=True)
    atomic_write_dir(Path(out_dir), fill)
