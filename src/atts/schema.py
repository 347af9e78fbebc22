"""One parse-and-validate step for every file atts reads back.

A file kind (a ``samples.jsonl`` row, a ``questions.jsonl`` row, a manifest, a calibration
bank) declares its shape once, beside the code that writes it, as a ``Record`` of typed
fields; its reader checks each record against it and gets either the record, typed as
declared, or ``RecordError``: one line naming the file, the line and the field, e.g.

    run/samples.jsonl:7: step 2: score must be a finite number, got "abc"
    run/manifest.json: config.samples must be an integer, got "4"

Types are JSON's, strictly: an integer is not a string of digits or ``true``, a number is
finite (Python's JSON reader accepts ``NaN`` and ``Infinity``), ``null`` only where a field
allows it.  A record may hold fields its shape does not name (a file written by a later
version); those are not checked.  Which fields must be present is the reader's choice
(``Record.requiring``): ``atts replay`` needs fewer fields of a row than a resume does.

``read_jsonl`` reads an append-only JSON Lines file: lines end at ``\\n`` only (a model's text
may hold U+2028 or U+0085, which ``str.splitlines`` would cut), and a torn last line (no
newline, the start of an object: a kill mid-write) is left out, as the run folder cuts it on
reopening (``torn``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Protocol

from atts.errors import AttsError
from atts.textfile import decode_text

__all__ = ["Choice", "Flag", "Integer", "ListOf", "MapOf", "Nullable", "Number", "Record",
           "RecordError", "Spec", "Text", "Unchecked", "check", "problem", "read_jsonl", "torn"]

Where = tuple[str | int, ...]  # field names, list indices, "step 3" (a named list item)


class _Item(str):
    """A named list item in a field's path ("step 3")."""


class RecordError(AttsError, ValueError):
    """A record that does not have the shape of its file kind; the message is one line."""


class _Bad(Exception):
    """The first problem found: where, what the value must be (or which fields it lacks)."""

    def __init__(self, at: Where, rule: str, value: Any = None, *, lacks: bool = False
                 ) -> None:
        super().__init__(rule)
        self.at, self.rule, self.value, self.lacks = at, rule, value, lacks


class Spec(Protocol):
    def fits(self, value: Any) -> bool:
        """Whether ``value`` has this shape, fast: the common case costs no more."""

    def check(self, value: Any, at: Where) -> None:
        """Raise ``_Bad`` at the first problem of ``value`` (the slow path, for the words)."""


@dataclass(frozen=True)
class Integer:
    """A JSON integer (not a bool, not a float), at least ``least`` when given."""

    least: int | None = 0

    def fits(self, value: Any) -> bool:
        return type(value) is int and (self.least is None or value >= self.least)

    def check(self, value: Any, at: Where) -> None:
        if isinstance(value, bool) or not isinstance(value, int):
            raise _Bad(at, "must be an integer", value)
        if self.least is not None and value < self.least:
            raise _Bad(at, f"must be an integer >= {self.least}", value)


@dataclass(frozen=True)
class Number:
    """A finite JSON number, in [low, high] where given."""

    low: float | None = None
    high: float | None = None

    def fits(self, value: Any) -> bool:
        return ((type(value) is int or (type(value) is float and math.isfinite(value)))
                and (self.low is None or value >= self.low)
                and (self.high is None or value <= self.high))

    def check(self, value: Any, at: Where) -> None:
        if (isinstance(value, bool) or not isinstance(value, (int, float))
                or not math.isfinite(value)):
            raise _Bad(at, "must be a finite number", value)
        if (self.low is not None and value < self.low) or (self.high is not None
                                                            and value > self.high):
            low = "-inf" if self.low is None else f"{self.low:g}"
            high = "inf" if self.high is None else f"{self.high:g}"
            raise _Bad(at, f"must be a number in [{low}, {high}]", value)


@dataclass(frozen=True)
class Text:
    def fits(self, value: Any) -> bool:
        return type(value) is str

    def check(self, value: Any, at: Where) -> None:
        if not isinstance(value, str):
            raise _Bad(at, "must be a string", value)


@dataclass(frozen=True)
class Flag:
    def fits(self, value: Any) -> bool:
        return type(value) is bool

    def check(self, value: Any, at: Where) -> None:
        if not isinstance(value, bool):
            raise _Bad(at, "must be true or false", value)


@dataclass(frozen=True)
class Choice:
    """One of a fixed set of strings."""

    values: tuple[str, ...]

    def fits(self, value: Any) -> bool:
        return type(value) is str and value in self.values

    def check(self, value: Any, at: Where) -> None:
        if not isinstance(value, str) or value not in self.values:
            raise _Bad(at, f"must be one of {', '.join(map(repr, self.values))}", value)


@dataclass(frozen=True)
class Unchecked:
    """Any JSON value (a field no reader interprets)."""

    def fits(self, value: Any) -> bool:
        return True

    def check(self, value: Any, at: Where) -> None:
        return None


@dataclass(frozen=True)
class Nullable:
    spec: Spec

    def fits(self, value: Any) -> bool:
        return value is None or self.spec.fits(value)

    def check(self, value: Any, at: Where) -> None:
        if value is not None:
            self.spec.check(value, at)


