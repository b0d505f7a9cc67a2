"""Retraining the ground truth's adapter on part of the pool, and measuring response losses.

A counterfactual check asks what the model would have become without some training samples.
:class:`Retrainer` answers it for the model the ground truth describes: the decoder, LoRA rank,
alpha and targets, tokenisation and precision recorded in the pool's gradient store
(:func:`Recipe.from_store`). Each :meth:`Retrainer.run` starts from a fresh adapter seeded
with ``seed`` (so two runs with one seed start from the same weights), or with
``start="warm"`` from the store's own warmed-up adapter, trains it on the kept
pool samples in a fixed order, and returns the mean response loss of every sample of the
evaluation sets. The order is one seeded permutation of the *whole* pool with the removed
samples left out, so two runs with one seed differ only by the samples removed.

Samples that open with the same tokens (a chat template's system prompt) have them run once
per batch, in training and in measuring, when a probe finds the decoder gives the same losses
that way (:func:`~influcoder.groundtruth.loss.shared_prefix_length`); about a sixth of a run
on the demo.

The decoder is loaded once; between runs the adapter is taken off (``PeftModel.unload``) and a
fresh one attached, which gives the same weights as a freshly loaded model (tested).
"""

from __future__ import annotations

import logging
import math
import warnings
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass

import numpy as np

from influcoder.errors import StoreError
from influcoder.io.samples import Sample
from influcoder.io.stores import Store
from influcoder.validation.settings import ValidateArguments

logger = logging.getLogger(__name__)


@dataclass(frozen=True)
class Recipe:
    """What a training run rebuilds: the ground truth's model, adapter shape and tokens."""

    model: str
    model_fingerprint: str
    rank: int
    alpha: float
    targets: tuple[str, ...]
    max_length: int
    truncation: str
    template: str
    bf16: bool
    #: the transformer blocks that carry LoRA (``collect --lora-layers``); None: all of them
    layers: tuple[int, ...] | None = None

    def record(self) -> dict:
        """The recipe as a run store records it (and keys its runs by): without ``layers``
        when every block is adapted, so runs of stores from before ``--lora-layers`` keep
        their keys."""
        out = asdict(self)
        if out["layers"] is None:
            del out["layers"]
        else:
            out["layers"] = list(out["layers"])
        return out

    @classmethod
    def from_store(cls, store: Store, model: str | None = None) -> Recipe:
        """The recipe of a gradient store; ``model`` overrides the recorded model name (the
        same model elsewhere on disk: its fingerprint is checked when it is loaded)."""
        if store.kind != "gradients":
            raise StoreError(
                f"{store.path}: a {store.kind} store; validation retrains the "
                "model of a gradient store (from influcoder collect)"
            )
        setup, provenance = store.setup, store.manifest.get("provenance", {})
        name = model or provenance.get("model_name") or provenance.get("arguments", {}).get("model")
        if not name:
            raise StoreError(f"{store.path}: the manifest does not name its model; give --model")
        adapter, tokens = setup["adapter"], setup["tokens"]
        return cls(
            model=name,
            model_fingerprint=setup["model"]["fingerprint"],
            rank=int(adapter["rank"]),
            alpha=float(adapter["alpha"]),
            targets=tuple(adapter["targets"]),
            max_length=int(tokens["max_length"]),
            truncation=tokens["truncation"],
            template=tokens["template"],
            bf16=setup["gradient"].get("precision") == "bf16-autocast",
            layers=tuple(adapter["layers"]) if adapter.get("layers") is not None else None,
        )


