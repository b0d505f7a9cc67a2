"""The ``influcoder`` command line: a thin layer over the Python API.

User mistakes (bad input, a store built differently, a missing package) are printed as one
clean message and exit with status 2; anything else is a bug and keeps its traceback.
"""

# Importing the command modules registers their commands on the group.
from influcoder.cli import (  # noqa: F401
    attribution,
    demo,
    distill,
    evaluation,
    fit,
    ground_truth,
    index,
    selection,
    serve,
    validation,
)
from influcoder.cli.app import cli, main

__all__ = ["cli", "main"]
