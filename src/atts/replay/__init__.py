"""atts.replay: re-run the decision layer over recorded runs, offline, under any calibration.

- ``stream``: a ``samples.jsonl`` as the stream of judged draft steps, in the run's order;
- ``replay``: the run's ``Decider`` over that stream (``replay_run``), pre-passes included;
- ``escalation``: the cascade's question-level decisions over two recorded runs (exact);
- ``certify``: the cheapest escalate_alpha whose accuracy loss is certified (learn-then-test);
- ``table``: realised rejection rates overall, per round and per question (``summarize``).

``replay_paths`` replays each run on its own banks and pools the decisions for the table.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atts.replay.replay import Replayed, agreement, replay_run
from atts.replay.stream import RecordedRun, StreamStep, read_run, replay_config
from atts.replay.table import Rate, ReplaySummary, fixed_band, format_text, summarize

__all__ = [
    "Rate",
    "RecordedRun",
    "ReplaySummary",
    "Replayed",
    "StreamStep",
    "agreement",
    "format_text",
    "read_run",
    "replay_config",
    "replay_paths",
    "replay_run",
    "summarize",
]


def replay_paths(
    paths: Sequence[str | Path], overrides: dict[str, Any]
) -> tuple[ReplaySummary, list[Replayed]]:
    """Replay every run (a folder or a samples.jsonl) under its own settings and
    ``overrides``; the runs must agree on alpha and calibration (pass them to compare)."""
    if not paths:
        raise ValueError("pass at least one run folder or samples.jsonl")
    from atts.conformal import load_bank

    decided: list[Replayed] = []
    configs = []
    notes = []
    file_size = 0
    for path in paths:
        run = read_run(path)
        config = replay_config(run, overrides)
        if not run.settings:
            notes.append(f"{run.path.parent} has no manifest.json: its steps are judged under "
                         f"the defaults and the flags given (alpha {config.alpha:g}, "
                         f"calibration {config.calibration}), not the run's own settings")
        bank: list[float] = []
        if config.calibration == "file":
            assert config.calibration_file is not None
            bank = load_bank(config.calibration_file).tolist()
            file_size = len(bank)
        decided.extend(replay_run(run, config, bank))
        configs.append(config)
    settings = {(c.alpha, c.calibration) for c in configs}
    if len(settings) > 1:
        raise ValueError(f"the runs differ in (alpha, calibration): {sorted(settings)}; pass "
                         "--alpha and --calibration to replay them under one setting")
    bands = {fixed_band(c, file_size) for c in configs}
    band = bands.pop() if len(bands) == 1 else None
    summary = summarize(decided, configs[0], band=band, runs=len(configs))
    return dataclasses.replace(summary, notes=tuple(notes)), decided
