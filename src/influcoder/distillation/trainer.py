"""The distillation loop: train a sentence encoder to reproduce a ground-truth influence matrix.

The ground truth ``gt[i, j]`` is the influence of pool sample *i* on query *j* (the cosine of
their sketched decoder gradients). A seeded share of the pool samples and of the queries is held
out; training sees only blocks of training pool samples x training queries, and validation
scores held-out queries against held-out pool samples, so it measures what attribution needs:
ranking pool samples the encoder never saw for queries it never saw (``validate_queries='all'``
scores the held-out pool samples against every query instead: a larger block).

Trade-offs:

* Blocks are sampled at random each step (optionally seeded with each query's top pool samples,
  ``hard_fraction``; :mod:`influcoder.distillation.blocks`) rather than swept in a fixed order,
  so ``steps_per_epoch`` can be set freely; by default an epoch covers each (pool sample, query)
  pair about once.
* The best weights by validation ``per_anchor_spearman`` are kept in host memory (one copy of
  the encoder's state) and restored at the end, the untrained encoder included: an encoder that
  distillation did not improve comes back unchanged, with a warning.
* A step's texts (pool samples and queries together) are encoded in length-sorted
  micro-batches (:mod:`influcoder.distillation.forward`), not padded to the block's longest:
  the same embeddings, about a third of the time on CPU (``micro_batch``, 0 turns it off).
* Validation encodes the held-out texts once per epoch; its cost grows with
  ``val_fraction * n_pool`` and is small beside training unless the pool is huge.
"""

from __future__ import annotations

import json
import logging
import time
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from sentence_transformers.util import cos_sim
from tqdm.auto import tqdm

from influcoder.distillation import checkpoint
from influcoder.distillation.blocks import BlockSampler, DistillSplit, split_indices
from influcoder.distillation.forward import encode_items, sample_embeddings
from influcoder.distillation.freeze import frozen_layers
from influcoder.distillation.joint import joint_head, parameter_groups
from influcoder.distillation.losses import InfluenceDistillLoss, cosine_regression_loss
from influcoder.distillation.settings import DistillArguments
from influcoder.encoders.settings import CARD_NAME
from influcoder.io.atomic import atomic_write_dir
from influcoder.metrics import (
    aggregated_spearman,
    pairwise_spearman,
    per_anchor_spearman,
)

logger = logging.getLogger(__name__)

CARD_FORMAT = "influcoder-distill"
CARD_FORMAT_VERSION = 1
METRICS = {
    "per_anchor_spearman": per_anchor_spearman,
    "pairwise_spearman": pairwise_spearman,
    "aggregated_spearman": aggregated_spearman,
}
SELECTION_METRIC = "per_anchor_spearman"


@dataclass
class DistillResult:
    """What :func:`distill` did.

    ``history`` has one entry per epoch run: ``epoch`` (from 1), ``train_loss`` (mean over the
    epoch's steps), the three validation figures and ``seconds`` (training and validation).
    ``best_epoch`` is the epoch whose weights the encoder now holds (0: the untrained weights
    were best), ``untrained`` and ``best`` its validation figures before training and at
    ``best_epoch``. ``head`` is the card entry of the linear head appended after training
    (:mod:`influcoder.distillation.linear`), ``None`` without one. ``path``: the encoder
    directory written (None when nothing was saved); the result is path-like, so ``index``,
    ``encode`` and ``evaluate`` take it where they take that directory. ``fidelity``: the
    saved encoder's figures on samples held out of distillation altogether
    (:mod:`influcoder.distillation.fidelity`; ``distill_stores`` only), ``None`` without.
    """

    history: list[dict[str, float]]
    best_epoch: int
    untrained: dict[str, float]
    best: dict[str, float]
    split: DistillSplit
    head: dict[str, Any] | None = None
    path: Path | None = None
    fidelity: dict[str, Any] | None = None

    def __fspath__(self) -> str:
        if self.path is None:
            raise TypeError("this distillation saved no encoder (no out_dir), so it has no path")
        return str(self.path)


