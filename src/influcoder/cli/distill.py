"""The ``distill`` and ``distill-runs`` commands: train an encoder whose scores rank like the
gradient influence, or order retraining runs as their measured losses do."""

from __future__ import annotations

import click

from influcoder.cli.app import cli
from influcoder.cli.options import (
    dataclass_options,
    device_option,
    handle_errors,
    log,
    settings_from,
)
from influcoder.distillation.run_settings import RunsArguments
from influcoder.distillation.settings import DistillArguments
from influcoder.encoders.settings import DEFAULT_ENCODER


@cli.command()
@click.argument("pool", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", required=True, help="directory for the trained encoder")
@click.option(
    "--encoder",
    default=DEFAULT_ENCODER,
    show_default=True,
    help="encoder to start from: 'all-minilm-l6-v2' (bundled) or a "
    "sentence-transformers/HF encoder directory",
)
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@device_option(extra=" (training is float32 on either); not a setting of the checkpoint")
@dataclass_options(DistillArguments)
@handle_errors
def distill(pool, queries, out, encoder, quiet, device, **kw):
    """Train an encoder whose cosines rank like the gradient influence of POOL on QUERIES.

    POOL and QUERIES are gradient stores from `collect` (QUERIES made --like POOL). First a
    share of both is held out of everything below (--holdout-fraction): at the end the saved
    encoder is scored on it, per-anchor and aggregated Spearman and recall@10 with 95%
    intervals, recorded in its card (`influcoder info OUT` shows them). Of the rest a share is
    held out for validation; the three validation figures (per-anchor, pairwise and aggregated
    Spearman) are printed for the untrained encoder and after every epoch, and the best epoch is
    kept. Then a head is fitted in closed form on every sample's gradient vector: with --head
    auto (the default) a linear head and an RBF kernel head are cross-validated and the better
    is kept (--head linear or kernel forces one); --epochs 0 skips training and keeps only the
    head. With --views auto (the default) the head is fitted on the text alone and on the text
    plus the response encoded on its own, and the better by cross-validation is kept; with
    --head-similarity auto (the default) so is the better of cosine and dot product for
    comparing the head's outputs. A linear head on one view is appended as a
    sentence-transformers Dense module (+ Normalize for cosine) and the output is a standard
    sentence-transformers directory. A kernel head or two views: a multi-view encoder directory
    (backbone/, head.safetensors, influcoder_views.json) that encode, index, attribute,
    evaluate and serve read. Either way with influcoder_distill.json (settings, ground-truth
    fingerprint, history, head).

    After every epoch the run is checkpointed to OUT.checkpoint: if it is killed, the same
    command resumes from the last finished epoch and ends with exactly the encoder an
    uninterrupted run gives. Other options or data are refused while a checkpoint is there.

    \b
    Examples:
      influcoder distill runs/pool runs/queries --out runs/encoder
      influcoder distill runs/pool runs/queries -o runs/enc --epochs 5 --hard-fraction 0.25
      influcoder distill runs/pool runs/queries -o runs/enc --epochs 0   # head only, seconds
      influcoder distill runs/pool runs/queries -o runs/enc --views text --head linear
                                                             # always one plain ST dir
      influcoder distill runs/pool runs/queries -o runs/enc --device cuda
    """
    from influcoder.distillation.stores import distill_stores
    from influcoder.io.stores import open_store

    args = settings_from(DistillArguments, kw)
    pool, queries = open_store(pool), open_store(queries)
    if kw.get("val_fraction") is None:  # on small data, hold out enough to validate on
        from influcoder.distillation.blocks import small_data_val_fraction

        widened = small_data_val_fraction(args.val_fraction, pool.n, queries.n)
        if widened != args.val_fraction:
            log(f"holding out {widened:.2g} of the samples for validation (--val-fraction)")
            args.val_fraction = widened
    result = distill_stores(
        pool,
        queries,
        out,
        args,
        encoder=encoder,
        progress=not quiet,
        device=device,
    )
    log("untrained: " + ", ".join(f"{k} {v:+.3f}" for k, v in result.untrained.items()))
    log(
        f"best (epoch {result.best_epoch}): "
        + ", ".join(f"{k} {v:+.3f}" for k, v in result.best.items())
    )
    if result.head is not None:
        h = result.head
        kinds = h["kinds_validation_per_anchor_spearman"]
        setting = f"alpha {h['alpha']:g}" + (
            f", gamma {h['gamma']:.3g} ({h['gamma_factor']:g} / median squared distance), "
            f"{h['anchors']} anchors"
            if h["kind"] == "kernel"
            else ""
        )
        log(
            f"{h['kind']} head: {h['components']} components, {setting}; cross-validated "
            f"per-anchor Spearman {h['encoder_validation_per_anchor_spearman']:+.3f} (encoder) "
            f"-> {kinds[h['kind']]:+.3f} (with head)"
        )
        if len(kinds) > 1:
            log(
                "head kinds: "
                + ", ".join(f"{k} {v:+.3f}" for k, v in kinds.items())
                + " cross-validated"
            )
        views = h["views_validation_per_anchor_spearman"]
        log(
            f"views kept: {'+'.join(h['views'])} ("
            + ", ".join(f"{k} {v:+.3f}" for k, v in views.items())
            + " cross-validated)"
            + (
                "; a multi-view encoder directory"
                if len(h["views"]) > 1 or h["kind"] == "kernel"
                else ""
            )
        )
        log(
            f"similarity kept: {h['similarity']} ("
            + ", ".join(
                f"{k} per-anchor {v['per_anchor']:+.3f} aggregated {v['aggregated']:+.3f}"
                for k, v in h["similarity_validation"].items()
            )
            + " cross-validated)"
        )
    if result.fidelity is not None:
        from influcoder.distillation.fidelity import advice_line, summary

        log(summary(result.fidelity))
        if advice_line(result.fidelity):
            log(advice_line(result.fidelity))
    log(f"wrote {out}")


@cli.command("distill-runs")
@click.argument("runs", type=click.Path(exists=True, file_okay=False))
@click.argument("pool", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", required=True, help="directory for the trained encoder")
@click.option(
    "--encoder",
    default=DEFAULT_ENCODER,
    show_default=True,
    help="encoder to start from: the untrained one (AirRep alone) or a gradient-distilled "
    "sentence-transformers directory (refine it on the runs)",
)
@click.option(
    "--subsets", type=int, default=None, help="use the first N saved subset runs [default: all]"
)
@click.option(
    "--lds-fraction", type=float, default=None, help="which series of subset runs, if several"
)
@click.option("--lds-seed", type=int, default=None, help="which series of subset runs, if several")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@device_option(extra=" (training is float32 on either)")
@dataclass_options(RunsArguments)
@handle_errors
def distill_runs(
    runs, pool, queries, out, encoder, subsets, lds_fraction, lds_seed, quiet, device, **kw
):
    """Train an encoder on saved retraining runs (AirRep's objective), or refine a distilled one.

    RUNS is the run store of a validation (OUT/runs of `influcoder validate --lds-subsets
    M`); POOL and QUERIES are the stores it was run with (QUERIES: its HELDOUT store). For a
    query x and two subset runs S1, S2, the pooled score <E(x), pool(E(S))> is trained to
    order the runs as their measured losses on x do (a weighted pairwise logistic loss;
    --pooling sum or attention). A seeded share of the runs and of the queries is held out
    (--heldout-runs, --heldout-queries): LDS on held-out runs x held-out queries is printed
    before training and after every epoch; the last epoch's encoder is saved, a
    sentence-transformers directory that `lds -e`, `index` and `attribute` take, with
    influcoder_runs.json (settings, split, runs used, pooling, history).

    \b
    Examples:
      influcoder distill-runs runs/v/runs runs/pool runs/hq -o runs/airrep
      influcoder distill-runs runs/v/runs runs/pool runs/hq -o runs/refined \\
          --encoder runs/encoder --epochs 2 --pooling attention
      influcoder lds runs/v/runs runs/pool runs/hq -e airrep=runs/airrep -e refined=runs/refined
    """
    from influcoder.workflows.run_distill import distill_runs as train
    from influcoder.workflows.run_distill import read_runs

    args = settings_from(RunsArguments, kw)
    data = read_runs(
        runs, pool, queries, count=subsets, fraction=lds_fraction, subset_seed=lds_seed
    )
    log(
        f"{len(data.members)} subset runs, {len(data.queries)} measured queries, "
        f"pool of {len(data.pool)}"
    )
    try:
        _, result = train(data, out, args, encoder=encoder, progress=not quiet, device=device)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    sizes = {k: len(v) for k, v in result.split.to_dict().items()}
    log("split: " + ", ".join(f"{k} {v}" for k, v in sizes.items()))
    for name, figures in [("untrained", result.untrained)] + [
        (f"epoch {h['epoch']}", h) for h in result.history
    ]:
        shown = ", ".join(
            f"{k} {figures[k]:+.3f}" for k in ("train_loss", "lds", "ranking_loss") if k in figures
        )
        log(f"{name}: {shown or 'no held-out runs'}")
    log(f"wrote {out}")
