"""``load_dataset``: one entry point for built-in and user datasets, with selection.

Selection order: explicit ``ids`` first (in the order given), then ``offset``, then ``limit``.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping

from atts.data.builtin import load_builtin
from atts.data.problem import DatasetError, Problem
from atts.data.user_jsonl import PREFIX, load_jsonl, parse_spec


def load_dataset(
    name: str,
    *,
    limit: int | None = None,
    offset: int = 0,
    ids: Iterable[str] | None = None,
    fields: Mapping[str, str] | None = None,
) -> list[Problem]:
    """Load the problems of a dataset.

    ``name``: a built-in name (see ``list_datasets()``) or ``jsonl:PATH[?key=value&...]``
    for a user file (see ``atts.data.user_jsonl``; ``fields`` gives the same mapping as a dict).
    ``ids``: problem ids to keep, in that order; each may be the full id (``"gsm8k/17"``) or the
    part after the dataset name (``"17"``).  An unknown id raises ``DatasetError`` listing a few
    valid ones.  ``offset`` skips that many problems, ``limit`` keeps at most that many.
    """
    if name.startswith(PREFIX):
        problems = load_jsonl(parse_spec(name, fields))
    else:
        if fields:
            raise DatasetError(f"fields apply to {PREFIX}PATH user files, not to {name!r}")
        problems = load_builtin(name)
    return select_problems(problems, name, limit=limit, offset=offset, ids=ids)


def select_problems(
    problems: list[Problem],
    name: str,
    *,
    limit: int | None = None,
    offset: int = 0,
    ids: Iterable[str] | None = None,
) -> list[Problem]:
    """The selection of ``load_dataset`` applied to problems already loaded (a caller that
    needs both the whole set and a selection reads the file once).  ``name``: the dataset's
    name, for messages."""
    if offset < 0:
        raise DatasetError(f"offset must be >= 0, got {offset}")
    if limit is not None and limit < 0:
        raise DatasetError(f"limit must be >= 0 (or None for all), got {limit}")
    if ids is not None:
        problems = _select_ids(problems, list(ids), name)
    if offset and offset >= len(problems):
        raise DatasetError(
            f"offset {offset} is past the end of dataset {name!r} ({len(problems)} problems); "
            f"use an offset below {len(problems)}"
        )
    problems = problems[offset:]
    return problems if limit is None else problems[:limit]


def _select_ids(problems: list[Problem], wanted: list[str], name: str) -> list[Problem]:
    by_id: dict[str, Problem] = {}
    for p in problems:
        by_id[p.id] = p
        by_id[p.id[len(p.dataset) + 1:]] = p
    missing = [i for i in wanted if i not in by_id]
    if missing:
        examples = ", ".join(p.id for p in problems[:3])
        raise DatasetError(
            f"{len(missing)} unknown id(s) in dataset {name!r}: {missing[:5]}; "
            f"valid ids look like {examples} ({len(problems)} in all)"
        )
    selected = [by_id[i] for i in wanted]
    if len({p.id for p in selected}) != len(selected):
        raise DatasetError(f"ids name the same problem more than once: {wanted}")
    return selected
