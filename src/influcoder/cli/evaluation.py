"""The ``evaluate`` command: judge attribution methods against the gradient ground truth."""

from __future__ import annotations

import click

from influcoder.attribution.settings import (
    DEFAULT_GROUP_AGGREGATE,
    DEFAULT_GROUP_TEMPERATURE,
    GROUP_AGGREGATES,
    GROUP_STATS,
)
from influcoder.cli.app import cli
from influcoder.cli.options import (
    BASELINES_HELP,
    STORE_METHOD_METAVAR,
    device_option,
    handle_errors,
    log,
    parse_named,
    parse_store_methods,
    split_list,
)

#: ``evaluate --group-by``: groups named (the largest) in the line under the table.
GROUPS_LISTED = 8


@cli.command()
@click.argument("pool", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--method",
    "-m",
    "store_methods",
    multiple=True,
    metavar=STORE_METHOD_METAVAR,
    help="a method scored from two stores of precomputed vectors (e.g. embedding "
    "stores of the same pool and queries), by cosine, or with ',inner' by the "
    "inner product of the gradients before normalisation; repeatable",
)
@click.option(
    "--encoder",
    "-e",
    "encoders",
    multiple=True,
    metavar="NAME=ENCODER",
    help="a sentence encoder (directory or bundled name) that embeds the samples' "
    "text now, timed; repeatable",
)
@click.option(
    "--baselines",
    default="random,tfidf,bm25",
    show_default=True,
    help=BASELINES_HELP,
)
@click.option(
    "--gradient-dims",
    default="",
    metavar="D1,D2,...",
    help="also score the ground-truth stores re-sketched to these smaller "
    "dimensions (storage vs fidelity)",
)
@click.option(
    "--label-field",
    default=None,
    help="meta field of the pool samples that marks planted samples (adds AUPRC)",
)
@click.option("--positive", default=None, help="the --label-field value of a planted sample")
@click.option(
    "-k", "k", type=int, default=10, show_default=True, help="cut-off of ndcg@k and recall@k"
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="seed of the random baseline and of the re-sketches",
)
@click.option(
    "--target",
    "targets",
    multiple=True,
    metavar="METHOD:METRIC>=VALUE",
    help="a figure to reach (or METRIC<=VALUE), reported as MET or MISSED; repeatable",
)
@click.option(
    "--out",
    "-o",
    default=None,
    help="directory for results.json, results.csv and report.html with its figures",
)
@click.option(
    "--title", default="influcoder evaluation", show_default=True, help="title of the HTML report"
)
@click.option(
    "--show-queries",
    type=int,
    default=3,
    show_default=True,
    help="queries whose top samples the report shows side by side",
)
@click.option(
    "--group-by",
    "group_by",
    metavar="FIELD",
    default=None,
    help="meta field of the pool samples that names their group (a source, a "
    "file): adds group_spearman and group_top1, how well each method ranks "
    "the groups for each query like the gradient does; every pool sample "
    "must have it",
)
@click.option(
    "--group-aggregate",
    type=click.Choice(GROUP_STATS),
    default=DEFAULT_GROUP_AGGREGATE,
    show_default=True,
    help="--group-by: a group's score for a query, from its samples' scores "
    "(softmax: AirRep's softmax-weighted score, as attribute --group-by ranks)",
)
@click.option(
    "--group-temperature",
    type=float,
    default=DEFAULT_GROUP_TEMPERATURE,
    show_default=True,
    help="--group-by: temperature T of the softmax score, sum_i softmax(|s|/T)_i s_i",
)
@device_option(extra=" (for the --encoder methods)")
@handle_errors
def evaluate(
    pool,
    queries,
    store_methods,
    encoders,
    baselines,
    gradient_dims,
    label_field,
    positive,
    k,
    seed,
    targets,
    out,
    title,
    show_queries,
    group_by,
    group_aggregate,
    group_temperature,
    device,
):
    """Judge attribution methods against the gradient ground truth of POOL x QUERIES.

    POOL and QUERIES are the gradient stores whose cosines are the ground truth. Every other
    method scores the same samples: stores of precomputed vectors (--method), encoders run
    now (--encoder), text baselines (--baselines) and smaller re-sketches of the gradients
    (--gradient-dims). Prints one row of figures per method; docs/EVALUATION.md explains them.

    \b
    Examples:
      influcoder evaluate runs/pool runs/queries
      influcoder evaluate runs/pool runs/queries -e semantic=all-minilm-l6-v2 \
          -e distilled=runs/encoder --gradient-dims 1024,256 --out runs/eval
      influcoder evaluate runs/pool runs/queries -m distilled=runs/pool_emb,runs/query_emb \
          --label-field label --positive harmful --target distilled:auprc_mean>=0.5
      influcoder evaluate runs/pool runs/queries -e distilled=runs/encoder \
          --group-by source --target distilled:group_top1>=0.8 --out runs/eval
    """
    from influcoder.evaluation.evaluate import TargetError, labels_from_samples
    from influcoder.io.stores import open_store
    from influcoder.io.tables import format_table
    from influcoder.workflows.evaluation import evaluate as run_evaluation
    from influcoder.workflows.evaluation import write_evaluation

    if (label_field is None) != (positive is None):
        raise click.UsageError("--label-field and --positive go together")
    try:
        dims = [int(d) for d in split_list(gradient_dims)]
    except ValueError:
        raise click.BadParameter(
            f"expected integers, got {gradient_dims!r}", param_hint="--gradient-dims"
        ) from None
    pairs = {
        name: (open_store(a), open_store(b), similarity)
        for name, (a, b, similarity) in parse_store_methods(store_methods).items()
    }
    gt_pool, gt_queries = open_store(pool), open_store(queries)
    if not 1 <= k <= gt_pool.n:
        raise click.BadParameter(
            f"must lie between 1 and the pool size {gt_pool.n}", param_hint="-k"
        )
    labels = (
        labels_from_samples(gt_pool.samples, label_field, positive)
        if label_field is not None
        else None
    )
    try:
        evaluation = run_evaluation(
            gt_pool,
            gt_queries,
            stores=pairs,
            encoders=parse_named(encoders, "--encoder"),
            baselines=split_list(baselines),
            gradient_dims=dims,
            labels=labels,
            k=k,
            seed=seed,
            targets=targets,
            device=device,
            group_by=group_by,
            group_aggregate=group_aggregate,
            group_temperature=group_temperature,
        )
    except TargetError as e:
        raise click.BadParameter(str(e), param_hint="--target") from None
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(format_table(evaluation.rows))
    if labels is not None:
        click.echo(
            f"planted: {int(labels.sum())} of {labels.size} pool samples "
            f"({labels.mean():.1%}); a random ranking's expected AUPRC is "
            f"{evaluation.expected_random_auprc:.3f}"
        )
    if evaluation.groups is not None:
        g = evaluation.groups
        by_size = sorted(zip(g.groups.sizes, g.groups.names), key=lambda x: -x[0])
        sizes = ", ".join(f"{name} {n}" for n, name in by_size[:GROUPS_LISTED]) + (
            f", ... {len(by_size) - GROUPS_LISTED} more" if len(by_size) > GROUPS_LISTED else ""
        )
        how = g.aggregate + (f" (T = {g.temperature:g})" if g.aggregate == "softmax" else "")
        click.echo(
            f"groups of '{g.groups.field}': {len(g.groups.names)} ({sizes}); a group's "
            f"score: the {how} of its samples' scores"
        )
        undefined = {name: f["undefined"] for name, f in g.figures.items() if f["undefined"]}
        if undefined:
            click.echo(
                "queries whose group scores are all equal (no ranking; their Spearman "
                "counts as 0): " + ", ".join(f"{n} {u}" for n, u in undefined.items())
            )
    if evaluation.groups is not None:
        _echo_by_aggregate(evaluation.groups)
    for _name, achieved, text in evaluation.targets:
        click.echo(f"{'MET   ' if achieved else 'MISSED'}  {text}")
    if out is None:
        return
    report = write_evaluation(
        evaluation,
        results_dir=out,
        title=title,
        queries_shown=show_queries,
        context={
            "pool": str(gt_pool.path),
            "queries": str(gt_queries.path),
            "k": k,
            "n_pool": gt_pool.n,
            "n_query": gt_queries.n,
            "positives": None if labels is None else int(labels.sum()),
            "random_expected_auprc": evaluation.expected_random_auprc,
            "methods": {name: info for name, (_, info) in evaluation.methods.items()},
        },
    )
    log(f"wrote {out}: results.json, results.csv, {report.name}")


def _echo_by_aggregate(g) -> None:
    """Each method's group_spearman under every aggregate, against one gradient ranking."""
    names = [a for a in GROUP_AGGREGATES if any(a in row for row in g.by_aggregate.values())]
    click.echo(
        f"group_spearman by aggregate, all against the gradient's groups by {g.aggregate} "
        "(learned: encoders that carry a learned pooler)"
    )
    click.echo(f"  {'method':<20}" + "".join(f"{a:>9}" for a in names))
    for method, row in g.by_aggregate.items():
        cells = "".join(f"{row[a]:>+9.3f}" if a in row else f"{'-':>9}" for a in names)
        click.echo(f"  {method:<20}{cells}")
