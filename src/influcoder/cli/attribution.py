"""Commands that query an index: attribute (per sample or per group) and filter."""

from __future__ import annotations

import click

from influcoder.attribution.settings import (
    DEFAULT_GROUP_AGGREGATE,
    DEFAULT_GROUP_TEMPERATURE,
    GROUP_AGGREGATES,
)
from influcoder.cli.app import cli
from influcoder.cli.groups import attribute_groups, sample_text
from influcoder.cli.options import (
    device_option,
    field_options,
    fields_from,
    handle_errors,
    log,
    query_gradients_option,
)
from influcoder.encoders.settings import BACKENDS
from influcoder.io.tables import clip_text
from influcoder.metrics import AGGREGATES


def query_options(f):
    f = device_option(
        f,
        extra=" for a torch backend; the onnx and int8 backends (auto's "
        "choice where ONNX Runtime is installed) always use the CPU",
    )
    f = query_gradients_option(
        "compare each query's own gradient (one backward pass of the decoder per query, "
        "taken like the gradient store STORE the encoder was distilled from) with the "
        "index's embeddings, instead of the encoder's embedding of the query; needs an "
        "encoder distilled with a head"
    )(f)
    f = click.option(
        "--ef-search",
        type=int,
        default=None,
        help="hnsw index: candidates per search (more: slower, higher recall)",
    )(f)
    f = click.option(
        "--nprobe",
        type=int,
        default=None,
        help="ivf index: lists searched (more: slower, higher recall)",
    )(f)
    f = click.option(
        "--backend",
        type=click.Choice(BACKENDS),
        default="auto",
        show_default=True,
        help="encoder inference for the queries",
    )(f)
    f = click.option(
        "--encoder",
        "-e",
        default=None,
        help="the index's encoder, if it moved (its fingerprint must match)",
    )(f)
    f = click.option("--prompt", default="", help="the prompt the --text responses answered")(f)
    f = click.option(
        "--text",
        "texts",
        multiple=True,
        help="a query: a response text (repeatable; with --prompt, its prompt)",
    )(f)
    return f


def open_attributor(index_dir, encoder, backend, nprobe, ef_search, device, query_gradients):
    """The index with its encoder as :func:`query_options` set them up."""
    from influcoder.attribution.attributor import Attributor

    return Attributor.load(
        index_dir,
        encoder,
        backend=backend,
        nprobe=nprobe,
        ef_search=ef_search,
        device=device,
        query_gradients=query_gradients,
    )


def _load_queries(queries, texts, prompt, kw):
    from influcoder.attribution.attributor import read_queries

    if queries is None and not texts:
        raise click.UsageError("give QUERIES (a data file, a .txt file, or - for stdin) or --text")
    limit = kw.pop("limit")
    return read_queries(queries, texts, prompt=prompt, fields=fields_from(kw), limit=limit)


SCORE_LEGEND = (
    "score: cosine of the embeddings (1 = same direction, 0 = unrelated); "
    "z: standard deviations above this query's average score over the pool"
)


