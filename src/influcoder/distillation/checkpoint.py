"""Epoch checkpoints of a distillation run, so that a killed run resumes where it stopped.

After every epoch but the last, the loop's whole state is written atomically to a directory
beside the output (``<out_dir>.checkpoint``): the encoder's current and best weights, AdamW's
moments, the state of the block sampler's and torch's generators, and the history so far. A
rerun with the same encoder, data and settings loads it and goes on from the next epoch; as
everything random is restored, it ends with exactly the weights an uninterrupted run would
have. The checkpoint is removed once the output is written.

Everything is safetensors or JSON, never pickle. A checkpoint of another run (other settings,
data or starting encoder) is refused, naming what differs, rather than silently restarted.

Trade-off: a checkpoint holds four copies of the encoder's size (current and best weights, two
AdamW moments), about 360 MB for MiniLM, written once per epoch; an epoch of real distillation
takes minutes to hours, so the write is a small cost beside losing the epoch.
"""

from __future__ import annotations

import hashlib
import json
import shutil
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

from influcoder.errors import InflucoderError
from influcoder.io.atomic import atomic_write_dir
from influcoder.io.stores import setup_differences

FORMAT = "influcoder-distill-checkpoint"
FORMAT_VERSION = 1
STATE_NAME = "state.json"


def checkpoint_dir(out_dir: str | Path) -> Path:
    """Where the checkpoints of a run writing ``out_dir`` live."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".checkpoint")


def run_fingerprint(
    encoder,
    pool_texts: Sequence[str],
    query_texts: Sequence[str],
    gt: np.ndarray,
    args: dict[str, Any],
) -> dict[str, Any]:
    """What makes two runs the same: settings, data (texts and ground truth) and the starting
    weights."""
    data = hashlib.sha256()
    for texts in (pool_texts, query_texts):
        data.update(json.dumps(list(texts), ensure_ascii=False).encode("utf-8"))
    data.update(np.ascontiguousarray(gt, dtype=np.float32).tobytes())
    return {
        "args": args,
        "n_pool": len(pool_texts),
        "n_query": len(query_texts),
        "texts_and_ground_truth_sha256": data.hexdigest(),
        "starting_encoder_sha256": state_digest(encoder.state_dict()),
    }


def state_digest(state: dict[str, torch.Tensor]) -> str:
    h = hashlib.sha256()
    for name in sorted(state):
        tensor = state[name].detach().to("cpu").contiguous()
        h.update(f"{name}:{tensor.dtype}:{list(tensor.shape)}\n".encode())
        h.update(tensor.view(torch.uint8).numpy().tobytes() if tensor.numel() else b"")
    return h.hexdigest()


@dataclass
class LoopState:
    """The distillation loop's own variables at the end of an epoch."""

    epoch: int
    history: list[dict[str, float]]
    untrained: dict[str, float]
    best: dict[str, float]
    best_epoch: int
    best_state: dict[str, torch.Tensor]  # a state_copy


def save(
    path: Path,
    fingerprint: dict[str, Any],
    encoder,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
    loop: LoopState,
) -> None:
    """Write the checkpoint of the epoch just finished to ``path``, replacing the older one."""

    def fill(tmp: Path) -> None:
        save_file(state_copy(encoder), tmp / "model.safetensors")
        save_file(loop.best_state, tmp / "best.safetensors")  # already a state_copy
        save_file(_flat_optimizer_state(optimizer), tmp / "optimizer.safetensors")
        save_file(_torch_generators(), tmp / "generators.safetensors")
        state = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run": fingerprint,
            "epoch": loop.epoch,
            "history": loop.history,
            "untrained": loop.untrained,
            "best": loop.best,
            "best_epoch": loop.best_epoch,
            "sampler_rng": rng.bit_generator.state,
        }
        (tmp / STATE_NAME).write_text(
            json.dumps(state, indent=1, sort_keys=True) + "\n", encoding="utf-8"
        )

    atomic_write_dir(path, fill)


def load(
    path: Path,
    fingerprint: dict[str, Any],
    encoder,
    optimizer: torch.optim.Optimizer,
    rng: np.random.Generator,
) -> LoopState | None:
    """Restore the run from the checkpoint at ``path`` into ``encoder``, ``optimizer``, ``rng``
    and torch's generators, and return the loop's state; ``None`` if there is no checkpoint.

    Raises:
        InflucoderError: the checkpoint is unreadable or belongs to another run.
    """
    state_file = path / STATE_NAME
    if not state_file.is_file():
        return None
    try:
        state = json.loads(state_file.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise InflucoderError(
            f"{state_file}: unreadable distillation checkpoint ({e}); delete {path} to start over"
        ) from None
    if state.get("format") != FORMAT or state.get("format_version") != FORMAT_VERSION:
        raise InflucoderError(
            f"{state_file}: not a distillation checkpoint of format "
            f"{FORMAT} v{FORMAT_VERSION}; delete {path} to start over"
        )
    diffs = setup_differences(state["run"], fingerprint)
    if diffs:
        raise InflucoderError(
            f"{path} holds the checkpoint of another distillation run "
            f"(checkpoint vs now):\n  " + "\n  ".join(diffs) + "\nRerun with "
            "the same encoder, data and settings to resume it, or delete it "
            "to start over."
        )
    device = next(encoder.parameters()).device
    encoder.load_state_dict(load_file(path / "model.safetensors", device=str(device)))
    optimizer.load_state_dict(
        {
            "state": _nested_optimizer_state(load_file(path / "optimizer.safetensors")),
            "param_groups": optimizer.state_dict()["param_groups"],
        }
    )
    _restore_torch_generators(load_file(path / "generators.safetensors"))
    rng.bit_generator.state = state["sampler_rng"]
    return LoopState(
        epoch=state["epoch"],
        history=state["history"],
        untrained=state["untrained"],
        best=state["best"],
        best_epoch=state["best_epoch"],
        best_state=load_file(path / "best.safetensors"),
    )


def remove(path: Path) -> None:
    shutil.rmtree(path, ignore_errors=True)


def state_copy(encoder) -> dict[str, torch.Tensor]:
    """A host-memory copy of ``encoder``'s weights, each tensor cloned: tensors that share
    storage (tied weights) become separate ones, as safetensors requires, and
    ``load_state_dict`` ties them again."""
    return {
        k: v.detach().to("cpu", copy=True).contiguous() for k, v in encoder.state_dict().items()
    }


def _flat_optimizer_state(optimizer: torch.optim.Optimizer) -> dict[str, torch.Tensor]:
    """``{"<param index>.<name>": tensor}`` of the optimizer's per-parameter state (AdamW:
    step, exp_avg, exp_avg_sq); parameters that never had a gradient have none."""
    flat = {}
    for index, values in optimizer.state_dict()["state"].items():
        for name, value in values.items():
            flat[f"{index}.{name}"] = torch.as_tensor(value).detach().to("cpu", copy=True)
    return flat


def _nested_optimizer_state(flat: dict[str, torch.Tensor]) -> dict[int, dict[str, Any]]:
    nested: dict[int, dict[str, Any]] = {}
    for key, value in flat.items():
        index, name = key.split(".", 1)
        nested.setdefault(int(index), {})[name] = value
    return nested


def _torch_generators() -> dict[str, torch.Tensor]:
    gens = {"cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        gens.update({f"cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    return gens


def _restore_torch_generators(gens: dict[str, torch.Tensor]) -> None:
    torch.set_rng_state(gens["cpu"])
    cuda = sorted((k for k in gens if k.startswith("cuda.")), key=lambda k: int(k[5:]))
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all([gens[k] for k in cuda])
