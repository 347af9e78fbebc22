"""Recorded runs as the stream of judged draft steps a run met, in the order it met them.

A row contributes its ``question_id``, ``sample_index`` and ``started_at``; each of its steps
its ``round``, ``author``, ``kind``, ``score`` and ``t`` (seconds from the sample's start to
the step's decision).  Rows written before ``t`` existed fall back to the summed ``seconds`` of
the sample's steps up to and including this one (it omits the time a call waited for engine
capacity, so the order of such rows is approximate).  The recorded ``decision`` and
``p_value`` are read when present, only to compare a replay with the run.

The stream is every draft step with a score, ordered by ``started_at + t``.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atts.config import RunConfig

ROW_FIELDS = ("question_id", "sample_index", "started_at", "steps")
STEP_FIELDS = ("round", "author", "kind", "score")
# The settings a decision depends on; everything else of a manifest (engines, cores) is moot.
DECISION_KEYS = (
    "alpha", "alpha_discard", "calibration", "calibration_m", "warmup", "calibration_file",
    "grow_bank", "strata", "pvalue", "adaptive_gamma", "adaptive_strata", "seed",
)


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


@dataclass(frozen=True)
class RecordedRun:
    """A ``samples.jsonl`` read for replay, with its manifest's decision settings."""

    path: Path
    settings: dict[str, Any]  # DECISION_KEYS found in manifest.json (empty without one)
    samples: tuple[tuple[str, int], ...]  # (question, sample) in admission order
    steps: tuple[StreamStep, ...]  # sorted by `at`


def samples_file(path: str | Path) -> Path:
    """A run folder's ``samples.jsonl``, or the file itself."""
    source = Path(path)
    if source.is_dir():
        source = source / "samples.jsonl"
    if not source.is_file():
        raise FileNotFoundError(f"{source}: no such samples file (pass a run folder or a "
                                "samples.jsonl)")
    return source


def read_run(path: str | Path) -> RecordedRun:
    """Read one recorded run; a row lacking a field raises ValueError naming file and line."""
    source = samples_file(path)
    lines = source.read_text(encoding="utf-8").split("\n")
    steps: list[tuple[float, int, StreamStep]] = []
    starts: dict[tuple[str, int], float] = {}
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as err:
            if number == len(lines):  # a torn last line (a killed run): the run folder cuts it
                continue
            raise ValueError(f"{source}:{number}: not a JSON row ({err.msg})") from err
        key, started_at, found = _row_steps(row, source, number)
        starts.setdefault(key, started_at)
        steps.extend((step.at, len(steps), step) for step in found)
    if not steps:
        raise ValueError(f"{source}: no scored draft steps to replay (a target_only or "
                         "draft_only run, or no finished sample)")
    steps.sort(key=lambda item: (item[0], item[1]))
    return RecordedRun(source, _settings(source), _admission_order(starts),
                       tuple(step for _, _, step in steps))


def replay_config(run: RecordedRun, overrides: dict[str, Any]) -> RunConfig:
    """The run's own decision settings, then ``overrides``, as a validated ``RunConfig``.

    An inherited setting that the overrides make invalid follows them: ``alpha_discard`` keeps
    its ratio to a new alpha, and strata are dropped for a mode without online banks."""
    inherited = dict(run.settings)
    if ("alpha" in overrides and "alpha_discard" not in overrides and "alpha" in inherited
            and inherited.get("alpha_discard", 0.0) is not None):  # null follows alpha itself
        ratio = float(inherited.get("alpha_discard", 0.0)) / float(inherited["alpha"])
        inherited["alpha_discard"] = ratio * float(overrides["alpha"])
    if overrides.get("calibration") not in (None, "marginal", "adaptive"):
        inherited.pop("strata", None)
    values = {**inherited, **overrides, "strategy": "atts"}
    if values.get("calibration") != "file":
        values.pop("calibration_file", None)
    return RunConfig.from_mapping(values)


def judged_in_order(rows: list[dict[str, Any]], source: Path) -> list[StreamStep]:
    """The judged draft steps of finished rows (``status`` ok), ordered as the run decided
    them: what a resumed adaptive run replays into its levels."""
    found: list[tuple[float, int, StreamStep]] = []
    for number, row in enumerate(rows, start=1):
        if row.get("status") != "ok":
            continue
        for step in _row_steps(row, source, number)[2]:
            if step.decision is not None:
                found.append((step.at, len(found), step))
    return [step for _, _, step in sorted(found, key=lambda item: (item[0], item[1]))]


def _row_steps(
    row: Any, source: Path, number: int
) -> tuple[tuple[str, int], float, list[StreamStep]]:
    where = f"{source}:{number}"
    if not isinstance(row, dict):
        raise ValueError(f"{where}: a row must be a JSON object")
    missing = [f for f in ROW_FIELDS if f not in row]
    if missing:
        raise ValueError(f"{where}: the row lacks {', '.join(missing)}")
    question_id, sample_index = str(row["question_id"]), int(row["sample_index"])
    started_at = float(row["started_at"])
    found: list[StreamStep] = []
    elapsed = 0.0
    first = True
    for index, step in enumerate(row["steps"] or []):
        lacking = [f for f in STEP_FIELDS if f not in step]
        if "t" not in step and "seconds" not in step:
            lacking.append("t (or seconds)")
        if lacking:
            raise ValueError(f"{where}: step {index} lacks {', '.join(lacking)}")
        elapsed += float(step.get("seconds") or 0.0)
        t = float(step["t"]) if step.get("t") is not None else elapsed
        is_draft = step["author"] == "draft" and step["kind"] == "step"
        if is_draft and step["score"] is not None:
            found.append(StreamStep(
                question_id, sample_index, int(step["round"]), float(step["score"]),
                started_at + t, first and int(step["round"]) == 0, step.get("decision"),
                step.get("p_value"),
            ))
        if is_draft:
            first = False
    return (question_id, sample_index), started_at, found


def _admission_order(starts: dict[tuple[str, int], float]) -> tuple[tuple[str, int], ...]:
    """Questions in the order their first sample started, samples by index: the order the
    runner admitted them (its pending list), which its warm-up draws from."""
    first_start: dict[str, float] = {}
    for (question_id, _), at in starts.items():
        first_start[question_id] = min(at, first_start.get(question_id, at))
    order = {q: i for i, q in enumerate(sorted(first_start, key=lambda q: first_start[q]))}
    return tuple(sorted(starts, key=lambda key: (order[key[0]], key[1])))


def _settings(source: Path) -> dict[str, Any]:
    manifest = source.parent / "manifest.json"
    if not manifest.is_file():
        return {}
    try:
        config = json.loads(manifest.read_text(encoding="utf-8")).get("config", {})
    except (json.JSONDecodeError, AttributeError) as err:
        raise ValueError(f"{manifest}: not a manifest of a run ({err})") from err
    return {key: config[key] for key in DECISION_KEYS if key in config}
