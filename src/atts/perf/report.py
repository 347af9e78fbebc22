"""Markdown for performance results: tables, and generated sections inside a hand-written file.

A generated section sits between ``<!-- NAME:begin -->`` and ``<!-- NAME:end -->``; writing it
again replaces only what lies between the markers, so BENCHMARKS.md can mix prose with tables
that the benchmark scripts and ``atts simulate`` refresh.
"""

from __future__ import annotations

import os
import re
from collections.abc import Sequence
from pathlib import Path


def table(header: Sequence[str], rows: Sequence[Sequence[object]]) -> str:
    """A GitHub markdown table; floats are written as given by the caller (pre-format them)."""
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(str(cell) for cell in row) + " |" for row in rows]
    return "\n".join(lines) + "\n"


def markers(name: str) -> tuple[str, str]:
    if not re.fullmatch(r"\w+", name):
        raise ValueError(f"section name must be a plain word (letters, digits, _), got {name!r}")
    return f"<!-- {name}:begin -->", f"<!-- {name}:end -->"


def replace_section(path: str | Path, name: str, body: str) -> None:
    """Put ``body`` between the section's markers in ``path`` (appended at the end, markers
    and all, when the file or the section does not exist yet)."""
    file = Path(path)
    begin, end = markers(name)
    text = file.read_text() if file.exists() else ""
    block = f"{begin}\n{body.rstrip()}\n{end}"
    start, stop = text.find(begin), text.find(end)
    if start >= 0 and stop > start:
        text = text[:start] + block + text[stop + len(end):]
    else:
        text = text.rstrip() + ("\n\n" if text.strip() else "") + block + "\n"
    temp = file.with_name(f".{file.name}.tmp{os.getpid()}")
    temp.write_text(text)
    os.replace(temp, file)
