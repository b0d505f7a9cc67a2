"""The documents name only what exists: files, modules, commands, options and their choices.

tests/test_docs.py runs the documents' examples; this file checks what no example runs: usage
synopses, reproduction commands of benchmarks, and names in prose.
"""

from __future__ import annotations

import ast
import os
import re

from .test_docs import DOCUMENTS, PENDING_VERBS, ROOT


def test_no_machine_specific_paths():
    for path in DOCUMENTS:
        found = re.findall(r"(?<![\w.])/(?:work|tmp|home|root)/[\w./-]*", path.read_text())
        assert not found, f"{path.name}: machine-specific paths {found}"


#: Files that other work in progress adds (issue 30). TODO: empty once they are merged.
PENDING_FILES: set[str] = set()
#: Where a path named in backquotes may live: the repository, or the package.
PATH_ROOTS = (ROOT, ROOT / "src" / "influcoder")
#: First folders of the paths checked (others name files of other projects or of a store).
CHECKED = {
    p.name
    for root in PATH_ROOTS
    for p in root.iterdir()
    if p.is_dir() and p.name not in {"runs", "__pycache__"} and p.name[0] != "."
}


def _top_level(module: list[str]) -> set[str]:
    """The names a module (or a package's ``__init__``) defines, imports or lists lazily."""
    base = ROOT / "src" / "/".join(module)
    source = base / "__init__.py" if base.is_dir() else base.with_suffix(".py")
    names = {p.name.removesuffix(".py") for p in base.iterdir()} if base.is_dir() else set()
    for node in ast.walk(ast.parse(source.read_text(encoding="utf-8"))):
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            names.add(node.name)
        elif isinstance(node, ast.Name) and isinstance(node.ctx, ast.Store):
            names.add(node.id)
        elif isinstance(node, (ast.Import, ast.ImportFrom)):
            names |= {a.asname or a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.Constant) and isinstance(node.value, str):
            names.add(node.value)  # the lazy public names of influcoder/__init__.py
    return names


def test_named_files_and_modules_exist():
    """Relative links, backquoted paths in this repository's folders (``tests/x.py``,
    ``encoders/views.py``) and dotted module names (``influcoder.encoders.heads.SavedHead``: the
    name before the last may be a class or function) name things that exist."""
    missing = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for link in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", text):
            target = os.path.relpath((path.parent / link).resolve(), ROOT)
            if (
                not link.startswith("http")
                and target not in PENDING_FILES
                and not (path.parent / link).exists()
            ):
                missing.append(f"{path.name}: link {link}")
        for name in re.findall(r"`([\w.-]+(?:/[\w.-]+)+/?)`", text):
            if name.split("/")[0] not in CHECKED or not re.search(r"\.\w+$|/$", name):
                continue
            if not any((root / name).exists() for root in PATH_ROOTS):
                missing.append(f"{path.name}: {name}")
        for name in re.findall(r"`(influcoder(?:\.\w+)+)`", text):
            parts = name.split(".")
            found = max(
                (
                    k
                    for k in range(1, len(parts) + 1)
                    if (ROOT / "src" / "/".join(parts[:k])).with_suffix(".py").exists()
                    or (ROOT / "src" / "/".join(parts[:k])).is_dir()
                ),
                default=0,
            )
            if found < len(parts) - 1 or (
                found == len(parts) - 1 and parts[-1] not in _top_level(parts[:found])
            ):
                missing.append(f"{path.name}: {name}")
    assert not missing, "named in the docs but not found:\n" + "\n".join(missing)


def _influcoder_commands(text: str) -> list[tuple[str, str]]:
    """(verb, the rest) of every ``influcoder VERB ...`` line (fenced, indented or in prose,
    continuations joined) and every inline ``VERB --option ...`` span of a CLI verb."""
    from influcoder.cli import cli

    found = []
    for line in re.sub(r"\\\n\s*", " ", text).split("\n"):
        m = re.match(r"^\s*(?:\$ )?(?:[A-Z_]+=\S+ )*influcoder (\w+)(.*)$", line)
        if m:
            found.append((m.group(1), m.group(2).split("#")[0]))
    for span in re.findall(r"`([^`\n]+)`", text):
        words = span.split()
        words = words[1:] if words[:1] == ["influcoder"] else words
        if len(words) > 1 and words[0] in cli.commands and any(w[0] == "-" for w in words):
            found.append((words[0], " ".join(words[1:])))
    return found


#: Options of other tools that the documents name (``pip install --no-deps``).
OTHER_TOOLS_OPTIONS = {"--help", "--no-deps"}


def test_documented_options_exist():
    """Every option a document gives a command exists (and a value of a choice is one of its
    choices), in run examples and in synopses, reproduction commands and prose alike: the
    ``influcoder`` commands through click, the benchmark scripts by their ``add_argument``
    names."""
    import click

    from influcoder.cli import cli

    wrong = []
    for path in DOCUMENTS:
        text = path.read_text(encoding="utf-8")
        for verb, rest in _influcoder_commands(text):
            if verb in PENDING_VERBS:
                continue
            command = cli.commands.get(verb)
            if command is None:
                wrong.append(f"{path.name}: influcoder {verb}: no such command")
                continue
            params = {o: p for p in command.params for o in p.opts + p.secondary_opts}
            for option, value in re.findall(
                r"(?<![\w/])(--?[A-Za-z][\w-]*)(?:[= ]([^\s\]\[|)`,.]+))?", rest
            ):
                param = params.get(option)
                if param is None and option not in ("-h", "--help"):
                    wrong.append(f"{path.name}: influcoder {verb} {option}: no such option")
                elif (
                    param is not None
                    and isinstance(param.type, click.Choice)
                    and value
                    and not value.isupper()
                    and value not in param.type.choices
                ):
                    wrong.append(
                        f"{path.name}: influcoder {verb} {option} {value}: not one "
                        f"of {', '.join(param.type.choices)}"
                    )
        for script, rest in re.findall(
            r"benchmarks/(\w+\.py)([^\n`]*)", re.sub(r"\\\n\s*", " ", text)
        ):
            source = ROOT / "benchmarks" / script
            if not source.exists():
                wrong.append(f"{path.name}: benchmarks/{script}: no such script")
                continue
            defined = set(
                re.findall(
                    r"""["'](--[\w-]+)["']""",
                    source.read_text() + (ROOT / "benchmarks" / "common.py").read_text(),
                )
            )
            for option in re.findall(r"(?<![\w/])(--[A-Za-z][\w-]*)", rest.split("#")[0]):
                if option not in defined | {"--help"}:
                    wrong.append(f"{path.name}: benchmarks/{script} {option}: no such option")
    # An option named alone in prose (`--views auto`) is one of some command or script.
    known = {o for c in cli.commands.values() for p in c.params for o in p.opts + p.secondary_opts}
    for script in (ROOT / "benchmarks").glob("*.py"):
        known |= set(re.findall(r"""["'](--[\w-]+)["']""", script.read_text()))
    for path in DOCUMENTS:
        for option in re.findall(r"`(--[A-Za-z][\w-]*\b)(?![-*])", path.read_text("utf-8")):
            if option not in known | OTHER_TOOLS_OPTIONS:
                wrong.append(f"{path.name}: {option}: no command or benchmark has it")
    assert not wrong, "\n".join(wrong)
