"""``collect``: a data set -> a store of sketched, normalised per-sample LoRA gradients.

The steps, in the order that keeps a bad input from ever leaving a half-written store:

1. read and validate every sample, load the decoder, tokenize every sample (masks,
   truncation): any problem raises before anything is written;
2. settle the adapter: the user's (``--adapter``), the one of an existing store (``--like``,
   or a store being resumed), or a seeded fresh/warmed-up one, and with ``--precondition
   adam`` its second moments (:mod:`influcoder.groundtruth.adapters`);
3. create the store (adapter, samples, manifest), or check that the existing one was made
   with exactly this setup (:mod:`influcoder.groundtruth.store_setup`);
4. compute the missing shards, each atomically written: a killed run resumes where it
   stopped and ends with the vectors of an uninterrupted run.
"""

from __future__ import annotations

import functools
import logging
import os
import warnings
from dataclasses import dataclass, replace
from pathlib import Path
from typing import ClassVar

import numpy as np

from influcoder.errors import InflucoderError, StoreError
from influcoder.groundtruth.adapters import (
    DRY_RUN_WARMUP_STEPS,
    prepare_adapter,
    resolve_layers,
    save_adapter,
    settle_precondition,
)
from influcoder.groundtruth.lora import adapter_digest
from influcoder.groundtruth.memory import TokenBudget
from influcoder.groundtruth.precondition import preconditioning
from influcoder.groundtruth.settings import AUTO_LORA_TARGETS, CollectArguments
from influcoder.groundtruth.store_setup import (
    build_setup,
    find_recorded_path,
    gradient_target,
)
from influcoder.groundtruth.tokenize import resolve_template, tokenize_samples
from influcoder.io.atomic import atomic_write_dir
from influcoder.io.devices import DEFAULT_DEVICE
from influcoder.io.estimate import DEFAULT_ESTIMATE_ROWS, Estimate, estimate_job
from influcoder.io.job import CheckedWorker, Plan, StoreJob, run_job
from influcoder.io.layout import ADAPTER_DIR, MANIFEST_NAME, PRECONDITIONER_NAME
from influcoder.io.samples import Fields
from influcoder.io.stores import Store, open_store, package_versions, setup_differences

logger = logging.getLogger(__name__)