@cli.command()
@click.argument("index_dir", metavar="INDEX", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", required=False)
@query_options
@click.option(
    "--top-k",
    "-k",
    type=int,
    default=10,
    show_default=True,
    help="pool samples per query (clamped to the pool's size, with a warning)",
)
@click.option(
    "--aggregate",
    type=click.Choice(AGGREGATES),
    default=None,
    help="one score per pool sample over all the queries, as a ranking",
)
@click.option(
    "--group-by",
    "group_by",
    metavar="FIELD",
    default=None,
    help="influence per group of this metadata field of the pool (a source, a "
    "file): mean, sum, max and AirRep's softmax-weighted score of every pool "
    "sample's score (and learned, when the encoder carries a learned pooler); "
    "samples without it are the group '(missing)'",
)
@click.option(
    "--group-aggregate",
    type=click.Choice(GROUP_AGGREGATES),
    default=DEFAULT_GROUP_AGGREGATE,
    show_default=True,
    help="--group-by: the score groups are listed by (learned: the encoder's learned "
    "pooler, from distill-runs --pooling attention)",
)
@click.option(
    "--temperature",
    type=float,
    default=DEFAULT_GROUP_TEMPERATURE,
    show_default=True,
    help="--group-by: temperature T of the softmax score, sum_i softmax(|s|/T)_i s_i "
    "(1: AirRep's released formula)",
)
@click.option(
    "--out",
    "-o",
    default=None,
    help="write the results to a .jsonl, .csv, .json or .parquet file (with "
    "--aggregate: every pool sample, ranked; with --group-by: the groups)",
)
@click.option(
    "--width", type=int, default=100, show_default=True, help="characters of text shown per sample"
)
@field_options
@handle_errors
def attribute(
    index_dir,
    queries,
    texts,
    prompt,
    encoder,
    backend,
    device,
    nprobe,
    ef_search,
    query_gradients,
    top_k,
    aggregate,
    group_by,
    group_aggregate,
    temperature,
    out,
    width,
    **kw,
):
    """The pool samples of INDEX that most influenced each query.

    QUERIES: a data file of samples (prompt and response), a .txt file (one response per
    line), or - for stdin (a line holding a JSON object is a sample, any other line a
    response); or give --text. Many queries are encoded and searched in one batch.

    \b
    Examples:
      influcoder attribute runs/index --text "The capital of France is Paris." -k 5
      influcoder attribute runs/index queries.jsonl -k 20 --out top.csv
      echo "I cannot help with that." | influcoder attribute runs/index -
      influcoder attribute runs/index unwanted.jsonl --aggregate mean --out ranking.parquet
      influcoder attribute runs/index queries.jsonl --group-by source
      influcoder attribute runs/index unwanted.jsonl --aggregate mean --group-by source -o g.csv
      influcoder attribute runs/index queries.jsonl --group-by source --group-aggregate learned
      influcoder attribute runs/index queries.jsonl --query-gradients runs/pool -k 20
    """
    import warnings

    from influcoder.attribution.attributor import (
        attribution_rows,
        ranking_rows,
    )
    from influcoder.io.tables import write_table

    if top_k < 1:
        raise click.UsageError("--top-k must be >= 1")
    if not temperature > 0:
        raise click.UsageError("--temperature must be > 0")
    samples = _load_queries(queries, texts, prompt, kw)
    attributor = open_attributor(
        index_dir, encoder, backend, nprobe, ef_search, device, query_gradients
    )
    index = attributor.index
    if group_by is not None:
        attribute_groups(
            attributor,
            samples,
            aggregate,
            group_by,
            group_aggregate,
            temperature,
            out,
            top_k,
            width,
        )
        return
    if aggregate is not None:
        ranking = attributor.aggregate(samples, aggregate)
        if out is not None:
            write_table(out, ranking_rows(ranking, index))
            log(f"wrote {out}: {index.n} pool samples ranked by {aggregate} score")
        click.echo(
            f"{aggregate} score over {len(samples)} queries, top {min(top_k, index.n)} "
            f"of {index.n} pool samples (z: standard deviations above the pool's mean)"
        )
        click.echo(f"{'rank':>5}  {'score':>7}  {'z':>6}  id  text")
        for h in ranking.top(index, top_k):
            click.echo(
                f"{h.rank:>5}  {h.score:+.4f}  {h.z:+6.1f}  {h.id}  {sample_text(h.sample, width)}"
            )
        return
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        results = attributor.attribute(samples, top_k)
    for w in caught:
        log(f"warning: {w.message}")
    if out is not None:
        write_table(out, attribution_rows(results))
        log(f"wrote {out}: {len(results)} queries x top {len(results[0].hits)}")
        return
    click.echo(SCORE_LEGEND)
    for j, r in enumerate(results, start=1):
        click.echo(f"\nquery {j} ({r.query.id}): {sample_text(r.query, width)}")
        click.echo(f"  {'rank':>4}  {'score':>7}  {'z':>6}  id  text")
        for h in r.hits:
            click.echo(
                f"  {h.rank:>4}  {h.score:+.4f}  {h.z:+6.1f}  {h.id}  "
                f"{sample_text(h.sample, width)}"
            )


@cli.command(name="filter")
@click.argument("index_dir", metavar="INDEX", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", required=False)
@click.option(
    "--out",
    "-o",
    required=True,
    help="the cleaned data file (format by extension; use the pool's to keep it); "
    "OUT_STEM.removed.jsonl lists what was removed and why",
)
@click.option("--top-k", "-k", type=int, default=None, help="remove the N highest-scoring samples")
@click.option(
    "--fraction", type=float, default=None, help="remove this share of the pool (0.05: the top 5%)"
)
@click.option(
    "--threshold",
    type=float,
    default=None,
    help="remove every sample whose aggregate score is at least this",
)
@click.option(
    "--aggregate",
    type=click.Choice(AGGREGATES),
    default="mean",
    show_default=True,
    help="mean: resembles the unwanted behaviour as a whole (steady as queries are "
    "added); max: resembles any one example strongly (finds near-copies)",
)
@query_options
@click.option(
    "--width", type=int, default=80, show_default=True, help="characters of text shown per sample"
)
@field_options
@handle_errors
def filter_command(
    index_dir,
    queries,
    out,
    top_k,
    fraction,
    threshold,
    aggregate,
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
    """Remove from the pool of INDEX the samples most like QUERIES (examples of unwanted
    behaviour), and write the rest in the pool's own format.

    Every pool sample is scored (exactly) against every query and the scores are aggregated;
    give one of --top-k, --fraction, --threshold. Kept rows are written as they are in the
    files the index was built from. OUT may not be an input.

    \b
    Examples:
      influcoder filter runs/index harmful.jsonl --fraction 0.02 --out clean.jsonl
      influcoder filter runs/index harmful.jsonl -k 100 --aggregate max --out clean.parquet
      influcoder filter runs/index harmful.jsonl --threshold 0.45 --out clean.csv
    """
    from influcoder.attribution.filter import filter_pool

    if sum(x is not None for x in (top_k, fraction, threshold)) != 1:
        raise click.UsageError("give exactly one of --top-k, --fraction, --threshold")
    samples = _load_queries(queries, texts, prompt, kw)
    attributor = open_attributor(
        index_dir, encoder, backend, nprobe, ef_search, device, query_gradients
    )
    try:
        result = filter_pool(
            attributor,
            samples,
            out,
            top_k=top_k,
            fraction=fraction,
            threshold=threshold,
            how=aggregate,
            inputs=[queries],
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    kept = result.n_pool - result.n_removed
    click.echo(
        f"removed {result.n_removed} of {result.n_pool} pool samples ({rule_text(result)}); "
        f"kept {kept}"
    )
    click.echo(
        f"wrote {result.out} (kept) and {result.removed_path} (removed, with scores and why)"
    )
    if result.removed:
        click.echo(f"{'rank':>5}  {'score':>7}  {'z':>6}  id  closest query")
        for r in result.removed[:10]:
            click.echo(
                f"{r['rank']:>5}  {r['score']:+.4f}  {r['z']:+6.1f}  {r['id']}  "
                f"{clip_text(r['top_query']['id'], width)}"
            )
        if result.n_removed > 10:
            click.echo(f"  ... {result.n_removed - 10} more in {result.removed_path}")


def rule_text(result) -> str:
    cutoff = "" if result.cutoff is None else f", lowest removed score {result.cutoff:+.4f}"
    return result.rule + cutoff
