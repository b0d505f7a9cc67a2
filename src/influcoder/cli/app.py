"""The ``influcoder`` command group; the commands register themselves on it."""

from __future__ import annotations

import logging
import os

import click


class EchoHandler(logging.Handler):
    """Sends influcoder's log lines to standard error through click, looked up at each line
    (so a redirected or captured stream receives them)."""

    def emit(self, record: logging.LogRecord) -> None:
        try:
            click.echo(self.format(record), err=True)
        except Exception:  # a log line must never end a run
            self.handleError(record)


def setup_logging() -> None:
    """influcoder's INFO lines (stage headers, resumes, warm-up loss) go to standard error,
    once, however often the CLI is invoked in one process."""
    root = logging.getLogger("influcoder")
    if not any(isinstance(h, EchoHandler) for h in root.handlers):
        handler = EchoHandler()
        handler.setFormatter(logging.Formatter("%(message)s"))
        root.addHandler(handler)
    root.setLevel(logging.INFO)
    root.propagate = False


@click.group(context_settings={"help_option_names": ["-h", "--help"], "max_content_width": 100})
@click.version_option(package_name="influcoder")
def cli():
    """influcoder: which training samples made a language model say this?

    \b
    From a training file to a served index, in one command:
      fit       collect, distill and index a training file for the outputs to explain

    \b
    The pipeline, stage by stage:
      collect   per-sample LoRA gradients of a decoder -> a gradient store (ground truth)
      score     influence (cosine) of every pool sample on every query, and top-k
      distill   train a sentence encoder to rank like the gradient influence
      encode    embeddings of a data set -> an embedding store
      index     embed a pool into a FAISS index (resumable, appendable)
      attribute the most influential pool samples for queries, in milliseconds
      filter    remove the pool samples most influential on unwanted behaviour
      select    choose the pool samples most helpful to target examples (LESS)
      serve     a web page and JSON API over an index (attribute, clean a data file)
      evaluate  compare methods against the gradient ground truth; HTML report
      validate  remove what each method flags, retrain, measure the loss change (and LDS)
      demo      all of it, end to end, on the bundled models and real data

    \b
    Quick start on the bundled SmolLM2-135M:
      influcoder collect train.jsonl --out runs/pool
      influcoder collect queries.jsonl --like runs/pool --out runs/queries
      influcoder score runs/pool runs/queries --top-k 5
    """
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    setup_logging()


def main(argv=None):
    cli.main(args=argv, prog_name="influcoder")