def distill(
    encoder,
    pool_texts: Sequence[str],
    query_texts: Sequence[str],
    gt: np.ndarray,
    args: DistillArguments | None = None,
    *,
    pool_vectors: np.ndarray | None = None,
    query_vectors: np.ndarray | None = None,
    out_dir: str | Path | None = None,
    progress: bool = True,
    extra_card: dict[str, Any] | None = None,
) -> DistillResult:
    """Train ``encoder`` in place so that the cosines of its embeddings rank like ``gt``.

    Same settings, encoder and data give the same result: the split and the blocks come from a
    generator seeded with ``args.seed``, and torch's global generators (dropout) are seeded with
    it too.

    Args:
        encoder: a ``SentenceTransformer``, trained in place on its own device; on return it
            holds the best weights by validation ``per_anchor_spearman``, in eval mode, with
            ``max_seq_length`` set from ``args`` (capped at the model's position embeddings).
        pool_texts: the pool samples' texts, one per row of ``gt``; or tuples of one text per
            view, to train through several views (each view's embedding scaled to unit length,
            the views concatenated: :func:`~influcoder.distillation.forward.sample_embeddings`).
        query_texts: the queries' texts, one per column of ``gt`` (the same kind).
        gt: ground-truth influence ``[n_pool, n_query]``; any scale (only rankings and
            softmax-sharpened scores are matched).
        args: settings; ``None`` uses :class:`DistillArguments`' defaults.
        pool_vectors, query_vectors: the ground-truth gradient vectors ``[n, dim]`` behind
            ``gt``, one row per text; needed (only) for joint training,
            ``args.regression_weight > 0``: a trainable head (:func:`training_head`) is then
            appended for the epochs, the ranking terms score its outputs, a cosine-regression
            term pulls the training samples' outputs onto their gradients' principal
            coordinates, and validation scores encoder + head. The head is removed before
            returning (a closed-form head is fitted afterwards, see
            :func:`influcoder.distillation.stores.distill_stores`).
        out_dir: if given, the trained encoder is saved there as a sentence-transformers
            directory (load it with ``SentenceTransformer(out_dir)``), together with
            ``influcoder_distill.json`` (settings, split sizes, per-epoch history, best epoch).
            The directory appears whole or not at all; an existing one is replaced. After
            every epoch but the last the run's state is checkpointed to ``<out_dir>.checkpoint``
            (see :mod:`influcoder.distillation.checkpoint`): if the run is killed, calling ``distill``
            again with the same encoder, data and settings resumes from the last finished epoch
            and ends exactly as an uninterrupted run would; another run's checkpoint is refused.
        progress: show a progress bar with the loss and the last validation figures.
        extra_card: more entries for ``influcoder_distill.json`` (for example fingerprints of
            the ground truth); they may not reuse the card's own keys.

    Returns:
        A :class:`DistillResult`.

    Raises:
        ValueError: ``gt`` does not match the texts or is not finite, the split leaves fewer
            than 2 pool samples or queries on either side, or ``extra_card`` reuses a key.
        InflucoderError: ``<out_dir>.checkpoint`` is unreadable or from another run.

    Example:
        ::

            from sentence_transformers import SentenceTransformer
            from influcoder.distillation import DistillArguments, distill

            encoder = SentenceTransformer("sentence-transformers/all-MiniLM-L6-v2")
            result = distill(encoder, pool_texts, query_texts, gt, DistillArguments(epochs=3),
                             out_dir="runs/encoder")
            print(result.untrained["per_anchor_spearman"], result.best["per_anchor_spearman"])
    """
    if args is None:
        args = DistillArguments()
    gt = _checked_ground_truth(gt, len(pool_texts), len(query_texts))
    extra_card = dict(extra_card or {})
    reused = sorted(set(extra_card) & _CARD_KEYS)
    if reused:
        raise ValueError(f"extra_card may not set the card's own keys {reused}")
    if out_dir is not None:
        Path(out_dir).parent.mkdir(parents=True, exist_ok=True)

    rng = np.random.default_rng(args.seed)
    torch.manual_seed(args.seed)
    split = split_indices(len(pool_texts), len(query_texts), args.val_fraction, rng)
    sampler = BlockSampler(gt, split, args, rng)
    steps = args.steps_per_epoch or sampler.steps_to_cover()

    val_pool = [pool_texts[i] for i in split.val_pool]
    val_query_idx = (
        split.val_query if args.validate_queries == "held-out" else np.arange(len(query_texts))
    )
    val_query = [query_texts[j] for j in val_query_idx]
    val_gt = gt[np.ix_(split.val_pool, val_query_idx)]

    def validate() -> dict[str, float]:
        return validation_figures(encoder, val_pool, val_query, val_gt, batch_size=args.batch_pool)

    encoder.max_seq_length = _max_seq_length(encoder, args.max_seq_length)
    loss_fn = InfluenceDistillLoss(
        encoder,
        pearson_weight=args.pearson_weight,
        kl_weight=args.kl_weight,
        temperature=args.temperature,
        target_temperature=args.target_temperature,
        aggregate_weight=args.aggregate_weight,
    )
    targets = joint_head(encoder, pool_texts, query_texts, pool_vectors, query_vectors, split, args)
    with frozen_layers(encoder, args.freeze_layers):
        optimizer = torch.optim.AdamW(parameter_groups(encoder, args.lr, targets is not None))

        loop = None
        if out_dir is not None:
            checkpoints = checkpoint.checkpoint_dir(out_dir)
            fingerprint = checkpoint.run_fingerprint(
                encoder, pool_texts, query_texts, gt, args.to_dict()
            )
            loop = checkpoint.load(checkpoints, fingerprint, encoder, optimizer, rng)
            if loop is not None:
                logger.info(
                    f"resuming from {checkpoints}: {loop.epoch} of {args.epochs} "
                    f"epochs already done"
                )
        if loop is None:
            untrained = validate()
            loop = checkpoint.LoopState(
                epoch=0,
                history=[],
                untrained=untrained,
                best=untrained,
                best_epoch=0,
                best_state=checkpoint.state_copy(encoder),
            )
        bar = tqdm(
            total=args.epochs * steps,
            initial=loop.epoch * steps,
            desc="distill",
            unit="step",
            disable=not progress,
        )
        last = loop.history[-1] if loop.history else loop.untrained  # shown beside the loss
        bar.set_postfix(_postfix(None, last))
        for epoch in range(loop.epoch + 1, args.epochs + 1):
            start = time.perf_counter()
            encoder.train()
            total = 0.0
            for _ in range(steps):
                pool_idx, query_idx = sampler.sample()
                labels = torch.from_numpy(gt[np.ix_(pool_idx, query_idx)])
                # pool samples and queries in one length-sorted pass, then split
                pool_out, query_out = sample_embeddings(
                    encoder,
                    [pool_texts[i] for i in pool_idx] + [query_texts[j] for j in query_idx],
                    micro_batch=args.micro_batch,
                ).split([len(pool_idx), len(query_idx)])
                loss = loss_fn.block_loss(cos_sim(pool_out, query_out), labels)
                if targets is not None:
                    loss = loss + args.regression_weight * cosine_regression_loss(
                        torch.cat([pool_out, query_out]),
                        torch.cat([targets[0][pool_idx], targets[1][query_idx]]),
                    )
                optimizer.zero_grad()
                loss.backward()
                optimizer.step()
                total += loss.item()
                bar.set_postfix(_postfix(loss.item(), last), refresh=False)
                bar.update()
            last = validate()
            loop.history.append(
                {
                    "epoch": epoch,
                    "train_loss": total / steps,
                    **last,
                    "seconds": time.perf_counter() - start,
                }
            )
            loop.epoch = epoch
            bar.set_postfix(_postfix(total / steps, last))
            if last[SELECTION_METRIC] > loop.best[SELECTION_METRIC]:
                loop.best, loop.best_epoch = last, epoch
                loop.best_state = checkpoint.state_copy(encoder)
            elif epoch - loop.best_epoch >= args.patience:
                break
            if out_dir is not None and epoch < args.epochs:
                checkpoint.save(checkpoints, fingerprint, encoder, optimizer, rng, loop)
        bar.close()

    encoder.load_state_dict(loop.best_state)
    encoder.eval()
    if targets is not None:
        del encoder[-1]  # the training head; the closed-form one is fitted on what is left
    if loop.best_epoch == 0 and args.epochs > 0:
        block = f"{len(split.val_pool)} pool samples x {len(val_query)} queries"
        hint = (
            "; if that block is too small to choose by, --validate-queries all scores the "
            "held-out pool against every query"
            if args.validate_queries == "held-out"
            else ""
        )
        warnings.warn(
            f"no epoch beat the untrained encoder's validation {SELECTION_METRIC} "
            f"({loop.untrained[SELECTION_METRIC]:.4f}) on {block}; the untrained "
            f"weights are kept{hint}",
            stacklevel=2,
        )
    result = DistillResult(
        history=loop.history,
        best_epoch=loop.best_epoch,
        untrained=loop.untrained,
        best=loop.best,
        split=split,
        path=None if out_dir is None else Path(out_dir),
    )
    if out_dir is not None:
        save_encoder(encoder, out_dir, {**_card(encoder, args, result), **extra_card})
        checkpoint.remove(checkpoints)
    return result


