"""The setup a gradient store records: everything that must be identical for two stores'
vectors to be comparable (model, adapter, gradient target and precision, sketch, tokens).
:func:`build_setup` writes it from the settings and what loading resolved; a store is refused
by ``like`` or on resume when the setups differ (:func:`influcoder.io.stores.setup_differences`).
:func:`find_recorded_path` finds the model a store recorded from wherever it is read.
"""

from __future__ import annotations

import hashlib
from pathlib import Path

from influcoder.errors import StoreError
from influcoder.groundtruth.settings import CollectArguments
from influcoder.io.stores import Store


def gradient_target(args: CollectArguments) -> str:
    """Which LoRA matrices carry signal: a fresh adapter has B = 0, so every A-gradient is
    exactly zero and only the B-gradients are kept."""
    return "lora-b" if args.adapter is None and args.adapter_init == "fresh" else "lora"


def build_setup(
    args: CollectArguments,
    ref,
    model_fingerprint: str,
    tokenizer,
    template: str,
    adapter_sha: str,
    adapter_origin: str,
    *,
    targets=None,
    bf16=None,
    adapter_config: dict | None = None,
    layers=None,
    precondition: dict | None = None,
) -> dict:
    """Everything that must be identical for two gradient stores to be comparable.
    ``targets``: the LoRA targets resolved (``--lora-targets auto``); ``bf16``: the precision
    resolved (``--precision auto``); each defaults to what ``args`` says. ``layers``: the
    blocks with LoRA (``--lora-layers`` resolved; None: all). ``adapter_config`` (``rank``,
    ``alpha``, ``targets``, maybe ``layers``): a loaded adapter's own, instead of
    ``args``'. ``precondition``: how the gradients are preconditioned (kind, where the second
    moments come from, their digest, eps), None for plain gradients."""
    chat = getattr(tokenizer, "chat_template", None) or ""
    bf16 = args.bf16 or args.precision == "bf16" if bf16 is None else bf16
    described = adapter_config or {
        "rank": args.lora_rank,
        "alpha": args.lora_alpha,
        "targets": list(targets or args.lora_targets),
        "layers": layers,
    }
    adapter = {
        "sha256": adapter_sha,
        "origin": adapter_origin,
        "rank": described["rank"],
        "alpha": described["alpha"],
        "targets": list(described["targets"]),
    }
    gradient = {
        "target": gradient_target(args),
        "loss": "mean response-token CE",
        "precision": "bf16-autocast" if bf16 else "float32",
        "normalized": True,
    }
    if precondition is not None:
        # only when preconditioned: plain stores keep the setup they always had
        gradient["precondition"] = precondition
    if described.get("layers") is not None:
        # only when not every block: stores of every block keep the setup they always had
        adapter["layers"] = list(described["layers"])
    return {
        "model": {"fingerprint": model_fingerprint},
        "adapter": adapter,
        "gradient": gradient,
        "sketch": {
            "kind": "countsketch" if args.sketch_dim else "none",
            "dim": args.sketch_dim,
            "seed": args.sketch_seed,
        },
        "tokens": {
            "template": template,
            "max_length": args.max_length,
            "truncation": args.truncation,
            "chat_template_sha256": hashlib.sha256(chat.encode()).hexdigest()
            if template == "chat"
            else None,
            "vocab_size": len(tokenizer),
        },
    }


def find_recorded_path(store: Store, key: str, name: str) -> str:
    """A model or adapter path as a store recorded it, found from here (see
    :meth:`~influcoder.groundtruth.collect.CollectJob.settings_of`); bundled aliases and hub ids pass as they are."""
    from influcoder.groundtruth.decoder import BUNDLED_DECODERS

    path = Path(name).expanduser()
    if name in BUNDLED_DECODERS or path.is_absolute() and path.exists():
        return name
    for candidate in (path, Path(store.path).resolve().parent / path):
        if candidate.exists():
            return str(candidate.resolve())
    # the store's own saved adapter is the one it uses; its recorded source may be gone
    if key == "adapter" or store.setup["model"]["fingerprint"].startswith("hub:"):
        return name
    raise StoreError(
        f"{store.path}: its model {name!r} (a local path, as its manifest records it) is "
        f"not found from here"
        + ("" if path.is_absolute() else " nor from the store's parent folder")
        + "; give the model's folder with --model"
    )
