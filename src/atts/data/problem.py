"""The problem record and the low-level readers every dataset loader shares.

``Problem`` is the one value a loader returns.  ``read_jsonl`` turns a JSON Lines file into
dicts, naming the file and line of anything malformed; the ``gold_*`` helpers turn a source's
answer field into the reference string stored in ``Problem.gold`` (and in samples.jsonl).
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import Any

from atts.errors import AttsError


class DatasetError(AttsError, ValueError):
    """A dataset cannot be loaded as asked: unknown name or id, malformed file, bad mapping."""


@dataclass(frozen=True)
class Problem:
    """One benchmark question.

    ``id`` is ``"<dataset>/<key>"``, unique and stable across releases of this package: the key
    is the source's own identifier where it has one (MATH ``unique_id``, MATH ``idx``) and the
    0-based line number of the source file otherwise.
    """

    id: str
    dataset: str
    question: str
    gold: str


def read_jsonl(
    lines: Iterator[str] | list[str], source: str
) -> Iterator[tuple[int, dict[str, Any]]]:
    """Yield ``(line_number, record)`` (1-based) for each non-blank line of a JSON Lines text.

    ``source`` names the file in error messages.  A line that is not a JSON object raises
    ``DatasetError`` naming the file and the line.
    """
    for lineno, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            record = json.loads(line)
        except json.JSONDecodeError as err:
            raise DatasetError(
                f"{source}, line {lineno}: not valid JSON ({err.msg} at column {err.colno}); "
                "fix or remove that line"
            ) from err
        if not isinstance(record, dict):
            raise DatasetError(
                f"{source}, line {lineno}: expected a JSON object, got {type(record).__name__}"
            )
        yield lineno, record


def require_field(record: Mapping[str, Any], field: str, source: str, lineno: int) -> Any:
    """``record[field]``, or a ``DatasetError`` naming the file, the line and the fields present."""
    if field not in record:
        present = ", ".join(sorted(record)) or "none"
        raise DatasetError(
            f"{source}, line {lineno}: missing field {field!r} (fields present: {present})"
        )
    if record[field] is None:
        raise DatasetError(f"{source}, line {lineno}: field {field!r} is null")
    return record[field]


_GSM8K_FINAL = re.compile(r"####\s*(.+?)\s*$", re.DOTALL)


def gold_gsm8k(solution: str) -> str:
    """The number after GSM8K's ``####`` marker, without thousands separators ("1,600": "1600")."""
    match = _GSM8K_FINAL.search(solution)
    if match is None:
        raise ValueError("no '#### <answer>' line in the GSM8K solution")
    return match.group(1).replace(",", "").strip()


def gold_scalar(value: Any) -> str:
    """A JSON answer field as a string; integral floats lose their ``.0`` (AMC stores 27.0)."""
    if isinstance(value, bool):
        return str(value)
    if isinstance(value, float) and value.is_integer():
        return str(int(value))
    return str(value).strip()


def gold_boxed(solution: str) -> str:
    """The content of the last ``\\boxed{}`` of a worked solution (the MATH convention)."""
    from atts.grading.boxed import extract_boxed

    answer = extract_boxed(solution)
    if answer is None:
        raise ValueError("no balanced \\boxed{...} in the solution")
    return answer