def validation_figures(
    encoder,
    pool_texts: Sequence[str],
    query_texts: Sequence[str],
    gt: np.ndarray,
    *,
    batch_size: int = 32,
) -> dict[str, float]:
    """The three validation figures of ``encoder``'s cosines against ``gt`` ``[pool, query]``:
    ``per_anchor_spearman``, ``pairwise_spearman`` and ``aggregated_spearman``."""
    pool, query = (
        encode_items(encoder, texts, batch_size=batch_size) for texts in (pool_texts, query_texts)
    )
    pred = cos_sim(pool, query).float().cpu().numpy()
    return {name: fn(gt, pred) for name, fn in METRICS.items()}


def _checked_ground_truth(gt: np.ndarray, n_pool: int, n_query: int) -> np.ndarray:
    gt = np.asarray(gt, dtype=np.float32)
    if gt.shape != (n_pool, n_query):
        raise ValueError(
            f"gt must be [n_pool, n_query] = [{n_pool}, {n_query}] (one row per "
            f"pool text, one column per query text), got {list(gt.shape)}"
        )
    if not np.isfinite(gt).all():
        raise ValueError(f"gt holds {int((~np.isfinite(gt)).sum())} non-finite values")
    return gt


def _max_seq_length(encoder, wanted: int) -> int:
    """``wanted``, capped at the encoder's position embeddings (as sentence-transformers caps
    the tokenizer's length on loading): longer inputs would index past them."""
    limit = getattr(getattr(encoder[0], "config", None), "max_position_embeddings", None)
    return min(wanted, limit) if isinstance(limit, int) and limit > 0 else wanted