class Retrainer:
    """Trains fresh seeded adapters on subsets of ``pool`` and measures losses on
    ``eval_sets`` (name -> samples).

    Args:
        recipe: the model and adapter to rebuild.
        pool: the training samples, in the pool store's order (indices refer to it).
        eval_sets: the samples whose response losses each run reports.
        args: epochs, learning rate, batch sizes.
        device: a ``torch.device`` or its name.
        progress: show a progress bar per run.
        adapter: the folder of the warmed-up adapter every run starts from when
            ``args.start`` is ``warm`` (the pool store's ``adapter/``).
    """

    def __init__(
        self,
        recipe: Recipe,
        pool: Sequence[Sample],
        eval_sets: Mapping[str, Sequence[Sample]],
        args: ValidateArguments,
        *,
        device="cpu",
        progress: bool = False,
        adapter=None,
    ):
        import torch

        from influcoder.groundtruth.decoder import load_decoder
        from influcoder.groundtruth.tokenize import tokenize_samples
        from influcoder.io.models import fingerprint

        self.recipe, self.args, self.progress = recipe, args, progress
        if args.start == "warm" and adapter is None:
            raise ValueError("start 'warm' needs the folder of the warmed-up adapter")
        self.adapter = adapter
        self.device = torch.device(device)
        model, tokenizer, ref = load_decoder(recipe.model)
        if fingerprint(ref) != recipe.model_fingerprint:
            raise StoreError(
                f"the model '{recipe.model}' is not the one the pool's gradients "
                "were taken with (its fingerprint differs); give that model with "
                "--model"
            )
        self.pad_token_id = tokenizer.pad_token_id

        def tokenize(samples, what):
            return tokenize_samples(
                tokenizer,
                samples,
                max_length=recipe.max_length,
                truncation=recipe.truncation,
                template=recipe.template,
                path=what,
            )

        self.pool = tokenize(pool, "the pool")
        self.eval_sets = {name: tokenize(samples, name) for name, samples in eval_sets.items()}
        # a sample in several sets (the control drawn from the held-out file) is measured once
        self._unique, self._rows = [], {}
        seen = {}
        for name, tokenized in self.eval_sets.items():
            rows = []
            for t in tokenized:
                key = (tuple(t.input_ids), tuple(t.labels))
                if key not in seen:
                    seen[key] = len(self._unique)
                    self._unique.append(t)
                rows.append(seen[key])
            self._rows[name] = np.asarray(rows, dtype=np.int64)
        self._base = model.to(self.device)
        self._peft = None
        self.share_prefix = self._prefix_sharing_works()

    def _prefix_sharing_works(self) -> bool:
        """Whether running a shared prefix once gives this decoder's plain losses (to 1e-4),
        probed on the two shortest measured samples that share one; False when none do, or
        when the decoder's forward pass takes no cache (the error is logged, not raised)."""
        import torch

        from influcoder.groundtruth.loss import MIN_SHARED_PREFIX, pad_batch, response_losses

        groups: dict[tuple, list] = {}
        for t in sorted(self._unique + self.pool, key=lambda t: len(t.input_ids)):
            groups.setdefault(tuple(t.input_ids[:MIN_SHARED_PREFIX]), []).append(t)
        pair = max(groups.values(), key=len)[:2]
        if len(pair) < 2:
            return False
        ids, mask, labels = pad_batch(pair, self.pad_token_id, self.device)
        try:
            with torch.no_grad():
                plain = response_losses(self._base, mask, labels, input_ids=ids)
                shared = response_losses(self._base, mask, labels, input_ids=ids, share_prefix=True)
        except (TypeError, ValueError, AttributeError, RuntimeError) as error:
            logger.info(f"each sample runs its whole prompt (shared prefixes failed: {error})")
            return False
        works = bool(torch.allclose(plain, shared, rtol=1e-4, atol=1e-4))
        if not works:
            logger.info("each sample runs its whole prompt (shared prefixes change the loss)")
        return works

    @property
    def n_pool(self) -> int:
        return len(self.pool)

    def steps(self, n_kept: int) -> int:
        """Optimiser steps of a run on ``n_kept`` samples."""
        return max(1, math.ceil(self.args.epochs * math.ceil(n_kept / self.args.batch_size)))

    def _fresh_adapter(self, seed: int):
        from influcoder.groundtruth.lora import attach_lora, load_adapter

        if self._peft is not None:
            self._base = self._peft.unload()
            self._peft = None
        if self.args.start == "warm":
            self._peft = load_adapter(self._base.cpu(), self.adapter).to(self.device)
            return self._peft
        # Attached on the CPU, as collect attaches: the seed draws the same A on every machine.
        self._peft = attach_lora(
            self._base.cpu(),
            rank=self.recipe.rank,
            alpha=self.recipe.alpha,
            targets=self.recipe.targets,
            seed=seed,
            layers=self.recipe.layers,
        ).to(self.device)
        return self._peft

    def _batches(self, order: np.ndarray) -> list[list]:
        """The pool samples of ``order``, cut into optimiser steps of ``batch_size``."""
        bs = self.args.batch_size
        return [[self.pool[i] for i in order[j : j + bs]] for j in range(0, len(order), bs)]

    def _train(self, model, batches, steps: int, seed: int, progress: bool = False) -> list[float]:
        """:func:`~influcoder.groundtruth.lora.warmup` with this recipe's settings."""
        from influcoder.groundtruth.lora import warmup

        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", message=".*use_cache=True.*")
            return warmup(
                model,
                batches,
                steps=steps,
                lr=self.args.lr,
                seed=seed,
                progress=progress,
                max_tokens=self.args.batch_tokens,
                bf16=self.recipe.bf16,
                share_prefix=self.share_prefix,
            )

    def run(self, keep: Sequence[int], seed: int) -> dict[str, np.ndarray]:
        """Train a fresh adapter (seeded ``seed``) on the pool samples ``keep`` and return
        name -> per-sample mean response loss of each evaluation set (float64). An empty
        ``keep`` trains nothing: the losses of the starting adapter."""
        keep = np.asarray(keep, dtype=np.int64)
        if keep.size == 0:
            model = self._fresh_adapter(seed)
            model.eval()
            return self._evaluate(model)
        if len(np.unique(keep)) != keep.size or keep.min() < 0 or keep.max() >= self.n_pool:
            raise ValueError("keep must be distinct pool indices")
        kept = np.zeros(self.n_pool, dtype=bool)
        kept[keep] = True
        order = np.random.default_rng(seed).permutation(self.n_pool)
        order = order[kept[order]]
        model = self._fresh_adapter(seed)
        losses = self._train(
            model, self._batches(order), self.steps(len(order)), seed, self.progress
        )
        logger.debug(f"training loss {losses[0]:.3f} -> {losses[-1]:.3f}")
        return self._evaluate(model)

    def _evaluate(self, model) -> dict[str, np.ndarray]:
        """Name -> per-sample loss of each evaluation set, every distinct sample measured once."""
        losses = self.losses(model, self._unique)
        return {name: losses[rows] for name, rows in self._rows.items()}

    def time_step(self, steps: int = 2) -> tuple[float, float]:
        """``(seconds per optimiser step, seconds per evaluation of every set)``, measured on a
        throw-away adapter trained on the pool's first batches in seed 0's order; one step is
        run first and not counted (it pays one-time costs). For ``--dry-run``."""
        import time

        order = np.random.default_rng(0).permutation(self.n_pool)
        batches = self._batches(order[: self.args.batch_size * (steps + 1)])
        model = self._fresh_adapter(0)
        self._train(model, batches[:1], 1, 0)
        start = time.perf_counter()
        self._train(model, batches[1:], steps, 0)
        per_step = (time.perf_counter() - start) / steps
        start = time.perf_counter()
        self._evaluate(model)
        return per_step, time.perf_counter() - start

    def losses(self, model, tokenized) -> np.ndarray:
        """Per-sample mean response loss of ``tokenized`` under ``model`` (no gradients)."""
        import torch

        from influcoder.groundtruth.loss import pad_batch, response_losses
        from influcoder.groundtruth.memory import TokenBudget

        out = np.empty(len(tokenized))
        budget = TokenBudget(self.args.batch_size * 4, self.args.batch_tokens * 2)
        lengths = [len(t.input_ids) for t in tokenized]

        def compute(rows):
            ids, mask, labels = pad_batch(
                [tokenized[r] for r in rows], self.pad_token_id, self.device
            )
            return (
                response_losses(
                    model,
                    mask,
                    labels,
                    input_ids=ids,
                    bf16=self.recipe.bf16,
                    share_prefix=self.share_prefix,
                )
                .double()
                .cpu()
                .numpy()
            )

        with torch.no_grad():
            for rows, values in budget.run(lengths, compute):
                out[rows] = values
        return out