@dataclass(frozen=True)
class ListOf:
    """A JSON array; ``item`` names its elements in messages ("step 3" instead of
    "steps[3]")."""

    spec: Spec
    item: str | None = None

    def fits(self, value: Any) -> bool:
        return type(value) is list and all(map(self.spec.fits, value))

    def check(self, value: Any, at: Where) -> None:
        if not isinstance(value, list):
            raise _Bad(at, "must be a list", value)
        for index, element in enumerate(value):
            where = ((*at[:-1], _Item(f"{self.item} {index}")) if self.item and at
                     else (*at, index))
            self.spec.check(element, where)


@dataclass(frozen=True)
class MapOf:
    """A JSON object of any keys, each value of one spec."""

    spec: Spec

    def fits(self, value: Any) -> bool:
        return type(value) is dict and all(map(self.spec.fits, value.values()))

    def check(self, value: Any, at: Where) -> None:
        if not isinstance(value, dict):
            raise _Bad(at, "must be a JSON object", value)
        for key, element in value.items():
            self.spec.check(element, (*at, str(key)))


@dataclass(frozen=True)
class Record:
    """A JSON object of named fields: ``required`` must be present, every named field that is
    present must fit its spec, other fields are left alone.  ``noun`` names the record in
    messages about the whole of it (a row, a manifest)."""

    fields: Mapping[str, Spec]
    required: tuple[str, ...] = ()
    noun: str = "record"

    def requiring(self, *names: str, **nested: Record) -> Record:
        """This shape with ``names`` required instead, and list fields' item records
        replaced (``steps=STEP.requiring(...)``)."""
        unknown = [n for n in (*names, *nested) if n not in self.fields]
        if unknown:
            raise KeyError(f"no such field: {unknown}")
        fields = dict(self.fields)
        for name, record in nested.items():
            spec = fields[name]
            fields[name] = _with_record(spec, record)
        return replace(self, fields=fields, required=names)

    def fits(self, value: Any) -> bool:
        if type(value) is not dict or not all(name in value for name in self.required):
            return False
        for name, element in value.items():
            spec = self.fields.get(name)
            if spec is not None and not spec.fits(element):
                return False
        return True

    def check(self, value: Any, at: Where) -> None:
        if not isinstance(value, dict):
            raise _Bad(at, "must be a JSON object", value)
        missing = [name for name in self.required if name not in value]
        if missing:
            raise _Bad(at, ", ".join(missing), lacks=True)
        for name, spec in self.fields.items():
            if name in value:
                spec.check(value[name], (*at, name))


def _with_record(spec: Spec, record: Record) -> Spec:
    if isinstance(spec, Nullable):
        return Nullable(_with_record(spec.spec, record))
    if isinstance(spec, ListOf):
        return ListOf(record, spec.item)
    if isinstance(spec, Record):
        return record
    raise TypeError(f"{spec!r} holds no record")


def check(record: Record, value: Any, where: str) -> dict[str, Any]:
    """``value`` if it has the shape ``record``, else ``RecordError``: one line that starts
    with ``where`` (the file, and its line for a JSON Lines file)."""
    found = problem(record, value)
    if found is not None:
        raise RecordError(f"{where}: {found}")
    return value  # a dict: Record.check saw to it


def problem(record: Record, value: Any) -> str | None:
    """The first way ``value`` misses the shape ``record``, in words ("step 2: score must be
    a finite number, got null"), or None when it has it."""
    if record.fits(value):
        return None
    try:
        record.check(value, ())
    except _Bad as bad:
        return _describe(bad, record.noun)
    return None


def _describe(bad: _Bad, noun: str) -> str:
    name = _name(bad.at)
    if bad.lacks:
        return f"{name or 'the ' + noun} lacks {bad.rule}"
    if not name:
        return f"a {noun} {bad.rule}, got {_shown(bad.value)}"
    return f"{name} {bad.rule}, got {_shown(bad.value)}"


def _name(at: Where) -> str:
    """("steps" -> "step 2", "score") as "step 2: score"; ("config", "alpha") as
    "config.alpha"; ("scores", 3) as "scores[3]"."""
    text = ""
    for index, part in enumerate(at):
        if isinstance(part, int):
            text += f"[{part}]"
        elif not text:
            text = part
        else:
            text += (": " if isinstance(at[index - 1], _Item) else ".") + part
    return text


def _shown(value: Any) -> str:
    """A value as the file holds it (JSON), cut to a readable length."""
    if isinstance(value, dict):
        return "an object"
    try:
        text = json.dumps(value, ensure_ascii=False)
    except (TypeError, ValueError):
        text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


def torn(tail: bytes) -> bool:
    """Whether the bytes after a JSON Lines file's last newline can be a row that a kill cut
    short (the start of a JSON object, or nothing) rather than something else (a binary file,
    an edit)."""
    return not tail.strip() or tail.lstrip().startswith(b"{")


def read_jsonl(path: Path, record: Record) -> Iterator[tuple[int, dict[str, Any]]]:
    """(line number, record) of every non-blank line of a JSON Lines file, each checked
    against ``record``.  A torn last line (no newline after it, the start of an object that
    is not yet JSON) is left out; any other malformed line is a ``RecordError``."""
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    tail = data[end:] if torn(data[end:]) else b""
    lines = decode_text(data[:len(data) - len(tail)], path).split("\n")
    if tail:
        try:
            lines[-1] = tail.decode("utf-8")
            json.loads(lines[-1])
        except ValueError:  # not JSON yet (or cut inside a character): the torn write
            lines.pop()
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            value = json.loads(line)
        except json.JSONDecodeError as err:
            raise RecordError(f"{path}:{number}: not valid JSON ({err.msg} at column "
                              f"{err.colno}); fix or delete that line") from None
        yield number, check(record, value, f"{path}:{number}")
