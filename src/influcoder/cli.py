"""The ``influcoder`` command line: a thin layer over the Python API.

User mistakes (bad input, a store built differently, a missing package) are printed as one
clean message and exit with status 2; anything else is a bug and keeps its traceback.
"""

from __future__ import annotations

import dataclasses
import functools
import os
import sys
import types
import typing

import click

from .arguments import CollectArguments
from .distill.arguments import DistillArguments
from .errors import InflucoderError


def _textwrap(text: str, width: int) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def dataclass_options(cls, exclude: tuple[str, ...] = ()):
    """Click options generated from a settings dataclass: ``--field-name``, with the field's
    default and its ``metadata['help']``. Values left at their default are not passed on."""
    hints = typing.get_type_hints(cls)

    def decorate(f):
        for fld in reversed(dataclasses.fields(cls)):
            if fld.name in exclude:
                continue
            hint = hints[fld.name]
            flag = "--" + fld.name.replace("_", "-")
            help_ = fld.metadata.get("help", "")
            default = fld.default
            if hint is bool:
                opt = click.option(f"{flag}/--no-{flag[2:]}", fld.name, default=None,
                                   help=f"{help_} [default: {'on' if default else 'off'}]")
            elif typing.get_origin(hint) is tuple:
                opt = click.option(flag, fld.name, default=None, metavar="A,B,...",
                                   help=f"{help_} [default: {','.join(fld.default)}]")
            else:
                base = [a for a in typing.get_args(hint) if a is not type(None)] or [hint]
                typ = base[0] if isinstance(base[0], type) and base[0] is not types.NoneType else str
                opt = click.option(flag, fld.name, type=typ, default=None,
                                   help=f"{help_} [default: {default}]")
            f = opt(f)
        return f
    return decorate


def settings_from(cls, values: dict):
    """Build ``cls`` from the options that were given (None = not given)."""
    given = {}
    for fld in dataclasses.fields(cls):
        v = values.get(fld.name)
        if v is None:
            continue
        if isinstance(fld.default, tuple) and isinstance(v, str):
            v = tuple(x.strip() for x in v.split(",") if x.strip())
        given[fld.name] = v
    try:
        return cls(**given)
    except ValueError as e:
        raise click.UsageError(str(e)) from None


def field_options(f):
    """Options naming the fields of the input data."""
    f = click.option("--limit", type=int, default=None, help="read only the first N samples")(f)
    f = click.option("--messages-field", default="messages", show_default=True,
                     help="field with chat messages (the last assistant turn is the response)")(f)
    f = click.option("--id-field", default="id", show_default=True,
                     help="field with a sample id (missing ids are derived from the content)")(f)
    f = click.option("--response-field", default="response", show_default=True)(f)
    f = click.option("--prompt-field", default="prompt", show_default=True)(f)
    return f


def fields_from(kw: dict):
    from .data import Fields

    return Fields(prompt=kw.pop("prompt_field"), response=kw.pop("response_field"),
                  id=kw.pop("id_field"), messages=kw.pop("messages_field"))


def handle_errors(f):
    @functools.wraps(f)
    def wrapper(*args, **kwargs):
        try:
            return f(*args, **kwargs)
        except InflucoderError as e:
            click.echo(f"Error: {e}", err=True)
            sys.exit(e.exit_code)
    return wrapper


