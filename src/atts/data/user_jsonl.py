"""User datasets: any JSON Lines file, named ``jsonl:PATH``, with a field mapping.

The mapping comes from a query string on the name, from the ``fields`` argument of
``load_dataset``, or both (a key given twice must agree)::

    jsonl:problems.jsonl                                # fields "question"/"problem", "answer"
    jsonl:data/x.jsonl?question=prompt&answer=target&id=uid&name=mybench
    jsonl:train.jsonl?answer=solution&format=boxed      # gold = last \\boxed{} of "solution"

Keys: ``question`` (default: the first of "question", "problem" present), ``answer``
(default "answer"), ``id`` (default: the 0-based line number), ``name`` (the dataset name,
default the file's stem; it also picks the grading rules: gsm8k*, aime*, amc*, else MATH),
``format``: how to read the answer field, ``plain`` (default), ``gsm8k`` (the number after
``####``) or ``boxed`` (the last ``\\boxed{}``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl

from atts.data.problem import (
    DatasetError,
    Problem,
    gold_boxed,
    gold_gsm8k,
    gold_scalar,
    read_jsonl,
    require_field,
)
from atts.textfile import read_text

PREFIX = "jsonl:"
_FORMATS = {"plain": gold_scalar, "gsm8k": gold_gsm8k, "boxed": gold_boxed}
_KEYS = ("question", "answer", "id", "name", "format")
_QUESTION_DEFAULTS = ("question", "problem")


@dataclass(frozen=True)
class JsonlSpec:
    """A parsed ``jsonl:PATH?...`` name: the file and how to read its records."""

    path: Path
    question: str | None = None
    answer: str = "answer"
    id: str | None = None
    name: str | None = None
    format: str = "plain"

    @property
    def dataset(self) -> str:
        return self.name or self.path.stem


def parse_spec(name: str, fields: Mapping[str, str] | None = None) -> JsonlSpec:
    """Split ``jsonl:PATH?k=v&...`` and merge ``fields``; unknown or conflicting keys raise."""
    if not name.startswith(PREFIX):
        raise DatasetError(f"a user dataset is named {PREFIX}PATH, got {name!r}")
    path_text, _, query = name[len(PREFIX):].partition("?")
    if not path_text:
        raise DatasetError(f"{name!r}: give the file after '{PREFIX}', e.g. jsonl:problems.jsonl")
    try:
        mapping = dict(parse_qsl(query, keep_blank_values=True, strict_parsing=bool(query)))
    except ValueError as err:
        raise DatasetError(f"{name!r}: write the field mapping as ?key=value&key=value") from err
    for key, value in (fields or {}).items():
        if key in mapping and mapping[key] != value:
            raise DatasetError(
                f"field {key!r} is {mapping[key]!r} in the name but {value!r} in fields; "
                "give it once"
            )
        mapping[key] = value
    unknown = sorted(set(mapping) - set(_KEYS))
    if unknown:
        raise DatasetError(f"unknown field key(s) {unknown} for {name!r}; valid keys: {_KEYS}")
    fmt = mapping.get("format", "plain")
    if fmt not in _FORMATS:
        raise DatasetError(f"format={fmt!r} is not one of {sorted(_FORMATS)}")
    return JsonlSpec(
        path=Path(path_text).expanduser(),
        question=mapping.get("question"),
        answer=mapping.get("answer", "answer"),
        id=mapping.get("id"),
        name=mapping.get("name"),
        format=fmt,
    )


def load_jsonl(spec: JsonlSpec) -> list[Problem]:
    """Read every record of the file named by ``spec`` into a ``Problem``."""
    source = str(spec.path)
    try:
        text = read_text(spec.path)
    except OSError as err:
        raise DatasetError(f"cannot read dataset file {source}: {err.strerror or err}") from err
    dataset = spec.dataset
    to_gold = _FORMATS[spec.format]
    seen: dict[str, int] = {}
    out = []
    # Lines end at "\n" only: a question may hold U+2028, which splitlines would cut.
    for index, (lineno, record) in enumerate(read_jsonl(text.split("\n"), source)):
        question_field = spec.question or next(
            (f for f in _QUESTION_DEFAULTS if f in record), _QUESTION_DEFAULTS[0]
        )
        question = require_field(record, question_field, source, lineno)
        if not isinstance(question, str) or not question.strip():
            # An object or a list would reach the model as its Python repr.
            raise DatasetError(
                f"{source}, line {lineno}: field {question_field!r} must be a non-empty string, "
                f"got {type(question).__name__}; point ?question= at the field holding the text"
            )
        raw_answer = _answer(record, spec, source, lineno)
        try:
            gold = to_gold(raw_answer)
        except ValueError as err:
            raise DatasetError(f"{source}, line {lineno}: {err}") from err
        key = _key(record, spec.id, source, lineno) if spec.id else str(index)
        if key in seen:
            raise DatasetError(
                f"{source}, line {lineno}: id {key!r} already used on line {seen[key]}; "
                "ids must be unique"
            )
        seen[key] = lineno
        out.append(Problem(id=f"{dataset}/{key}", dataset=dataset, question=str(question),
                           gold=gold))
    return out


def _answer(record: Mapping[str, Any], spec: JsonlSpec, source: str, lineno: int) -> Any:
    """The answer field: a non-empty string, or (format plain) a finite number; anything else
    (a list, an object, true) would be graded against its Python repr, and an empty one
    would mark every answer wrong."""
    value = require_field(record, spec.answer, source, lineno)
    number = (spec.format == "plain" and isinstance(value, (int, float))
              and not isinstance(value, bool) and math.isfinite(value))
    if not number and not (isinstance(value, str) and value.strip()):
        kind = "a non-empty string or a number" if spec.format == "plain" else "a string"
        raise DatasetError(
            f"{source}, line {lineno}: field {spec.answer!r} must be {kind}, got "
            f"{json.dumps(value)[:40]}; point ?answer= at the field holding the answer"
        )
    return value


def _key(record: Mapping[str, Any], field: str, source: str, lineno: int) -> str:
    """The id field as a problem key: a non-empty string or an integer."""
    value = require_field(record, field, source, lineno)
    if isinstance(value, bool) or not isinstance(value, (str, int)) or not str(value).strip():
        raise DatasetError(f"{source}, line {lineno}: field {field!r} (the id) must be a "
                           f"non-empty string or an integer, got {json.dumps(value)[:40]}")
    return str(value)
