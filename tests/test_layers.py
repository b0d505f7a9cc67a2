"""The layout holds: every module imports only from its own layer or below, and no modules
import each other in a circle (also through imports inside functions, which hide a circle
from Python but not from a reader)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest

SRC = Path(__file__).resolve().parents[1] / "src" / "influcoder"

#: Bottom to top. A module may import from its own package and from any layer below; packages
#: that share a layer may not import each other.
LAYERS = [
    ("errors", "metrics", "similarity"),
    ("engines",),
    ("io",),
    ("groundtruth",),
    ("encoders",),
    ("distillation", "attribution"),
    ("evaluation",),
    ("validation",),
    ("workflows",),
    ("api",),
    ("serve",),  # a front end over the API
    ("cli",),  # the other front end; `influcoder serve` starts the server
]


def module_name(path: Path) -> str:
    parts = path.relative_to(SRC.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def imports(path: Path) -> set[str]:
    return imports_of(path, module_name(path))


def imports_of(path: Path, module: str) -> set[str]:
    """Every influcoder module ``path`` (the module ``module``) imports, at any depth of its
    code."""
    package = module if path.name == "__init__.py" else module.rpartition(".")[0]
    found = set()
    for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
        if isinstance(node, ast.ImportFrom):
            if node.level:
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                name = ".".join(base + ([node.module] if node.module else []))
            else:
                name = node.module or ""
            names = [name] + [f"{name}.{a.name}" for a in node.names]
            found.update(n for n in names if n.startswith("influcoder") and resolves(n))
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("influcoder"))
    return found - {module}


def resolves(name: str) -> bool:
    rel = Path(*name.split(".")[1:])
    return name == "influcoder" or (SRC / rel).is_dir() or (SRC / rel).with_suffix(".py").is_file()


def package_of(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else ""


def layer_of(module: str) -> int | None:
    top = package_of(module)
    for i, packages in enumerate(LAYERS):
        if top in packages:
            return i
    return None


def graph() -> dict[str, set[str]]:
    return {module_name(p): imports(p) for p in SRC.rglob("*.py")}


def test_every_package_has_a_layer():
    tops = {package_of(m) for m in graph()} - {""}
    assert tops <= {p for layer in LAYERS for p in layer}, tops


def violations(modules: dict[str, set[str]]) -> list[str]:
    wrong = []
    for module, targets in modules.items():
        here = layer_of(module)
        for target in targets:
            there = layer_of(target)
            if here is None or there is None:
                continue
            if there > here or (there == here and package_of(target) != package_of(module)):
                wrong.append(f"{module} -> {target}")
    return sorted(wrong)


def test_no_module_imports_from_a_layer_above_or_beside_it():
    wrong = violations(graph())
    assert not wrong, "imports against the layer order:\n" + "\n".join(wrong)


def test_no_import_circle():
    edges = {m: {t for t in ts if t != "influcoder"} for m, ts in graph().items()}
    # a package's __init__ importing its own modules lazily is not a circle of code
    edges = {
        m: {t for t in ts if not m.startswith(t + ".") and not t.startswith(m + ".")}
        for m, ts in edges.items()
    }
    state: dict[str, int] = {}
    path: list[str] = []

    def visit(m):
        state[m] = 1
        path.append(m)
        for t in sorted(edges.get(m, ())):
            if state.get(t) == 1:
                pytest.fail("import circle: " + " -> ".join(path[path.index(t) :] + [t]))
            if t in edges and not state.get(t):
                visit(t)
        path.pop()
        state[m] = 2

    for m in sorted(edges):
        if not state.get(m):
            visit(m)


def test_the_layer_check_sees_wrong_imports(tmp_path):
    """The checks themselves can fail: an import inside a function is found, and an upward and
    a sideways import are reported."""
    probe = tmp_path / "probe.py"
    probe.write_text("def f():\n    from influcoder.cli import main\n", encoding="utf-8")
    assert "influcoder.cli" in imports_of(probe, "influcoder.io.probe")
    assert violations(
        {
            "influcoder.io.probe": {"influcoder.cli"},
            "influcoder.attribution.x": {"influcoder.distillation.y"},
            "influcoder.evaluation.z": {"influcoder.metrics"},
        }
    ) == [
        "influcoder.attribution.x -> influcoder.distillation.y",
        "influcoder.io.probe -> influcoder.cli",
    ]
