"""Recorded runs as the stream of judged draft steps a run met, in the order it met them.

A row contributes its ``question_id``, ``sample_index`` and ``started_at``; each of its steps
its ``round``, ``author``, ``kind``, ``score`` and ``t`` (seconds from the sample's start to
the step's decision).  Rows written before ``t`` existed fall back to the summed ``seconds`` of
the sample's steps up to and including this one (it omits the time a call waited for engine
capacity, so the order of such rows is approximate).  The recorded ``decision`` and
``p_value`` are read when present, only to compare a replay with the run.

The stream is every draft step with a score, ordered by ``started_at + t``, and by the run's
own decision count (``order``) where two decisions share an instant.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atts.config import RunConfig
from atts.runner.recorded import REPLAY_ROW, StreamStep, row_steps
from atts.runner.run_folder import RunFolder
from atts.schema import read_jsonl

# The settings a decision depends on; everything else of a manifest (engines, cores) is moot.
DECISION_KEYS = (
    "alpha", "alpha_discard", "calibration", "calibration_m", "warmup", "calibration_file",
    "grow_bank", "strata", "pvalue", "adaptive_gamma", "adaptive_strata", "seed",
)


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
    """Read one recorded run; a malformed row raises ``RecordError`` naming the file, the
    line and the field (``REPLAY_ROW``); a torn last line (a killed run) is left out."""
    source = samples_file(path)
    steps: list[tuple[float, int, StreamStep]] = []
    starts: dict[tuple[str, int], float] = {}
    for number, row in read_jsonl(source, REPLAY_ROW):
        key, started_at, found = row_steps(row, source, number)
        starts.setdefault(key, started_at)
        steps.extend((step.at, len(steps), step) for step in found)
    if not steps:
        raise ValueError(f"{source}: no scored draft steps to replay (a target_only or "
                         "draft_only run, or no finished sample)")
    steps.sort(key=lambda item: (item[0], item[2].order, item[1]))
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


def _admission_order(starts: dict[tuple[str, int], float]) -> tuple[tuple[str, int], ...]:
    """Questions in the order their first sample started, samples by index: the order the
    runner admitted them (its pending list), which its warm-up draws from."""
    first_start: dict[str, float] = {}
    for (question_id, _), at in starts.items():
        first_start[question_id] = min(at, first_start.get(question_id, at))
    order = {q: i for i, q in enumerate(sorted(first_start, key=lambda q: first_start[q]))}
    return tuple(sorted(starts, key=lambda key: (order[key[0]], key[1])))


def _settings(source: Path) -> dict[str, Any]:
    """The decision settings of the manifest beside ``source`` (checked as every reader of a
    run folder checks it), or none without one."""
    folder = RunFolder(source.parent)
    if not folder.manifest_path.is_file():
        return {}
    config = folder.read_manifest()["config"]
    return {key: config[key] for key in DECISION_KEYS if key in config}
