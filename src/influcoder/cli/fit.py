"""The ``fit`` command: a training file and outputs to explain -> a served index."""

from __future__ import annotations

import dataclasses

import click

from influcoder.attribution.settings import FAISS_KINDS
from influcoder.cli.app import cli
from influcoder.cli.options import (
    dataclass_options,
    device_option,
    field_options,
    fields_from,
    handle_errors,
    log,
    settings_from,
)
from influcoder.distillation.settings import DistillArguments
from influcoder.encoders.settings import DEFAULT_ENCODER
from influcoder.groundtruth.settings import CollectArguments
from influcoder.workflows.fit_plan import DEFAULT_GROUND_TRUTH, MIN_SAMPLES
from influcoder.workflows.sampling import SAMPLINGS

#: The stages' settings ``fit`` passes through; every other one is the stage's default (run
#: the stages one by one for those).
COLLECT_OPTIONS = (
    "model",
    "adapter",
    "adapter_init",
    "warmup_steps",
    "lora_rank",
    "lora_alpha",
    "lora_targets",
    "sketch_dim",
    "max_length",
    "truncation",
    "template",
    "precision",
    "batch_tokens",
    "gradient_checkpointing",
)
DISTILL_OPTIONS = ("epochs", "head", "views")


def _others(cls, kept: tuple[str, ...]) -> tuple[str, ...]:
    return tuple(f.name for f in dataclasses.fields(cls) if f.name not in kept)


def _ground_truth(ctx, param, value: str) -> int | None:
    if value.strip().lower() == "all":
        return None
    try:
        n = int(value)
    except ValueError:
        raise click.BadParameter(f"expected a number of samples or 'all', got {value!r}") from None
    if n < MIN_SAMPLES:
        raise click.BadParameter(
            f"at least {MIN_SAMPLES} samples (2 to train on, 2 to validate), got {n}"
        )
    return n


@cli.command()
@click.argument("train", type=click.Path(exists=True, dir_okay=False))
@click.option(
    "--queries",
    "queries",
    required=True,
    type=click.Path(exists=True, dir_okay=False),
    help="outputs you want explained (prompt and response, like TRAIN): the queries "
    "the encoder learns to rank for",
)
@click.option(
    "--out",
    "-o",
    required=True,
    help="fit directory to create or resume: grad_pool/, grad_queries/, encoder/, "
    "index/ and fit.json",
)
@click.option(
    "--ground-truth",
    "ground_truth",
    default=str(DEFAULT_GROUND_TRUTH),
    show_default=True,
    metavar="N|all",
    callback=_ground_truth,
    help="training samples (a seeded sample) whose gradients are taken; 'all' for "
    "every one. 1,000 is the learning curve's largest measured size, where the "
    "distilled encoder was still improving with more (docs/DISTILLATION.md)",
)
@click.option(
    "--seed",
    type=int,
    default=0,
    show_default=True,
    help="seed of the sample, the LoRA adapter and its warm-up, and distillation",
)
@click.option(
    "--sampling",
    type=click.Choice(SAMPLINGS),
    default="random",
    show_default=True,
    help="how the --ground-truth sample is drawn: seeded at random, or 'coverage': k-means "
    "of the untrained encoder's embeddings of all of TRAIN, the sample nearest each "
    "centroid (spread over the whole file; one encoder pass over it first)",
)
@click.option(
    "--encoder",
    default=DEFAULT_ENCODER,
    show_default=True,
    help="encoder to distil: 'all-minilm-l6-v2' (bundled) or a sentence-transformers directory",
)
@click.option(
    "--approx",
    type=click.Choice(FAISS_KINDS),
    default=None,
    help="FAISS kind of the index: flat (exact, the default), hnsw or ivf "
    "(approximate, for millions of samples)",
)
@click.option("--quiet", "-q", is_flag=True, help="no progress display")
@click.option(
    "--dry-run",
    is_flag=True,
    help="write nothing: print the stages, the sample and the estimates of "
    "`collect --dry-run` and `index --dry-run` (models loaded, a few samples "
    "timed)",
)
@device_option(extra="; not a setting of the fit: it may be resumed on another machine")
@field_options
@dataclass_options(CollectArguments, exclude=_others(CollectArguments, COLLECT_OPTIONS))
@dataclass_options(DistillArguments, exclude=_others(DistillArguments, DISTILL_OPTIONS))
@handle_errors
def fit(
    train,
    queries,
    out,
    ground_truth,
    seed,
    sampling,
    encoder,
    approx,
    quiet,
    dry_run,
    device,
    limit,
    **kw,
):
    """From TRAIN and the outputs to explain (--queries) to an index `attribute` and `serve`
    read, in one command: gradients of a seeded sample of TRAIN (collect), of the queries
    with the same setup (collect --like), an encoder distilled from them (distill), and every
    sample of TRAIN embedded by it (index), each into a folder of --out.

    A killed run resumes when the same command is run again: finished stages are skipped,
    the unfinished one goes on where it stopped. Other options or data are refused, naming
    the option. Bad input stops with file:line: field and exit status 2 before anything is
    written. The stages' other settings: run them one by one (README, "Stage by stage").

    \b
    Examples:
      influcoder fit train.jsonl --queries outputs.jsonl --out runs/fit
      influcoder fit train.jsonl --queries outputs.jsonl --out runs/fit --dry-run
      influcoder fit train.jsonl --queries outputs.jsonl -o runs/fit --ground-truth all
      influcoder fit train.jsonl --queries outputs.jsonl -o runs/fit --model my-lora/ \\
          --device cuda --epochs 2
      influcoder fit data.csv --queries bad.csv -o runs/fit --prompt-field question \\
          --response-field answer --lora-targets auto --model pythia-dir/
      influcoder serve runs/fit
    """
    from influcoder.workflows.fit import estimate_fit
    from influcoder.workflows.fit import fit as run_fit
    from influcoder.workflows.fit_plan import FitArguments, plan_fit

    fields = fields_from(kw)
    try:
        args = FitArguments(
            ground_truth=ground_truth,
            seed=seed,
            sampling=sampling,
            encoder=encoder,
            approx=approx,
            collect=settings_from(CollectArguments, kw),
            distill=settings_from(DistillArguments, kw),
        )
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    if dry_run:
        plan = plan_fit(train, queries, out, args, fields=fields, limit=limit, device=device)
        for line in estimate_fit(plan, device=device):
            click.echo(line)
        return
    index = run_fit(
        train, queries, out, args, fields=fields, limit=limit, progress=not quiet, device=device
    )
    log(
        f"wrote {out}: the index is {index}; next: influcoder attribute {index} --text "
        f"'...', or influcoder serve {out}"
    )