class CollectJob(StoreJob):
    """The ground-truth stage as a store-filling job (:mod:`influcoder.io.job`)."""

    kind, desc, made, settings = "gradients", "collect", "collected", CollectArguments

    def __init__(
        self,
        args: CollectArguments,
        like: Store | None = None,
        progress: bool = True,
        device: str = DEFAULT_DEVICE,
        dry_run: bool = False,
    ):
        super().__init__(args, dry_run)
        self.like, self.progress, self.device = like, progress, device

    @classmethod
    def settings_of(cls, store: Store, **overrides):
        """The store's settings, its model and adapter found from here: a store made before
        paths were recorded absolute names them as typed, so a relative one is looked for from
        the current folder, then from the store's parent; a missing one is refused by name."""
        if store.kind != cls.kind:
            raise StoreError(f"{store.path}: holds {store.kind}, not {cls.kind}")
        recorded = dict(store.manifest["provenance"]["arguments"])
        for key in ("model", "adapter"):
            if key not in overrides and recorded.get(key):
                recorded[key] = find_recorded_path(store, key, recorded[key])
        return replace(cls.settings(**recorded), **overrides)

    def plan(self, samples, source: str, out: Path) -> Plan:
        import torch

        from influcoder.groundtruth.decoder import load_decoder
        from influcoder.groundtruth.gradients import GradientComputer
        from influcoder.groundtruth.lora_targets import find_lora_targets
        from influcoder.io.devices import (
            describe_device,
            resolve_device,
            resolve_precision,
        )
        from influcoder.io.models import fingerprint

        args, like = self.args, self.like
        device = resolve_device(self.device)
        model, tokenizer, ref = load_decoder(args.model)
        template = resolve_template(tokenizer, args.template)
        self.tokenizer, self.template = tokenizer, template  # for a resident collector
        tokenized = tokenize_samples(
            tokenizer,
            samples,
            max_length=args.max_length,
            truncation=args.truncation,
            template=template,
            path=source,
        )
        model_fp = fingerprint(ref)
        if like is not None and like.setup["model"]["fingerprint"] != model_fp:
            raise StoreError(f"{like.path} was built with another model than '{args.model}'")

        targets = None
        if args.lora_targets == AUTO_LORA_TARGETS:
            try:
                family, targets = find_lora_targets(model)
            except ValueError as e:
                raise InflucoderError(str(e)) from None
            logger.info(f"LoRA targets ({family} naming): {', '.join(targets)}")
        layers = resolve_layers(args.lora_layers, model)
        stored = like or (
            Store(out, allow_incomplete=True) if (out / MANIFEST_NAME).is_file() else None
        )
        bf16 = resolve_precision(
            "bf16" if args.bf16 else args.precision,
            device,
            stored.setup["gradient"]["precision"] if stored else None,
        )
        torch.manual_seed(args.seed)
        moments = None if args.precondition == "none" else {}
        peft_model, origin, adapter_config, self.skipped_seconds = prepare_adapter(
            model,
            args,
            tokenized,
            out,
            like,
            self.progress,
            targets,
            device,
            self.dry_run,
            layers,
            moments,
        )
        self.peft_model = peft_model  # for a resident collector
        precondition = (
            None
            if moments is None
            else settle_precondition(args, peft_model, tokenized, moments, stored, origin)
        )
        if self.skipped_seconds:
            self.estimate_notes = (
                (
                    f"the warm-up's time is extrapolated from its first "
                    f"{DRY_RUN_WARMUP_STEPS} of {args.warmup_steps} steps"
                ),
            )
        setup = build_setup(
            args,
            ref,
            model_fp,
            tokenizer,
            template,
            adapter_digest(peft_model),
            origin,
            targets=targets,
            bf16=bf16,
            adapter_config=adapter_config,
            layers=layers,
            precondition=precondition,
        )
        self.adapter_parameters = sum(
            p.numel() for name, p in peft_model.named_parameters() if "lora_" in name
        )
        if like is not None and setup != like.setup:
            raise StoreError(
                f"cannot reproduce the setup of {like.path} (stored vs now):\n  "
                + "\n  ".join(setup_differences(like.setup, setup))
            )
        computer = GradientComputer(
            peft_model,
            target=gradient_target(args),
            sketch_dim=args.sketch_dim,
            sketch_seed=args.sketch_seed,
            bf16=bf16,
            pad_token_id=tokenizer.pad_token_id,
            gradient_checkpointing=args.gradient_checkpointing,
            **preconditioning(args.precondition, moments),
        )

        def write_adapter(store_dir: Path) -> None:
            with warnings.catch_warnings():
                # PEFT looks for the base model's config.json to check the vocabulary (on the
                # hub, where the folder has none, as a GGUF model's has not; PEFT 0.22 says so
                # in other words), and we never resize the vocabulary.
                warnings.filterwarnings("ignore", message="Could not find a config file")
                warnings.filterwarnings("ignore", message="Unable to fetch remote file")
                atomic_write_dir(
                    store_dir / ADAPTER_DIR,
                    lambda d: save_adapter(d, peft_model, moments, args.model),
                )

        return Plan(
            setup=setup,
            dim=computer.output_dim,
            dtype=args.dtype,
            shard_rows=args.shard_rows,
            local=lambda: functools.partial(compute_shard, computer, token_budget(args)),
            # read once the store (and so its adapter) exists
            remote=lambda: GradientWorker(
                model_fp,
                args,
                read_adapter_files(out / ADAPTER_DIR),
                setup["adapter"]["sha256"],
                tokenizer.pad_token_id,
                device.type,
                bf16,
                (precondition or {}).get("sha256"),
            ),
            payload=lambda start, stop: tokenized[start:stop],
            prepare=write_adapter,
            gpus_per_worker=1 if device.type == "cuda" else 0,
            provenance={
                "model_name": args.model,
                "versions": package_versions("peft"),
                "device": describe_device(device),
            },
            lengths=lambda: [len(t.input_ids) for t in tokenized],
        )


def collect(
    data,
    out: str | os.PathLike,
    args: CollectArguments | None = None,
    *,
    like: Store | str | os.PathLike | None = None,
    model: str | None = None,
    fields: Fields | None = None,
    limit: int | None = None,
    progress: bool = True,
    engine: str = "local",
    ray_address: str | None = None,
    num_workers: int | None = None,
    device: str = DEFAULT_DEVICE,
) -> Store:
    """Collect the gradient store of ``data`` (a path or a list of :class:`Sample`) into
    ``out``. With ``like`` (a :class:`Store` or its path), every setting comes from that store
    (``args`` is ignored), so the two stores' vectors are comparable; ``model`` then says where
    that store's model is now, if it moved (its fingerprint is checked). ``engine`` (``local`` or ``ray``, with ``ray_address``
    and ``num_workers``) says where shards are computed (:mod:`influcoder.engines`); the
    vectors are the same either way. ``device`` (:mod:`influcoder.io.devices`) says where the
    decoder runs (with the Ray engine on a GPU: one GPU per actor); it is not part of the
    store's settings, so a store may be resumed on another machine.

    Example::

        >>> pool = collect("train.jsonl", "runs/pool")
        >>> queries = collect("queries.jsonl", "runs/queries", like=pool)
    """
    like_store = open_store(like) if like is not None else None
    if like_store is not None:
        args = CollectJob.settings_of(like_store, **({"model": model} if model else {}))
    return run_job(
        CollectJob(args or CollectArguments(), like_store, progress, device),
        data,
        out,
        fields=fields,
        limit=limit,
        engine=engine,
        ray_address=ray_address,
        num_workers=num_workers,
        progress=progress,
    )


