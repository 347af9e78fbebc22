"""Shared scaffolding for the pipeline tests: scripted engines whose steps say their own score.

A scripted draft step reads ``"<label> ppl=<x>\\n\\n"``; the fake target scores it with mean
log-probability ``-log(x)``, so the step's perplexity is exactly x and its p-value against a
known bank is known in closed form.  ``run`` runs the real runner on a virtual-clock loop
(``atts.perf.virtual_clock``): the engines' scripted delays order events exactly and take no
real time, so no test depends on how busy the machine is.
"""

from __future__ import annotations

import math
import re
from collections.abc import Callable
from pathlib import Path

from atts.config import RunConfig
from atts.data import Problem
from atts.engines.fake import FakeCall, FakeEngine
from atts.perf.virtual_clock import run_virtual
from atts.runner.run_folder import RunFolder
from atts.runner.runner import RunOutcome, execute

PPL = re.compile(r"ppl=([0-9.]+)")


def problems(count: int = 2) -> list[Problem]:
    return [Problem(f"t/{i}", "t", f"Question {i}?", "42") for i in range(count)]


def score_from_text(call: FakeCall) -> float:
    match = PPL.search(call.step)
    return -math.log(float(match.group(1))) if match else -1.0


def target_writes(call: FakeCall) -> str:
    """After a kept draft step the target continues it; otherwise it rewrites the step."""
    if PPL.search(call.prompt.rstrip("\n").rsplit("\n\n", 1)[-1]):
        return "target continues.\n\n"
    return "target regenerates.\n\n"


def round_of(call: FakeCall) -> int:
    """The round a draft call belongs to: one kept draft step or one regeneration per round."""
    return call.prompt.count("ppl=") + call.prompt.count("target regenerates")


def engines(
    draft_step: Callable[[FakeCall], str],
    *,
    target_step: Callable[[FakeCall], str] = target_writes,
    draft_delay: Callable[[FakeCall], float] = lambda call: 0.0,
    target_delay: Callable[[FakeCall], float] = lambda call: 0.0,
) -> tuple[FakeEngine, FakeEngine]:
    draft = FakeEngine("draft", step=draft_step, delay=draft_delay)
    target = FakeEngine("target", step=target_step, score=score_from_text, delay=target_delay)
    return draft, target


def config(**changes: object) -> RunConfig:
    base: dict[str, object] = dict(
        # The fake engines script step perplexities ("ppl=95"): these tests judge by them.
        engine="fake", score="ppl", samples=2, rounds=3, calibration="file",
        calibration_file="unused", alpha=0.1, alpha_discard=0.0, force_answer="none", max_retries=0,
    )
    base.update(changes)
    return RunConfig.from_mapping(base)


def run(
    cfg: RunConfig,
    draft: FakeEngine,
    target: FakeEngine,
    out: Path,
    *,
    bank: tuple[float, ...] = tuple(float(x) for x in range(1, 100)),
    questions: int = 2,
    **kwargs: object,
) -> tuple[RunOutcome, list[dict]]:
    folder = RunFolder(out)
    folder.prepare({"config": cfg.to_dict()})
    outcome = run_virtual(lambda loop: execute(
        cfg, problems(questions), draft, target, folder, bank_scores=bank,
        show_progress=False, clock=loop.time, **kwargs))  # type: ignore[arg-type]
    return outcome, folder.rows()
