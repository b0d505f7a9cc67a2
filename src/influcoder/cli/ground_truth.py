"""Commands of the gradient side: collect, score, info."""

from __future__ import annotations

import click

from influcoder.cli.app import cli
from influcoder.cli.options import (
    dataclass_options,
    device_option,
    dry_run_option,
    engine_options,
    field_options,
    fields_from,
    handle_errors,
    log,
    print_estimate,
    settings_from,
)
from influcoder.groundtruth.settings import CollectArguments
from influcoder.io.tables import clip_text
from influcoder.similarity import SIMILARITIES


@cli.command()
@click.argument("data")
@click.option("--out", "-o", required=True, help="store directory to create (or resume)")
@click.option(
    "--like",
    type=click.Path(exists=True, file_okay=False),
    default=None,
    help="copy every setting (model, adapter, LoRA, sketch, template, truncation) "
    "from this store, so the two are comparable",
)
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@device_option(
    extra="; with --engine ray on a GPU, one actor per GPU. Not a setting of the "
    "store: a store may be resumed on another machine"
)
@dry_run_option
@engine_options
@field_options
@dataclass_options(CollectArguments)
@handle_errors
def collect(data, out, like, quiet, device, dry_run, limit, engine, ray_address, num_workers, **kw):
    """Per-sample response-only LoRA gradients of DATA, sketched and L2-normalised, into a
    store.

    DATA is a .jsonl/.json/.csv/.parquet file ('-' reads JSONL from stdin) with 'prompt' and
    'response' fields or chat 'messages', or a Hugging Face dataset name (needs the hub).
    A killed run resumes when run again with the same command.

    \b
    Examples:
      influcoder collect train.jsonl --out runs/pool
      influcoder collect train.jsonl --out runs/pool --adapter my-lora/ --precision bf16
      influcoder collect train.jsonl -o runs/pool --model my-lora/ --device cuda:1
      influcoder collect train.jsonl -o runs/pool --model pythia-dir/ --lora-targets auto
      influcoder collect train.jsonl -o runs/pool_adam --precondition adam --lora-layers last:8
      influcoder collect queries.jsonl --like runs/pool --out runs/queries
      influcoder collect data.csv --prompt-field question --response-field answer -o runs/x
      influcoder collect train.jsonl --out runs/pool --batch-tokens 8192 --dry-run
    """
    from influcoder.groundtruth.collect import collect as run_collect

    fields = fields_from(kw)
    # with --like, --model only says where the store's model is now (its fingerprint is checked)
    moved = kw.pop("model") if like is not None else None
    if like is not None and any(v is not None for v in kw.values()):
        raise click.UsageError(
            "--like copies every setting from the store (--model only says where its model "
            "is now); drop "
            + ", ".join("--" + k.replace("_", "-") for k, v in kw.items() if v is not None)
        )
    args = settings_from(CollectArguments, kw)
    if dry_run:
        from influcoder.groundtruth.collect import estimate_collect

        print_estimate(
            estimate_collect(
                data, out, args, like=like, model=moved, fields=fields, limit=limit, device=device
            ),
            engine,
        )
        return
    store = run_collect(
        data,
        out,
        args,
        like=like,
        model=moved,
        fields=fields,
        limit=limit,
        progress=not quiet,
        engine=engine,
        ray_address=ray_address,
        num_workers=num_workers,
        device=device,
    )
    log(f"wrote {store.path}: {store.n} samples x {store.dim} ({store.dtype})")


@cli.command()
@click.argument("pool", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", type=click.Path(exists=True, file_okay=False))
@click.option(
    "--out",
    "-o",
    default=None,
    help="directory for the full score matrix (scores.npy: pool x queries, float32; "
    "scores.json: the ids)",
)
@click.option(
    "--top-k",
    "-k",
    type=int,
    default=0,
    help="print the K most influential pool samples for each query",
)
@click.option(
    "--width", type=int, default=100, show_default=True, help="characters of text shown per sample"
)
@click.option(
    "--similarity",
    type=click.Choice(SIMILARITIES),
    default="cosine",
    show_default=True,
    help="cosine of the stored vectors, or the inner product of the gradients "
    "before normalisation (gradient stores that keep their rows' norms)",
)
@handle_errors
def score(pool, queries, out, top_k, width, similarity):
    """Influence of every POOL sample on every QUERIES sample: cosine of their vectors.

    Works on gradient stores and embedding stores alike; the two stores must share one
    setup. The pool streams through memory a shard at a time.

    \b
    Examples:
      influcoder score runs/pool runs/queries --top-k 5
      influcoder score runs/pool runs/queries --out runs/scores
      influcoder score runs/pool runs/queries --top-k 5 --similarity inner
    """
    from influcoder.groundtruth.influence import score_stores
    from influcoder.io.stores import open_store

    if out is None and top_k <= 0:
        raise click.UsageError("nothing to do: give --out, --top-k, or both")
    if top_k < 0:
        raise click.UsageError("--top-k must be >= 0")
    p, q = open_store(pool), open_store(queries)
    rows, scores = score_stores(p, q, out, k=top_k, similarity=similarity)
    if out is not None:
        log(f"wrote {out}: {p.n} x {q.n} scores")
    if rows is None:
        return
    ps, qs = p.samples, q.samples
    for j, query in enumerate(qs):
        text = clip_text(query.prompt + " -> " + query.response, width)
        click.echo(f"\nquery {query.id}: {text}")
        for rank, (i, s) in enumerate(zip(rows[:, j], scores[:, j]), start=1):
            sample = ps[i]
            click.echo(
                f"  {rank:>3}  {s:+.4f}  {sample.id}  "
                f"{clip_text(sample.prompt + ' -> ' + sample.response, width)}"
            )


@cli.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@handle_errors
def info(store):
    """What an influcoder folder holds and how it was made: a gradient or embedding store, an
    encoder directory, an index or a run store."""
    from influcoder.workflows.describe import describe_folder

    for line in describe_folder(store):
        click.echo(line)