def estimate_collect(
    data,
    out: str | os.PathLike,
    args: CollectArguments | None = None,
    *,
    like: Store | str | os.PathLike | None = None,
    model: str | None = None,
    fields: Fields | None = None,
    limit: int | None = None,
    rows: int = DEFAULT_ESTIMATE_ROWS,
    device: str = DEFAULT_DEVICE,
) -> Estimate:
    """What :func:`collect` with these arguments would cost (``collect --dry-run``): the model
    loaded, the warm-up timed on its first steps, ``rows`` samples timed; nothing written
    (:mod:`influcoder.io.estimate`)."""
    like_store = open_store(like) if like is not None else None
    if like_store is not None:
        args = CollectJob.settings_of(like_store, **({"model": model} if model else {}))
    job = CollectJob(
        args or CollectArguments(), like_store, progress=False, device=device, dry_run=True
    )
    return estimate_job(
        job,
        data,
        out,
        fields=fields,
        limit=limit,
        rows=rows,
        extra_storage=lambda n, dim: adapter_bytes(job),
    )


def adapter_bytes(job: CollectJob) -> int:
    """Bytes of the LoRA weights a store keeps (float32)."""
    return 4 * job.adapter_parameters


def token_budget(args: CollectArguments) -> TokenBudget:
    """A worker's batching: ``--batch-tokens`` positions, at most ``--batch-size`` samples."""
    return TokenBudget(max_batch=args.batch_size, max_tokens=args.batch_tokens)


def compute_shard(computer, budget: TokenBudget, tokenized) -> tuple[np.ndarray, np.ndarray]:
    """The vectors of one shard's samples and their norms before normalisation, in row order.

    Samples are sorted by length and cut into batches of at most the budget's padded positions
    (:class:`~influcoder.groundtruth.memory.TokenBudget`; on out-of-memory it halves and goes
    on), so a batch pads only to its own longest sample and little. A row does not depend on
    its batch-mates (the gradient tests check this), and a shard is always cut into the same
    batches under the same budget, so a resumed run computes exactly what an uninterrupted
    one does."""
    out = norms = None
    for rows, (vectors, row_norms) in budget.run(
        [len(t.input_ids) for t in tokenized],
        lambda rows: computer.vectors_and_norms([tokenized[r] for r in rows]),
    ):
        if out is None:
            out = np.empty((len(tokenized), vectors.shape[1]), dtype=vectors.dtype)
            norms = np.empty(len(tokenized), dtype=np.float32)
        out[rows] = vectors
        norms[rows] = row_norms
    return out, norms


def read_adapter_files(folder: Path) -> dict[str, bytes]:
    """Every file of a saved adapter, by relative path (so it can travel to a worker)."""
    return {
        p.relative_to(folder).as_posix(): p.read_bytes()
        for p in sorted(folder.rglob("*"))
        if p.is_file()
    }


@dataclass(frozen=True)
class GradientWorker(CheckedWorker):
    """Builds the gradient computer in a worker process (see :class:`CheckedWorker`): the
    decoder from its own files there, the adapter from the bytes of the store's saved adapter,
    refused if its digest differs from the store's."""

    what: ClassVar[str] = "decoder"
    args: CollectArguments
    adapter_files: dict
    adapter_sha256: str
    pad_token_id: int
    #: ``cpu`` or ``cuda`` (the GPU Ray gave this actor)
    device: str = "cpu"
    bf16: bool = False
    #: digest of the store's Adam second moments (saved among the adapter's files); None:
    #: plain gradients
    preconditioner_sha256: str | None = None

    def load(self):
        import tempfile

        from influcoder.groundtruth.decoder import load_decoder
        from influcoder.groundtruth.gradients import GradientComputer
        from influcoder.groundtruth.lora import load_adapter
        from influcoder.io.models import fingerprint

        model, _, ref = load_decoder(self.args.model)
        model.to(self.device)
        with tempfile.TemporaryDirectory() as folder:
            for name, data in self.adapter_files.items():
                (Path(folder) / name).parent.mkdir(parents=True, exist_ok=True)
                (Path(folder) / name).write_bytes(data)
            peft_model = load_adapter(model, folder)
            moments = None
            if self.preconditioner_sha256 is not None:
                from influcoder.groundtruth.precondition import load_moments, moments_digest

                moments = load_moments(Path(folder) / PRECONDITIONER_NAME)
                if moments_digest(moments) != self.preconditioner_sha256:
                    raise StoreError(
                        "the second moments loaded on a worker differ from the store's"
                    )
        if adapter_digest(peft_model) != self.adapter_sha256:
            raise StoreError("the adapter loaded on a worker differs from the store's")
        computer = GradientComputer(
            peft_model,
            target=gradient_target(self.args),
            sketch_dim=self.args.sketch_dim,
            sketch_seed=self.args.sketch_seed,
            bf16=self.bf16,
            **preconditioning(self.args.precondition, moments),
            pad_token_id=self.pad_token_id,
            gradient_checkpointing=self.args.gradient_checkpointing,
        )
        return fingerprint(ref), functools.partial(compute_shard, computer, token_budget(self.args))
