"""A run from configuration to run folder: engines, manifest, calibration bank, execution.

The CLI (``atts run``) and the benchmarks call ``run_job``; it holds the session's
bookkeeping (the folder's lock, the manifest's sessions and last session) around
``runner.execute``, which fans the samples out.
"""

from __future__ import annotations

import asyncio
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from atts.config import RunConfig
from atts.conformal import load_bank
from atts.data import Problem, load_dataset
from atts.engines.base import Engine
from atts.runner.build import close_engines, open_engines
from atts.runner.machine import session_end, session_start
from atts.runner.manifest import calibration_fingerprint, check_bank_values, manifest
from atts.runner.run_folder import RunFolder
from atts.runner.runner import RunOutcome, execute

__all__ = ["run_job"]


def run_job(
    config: RunConfig,
    out: str | Path,
    *,
    overwrite: bool = False,
    retry_failed: bool = False,
    force_bank: bool = False,
    show_progress: bool = True,
    engines: tuple[Engine, Engine] | None = None,
    problems: Sequence[Problem] | None = None,
) -> RunOutcome:
    """Run (or resume) ``config`` into the folder ``out``.  Engines are built and closed here
    unless given.  Everything runs in one event loop, engines included."""
    problems = list(problems) if problems is not None else load_dataset(
        config.dataset, limit=config.limit, offset=config.offset, ids=list(config.ids) or None
    )
    if not problems:  # before the folder is made: an empty run leaves nothing behind
        raise ValueError(f"{config.dataset} gives no problems to run (an empty file, or "
                         f"--offset {config.offset} past its end); nothing was written to {out}")
    return asyncio.run(
        _run_job(config, RunFolder(out), problems, engines, overwrite=overwrite,
                 retry_failed=retry_failed, force_bank=force_bank, show_progress=show_progress)
    )


async def _run_job(
    config: RunConfig, folder: RunFolder, problems: Sequence[Problem],
    engines: tuple[Engine, Engine] | None, *, overwrite: bool, retry_failed: bool,
    force_bank: bool, show_progress: bool,
) -> RunOutcome:
    draft, target = engines if engines is not None else await open_engines(config)
    try:
        bank: Sequence[float] = ()
        if config.calibration == "file":
            assert config.calibration_file is not None
            expected = calibration_fingerprint(config, draft.info, target.info)
            bank = load_bank(config.calibration_file, expected, force=force_bank).tolist()
            check_bank_values(bank, config.score, config.calibration_file)
        with folder.locked():
            folder.prepare(manifest(config, draft, target, problems), overwrite=overwrite)
            recorded = folder.read_manifest().get("sessions") or []
            # Rows are counted only for a folder written before sessions were recorded (the
            # one case session_start needs them); execute reads them again in any case.
            sessions = session_start(0 if recorded else len(folder.rows()), recorded)
            folder.update_manifest(sessions=sessions)
            outcome = await execute(
                config, problems, draft, target, folder,
                bank_scores=bank, retry_failed=retry_failed, show_progress=show_progress,
            )
            done: dict[str, Any] = {
                "sessions": session_end(sessions, outcome.wall_seconds, outcome.written)}
            # last_session is the last session that wrote samples: opening a finished run
            # again must not replace its timings with those of a session that did nothing.
            if outcome.written or "last_session" not in folder.read_manifest():
                done["last_session"] = asdict(outcome)
            folder.update_manifest(**done)
        return outcome
    finally:
        if engines is None:
            await close_engines(draft, target)
