"""The ``validate`` and ``lds`` commands: does removing what a method flags change the model?"""

from __future__ import annotations

import click

from influcoder.cli import groups as lds_tables
from influcoder.cli.app import cli
from influcoder.cli.options import (
    BASELINES_HELP,
    STORE_METHOD_METAVAR,
    dataclass_options,
    device_option,
    encoder_methods_option,
    engine_options,
    handle_errors,
    log,
    parse_named,
    parse_store_methods,
    settings_from,
    split_list,
)
from influcoder.validation.settings import DEFAULT_VALIDATE_BASELINES, ValidateArguments


@cli.command()
@click.argument("pool", type=click.Path(exists=True, file_okay=False))
@click.argument("targets", type=click.Path(exists=True, file_okay=False))
@click.argument("heldout", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    "-o",
    required=True,
    help="folder for the run store runs/ (unless --runs), results.json/.csv, "
    "validation.png and report.html",
)
@click.option(
    "--runs",
    "runs_dir",
    default=None,
    type=click.Path(file_okay=False),
    help="the run store the training runs are saved in and read from, to share "
    "one between validations of one recipe [default: OUT/runs]",
)
@click.option(
    "--where",
    default=None,
    metavar="FIELD=VALUE",
    help="keep only the TARGETS and HELDOUT samples whose field has this value "
    "(e.g. label=harmful); HELDOUT's other samples are the control set",
)
@click.option(
    "--control",
    default=None,
    type=click.Path(exists=True),
    help="control samples (a store or a data file) whose loss should not move "
    "[default: HELDOUT's samples that --where leaves out]",
)
@encoder_methods_option
@click.option(
    "--baselines",
    default=",".join(DEFAULT_VALIDATE_BASELINES),
    show_default=True,
    help=BASELINES_HELP,
)
@click.option(
    "--label-field",
    default=None,
    help="meta field of the pool samples that marks planted samples (reports how "
    "many each method removed)",
)
@click.option("--positive", default=None, help="the --label-field value of a planted sample")
@click.option(
    "--model",
    default=None,
    help="the decoder, if not where POOL's manifest says (its fingerprint is checked)",
)
@click.option(
    "--lds-by",
    "by",
    default=None,
    metavar="FIELD",
    help="also report LDS per value of this field over every HELDOUT query the "
    "runs measured (e.g. label: chat / reasoning / harmful) [default: the "
    "field of --where]",
)
@click.option(
    "--workers",
    type=int,
    default=1,
    show_default=True,
    help="training runs at once: processes of one thread each here (--engine "
    "local), or Ray actors (--engine ray; default there: one per free CPU)",
)
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@click.option(
    "--dry-run",
    is_flag=True,
    help="write nothing: plan the runs, time two training steps and print how many "
    "runs and steps the validation needs and how long they would take here "
    "on --workers workers",
)
@device_option(extra=" (for the retraining and the --encoder methods)")
@engine_options
@dataclass_options(ValidateArguments)
@handle_errors
def validate(
    pool,
    targets,
    heldout,
    out,
    runs_dir,
    where,
    control,
    encoders,
    baselines,
    label_field,
    positive,
    model,
    by,
    workers,
    quiet,
    dry_run,
    device,
    engine,
    ray_address,
    num_workers,
    **kw,
):
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

    The runs are a run store of their own, OUT/runs (`influcoder info OUT/runs`): every run
    is saved as it ends, so rerun the same command after an interruption and it goes on from
    there; `influcoder lds OUT/runs POOL HELDOUT ...` scores any method against them later
    without retraining. The untrained start is measured too, and the command warns
    when the full-pool model did not learn the held-out queries or when a random removal
    moves them as much as the best method's. --workers N trains N runs at once.

    Cost: one training run of the pool per seed and method (methods that remove the same
    samples share one), plus one per LDS subset; docs/VALIDATION.md gives times on the
    bundled model.

    \b
    Examples:
      influcoder validate runs/pool runs/train_queries runs/test_queries -o runs/validate \\
          --where label=harmful -e distilled=runs/encoder -e untrained=all-minilm-l6-v2
      influcoder validate runs/pool runs/tq runs/hq -o runs/v --seeds 0,1 --lds-subsets 16 \\
          --label-field label --positive harmful
      influcoder validate runs/pool runs/tq runs/hq -o runs/v --lds-subsets 16 --dry-run
      influcoder validate runs/pool runs/tq runs/hq -o runs/v --where label=harmful \\
          --lds-subsets 64 --workers 2 --epochs 2 --lr 1e-3 --start warm
    """
    from influcoder.io.tables import format_table
    from influcoder.validation.report import checks, format_checks, summary_rows
    from influcoder.workflows.validation import estimate_validation, run_validation

    if (label_field is None) != (positive is None):
        raise click.UsageError("--label-field and --positive go together")
    if num_workers is not None:
        raise click.UsageError("use --workers for the number of training runs at once")
    if workers < 1:
        raise click.BadParameter("must be >= 1", param_hint="--workers")
    args = settings_from(ValidateArguments, kw)
    named = {
        "where": where,
        "control": control,
        "encoders": parse_named(encoders, "--encoder"),
        "baselines": split_list(baselines),
        "label_field": label_field,
        "positive": positive,
        "model": model,
    }
    try:
        if dry_run:
            for line in estimate_validation(
                pool,
                targets,
                heldout,
                out,
                args,
                device=device,
                workers=workers,
                runs_dir=runs_dir,
                **named,
            ):
                click.echo(line)
            return
        validation, _, report = run_validation(
            pool,
            targets,
            heldout,
            out,
            args,
            device=device,
            progress=not quiet,
            workers=workers,
            engine=engine,
            address=ray_address,
            by=by,
            runs_dir=runs_dir,
            **named,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(format_table(summary_rows(validation)))
    for line in format_checks(checks(validation)):
        click.echo(line)
    for line in validation.warnings:
        click.echo(f"WARNING  {line}", err=True)
    log(f"wrote {out}: results.json, results.csv, {report.name}")


@cli.command()
@click.argument("runs", type=click.Path(exists=True, file_okay=False))
@click.argument("pool", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", type=click.Path(exists=True, file_okay=False))
@encoder_methods_option
@click.option(
    "--method",
    "-m",
    "store_methods",
    multiple=True,
    metavar=STORE_METHOD_METAVAR,
    help="a method scored from two stores of precomputed vectors of POOL's and "
    "QUERIES' samples (embeddings, or gradients of another recipe), by cosine, "
    "or with ',inner' by the inner product of the gradients before "
    "normalisation; repeatable",
)
@click.option(
    "--baselines",
    default=",".join(DEFAULT_VALIDATE_BASELINES),
    show_default=True,
    help=BASELINES_HELP,
)
@click.option(
    "--by",
    default=None,
    metavar="FIELD[,FIELD...]",
    help="also report LDS per value of this query field (e.g. label), or of each of "
    "several (in --json, lds_by is then keyed by field first)",
)
@click.option(
    "--query-gradients",
    is_flag=True,
    help="also score each --encoder with the queries' own gradients (QUERIES' vectors) "
    "in its gradient basis against its pool embeddings, as attribute --query-gradients "
    "does: a method NAME+query-grad (the encoder needs a head)",
)
@lds_tables.group_removal_options
@click.option(
    "--subsets",
    type=int,
    default=None,
    help="use the first N saved subset runs [default: all saved]",
)
@click.option(
    "--lds-fraction",
    type=float,
    default=None,
    help="which series of subset runs, when the store holds several",
)
@click.option(
    "--lds-seed",
    type=int,
    default=None,
    help="which series of subset runs, when the store holds several",
)
@click.option(
    "--n-boot",
    type=int,
    default=1000,
    show_default=True,
    help="bootstrap resamples (subsets and queries) for the intervals",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="seed of the random baseline and the bootstrap (validate uses its --lds-seed)",
)
@click.option(
    "--json",
    "json_out",
    default=None,
    type=click.Path(dir_okay=False),
    help="also write the rows to this JSON file",
)
@click.option(
    "--html",
    "html_out",
    default=None,
    type=click.Path(dir_okay=False),
    metavar="PAGE",
    help="also write a page (PAGE.html, its figure PAGE.png next to it): every "
    "method's LDS with its 95% interval per group of --by, a table per field and "
    "which method leads, or overlaps the runner-up",
)
@device_option(extra=" (for the --encoder methods)")
@handle_errors
def lds(
    runs,
    pool,
    queries,
    encoders,
    store_methods,
    baselines,
    by,
    query_gradients,
    group_removal,
    group_min_size,
    paired,
    temperature,
    subsets,
    lds_fraction,
    lds_seed,
    n_boot,
    seed,
    json_out,
    html_out,
    device,
):
    """Score methods by LDS against saved training runs, in seconds, without retraining.

    RUNS is the run store of a validation (OUT/runs of `influcoder validate --lds-subsets
    M`); POOL and QUERIES are the gradient stores it was run with (QUERIES: its HELDOUT
    store). Each method (the gradient of POOL and QUERIES, each --encoder, each --method pair
    of stores, each baseline) scores the pool against the queries; its LDS is the Spearman
    correlation over the saved subset runs of its predicted and the measured held-out loss,
    averaged over the held-out queries, with a bootstrap interval over subsets and queries.
    With the same settings it equals what validate reported. --by FIELD adds LDS per value of
    the field over every query the runs measured (held-out and control); --by a,b does so for
    each field. --html PAGE draws it all on a page, with a figure, to compare the methods.

    \b
    Examples:
      influcoder lds runs/v/runs runs/pool runs/hq -e distilled=runs/encoder --by label
      influcoder lds runs/v/runs runs/pool runs/hq -m kfac=runs/pool_kfac,runs/hq_kfac \\
          --baselines bm25,random --subsets 32 --json lds.json
      influcoder lds runs/v/runs runs/pool runs/hq -m inner=runs/pool,runs/hq,inner \\
          -m adam=runs/pool_adam,runs/hq_adam
      influcoder lds runs/v/runs runs/pool runs/hq -e distilled=runs/encoder \\
          --by block,part --html runs/v/lds.html
      influcoder lds runs/v/runs runs/pool runs/hq -e distilled=runs/encoder --query-gradients
      influcoder lds runs/v/runs runs/pool runs/hq -e distilled=runs/encoder \\
          --group-removal category --paired distilled,bm25
    """
    from influcoder.io.atomic import atomic_write_json
    from influcoder.io.tables import format_table
    from influcoder.validation.lds_page import check_page_path, figure_path, write_lds_page
    from influcoder.validation.saved import lds_table
    from influcoder.workflows.validation import run_lds

    pairs = parse_store_methods(store_methods)
    fields = split_list(by) if by is not None else []
    if by is not None and not fields:
        raise click.BadParameter("give at least one field", param_hint="--by")
    if len(set(fields)) < len(fields):
        raise click.BadParameter(f"a field is named twice: {by}", param_hint="--by")
    by = None if not fields else fields[0] if len(fields) == 1 else fields
    if html_out is not None:
        try:
            check_page_path(html_out, spare=[json_out] if json_out else [])
        except ValueError as e:
            raise click.BadParameter(str(e), param_hint="--html") from None
    try:
        rows = run_lds(
            runs,
            pool,
            queries,
            encoders=parse_named(encoders, "--encoder"),
            baselines=split_list(baselines),
            stores=pairs,
            by=by,
            count=subsets,
            fraction=lds_fraction,
            subset_seed=lds_seed,
            n_boot=n_boot,
            seed=seed,
            device=device,
            query_gradients=query_gradients,
            group_removal=group_removal,
            group_min_size=group_min_size,
            temperature=temperature,
            paired=lds_tables.parse_pairs(paired),
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(format_table(lds_table(rows, by)))
    if group_removal:
        lds_tables.print_group_removal(rows, group_removal)
    if paired:
        lds_tables.print_paired(rows)
    context = {"runs": str(runs), "pool": str(pool), "queries": str(queries)}
    if json_out is not None:
        atomic_write_json(json_out, {**context, "by": by, "rows": rows})
        log(f"wrote {json_out}")
    if html_out is not None:
        write_lds_page(html_out, rows, by=by, context={**context, "n_boot": n_boot})
        log(f"wrote {html_out} and {figure_path(html_out).name}")
