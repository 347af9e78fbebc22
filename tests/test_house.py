"""The house rules of issue 16 that a change could quietly break, checked on the source tree:
no source file over 400 lines, every import arrow between the package's layers pointing down
(``models`` never imports ``engines``; ``conformal`` imports neither the pipeline nor the
runner), and no tracked document citing one the repository does not hold."""

from __future__ import annotations

import ast
import re
import subprocess
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SOURCE = ROOT / "src" / "atts"
# package -> packages it must never import (directly, at any depth of the module)
FORBIDDEN = {
    "models": ("atts.engines", "atts.pipeline", "atts.runner", "atts.serve"),
    "conformal": ("atts.pipeline", "atts.runner", "atts.serve", "atts.engines"),
    "engines": ("atts.pipeline", "atts.runner", "atts.serve"),
    "pipeline": ("atts.runner", "atts.serve"),
}


def _imports(path: Path) -> set[str]:
    names = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module)
    return names


def test_no_source_file_is_over_400_lines():
    long = {str(p.relative_to(ROOT)): n for p in SOURCE.rglob("*.py")
            if (n := len(p.read_text().splitlines())) > 400}
    assert long == {}


@pytest.mark.parametrize("package", sorted(FORBIDDEN))
def test_imports_point_down(package):
    wrong = sorted(
        f"{p.relative_to(ROOT)} imports {name}"
        for p in (SOURCE / package).rglob("*.py") for name in _imports(p)
        if name.startswith(FORBIDDEN[package])
    )
    assert wrong == []


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
