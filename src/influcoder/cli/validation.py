"""The ``validate`` command: does removing what a method flags change the model?"""

from __future__ import annotations

import click

from influcoder.cli.app import cli
from influcoder.cli.options import (
    dataclass_options,
    device_option,
    handle_errors,
    log,
    parse_named,
    settings_from,
    split_list,
)
from influcoder.validation.settings import DEFAULT_VALIDATE_BASELINES, ValidateArguments


@cli.command()
@click.argument("pool", type=click.Path(exists=True, file_okay=False))
@click.argument("targets", type=click.Path(exists=True, file_okay=False))
@click.argument("heldout", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", required=True,
              help="folder for the saved runs (the unit of resumption), results.json/.csv, "
                   "validation.png and report.html")
@click.option("--where", default=None, metavar="FIELD=VALUE",
              help="keep only the TARGETS and HELDOUT samples whose field has this value "
                   "(e.g. label=harmful); HELDOUT's other samples are the control set")
@click.option("--control", default=None, type=click.Path(exists=True),
              help="control samples (a store or a data file) whose loss should not move "
                   "[default: HELDOUT's samples that --where leaves out]")
@click.option("--encoder", "-e", "encoders", multiple=True, metavar="NAME=ENCODER",
              help="a sentence encoder (directory or bundled name) as a method; repeatable")
@click.option("--baselines", default=",".join(DEFAULT_VALIDATE_BASELINES), show_default=True,
              help="text baselines as methods, comma separated (random, tfidf, bm25), or "
                   "'none'")
@click.option("--label-field", default=None,
              help="meta field of the pool samples that marks planted samples (reports how "
                   "many each method removed)")
@click.option("--positive", default=None, help="the --label-field value of a planted sample")
@click.option("--model", default=None,
              help="the decoder, if not where POOL's manifest says (its fingerprint is checked)")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@click.option("--dry-run", is_flag=True,
              help="write nothing: plan the runs, time two training steps and print how many "
                   "runs and steps the validation needs and how long they would take here")
@device_option(extra=" (for the retraining and the --encoder methods)")
@dataclass_options(ValidateArguments)
@handle_errors
def validate(pool, targets, heldout, out, where, control, encoders, baselines, label_field,
             positive, model, quiet, dry_run, device, **kw):
    """Check attribution causally: remove each method's top pool samples, retrain, compare.

    POOL is the gradient store of the training data (its samples are what is trained on; its
    settings give the model, the LoRA adapter and the tokens). TARGETS is a gradient store of
    the queries whose attribution picks the samples to remove; HELDOUT one of held-out
    queries of the same kind, whose response loss is measured. For each method (the gradient
    ground truth, each --encoder, each baseline) the top --fraction of the pool for TARGETS
    is removed and the LoRA adapter retrained from the same initialisation with every seed;
    the report shows how much the held-out loss rose (and the control loss, which should
    not). With --lds-subsets M, the adapter is also trained on M random subsets of the pool
    and each method's linear datamodeling score (LDS) is computed on HELDOUT.

    Every run is saved as it ends: rerun the same command after an interruption and it goes
    on from there. Cost: one training run of the pool per seed and method (methods that
    remove the same samples share one), plus one per LDS subset; docs/VALIDATION.md gives
    times on the bundled model.

    \b
    Examples:
      influcoder validate runs/pool runs/train_queries runs/test_queries -o runs/validate \\
          --where label=harmful -e distilled=runs/encoder -e untrained=all-minilm-l6-v2
      influcoder validate runs/pool runs/tq runs/hq -o runs/v --seeds 0,1 --lds-subsets 16 \\
          --label-field label --positive harmful
      influcoder validate runs/pool runs/tq runs/hq -o runs/v --lds-subsets 16 --dry-run
    """
    from influcoder.io.tables import format_table
    from influcoder.validation.report import checks, format_checks, summary_rows
    from influcoder.workflows.validation import estimate_validation, run_validation

    if (label_field is None) != (positive is None):
        raise click.UsageError("--label-field and --positive go together")
    args = settings_from(ValidateArguments, kw)
    named = {"where": where, "control": control, "encoders": parse_named(encoders, "--encoder"),
             "baselines": split_list(baselines), "label_field": label_field,
             "positive": positive, "model": model}
    try:
        if dry_run:
            for line in estimate_validation(pool, targets, heldout, out, args, device=device,
                                            **named):
                click.echo(line)
            return
        validation, _, report = run_validation(pool, targets, heldout, out, args,
                                               device=device, progress=not quiet, **named)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(format_table(summary_rows(validation)))
    for line in format_checks(checks(validation)):
        click.echo(line)
    log(f"wrote {out}: results.json, results.csv, {report.name}")
