"""Where ``collect``'s adapter and Adam second moments come from, and how its settings on
LoRA layers read for a given model.

The adapter comes from, in order: the store being resumed, the ``--like`` store, ``--adapter``,
or a seeded fresh/warmed-up one; the second moments (``--precondition adam``) from the same
store, the warm-up's AdamW, or squared mini-batch gradients of a seeded sample of the data
(:mod:`influcoder.groundtruth.precondition`).
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

import numpy as np

from influcoder.errors import InflucoderError, StoreError
from influcoder.groundtruth.settings import (
    ALL_LORA_LAYERS,
    CollectArguments,
    resolve_lora_layers,
)
from influcoder.io.layout import ADAPTER_DIR, MANIFEST_NAME, PRECONDITIONER_NAME
from influcoder.io.stores import Store

logger = logging.getLogger(__name__)

#: warm-up steps a dry run takes (and times) before extrapolating the rest
DRY_RUN_WARMUP_STEPS = 2


def prepare_adapter(
    model,
    args: CollectArguments,
    tokenized,
    out: Path,
    like: Store | None,
    progress: bool = False,
    targets=None,
    device=None,
    dry_run: bool = False,
    layers=None,
    moments: dict | None = None,
) -> tuple[object, str, dict | None, float]:
    """Return ``(peft_model, origin, config, skipped seconds)``; the adapter comes from, in
    order: the store being resumed, the ``--like`` store, ``--adapter``, or a fresh/warmed-up
    seeded one. ``config`` describes a loaded adapter (rank, alpha, targets): a store's as it
    recorded it (the adapter is the same, its digest is checked), a user's from its PEFT config;
    None for a seeded one (the arguments describe it). ``model`` is on the CPU, so a seeded
    adapter is the same on every machine; the adapter and model are then moved to ``device``
    (where the warm-up runs). A dry run warms up for at most :data:`DRY_RUN_WARMUP_STEPS` steps
    and extrapolates the time of the others (skipped seconds). ``moments`` (Adam
    preconditioning) is filled with a store's saved second moments, or the warm-up's; it is
    left empty where neither exists."""
    from influcoder.groundtruth.lora import attach_lora, load_adapter, warmup
    from influcoder.groundtruth.precondition import load_moments

    resumed = out if (out / MANIFEST_NAME).is_file() else None
    for store_dir in (resumed, like.path if like else None):
        if store_dir is not None and (Path(store_dir) / ADAPTER_DIR).is_dir():
            recorded = Store(store_dir, allow_incomplete=True).setup["adapter"]
            config = {k: recorded[k] for k in ("rank", "alpha", "targets")}
            config["layers"] = recorded.get("layers")
            saved = Path(store_dir) / ADAPTER_DIR / PRECONDITIONER_NAME
            if moments is not None:
                if not saved.is_file():
                    raise StoreError(
                        f"{saved}: missing; the store's gradients are "
                        f"preconditioned by the second moments it should hold"
                    )
                moments.update(load_moments(saved))
            return (
                load_adapter(model, Path(store_dir) / ADAPTER_DIR).to(device),
                recorded["origin"],
                config,
                0.0,
            )
    if args.adapter:
        if not Path(args.adapter, "adapter_config.json").is_file():
            raise InflucoderError(
                f"{args.adapter}: not a PEFT adapter directory (no adapter_config.json)"
            )
        peft_model = load_adapter(model, args.adapter).to(device)
        config = _peft_config(peft_model)
        logger.info(
            f"LoRA adapter {args.adapter}: targets {', '.join(config['targets'])}, "
            f"rank {config['rank']}, alpha {config['alpha']}"
        )
        return peft_model, "user", config, 0.0
    try:
        peft_model = attach_lora(
            model,
            rank=args.lora_rank,
            alpha=args.lora_alpha,
            targets=targets or args.lora_targets,
            seed=args.seed,
            layers=layers,
        )
    except ValueError as e:
        hint = (
            " (the default targets are Llama's; --lora-targets auto finds this architecture's)"
            if "matches no module" in str(e)
            else ""
        )
        raise InflucoderError(f"--lora-targets: {e}{hint}") from None
    peft_model.to(device)
    if args.adapter_init == "fresh" or args.warmup_steps == 0:
        return peft_model, "fresh", None, 0.0
    rng = np.random.default_rng(args.seed)
    order = rng.permutation(len(tokenized))
    bs = args.warmup_batch_size
    batches = [[tokenized[i] for i in order[j : j + bs]] for j in range(0, len(order), bs)]
    steps = min(args.warmup_steps, DRY_RUN_WARMUP_STEPS) if dry_run else args.warmup_steps
    if dry_run:  # timed on its first steps only: their losses would read as the warm-up's
        logger.info(f"timing the LoRA warm-up on {steps} of its {args.warmup_steps} steps")
    else:
        logger.info(
            f"warming up the LoRA adapter: {args.warmup_steps} steps of {bs} samples, "
            f"lr {args.warmup_lr}"
        )
    start = time.perf_counter()
    losses = warmup(
        peft_model,
        batches,
        steps=steps,
        lr=args.warmup_lr,
        seed=args.seed,
        progress=progress,
        max_tokens=args.batch_tokens,
        gradient_checkpointing=args.gradient_checkpointing,
        moments=moments if args.precondition == "adam" else None,
    )
    if not dry_run:
        logger.info(f"warm-up loss {losses[0]:.3f} -> {losses[-1]:.3f}")
    skipped = (time.perf_counter() - start) / steps * (args.warmup_steps - steps)
    return peft_model, "warmup", None, skipped


def settle_precondition(
    args: CollectArguments, peft_model, tokenized, moments: dict, stored: Store | None, origin: str
) -> dict:
    """Settle the Adam second moments (``moments``, filled in place) and describe them for the
    setup: a store's or the warm-up's as they are, else estimated from squared mini-batch
    gradients of a seeded sample of ``tokenized``
    (:mod:`~influcoder.groundtruth.precondition`)."""
    from influcoder.groundtruth.lora import gradient_modules
    from influcoder.groundtruth.precondition import (
        ADAM_EPS,
        moment_batches,
        moments_digest,
        squared_gradient_moments,
    )

    if args.precondition == "kfac":
        return _settle_kfac(args, peft_model, tokenized, moments, stored)
    if stored is not None and "precondition" in stored.setup["gradient"]:
        source = stored.setup["gradient"]["precondition"]["source"]
    elif moments:
        source = "warmup"
    else:
        source = "pool-sample"
        batches = moment_batches(tokenized, args.warmup_batch_size, args.seed)
        logger.info(
            f"Adam preconditioning without a warm-up: second moments from the squared "
            f"gradients of {len(batches)} batches of {args.warmup_batch_size} samples"
        )
        named = [
            (f"{name}.weight", module.weight)
            for name, module in gradient_modules(peft_model, "lora")
        ]
        moments.update(
            squared_gradient_moments(
                peft_model,
                batches,
                named,
                max_tokens=args.batch_tokens,
                gradient_checkpointing=args.gradient_checkpointing,
            )
        )
    return {"kind": "adam", "source": source, "eps": ADAM_EPS, "sha256": moments_digest(moments)}


def _settle_kfac(args: CollectArguments, peft_model, tokenized, factors: dict, stored) -> dict:
    """K-FAC's preconditioner (``factors``, filled in place): a store's as saved, else
    fitted on the ``pool-sample`` batches of ``tokenized`` and kept as the factors' damped
    inverse roots, decomposed here once (:mod:`~influcoder.groundtruth.kfac`)."""
    from influcoder.groundtruth.kfac import KFAC_DAMPING, fit_kfac
    from influcoder.groundtruth.lora import gradient_modules
    from influcoder.groundtruth.precondition import moment_batches, moments_digest

    if not factors:
        if stored is not None:
            raise StoreError(f"{stored.path}: its gradients are not K-FAC preconditioned")
        batches = moment_batches(tokenized, args.warmup_batch_size, args.seed)
        logger.info(
            f"K-FAC factors from {sum(len(b) for b in batches)} samples "
            f"({len(batches)} batches of {args.warmup_batch_size})"
        )
        fitted = fit_kfac(peft_model, batches, gradient_modules(peft_model, "lora"))
        factors.update(fitted.roots(KFAC_DAMPING).saved())
    return {
        "kind": "kfac",
        "source": "pool-sample",
        "damping": KFAC_DAMPING,
        "sha256": moments_digest(factors),
    }


def save_adapter(folder: Path, peft_model, moments: dict | None, base: str | None = None) -> None:
    """The adapter and, for preconditioned gradients, its second moments. ``base``: the model
    as ``collect`` was given it (a bundled alias, an absolute path), recorded as the adapter's
    ``base_model_name_or_path`` so that ``--adapter`` alone finds it again (PEFT would record
    the folder transformers loaded, which for a GGUF file is no model directory)."""
    import json

    from influcoder.groundtruth.precondition import save_moments

    peft_model.save_pretrained(folder)
    if base is not None:
        config_path = folder / "adapter_config.json"
        config = json.loads(config_path.read_text(encoding="utf-8"))
        config["base_model_name_or_path"] = base
        config_path.write_text(json.dumps(config, indent=2, sort_keys=True), encoding="utf-8")
    if moments is not None:
        save_moments(folder / PRECONDITIONER_NAME, moments)


def resolve_layers(spec: str, model) -> list[int] | None:
    """``--lora-layers`` as block indices for this model; None when it names every block."""
    n_layers = getattr(model.config, "num_hidden_layers", None)
    if spec == ALL_LORA_LAYERS:
        return None
    if not isinstance(n_layers, int):
        raise InflucoderError(
            f"--lora-layers {spec!r}: the model's config says no "
            f"num_hidden_layers; use --lora-layers all"
        )
    try:
        layers = resolve_lora_layers(spec, n_layers)
    except ValueError as e:
        raise InflucoderError(f"--lora-layers: {e}") from None
    return None if layers == list(range(n_layers)) else layers


def _peft_config(peft_model) -> dict:
    """Rank, alpha and target modules of a loaded PEFT LoRA adapter, as a setup records them."""
    config = peft_model.peft_config[peft_model.active_adapter]
    targets, layers = config.target_modules, config.layers_to_transform
    return {
        "rank": config.r,
        "alpha": config.lora_alpha,
        "targets": [targets] if isinstance(targets, str) else sorted(targets),
        "layers": [layers]
        if isinstance(layers, int)
        else None
        if layers is None
        else sorted(layers),
    }
