"""The ``select`` command: the pool samples most helpful to a set of targets."""

from __future__ import annotations

import click

from influcoder.attribution.settings import DEFAULT_SELECT_AGGREGATE
from influcoder.cli.app import cli
from influcoder.cli.attribution import open_attributor, query_options
from influcoder.cli.options import field_options, fields_from, handle_errors
from influcoder.io.tables import clip_text
from influcoder.metrics import AGGREGATES


@cli.command()
@click.argument("index_dir", metavar="INDEX", type=click.Path(exists=True, file_okay=False))
@click.argument("targets", required=False)
@click.option(
    "--out",
    "-o",
    required=True,
    help="the subset (format by extension; use the pool's to keep it); "
    "OUT_STEM.selected.jsonl lists what was chosen and why",
)
@click.option(
    "--fraction",
    type=float,
    default=None,
    help="choose this share of the pool, in (0, 1] (0.05: 5%, rounded up)",
)
@click.option("--count", "-n", type=int, default=None, help="choose this many pool samples")
@click.option(
    "--aggregate",
    type=click.Choice(AGGREGATES),
    default=None,
    help=f"one score per pool sample over the targets: max (strongly like any one "
    f"target; LESS with each target a subtask), mean (like the targets as a "
    f"whole), sum "
    f"[default: {DEFAULT_SELECT_AGGREGATE}]",
)
@click.option(
    "--spread",
    is_flag=True,
    help="spread the budget over the targets: round robin, each target takes its "
    "best sample not chosen yet, so none is left uncovered",
)
@query_options
@click.option(
    "--width", type=int, default=80, show_default=True, help="characters of text shown per sample"
)
@field_options
@handle_errors
def select(
    index_dir,
    targets,
    out,
    fraction,
    count,
    aggregate,
    spread,
    texts,
    prompt,
    encoder,
    backend,
    device,
    nprobe,
    ef_search,
    query_gradients,
    width,
    **kw,
):
    """Choose the pool samples of INDEX most helpful to TARGETS (examples of the task or
    behaviour to train for) and write them in the pool's own format: the LESS use case.

    TARGETS: a data file of samples, a .txt file (one response per line), or - for stdin;
    or give --text. Give one of --fraction and --count. Each pool sample is scored by its
    cosine to each target (exact on a flat index; as approximate as the search on hnsw/ivf).
    Chosen rows are written in pool order, as they are in the files the index was built
    from. OUT may not be an input.

    \b
    Examples:
      influcoder select runs/index task.jsonl --fraction 0.05 --out subset.jsonl
      influcoder select runs/index task.jsonl --count 1000 --aggregate mean -o subset.parquet
      influcoder select runs/index task.jsonl --fraction 0.1 --spread --out subset.csv
    """
    from influcoder.attribution.attributor import read_queries
    from influcoder.attribution.select import select_pool
    from influcoder.errors import InputError

    if (fraction is None) == (count is None):
        raise click.UsageError("give exactly one of --fraction and --count")
    if fraction is not None and not 0 < fraction <= 1:
        raise click.UsageError(f"--fraction must be in (0, 1], got {fraction}")
    if count is not None and count < 1:
        raise click.UsageError(f"--count must be >= 1, got {count}")
    if spread and aggregate is not None:
        raise click.UsageError(
            "--spread ranks by each target's own cosine; --aggregate does not apply to it"
        )
    if targets is None and not texts:
        raise click.UsageError("give TARGETS (a data file, a .txt file, or - for stdin) or --text")
    limit = kw.pop("limit")
    try:
        samples = read_queries(targets, texts, prompt=prompt, fields=fields_from(kw), limit=limit)
    except InputError as e:
        if e.reason != "no queries":
            raise
        raise InputError("no targets (an empty file?)", path=targets) from None
    attributor = open_attributor(
        index_dir, encoder, backend, nprobe, ef_search, device, query_gradients
    )
    try:
        result = select_pool(
            attributor,
            samples,
            out,
            fraction=fraction,
            count=count,
            how=aggregate or DEFAULT_SELECT_AGGREGATE,
            spread=spread,
            inputs=[targets],
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    click.echo(f"selected {result.n_selected} of {result.n_pool} pool samples ({result.rule})")
    click.echo(
        f"wrote {result.out} (the subset) and {result.report_path} (each with its score and target)"
    )
    uncovered = result.uncovered
    if uncovered:
        shown = ", ".join(f"'{t.id}'" for t in uncovered[:5]) + (
            ", ..." if len(uncovered) > 5 else ""
        )
        hint = "" if spread else "; --spread gives every target a share"
        click.echo(
            f"{len(uncovered)} of {len(result.targets)} targets have no sample of their "
            f"own (none closest to them){hint}: {shown}"
        )
    else:
        click.echo(f"every one of the {len(result.targets)} targets has at least one sample")
    click.echo(f"{'rank':>5}  {'score':>7}  id  target")
    for r in result.selected[:10]:
        click.echo(
            f"{r['rank']:>5}  {r['score']:+.4f}  {r['id']}  {clip_text(r['target']['id'], width)}"
        )
    if result.n_selected > 10:
        click.echo(f"  ... {result.n_selected - 10} more in {result.report_path}")