def _postfix(loss: float | None, figures: dict[str, float]) -> dict[str, str]:
    shown = {} if loss is None else {"loss": f"{loss:.4f}"}
    shown.update({name.removesuffix("_spearman"): f"{figures[name]:.3f}" for name in METRICS})
    return shown


# The card's own keys, which extra_card may not reuse; checked before training starts.
_CARD_KEYS = {
    "format",
    "format_version",
    "args",
    "seed",
    "max_seq_length",
    "split",
    "untrained",
    "history",
    "best_epoch",
    "best",
}


def _card(encoder, args: DistillArguments, result: DistillResult) -> dict[str, Any]:
    return {
        "format": CARD_FORMAT,
        "format_version": CARD_FORMAT_VERSION,
        "args": args.to_dict(),
        "seed": args.seed,
        "max_seq_length": encoder.max_seq_length,
        "split": result.split.sizes(),
        "untrained": result.untrained,
        "history": result.history,
        "best_epoch": result.best_epoch,
        "best": result.best,
    }


def save_encoder(encoder, out_dir: str | Path, card: dict[str, Any], extra=None) -> None:
    """Save ``encoder`` as a sentence-transformers directory with ``card`` as its
    ``influcoder_distill.json`` (and whatever ``extra(folder)`` adds); the directory appears
    whole or not at all."""

    def fill(tmp: Path) -> None:
        encoder.save(str(tmp))
        if extra is not None:
            extra(tmp)
        (tmp / CARD_NAME).write_text(
            json.dumps(card, indent=2, sort_keys=True) + "\n", encoding="utf-8"
        )

    atomic_write_dir(Path(out_dir), fill)
