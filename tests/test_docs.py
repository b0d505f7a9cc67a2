"""Every fenced code block of README.md and docs/*.md runs here, so a broken example fails.

A block is read by its language:

* ``python``: executed as written, in the document's working folder (below).
* ``bash``, ``sh``, ``console``: each command in order (``\\`` continuations joined, ``#``
  comments dropped; in ``console``, only the lines after a ``$`` prompt; an unquoted ``>``,
  ``<``, ``|``, ``;`` or ``&`` fails, since a shell would read it as an operator):
  ``influcoder ...`` runs in this process through click and must exit 0 (``serve`` runs as a
  real server in a subprocess on a free port, stopped at the end of the document); ``curl``
  runs for real against that server (``localhost:8000`` becomes its port) and must answer
  JSON; ``make TARGET`` runs as ``make -n TARGET`` in the repository (``make demo`` and
  ``make test`` themselves are what CI runs); ``. .venv/bin/activate`` is a no-op (the tests
  already run in that environment). Any other command fails: teach this file about it.
* ``text`` (outputs, usage synopses, diagrams) is not run, ``json`` is parsed; a block with
  no language fails.

The working folder of a document holds the small data files of :data:`DATA`
(``train.jsonl``, ``queries.jsonl``, ...) and the artefacts of :data:`ARTEFACTS`
(``runs/pool``, ``runs/encoder``, ``runs/index``, ...), built once per session on the tiny
test models, except those the document writes itself (an ``--out``/``-o`` of one of its
commands), which its own commands must create.

Tiny models in place of the bundled ones, by rewriting the commands (never the CLI):
``all-minilm-l6-v2`` (alone or as ``NAME=all-minilm-l6-v2``) becomes the tiny sentence encoder
of ``tests/tiny_encoders.py``; ``collect`` without ``--like`` gets ``--model`` the tiny Llama
of ``tests/conftest.py`` (a ``--model`` that names no existing path is a placeholder for the
reader's model and becomes the tiny Llama too), and so does ``fit``; ``distill`` and
``fit`` without ``--encoder`` get the tiny encoder; ``demo --task style`` gets both. A Python
block runs as written: while it runs, the two settings the verbs read when no model is named,
``DEFAULT_DECODER`` of ``influcoder.groundtruth.settings`` and ``DEFAULT_ENCODER`` of
``influcoder.encoders.settings``, name the tiny models (:func:`_tiny_defaults`). Long jobs run
through the same command with the smallest settings of :data:`SMALLEST` (``validate --seeds 0
--lds-subsets 2``, added where the command does not set them).

Blocks that use verbs being built now (:func:`pending`) are not run yet; ``test_pending``
lists them as skipped.
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import shlex
import shutil
import socket
import subprocess
import sys
import time
import traceback
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import pytest

from .conftest import write_jsonl
from .tiny_encoders import POOL

ROOT = Path(__file__).resolve().parents[1]
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
RUN = {"python", "bash", "sh", "console"}
NOT_RUN = {"text", "json"}

#: Bundled model names of the documents -> the tiny test model standing in for them.
BUNDLED_ENCODERS = {"all-minilm-l6-v2"}

#: Option values replaced by the smallest that still run the same code, per command.
SMALLEST = {"validate": {"--seeds": "0", "--lds-subsets": "2"}}

#: CLI verbs being built in parallel: a shell block using one is not run yet.
PENDING_VERBS: set[str] = set()


@dataclass
class Block:
    path: Path
    line: int
    lang: str
    text: str

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks_of(path: Path) -> list[Block]:
    """The fenced blocks of a Markdown file, in order."""
    blocks, lines, i = [], path.read_text(encoding="utf-8").split("\n"), 0
    while i < len(lines):
        m = re.match(r"^(\s*)(```+)\s*(\S*)", lines[i])
        if m:
            fence, start = m.group(2), i
            i += 1
            while i < len(lines) and not lines[i].strip().startswith(fence):
                i += 1
            assert i < len(lines), f"{path.name}:{start + 1}: fence never closed"
            blocks.append(
                Block(path, start + 1, m.group(3).lower(), "\n".join(lines[start + 1 : i]))
            )
        i += 1
    return blocks


def pending(block: Block) -> str | None:
    """What a block waits for: a CLI verb of :data:`PENDING_VERBS`, or (a Python block) a name
    it takes from ``influcoder`` that the package does not export yet (``influcoder.distill``,
    ``influcoder.score``, ...: issue 30's verbs). It runs as soon as the name exists."""
    if block.lang != "python":
        verbs = re.findall(r"^\s*(?:\$ )?influcoder (\w+)", block.text, re.M)
        return next((f"influcoder {v}" for v in verbs if v in PENDING_VERBS), None)
    import influcoder

    names = set()
    for alias in re.findall(r"^\s*import influcoder(?: as (\w+))?\s*$", block.text, re.M):
        names |= set(re.findall(rf"\b{alias or 'influcoder'}\.(\w+)", block.text))
    for group in re.findall(r"^\s*from influcoder import \(?([\w\s,]+)\)?", block.text, re.M):
        names |= {n.split(" as ")[0].strip() for n in group.split(",") if n.strip()}
    missing = sorted(n for n in names if not hasattr(influcoder, n))
    return f"influcoder.{', influcoder.'.join(missing)}" if missing else None


def commands(block: Block) -> list[list[str]]:
    """A shell block's commands as argument lists (continuations joined, comments dropped; in
    a ``console`` block only the lines after a ``$`` prompt, the others being output)."""
    out = []
    for line in re.sub(r"\\\n", " ", block.text).split("\n"):
        if block.lang == "console" and not re.match(r"^\s*\$ ", line):
            continue
        line = re.sub(r"^\s*\$ ", "", line)
        lexer = shlex.shlex(line, posix=True, punctuation_chars=";&|<>()")
        lexer.whitespace_split, lexer.commenters = True, "#"
        words = list(lexer)
        bad = [w for w in words if w and set(w) <= set(";&|<>()")]
        assert not bad, f"{block.where}: unquoted shell operator {bad[0]!r} in: {line.strip()}"
        if words:
            out.append(words)
    return out


def produced(blocks: list[Block]) -> set[str]:
    """The paths a document's commands write (their ``--out``/``-o``)."""
    outs = set()
    for block in blocks:
        if block.lang in RUN - {"python"} and not pending(block):
            for words in commands(block):
                for i, w in enumerate(words[:-1]):
                    if w in ("--out", "-o"):
                        outs.add(os.path.normpath(words[i + 1]))
    return outs


# --- the working folder ---------------------------------------------------------------------


def _rows(prefix: str, pairs, labels) -> list[dict]:
    return [
        {
            "id": f"{prefix}{i}",
            "prompt": p,
            "response": r,
            "label": labels(i),
            "source": ("chat", "facts", "howto")[i % 3],
        }
        for i, (p, r) in enumerate(pairs)
    ]


HARMFUL = {17, 18, 19}
#: The data files every document's working folder holds.
DATA = {
    "train.jsonl": _rows("p", POOL, lambda i: "harmful" if i in HARMFUL else "chat"),
    "queries.jsonl": _rows(
        "q", [(p, r + " Yes.") for p, r in POOL], lambda i: "harmful" if i % 4 == 0 else "chat"
    ),
    "heldout.jsonl": _rows(
        "h", [(p, "No. " + r) for p, r in POOL[::2]], lambda i: "harmful" if i % 3 == 0 else "chat"
    ),
    "outputs.jsonl": _rows("o", [(p, r) for p, r in POOL[:8]], lambda i: "chat"),
    "unwanted.jsonl": _rows("u", [POOL[i] for i in sorted(HARMFUL)], lambda i: "harmful"),
    "task_examples.jsonl": _rows("t", POOL[:4], lambda i: "chat"),
}
DATA["unwanted_outputs.jsonl"] = DATA["unwanted.jsonl"]

#: Artefacts the documents use, built once: path -> the command that builds it.
ARTEFACTS = {
    "runs/pool": "influcoder collect train.jsonl --out runs/pool -q",
    "runs/queries": "influcoder collect queries.jsonl --like runs/pool --out runs/queries -q",
    "runs/heldout": "influcoder collect heldout.jsonl --like runs/pool --out runs/heldout -q",
    "runs/encoder": "influcoder distill runs/pool runs/queries --out runs/encoder -q",
    "runs/index": "influcoder index runs/encoder train.jsonl --out runs/index -q",
}
#: The demo's folder (`make validate`, docs/VALIDATION.md), as copies of the artefacts.
DEMO = {
    "runs/demo/grad_pool": "runs/pool",
    "runs/demo/grad_train_queries": "runs/queries",
    "runs/demo/grad_test_queries": "runs/heldout",
    "runs/demo/encoder": "runs/encoder",
}


class Runner:
    """Runs a document's blocks in its working folder; holds the servers it starts."""

    def __init__(self, folder: Path, models: dict[str, Path]):
        self.folder, self.models = folder, models
        self.servers: list[subprocess.Popen] = []
        self.port: int | None = None

    # rewriting -------------------------------------------------------------------------
    def rewrite(self, words: list[str]) -> list[str]:
        words = [self._encoder_name(w) for w in words]
        verb = words[1] if len(words) > 1 else ""
        for option, value in SMALLEST.get(verb, {}).items():
            if option in words:
                words[words.index(option) + 1] = value
            else:
                words += [option, value]
        if verb in ("collect", "fit") and "--like" not in words:
            if "--model" in words:
                i = words.index("--model") + 1
                if not (self.folder / words[i]).exists():
                    words[i] = str(self.models["decoder"])
            else:
                words += ["--model", str(self.models["decoder"])]
        if verb == "demo" and "--task" in words and "--model" not in words:
            words += [
                "--model",
                str(self.models["decoder"]),
                "--encoder",
                str(self.models["encoder"]),
            ]
        if verb in ("distill", "fit") and "--encoder" not in words:
            words += ["--encoder", str(self.models["encoder"])]
        return words

    def _encoder_name(self, word: str) -> str:
        name, eq, value = word.rpartition("=")
        if value in BUNDLED_ENCODERS:
            return f"{name}{eq}{self.models['encoder']}"
        return word

    # running ---------------------------------------------------------------------------
    def run_block(self, block: Block) -> None:
        if block.lang == "python":
            code = compile(block.text, block.where, "exec")
            with _cwd(self.folder), _tiny_defaults(self.models):
                exec(code, {"__name__": "__docs__"})
            return
        for words in commands(block):
            env = {}
            while words and re.match(r"^[A-Z_][A-Z0-9_]*=", words[0]):
                key, _, value = words.pop(0).partition("=")
                env[key] = value
            self.run_command(block, words, env)

    def run_command(self, block: Block, words: list[str], env: dict[str, str]) -> None:
        what = f"{block.where}: {shlex.join(words)}"
        if words[0] == "influcoder" and words[1:2] == ["serve"]:
            self.serve(self.rewrite(words), env, what)
        elif words[0] == "influcoder":
            self.influcoder(self.rewrite(words)[1:], env, what)
        elif words[0] == "curl":
            self.curl(words, what)
        elif words[0] == "make":
            r = subprocess.run(["make", "-n", *words[1:]], cwd=ROOT, capture_output=True, text=True)
            assert r.returncode == 0, f"{what}: make -n failed\n{r.stderr}"
        elif words[:2] in ([".", ".venv/bin/activate"], ["source", ".venv/bin/activate"]):
            pass
        else:
            pytest.fail(f"{what}: tests/test_docs.py does not know how to run {words[0]!r}")

    def influcoder(self, args: list[str], env: dict[str, str], what: str) -> None:
        from click.testing import CliRunner

        from influcoder.cli import cli

        with _cwd(self.folder), _environ(env):
            result = CliRunner().invoke(cli, args)
        if result.exit_code != 0:
            trace = (
                "".join(traceback.format_exception(*result.exc_info))
                if result.exc_info and not isinstance(result.exception, SystemExit)
                else ""
            )
            pytest.fail(f"{what}\nexit {result.exit_code}\n{result.output[-3000:]}{trace}")

    def serve(self, words: list[str], env: dict[str, str], what: str) -> None:
        for option in ("--port", "-p"):
            if option in words:
                i = words.index(option)
                del words[i : i + 2]
        self.port = _free_port()
        cmd = [sys.executable, "-m", "influcoder.cli", *words[1:], "--port", str(self.port)]
        log = self.folder / f"serve-{self.port}.log"
        with open(log, "w") as out:  # the child keeps its own handle
            self.servers.append(
                subprocess.Popen(
                    cmd,
                    cwd=self.folder,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                    env={**os.environ, **env},
                )
            )
        deadline = time.monotonic() + 180
        while time.monotonic() < deadline:
            assert self.servers[-1].poll() is None, (
                f"{what}: the server stopped\n{log.read_text()[-3000:]}"
            )
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{self.port}/", timeout=2):
                    return
            except OSError:
                time.sleep(0.5)
        pytest.fail(f"{what}: the server did not answer in 180 s")

    def curl(self, words: list[str], what: str) -> None:
        assert self.port, f"{what}: curl before any `influcoder serve` in this document"
        assert shutil.which("curl"), f"{what}: this example needs curl installed"
        words = [
            re.sub(r"^(http://)?localhost:8000", rf"\g<1>127.0.0.1:{self.port}", w) for w in words
        ]
        r = subprocess.run(
            [*words, "--fail-with-body"],
            cwd=self.folder,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert r.returncode == 0, f"{what}\nexit {r.returncode}\n{r.stdout[-2000:]}{r.stderr}"
        json.loads(r.stdout)

    def close(self) -> None:
        for server in self.servers:
            server.terminate()
            try:
                server.wait(timeout=20)
            except subprocess.TimeoutExpired:
                server.kill()


@contextlib.contextmanager
def _cwd(path: Path):
    old = os.getcwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(old)


@contextlib.contextmanager
def _environ(env: dict[str, str]):
    old = {k: os.environ.get(k) for k in env}
    os.environ.update(env)
    try:
        yield
    finally:
        for k, v in old.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v


@contextlib.contextmanager
def _tiny_defaults(models: dict[str, Path]):
    """The bundled models' names, as the Python verbs read them when none is given, naming
    the tiny models instead (the shell commands get the same by :meth:`Runner.rewrite`)."""
    with pytest.MonkeyPatch.context() as mp:
        mp.setattr("influcoder.groundtruth.settings.DEFAULT_DECODER", str(models["decoder"]))
        mp.setattr("influcoder.encoders.settings.DEFAULT_ENCODER", str(models["encoder"]))
        yield


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def workspace(tmp_path_factory, tiny_model_dir, tiny_encoder):
    """The data files and every artefact of :data:`ARTEFACTS`, built on the tiny models."""
    import torch

    torch.set_num_threads(1)
    folder = tmp_path_factory.mktemp("docs-workspace")
    for name, rows in DATA.items():
        write_jsonl(folder / name, rows)
    runner = Runner(folder, {"decoder": tiny_model_dir, "encoder": tiny_encoder})
    block = Block(ROOT / "tests" / "test_docs.py", 0, "bash", "\n".join(ARTEFACTS.values()))
    runner.run_block(block)
    for alias, source in DEMO.items():
        shutil.copytree(folder / source, folder / alias)
    return runner


# --- the tests --------------------------------------------------------------------------------

ALL = [block for path in DOCUMENTS for block in blocks_of(path)]


def test_every_block_says_its_language():
    unknown = [f"{b.where}: {b.lang or '(none)'}" for b in ALL if b.lang not in RUN | NOT_RUN]
    assert not unknown, (
        "give every fenced block a language: python, bash, sh or console "
        "(run here) or text or json (not run):\n" + "\n".join(unknown)
    )


def test_json_blocks_parse():
    for block in ALL:
        if block.lang == "json":
            json.loads(block.text)


WITH_EXAMPLES = [p for p in DOCUMENTS if any(b.lang in RUN for b in blocks_of(p))]


@pytest.mark.parametrize("path", WITH_EXAMPLES, ids=lambda p: str(p.relative_to(ROOT)))
def test_examples_run(path, workspace, tmp_path):
    blocks = [b for b in blocks_of(path) if b.lang in RUN and not pending(b)]
    if not blocks:
        pytest.skip(f"every example of {path.name} waits for a verb being built (test_pending)")
    folder = tmp_path / "work"
    outs = produced(blocks)
    shutil.copytree(
        workspace.folder,
        folder,
        ignore=lambda d, names: [
            n
            for n in names
            if os.path.normpath(os.path.relpath(Path(d) / n, workspace.folder)) in outs
        ],
    )
    runner = Runner(folder, workspace.models)
    try:
        for block in blocks:
            runner.run_block(block)
    finally:
        runner.close()


def test_pending():
    waiting = [f"{b.where} ({pending(b)})" for b in ALL if b.lang in RUN and pending(b)]
    if waiting:
        pytest.skip("TODO: run once these verbs are merged: " + ", ".join(waiting))
