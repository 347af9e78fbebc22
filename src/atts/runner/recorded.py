"""What a run folder's finished rows say about calibration, read back for a resume or a replay.

A row contributes its ``question_id``, ``sample_index`` and ``started_at``; each of its steps
its ``round``, ``author``, ``kind``, ``score`` and ``t`` (seconds from the sample's start to
the step's decision).  Rows written before ``t`` existed fall back to the summed ``seconds`` of
the sample's steps up to and including this one (it omits the time a call waited for engine
capacity, so the order of such rows is approximate).  ``started_at + t`` orders a run's
decisions as it took them: the order a resumed adaptive run replays into its levels
(``recorded_decisions``), and the order ``atts replay`` judges recorded steps in.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atts.conformal import DecisionKey
from atts.pipeline.trace import REJECTED, steps_of

ROW_FIELDS = ("question_id", "sample_index", "started_at", "steps")
STEP_FIELDS = ("round", "author", "kind", "score")


@dataclass(frozen=True)
class StreamStep:
    """One judged draft step of a recorded run."""

    question_id: str
    sample_index: int
    round: int
    score: float
    at: float  # started_at + t: when the run decided it
    first: bool  # the sample's round-0 draft step (a pre-pass step when its key was drafted)
    decision: str | None = None  # as recorded, None when the row has none
    p_value: float | None = None
    order: int = 0  # the run's decision count (Step.order): orders decisions of one instant


def recorded_calibration(rows: Sequence[dict[str, Any]]) -> dict[str, dict[int, float]]:
    """Calibration scores of samples finished in an earlier session, to rebuild the banks."""
    recorded: dict[str, dict[int, float]] = defaultdict(dict)
    for row in rows:
        if row.get("status") != "ok":
            continue
        for step in steps_of(row):
            if step.calibration and step.score is not None:
                recorded[str(row["question_id"])][int(row["sample_index"])] = float(step.score)
    return dict(recorded)


def recorded_strata(rows: Sequence[dict[str, Any]]) -> dict[int, list[float]]:
    """Judged draft-step scores of finished samples per round, to rebuild round strata."""
    strata: dict[int, list[float]] = defaultdict(list)
    for row in rows:
        if row.get("status") != "ok":
            continue
        for step in steps_of(row):
            if step.judged and step.score is not None and not step.calibration:
                strata[step.round].append(float(step.score))
    return dict(strata)


def recorded_decisions(rows: Sequence[dict[str, Any]], source: Path
                       ) -> list[tuple[DecisionKey, bool]]:
    """(key, rejected) of every judged step of finished samples, in the order the earlier
    sessions decided them, to restore the adaptive levels."""
    return [(DecisionKey(s.question_id, s.sample_index, s.round), s.decision in REJECTED)
            for s in judged_in_order(list(rows), source)]


def judged_in_order(rows: list[dict[str, Any]], source: Path) -> list[StreamStep]:
    """The judged draft steps of finished rows (``status`` ok), ordered as the run decided
    them: what a resumed adaptive run replays into its levels."""
    found: list[tuple[float, int, StreamStep]] = []
    for number, row in enumerate(rows, start=1):
        if row.get("status") != "ok":
            continue
        for step in row_steps(row, source, number)[2]:
            if step.decision is not None:
                found.append((step.at, len(found), step))
    return [step for _, _, step in sorted(found, key=lambda item: (item[0], item[2].order,
                                                                     item[1]))]


def row_steps(
    row: Any, source: Path, number: int
) -> tuple[tuple[str, int], float, list[StreamStep]]:
    """One row's key, start and scored draft steps; a malformed row raises ValueError naming
    the file, the line and the field."""
    where = f"{source}:{number}"
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be a JSON object")
    missing = [f for f in ROW_FIELDS if f not in row]
    if missing:
        raise ValueError(f"{where}: the row lacks {', '.join(missing)}")
    question_id = str(row["question_id"])
    sample_index = int(_number(row["sample_index"], f"{where}: sample_index", whole=True))
    started_at = _number(row["started_at"], f"{where}: started_at")
    steps = row["steps"] if row["steps"] is not None else []
    if not isinstance(steps, list):
        raise ValueError(f"{where}: steps must be a list of step objects, got "
                         f"{type(steps).__name__}")
    found: list[StreamStep] = []
    elapsed = 0.0
    first = True
    for index, step in enumerate(steps):
        at = f"{where}: step {index}"
        if not isinstance(step, dict):
            raise ValueError(f"{at} must be a JSON object, got {type(step).__name__}")
        lacking = [f for f in STEP_FIELDS if f not in step]
        if "t" not in step and "seconds" not in step:
            lacking.append("t (or seconds)")
        if lacking:
            raise ValueError(f"{at} lacks {', '.join(lacking)}")
        elapsed += _number(step.get("seconds") or 0.0, f"{at}: seconds")
        t = _number(step["t"], f"{at}: t") if step.get("t") is not None else elapsed
        is_draft = step["author"] == "draft" and step["kind"] == "step"
        if is_draft and step["score"] is not None:
            round_index = int(_number(step["round"], f"{at}: round", whole=True))
            found.append(StreamStep(
                question_id, sample_index, round_index, _number(step["score"], f"{at}: score"),
                started_at + t, first and round_index == 0, step.get("decision"),
                step.get("p_value"), int(step.get("order") or 0),
            ))
        if is_draft:
            first = False
    return (question_id, sample_index), started_at, found


def _number(value: Any, what: str, *, whole: bool = False) -> float:
    """``value`` as a finite float (an integer when ``whole``), or a ValueError naming it."""
    kind = "an integer" if whole else "a finite number"
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    number = float(value)
    if not math.isfinite(number) or (whole and not number.is_integer()):
        raise ValueError(f"{what} must be {kind}, got {value!r}")
    return number
