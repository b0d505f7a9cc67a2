"""Commands that embed a pool: encode (an embedding store) and index (a FAISS index)."""

from __future__ import annotations

import click

from influcoder.attribution.settings import FAISS_KINDS
from influcoder.cli.app import cli
from influcoder.cli.options import (
    device_option,
    dry_run_option,
    encoder_options,
    engine_options,
    field_options,
    fields_from,
    handle_errors,
    log,
    print_estimate,
)
from influcoder.encoders.settings import DEFAULT_ENCODER


def embedding_options(f):
    """The options ``encode`` and ``index`` share: quiet, dry run, the encoder's backend, the
    device, the engine, the data's fields; and the error handler."""
    for option in reversed(
        (
            click.option("--quiet", "-q", is_flag=True, help="no progress bar"),
            dry_run_option,
            encoder_options,
            device_option(extra=" (the onnx and int8 backends always use the CPU)"),
            engine_options,
            field_options,
            handle_errors,
        )
    ):
        f = option(f)
    return f


@cli.command()
@click.argument("data")
@click.option(
    "--encoder",
    "-e",
    default=DEFAULT_ENCODER,
    show_default=True,
    help="an encoder directory from `distill` (sentence-transformers or multi-view), "
    "any sentence-transformers directory, or 'all-minilm-l6-v2' (bundled)",
)
@click.option("--out", "-o", required=True, help="store directory to create (or resume)")
@embedding_options
def encode(
    data, encoder, out, quiet, device, dry_run, limit, engine, ray_address, num_workers, **kw
):
    """Embeddings of DATA (prompt, blank line, response) into a store, like `collect` makes
    for gradients: `score`, `info` and open_store() work on both.

    \b
    Examples:
      influcoder encode train.jsonl --encoder runs/encoder --out runs/train-emb
      influcoder encode train.jsonl -e all-minilm-l6-v2 -o runs/emb --dtype int8
      influcoder encode big.jsonl -e runs/encoder -o runs/big --engine ray
      influcoder encode big.jsonl -e runs/encoder -o runs/big --device cuda --batch-size 512
      influcoder encode big.jsonl -e runs/encoder -o runs/big --dry-run
    """
    from dataclasses import replace

    from influcoder.attribution.encode import encode as run_encode
    from influcoder.attribution.settings import EncodeArguments

    fields = fields_from(kw)
    given = {k: v for k, v in kw.items() if v is not None}
    try:
        args = replace(EncodeArguments(encoder=encoder), **given)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if dry_run:
        from influcoder.attribution.encode import estimate_encode

        print_estimate(
            estimate_encode(data, out, args, fields=fields, limit=limit, device=device), engine
        )
        return
    store = run_encode(
        data,
        out,
        args,
        fields=fields,
        limit=limit,
        engine=engine,
        ray_address=ray_address,
        num_workers=num_workers,
        progress=not quiet,
        device=device,
    )
    log(f"wrote {store.path}: {store.n} samples x {store.dim} ({store.dtype})")


@cli.command()
@click.argument("encoder")
@click.argument("data")
@click.option("--out", "-o", required=True, help="index directory to create, resume or extend")
@click.option(
    "--append",
    is_flag=True,
    help="add DATA as a new segment (the old ones are not re-encoded; ids must be new)",
)
@click.option(
    "--approx",
    type=click.Choice(FAISS_KINDS),
    default=None,
    help="FAISS kind: flat (exact, the default for a new index), hnsw or ivf "
    "(approximate, for millions of samples); changing it rebuilds faiss.index",
)
@embedding_options
def index(
    encoder,
    data,
    out,
    append,
    approx,
    quiet,
    device,
    dry_run,
    limit,
    engine,
    ray_address,
    num_workers,
    **kw,
):
    """Encode the pool DATA with ENCODER into a persistent, searchable index.

    ENCODER is an encoder directory (from `distill`: sentence-transformers or multi-view), any
    sentence-transformers directory, or 'all-minilm-l6-v2'.
    A killed run resumes when run again with the same command; rerunning it on a finished
    index rebuilds a missing faiss.index (or, with --approx, another kind) from the stored
    embeddings.

    \b
    Examples:
      influcoder index runs/encoder train.jsonl --out runs/index
      influcoder index runs/encoder more.jsonl --out runs/index --append
      influcoder index runs/encoder big.parquet -o runs/big --approx hnsw --engine ray
      influcoder index runs/encoder big.parquet -o runs/big --approx hnsw --dry-run
    """
    from influcoder.attribution.build import build_index, estimate_index

    fields = fields_from(kw)
    try:
        if dry_run:
            print_estimate(
                estimate_index(
                    data,
                    out,
                    encoder,
                    approx=approx,
                    fields=fields,
                    limit=limit,
                    device=device,
                    **kw,
                ),
                engine,
            )
            return
        built = build_index(
            data,
            out,
            encoder,
            append=append,
            approx=approx,
            fields=fields,
            limit=limit,
            engine=engine,
            ray_address=ray_address,
            num_workers=num_workers,
            progress=not quiet,
            device=device,
            **kw,
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    log(
        f"wrote {built.path}: {built.n} samples x {built.dim} in {len(built.segments)} "
        f"segment(s), {built.kind} search"
    )