def log(msg: str) -> None:
    click.echo(msg, err=True)


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="influcoder")
def cli():
    """influcoder: which training samples made a language model say this?

    \b
    The pipeline:
      collect   per-sample LoRA gradients of a decoder -> a gradient store (ground truth)
      score     influence (cosine) of every pool sample on every query, and top-k

    \b
    Quick start on the bundled SmolLM2-135M:
      influcoder collect train.jsonl --out runs/pool
      influcoder collect queries.jsonl --like runs/pool --out runs/queries
      influcoder score runs/pool runs/queries --top-k 5
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")


@cli.command()
@click.argument("data")
@click.option("--out", "-o", required=True, help="store directory to create (or resume)")
@click.option("--like", type=click.Path(exists=True, file_okay=False), default=None,
              help="copy every setting (model, adapter, LoRA, sketch, template, truncation) "
                   "from this store, so the two are comparable")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@field_options
@dataclass_options(CollectArguments)
@handle_errors
def collect(data, out, like, quiet, limit, **kw):
    """Per-sample response-only LoRA gradients of DATA, sketched and L2-normalised, into a
    store.

    DATA is a .jsonl/.json/.csv/.parquet file ('-' reads JSONL from stdin) with 'prompt' and
    'response' fields or chat 'messages', or a Hugging Face dataset name (needs the hub).
    A killed run resumes when run again with the same command.

    \b
    Examples:
      influcoder collect train.jsonl --out runs/pool
      influcoder collect train.jsonl --out runs/pool --adapter my-lora/ --bf16
      influcoder collect queries.jsonl --like runs/pool --out runs/queries
      influcoder collect data.csv --prompt-field question --response-field answer -o runs/x
    """
    from .collect import collect as run_collect

    fields = fields_from(kw)
    if like is not None and any(v is not None for v in kw.values()):
        raise click.UsageError("--like copies every setting from the store; drop "
                               + ", ".join("--" + k.replace("_", "-")
                                           for k, v in kw.items() if v is not None))
    args = settings_from(CollectArguments, kw)
    store = run_collect(data, out, args, like=like, fields=fields, limit=limit,
                        progress=not quiet, log=log)
    log(f"wrote {store.path}: {store.n} samples x {store.dim} ({store.dtype})")


@cli.command()
@click.argument("pool", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", default=None,
              help="directory for the full score matrix (scores.npy: pool x queries, float32; "
                   "scores.json: the ids)")
@click.option("--top-k", "-k", type=int, default=0,
              help="print the K most influential pool samples for each query")
@click.option("--width", type=int, default=100, show_default=True,
              help="characters of text shown per sample")
@handle_errors
def score(pool, queries, out, top_k, width):
    """Influence of every POOL sample on every QUERIES sample: cosine of their vectors.

    Works on gradient stores and embedding stores alike; the two stores must share one
    setup. The pool streams through memory a shard at a time.

    \b
    Examples:
      influcoder score runs/pool runs/queries --top-k 5
      influcoder score runs/pool runs/queries --out runs/scores
    """
    from .influence import score_stores
    from .store import open_store

    if out is None and top_k <= 0:
        raise click.UsageError("nothing to do: give --out, --top-k, or both")
    if top_k < 0:
        raise click.UsageError("--top-k must be >= 0")
    p, q = open_store(pool), open_store(queries)
    rows, scores = score_stores(p, q, out, k=top_k)
    if out is not None:
        log(f"wrote {out}: {p.n} x {q.n} scores")
    if rows is None:
        return
    ps, qs = p.samples, q.samples
    for j, query in enumerate(qs):
        click.echo(f"\nquery {query.id}: {_textwrap(query.prompt + ' -> ' + query.response, width)}")
        for rank, (i, s) in enumerate(zip(rows[:, j], scores[:, j]), start=1):
            sample = ps[i]
            click.echo(f"  {rank:>3}  {s:+.4f}  {sample.id}  "
                       f"{_textwrap(sample.prompt + ' -> ' + sample.response, width)}")


@cli.command()
@click.argument("pool", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", type=click.Path(exists=True, file_okay=False))
@click.option("--out", "-o", required=True, help="directory for the trained encoder")
@click.option("--encoder", default="all-minilm-l6-v2", show_default=True,
              help="encoder to start from: 'all-minilm-l6-v2' (bundled) or a "
                   "sentence-transformers/HF encoder directory")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@dataclass_options(DistillArguments)
@handle_errors
def distill(pool, queries, out, encoder, quiet, **kw):
    """Train an encoder whose cosines rank like the gradient influence of POOL on QUERIES.

    POOL and QUERIES are gradient stores from `collect` (QUERIES made --like POOL). A share of
    both is held out; the three validation figures (per-anchor, pairwise and aggregated
    Spearman) are printed for the untrained encoder and after every epoch, and the best epoch is
    kept. The output is a standard sentence-transformers directory plus
    influcoder_distill.json (settings, ground-truth fingerprint, history).

    \b
    Examples:
      influcoder distill runs/pool runs/queries --out runs/encoder
      influcoder distill runs/pool runs/queries -o runs/enc --epochs 5 --hard-fraction 0.25
    """
    from .distill.stores import distill_stores
    from .store import open_store

    args = settings_from(DistillArguments, kw)
    result = distill_stores(open_store(pool), open_store(queries), out, args, encoder=encoder,
                            progress=not quiet)
    log(f"untrained: " + ", ".join(f"{k} {v:+.3f}" for k, v in result.untrained.items()))
    log(f"best (epoch {result.best_epoch}): "
        + ", ".join(f"{k} {v:+.3f}" for k, v in result.best.items()))
    log(f"wrote {out}")


@cli.command()
@click.argument("store", type=click.Path(exists=True, file_okay=False))
@handle_errors
def info(store):
    """What a store holds and how it was made."""
    import json

    from .store import Store

    s = Store(store, allow_incomplete=True)
    m = s.manifest
    click.echo(f"{s.path}: {m['kind']}, {s.n} samples x {s.dim} ({s.dtype}), "
               f"{'complete' if m['complete'] else f'{len(s.present_shards())}/{s.n_shards} shards'}")
    click.echo(json.dumps({"setup": m["setup"], "provenance": m.get("provenance", {})}, indent=2))


def main(argv=None):
    cli.main(args=argv, prog_name="influcoder")


if __name__ == "__main__":
    main()
