"""The ``influcoder`` command group; the commands register themselves on it."""

from __future__ import annotations

import os

import click


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


def main(argv=None):
    cli.main(args=argv, prog_name="influcoder")
