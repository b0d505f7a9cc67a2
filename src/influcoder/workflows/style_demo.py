"""``influcoder demo --task style``: the planted-style test's data and gradient stores.

Writes the sets of :func:`~influcoder.workflows.planted.build_style_data` under ``OUT/data``,
collects the gradient stores ``influcoder validate`` takes (the pool, the targets and the
held-out queries ``--like`` the pool; the control is read from its JSONL), and reports how many
planted samples each method puts in the share a validation removes: the gradient, BM25 (whole
text and prompts alone), random and the given encoders. Resumable as ``collect`` is; the
figures go to ``OUT/results/recall.json``. :func:`validate_command` prints the next step.
"""

from __future__ import annotations

import logging
import os
import shlex
from dataclasses import asdict, dataclass
from pathlib import Path

from influcoder.workflows.planted import (
    PLANTED,
    StyleTask,
    build_style_data,
    planted_recall,
    text_recall,
    write_style_data,
)

logger = logging.getLogger(__name__)

#: Sizes of the test by the demo's ``--size``: pool, planted, targets, held-out, control.
STYLE_SIZES = {
    "small": (240, 24, 16, 10, 8),
    "medium": (500, 50, 30, 20, 20),
    "large": (640, 64, 40, 30, 30),
}


def style_task(size: str = "small", style: str = "kaomoji", seed: int = 0) -> StyleTask:
    """The :class:`StyleTask` of a demo size."""
    if size not in STYLE_SIZES:
        raise ValueError(f"size must be one of {sorted(STYLE_SIZES)}, got {size!r}")
    n_pool, n_planted, n_targets, n_heldout, n_control = STYLE_SIZES[size]
    return StyleTask(
        style=style,
        n_pool=n_pool,
        n_planted=n_planted,
        n_targets=n_targets,
        n_heldout=n_heldout,
        n_control=n_control,
        seed=seed,
    )


@dataclass
class StyleResult:
    """The recall of the planted samples by method, and where everything was written."""

    task: StyleTask
    recall: dict
    out: Path

    def rows(self) -> list[dict]:
        return [
            {"method": name, **{k: v for k, v in r.items() if k != "of"}}
            for name, r in self.recall.items()
        ]


def validate_command(out: str | os.PathLike, encoders: dict[str, str] | None = None) -> str:
    """The ``influcoder validate`` command of a style run written to ``out``."""
    out = Path(out)
    words = [
        "influcoder",
        "validate",
        str(out / "grad_pool"),
        str(out / "grad_targets"),
        str(out / "grad_heldout"),
        "--control",
        str(out / "data" / "control.jsonl"),
        "--label-field",
        "label",
        "--positive",
        PLANTED,
    ]
    for name, encoder in (encoders or {}).items():
        words += ["-e", f"{name}={encoder}"]
    words += ["--out", str(out / "validate")]
    return "OMP_NUM_THREADS=1 " + " ".join(shlex.quote(w) for w in words)


def run_style_demo(
    out: str | os.PathLike = "runs/style",
    task: StyleTask | None = None,
    *,
    model: str = "smollm2-135m",
    encoders: dict[str, str] | None = None,
    gradients: bool = True,
    progress: bool = True,
    device: str = "auto",
) -> StyleResult:
    """Build, write and collect the planted-style test into ``out`` (rerunning resumes it);
    with ``gradients=False`` only the data and the text methods' recall."""
    from influcoder.io.atomic import atomic_write_json

    task = task or StyleTask()
    out = Path(out)
    data = build_style_data(task)
    paths = write_style_data(out / "data", data)
    logger.info(
        f"data: pool {len(data.pool)} ({task.n_planted} in the '{task.style}' style, "
        f"on {', '.join(task.planted_topics)}), targets {len(data.targets)}, held-out "
        f"{len(data.heldout)}, control {len(data.control)} (on "
        f"{', '.join(task.query_topics)}) in {out / 'data'}"
    )
    recall = {}
    if gradients:
        from influcoder.evaluation.baselines import store_scores
        from influcoder.groundtruth.collect import collect
        from influcoder.groundtruth.settings import CollectArguments

        args = CollectArguments(model=model, seed=task.seed)
        gt_pool = collect(paths["pool"], out / "grad_pool", args, progress=progress, device=device)
        gt_targets = collect(
            paths["targets"],
            out / "grad_targets",
            like=out / "grad_pool",
            progress=progress,
            device=device,
        )
        collect(
            paths["heldout"],
            out / "grad_heldout",
            like=out / "grad_pool",
            progress=progress,
            device=device,
        )
        recall["gradient"] = planted_recall(store_scores(gt_pool, gt_targets)[0], data.labels)
    recall.update(text_recall(data, encoders=encoders, seed=task.seed, device=device))
    recall = {
        name: {
            k: float(v) if k in ("expected_random", "per_query", "mean_rank") else int(v)
            for k, v in r.items()
        }
        for name, r in recall.items()
    }
    (out / "results").mkdir(parents=True, exist_ok=True)
    atomic_write_json(out / "results" / "recall.json", {"task": asdict(task), "recall": recall})
    return StyleResult(task, recall, out)
