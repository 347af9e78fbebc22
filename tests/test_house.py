"""The house rules that a change could quietly break, checked on the source tree: no source file
over 400 lines, every import arrow between the package's layers pointing down (each package
sits on one layer of ``LAYERS`` and imports only from layers below it or from itself), no
import circle between modules (imports under ``TYPE_CHECKING`` included), one definition of
the decision (``def decide``), and no tracked document citing one the repository does not
hold."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "atts"
# The layers of src/atts, lowest first: a module imports from its own package or from a lower
# layer, never from a package beside it or above it.  ``atts`` is the package's __init__.
LAYERS = (
    ("atts", "errors", "seeds"),
    ("textfile",),
    ("schema",),
    ("conformal", "models", "grading"),
    ("data", "engines"),
    ("config",),
    ("pipeline", "recipes"),
    ("runner",),
    ("report",),
    ("replay",),
    ("perf", "serve"),
    ("cli",),
    ("__main__",),
)
LAYER = {package: depth for depth, packages in enumerate(LAYERS) for package in packages}


def _imports(path: Path) -> set[str]:
    """Every ``atts`` module ``path`` imports, at any depth (functions and ``TYPE_CHECKING``
    blocks included), ``from atts.x import y`` counted as ``atts.x`` and ``atts.x.y``."""
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
            names.update(f"{node.module}.{alias.name}" for alias in node.names)
    return {n for n in names if n == "atts" or n.startswith("atts.")}


def _module(path: Path) -> str:
    parts = path.relative_to(SOURCE.parent).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _package(module: str) -> str:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 else "atts"


def _graph() -> dict[str, set[str]]:
    """module -> the modules of src/atts it imports (names that are not modules, such as
    ``atts.conformal.Decider``, resolve to the module that defines them)."""
    modules = {_module(p): p for p in SOURCE.rglob("*.py")}
    graph = {}
    for module, path in modules.items():
        found = set()
        for name in _imports(path):
            while name not in modules and "." in name:
                name = name.rsplit(".", 1)[0]
            if name in modules and name != module:
                found.add(name)
        graph[module] = found
    return graph


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


def test_every_package_has_a_layer():
    packages = {_package(m) for m in _graph()}
    assert packages - set(LAYER) == set()


def test_imports_point_down():
    wrong = sorted(
        f"{module} imports {name}"
        for module, names in _graph().items() for name in names
        if _package(name) != _package(module)
        and LAYER[_package(name)] >= LAYER[_package(module)]
    )
    assert wrong == []


def test_no_import_circle_between_modules():
    """A package __init__ that re-exports its modules is the package, not a circle: an edge
    from a package's own __init__ into its modules is left out."""
    graph = {m: {n for n in names if not n.startswith(m + ".")}
             for m, names in _graph().items()}
    circles = []
    state: dict[str, int] = {}  # 1: on the current path, 2: done

    def visit(module: str, path: list[str]) -> None:
        state[module] = 1
        for name in sorted(graph[module]):
            if state.get(name) == 1:
                circles.append(" -> ".join([*path[path.index(name):], name]))
            elif name not in state:
                visit(name, [*path, name])
        state[module] = 2

    for module in sorted(graph):
        if module not in state:
            visit(module, [module])
    assert circles == []


def test_one_definition_of_the_decision():
    """Every decision of a run, a replay, the server, the simulator and escalation is
    ``Decider.decide``; nothing else defines a ``decide``."""
    found = sorted(
        f"{p.relative_to(ROOT)}:{node.lineno}"
        for p in SOURCE.rglob("*.py") for node in ast.walk(ast.parse(p.read_text()))
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)) and node.name == "decide"
    )
    assert found == ["src/atts/conformal/decider.py:" + found[0].rsplit(":", 1)[1]]
    assert len(found) == 1


def test_no_tracked_file_cites_a_document_the_repository_lacks():
    tracked = subprocess.run(["git", "ls-files"], cwd=ROOT, capture_output=True, text=True,
                             check=True).stdout.split()
    if not tracked:
        pytest.skip("not a git checkout")
    cited = re.compile(r"\b([A-Z][A-Z_]+\.md)\b")
    held = {Path(t).name for t in tracked}
    missing = sorted(
        f"{t} cites {name}"
        for t in tracked if t.endswith((".py", ".md", ".yaml", ".toml")) and (ROOT / t).is_file()
        for name in set(cited.findall((ROOT / t).read_text(errors="ignore")))
        if name not in held
    )
    assert missing == []
