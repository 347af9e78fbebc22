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

from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atts.conformal import DecisionKey
from atts.pipeline.trace import REJECTED, SAMPLE_ROW, STEP, steps_of
from atts.schema import RecordError, check

# What a replay reads of a row (and a resumed adaptive run of its finished rows): the key, the
# start and, per step, what orders and judges it; the other fields are checked when present.
REPLAY_ROW = SAMPLE_ROW.requiring("question_id", "sample_index", "started_at", "steps",
                                  steps=STEP.requiring("round", "author", "kind", "score"))


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
    """One row's key, start and scored draft steps; a malformed row raises ``RecordError``
    naming the file, the line and the field."""
    where = f"{source}:{number}"
    check(REPLAY_ROW, row, where)  # typed from here on
    question_id, sample_index = row["question_id"], row["sample_index"]
    started_at = float(row["started_at"])
    found: list[StreamStep] = []
    elapsed = 0.0
    first = True
    for index, step in enumerate(row["steps"]):
        if "t" not in step and "seconds" not in step:
            raise RecordError(f"{where}: step {index} lacks t (or seconds)")
        elapsed += float(step.get("seconds") or 0.0)
        t = float(step["t"]) if step.get("t") is not None else elapsed
        is_draft = step["author"] == "draft" and step["kind"] == "step"
        if is_draft and step["score"] is not None:
            found.append(StreamStep(
                question_id, sample_index, step["round"], float(step["score"]), started_at + t,
                first and step["round"] == 0, step.get("decision"), step.get("p_value"),
                int(step.get("order") or 0),
            ))
        if is_draft:
            first = False
    return (question_id, sample_index), started_at, found
