"""A fit's settings and plan: :class:`FitArguments`, and :func:`plan_fit`, which reads and
checks both input files, draws the seeded sample of the training file and compares everything
with the ``fit.json`` of a fit already in the folder (other settings or other data are refused,
naming the option). Nothing is written here; :mod:`influcoder.workflows.fit` runs the plan.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

from influcoder.distillation.settings import DistillArguments
from influcoder.encoders.settings import DEFAULT_ENCODER
from influcoder.errors import InputError, StoreError
from influcoder.groundtruth.settings import CollectArguments
from influcoder.io.samples import Fields, Sample, load_samples
from influcoder.io.stores import samples_digest
from influcoder.workflows.sampling import SAMPLINGS, sample_indices

#: Training samples whose gradients are the ground truth, by default: the learning curve's
#: largest measured pool (docs/DISTILLATION.md, 500 queries x 1,000 pool), where the distilled
#: encoder reached 4.4x the untrained one's per-anchor Spearman and every figure was still
#: rising with more ground truth.
DEFAULT_GROUND_TRUTH = 1000
FIT_FILE = "fit.json"
FIT_FORMAT, FIT_VERSION = "influcoder-fit", 1
POOL, QUERIES, ENCODER, INDEX = "grad_pool", "grad_queries", "encoder", "index"
STAGES = (POOL, QUERIES, ENCODER, INDEX)
TITLES = {
    POOL: "collect (training sample)",
    QUERIES: "collect (queries)",
    ENCODER: "distill",
    INDEX: "index (all training data)",
}
#: fewest pool samples and queries distillation can split (2 to train on, 2 to validate)
MIN_SAMPLES = 4


@dataclass
class FitArguments:
    """Settings of a fit: the sample, the seed, the encoder, and each stage's own."""

    ground_truth: int | None = field(
        default=DEFAULT_GROUND_TRUTH,
        metadata={"help": "training samples whose gradients are taken (None: all of them)"},
    )
    seed: int = field(
        default=0,
        metadata={"help": "seed of the sample, the LoRA adapter and warm-up, and distillation"},
    )
    sampling: str = field(
        default="random",
        metadata={
            "help": "how the ground-truth sample is drawn: 'random' (seeded), or 'coverage' "
            "(k-means of the untrained encoder's embeddings of the whole file, the sample "
            "nearest each centroid; one encoder pass over the file)"
        },
    )
    encoder: str = field(default=DEFAULT_ENCODER, metadata={"help": "encoder to distil"})
    approx: str | None = field(
        default=None, metadata={"help": "FAISS kind of the index (None: flat, exact)"}
    )
    collect: CollectArguments = field(default_factory=CollectArguments)
    distill: DistillArguments = field(default_factory=DistillArguments)

    def __post_init__(self):
        if self.ground_truth is not None and self.ground_truth < MIN_SAMPLES:
            raise ValueError(
                f"ground_truth must be >= {MIN_SAMPLES} or None (all), got {self.ground_truth}"
            )
        if self.sampling not in SAMPLINGS:
            raise ValueError(f"sampling must be one of {SAMPLINGS}, got {self.sampling!r}")
        self.collect.seed = self.distill.seed = self.seed

    def to_dict(self) -> dict:
        return {
            "ground_truth": "all" if self.ground_truth is None else self.ground_truth,
            "seed": self.seed,
            "sampling": self.sampling,
            "encoder": self.encoder,
            "approx": self.approx,
            "collect": self.collect.to_dict(),
            "distill": self.distill.to_dict(),
        }


@dataclass
class FitPlan:
    """What a fit will do: its inputs (read and checked), the sample and each stage's state."""

    out: Path
    train: str
    queries: str
    args: FitArguments
    fields: Fields
    limit: int | None
    train_samples: list[Sample]
    pool_samples: list[Sample]
    query_samples: list[Sample]
    manifest: dict
    done: list[str]

    def path(self, stage: str) -> Path:
        return self.out / stage

    def lines(self) -> list[str]:
        n, k, q = len(self.train_samples), len(self.pool_samples), len(self.query_samples)
        what = {
            POOL: f"{k:,} of {n:,} training samples ({self.args.sampling}, seed {self.args.seed})",
            QUERIES: f"{q:,} queries from {self.queries}",
            ENCODER: f"{self.args.encoder}, {self.args.distill.epochs} epochs, then a head",
            INDEX: f"all {n:,} training samples, {self.args.approx or 'flat'} search",
        }
        out = [f"fit {self.train} -> {self.out}:"]
        for i, stage in enumerate(STAGES, 1):
            state = (
                "done"
                if stage in self.done
                else ("resume" if self.path(stage).exists() else "to do")
            )
            out.append(f"  {i}. {TITLES[stage]:<26} {state:<7} {self.out / stage}: {what[stage]}")
        return out


def _check_settings(path: Path, stored: dict, now: dict, defaults: dict, prefix: str = "") -> None:
    """Refuse a setting that differs from the stored one; a setting the stored fit predates
    (missing there) passes when it has its default."""
    for key in sorted(set(stored) | set(now)):
        a, b = stored.get(key), now.get(key)
        if isinstance(a, dict) and isinstance(b, dict):
            _check_settings(path, a, b, defaults.get(key) or {}, f"{prefix}{key}.")
        elif key not in stored and key in defaults and b == defaults[key]:
            continue
        elif a != b:
            raise StoreError(
                f"{path} was fitted with --{key.replace('_', '-')} {a!r}, not "
                f"{b!r} ({prefix}{key}). Rerun with the same options to resume "
                f"it, or choose another --out"
            )


def _check_inputs(path: Path, stored: dict, now: dict) -> None:
    for name, option in (("train", "TRAIN"), ("queries", "--queries")):
        if stored[name]["samples_sha256"] != now[name]["samples_sha256"]:
            raise StoreError(
                f"{path} was fitted on other {option} data ({stored[name]['path']}, "
                f"{stored[name]['n']} samples; now {now[name]['path']}, "
                f"{now[name]['n']} samples). Rerun on the same data to resume "
                f"it, or choose another --out"
            )


def plan_fit(
    train: str | os.PathLike,
    queries: str | os.PathLike,
    out: str | os.PathLike,
    args: FitArguments | None = None,
    *,
    fields: Fields | None = None,
    limit: int | None = None,
    device: str = "cpu",
) -> FitPlan:
    """Read and check both files, draw the sample (``args.sampling``; a fit already in ``out``
    keeps the one it recorded) and compare with that fit; nothing is written. ``device``:
    where the untrained encoder embeds the file for a coverage sample."""
    args, out, fields = args or FitArguments(), Path(out), fields or Fields()
    train_samples = load_samples(train, fields=fields, limit=limit)
    query_samples = load_samples(queries, fields=fields)
    n = len(train_samples)
    k = n if args.ground_truth is None else min(args.ground_truth, n)
    stored = _read_manifest(out / FIT_FILE)
    recorded = (stored or {}).get("pool_ids")
    if recorded is not None:  # resuming: the sample drawn the first time, never drawn again
        position = {s.id: i for i, s in enumerate(train_samples)}
        picked = [position[i] for i in recorded if i in position]  # other data: refused below
    else:
        picked = sample_indices(
            train_samples, k, args.sampling, args.seed, encoder=args.encoder, device=device
        )
    pool_samples = [train_samples[i] for i in picked]
    for what, samples, path in (
        ("training samples", pool_samples, train),
        ("queries", query_samples, queries),
    ):
        if len(samples) < MIN_SAMPLES:
            raise InputError(
                f"{len(samples)} {what}; fit distils on at least {MIN_SAMPLES} "
                f"(2 to train on, 2 to validate)",
                path=str(path),
            )
    _fit_validation(args, len(pool_samples), len(query_samples))
    settings = args.to_dict()
    inputs = {
        name: {"path": str(p), "n": len(s), "samples_sha256": samples_digest(s)}
        for name, p, s in (("train", train, train_samples), ("queries", queries, query_samples))
    }
    manifest = {
        "format": FIT_FORMAT,
        "version": FIT_VERSION,
        "settings": settings,
        "inputs": inputs,
        "fields": asdict(fields),
        "limit": limit,
        "stages": {},
        "pool_ids": [s.id for s in pool_samples],
    }
    if stored is not None:
        _check_settings(out, stored["settings"], settings, FitArguments().to_dict())
        _check_inputs(out, stored["inputs"], inputs)
        if stored.get("fields") != manifest["fields"] or stored.get("limit") != limit:
            raise StoreError(
                f"{out} was fitted with other field names or --limit "
                f"({stored.get('fields')}, limit {stored.get('limit')}); rerun "
                f"with the same options, or choose another --out"
            )
        manifest = {**stored, "inputs": inputs, "pool_ids": manifest["pool_ids"]}
    elif out.exists() and (not out.is_dir() or any(out.iterdir())):
        raise StoreError(
            f"{out} exists and is not a fit directory (no {FIT_FILE}); choose another --out"
        )
    done = [s for s in STAGES if manifest["stages"].get(s, {}).get("done") and (out / s).exists()]
    return FitPlan(
        out,
        str(train),
        str(queries),
        args,
        fields,
        limit,
        train_samples,
        pool_samples,
        query_samples,
        manifest,
        done,
    )


def _read_manifest(path: Path) -> dict | None:
    import json

    if not path.is_file():
        return None
    try:
        stored = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, UnicodeDecodeError, json.JSONDecodeError) as e:
        raise StoreError(f"{path}: cannot read: {e}") from None
    if not isinstance(stored, dict) or stored.get("format") != FIT_FORMAT:
        raise StoreError(f"{path}: not an influcoder fit manifest")
    return stored


def _fit_validation(args: FitArguments, n_pool: int, n_queries: int) -> None:
    """Hold out enough of the smaller side for distillation's validation split (its default
    share, or 2 samples where that share rounds to fewer)."""
    from influcoder.distillation.blocks import small_data_val_fraction

    default = DistillArguments().val_fraction
    if args.distill.val_fraction == default:
        args.distill.val_fraction = small_data_val_fraction(default, n_pool, n_queries)
