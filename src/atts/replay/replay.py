"""Replay the decision layer over a recorded run: the same ``Judge``, the same order.

What a replay cannot know: the trajectories are fixed.  A step the replay accepts where the run
rejected it (or the other way round) would have changed everything the sample wrote after it,
so a replay measures how a calibration setting judges *these* steps, not the run it would have
made; and a calibration-only first step (``calibration_m > samples``) was never recorded.

The pre-pass steps are the ones the run would stash: in question mode the round-0 steps of
samples ``0..calibration_m - 1`` of each question, added to its bank before its first decision;
in the marginal and adaptive modes the round-0 steps of the first ``warmup`` samples in
``warmup_order`` of the admission order, added to the pooled bank before any decision.  Each is
judged leave-one-out, as in the run; with ``grow_bank`` every other judged score is added after
its decision.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from atts.config import RunConfig
from atts.conformal import Decision
from atts.conformal.pvalue import CalibrationError
from atts.pipeline.judge import Judge, warmup_order
from atts.replay.stream import RecordedRun, StreamStep

POOLED_WARMUP = ("marginal", "adaptive")


@dataclass(frozen=True)
class Replayed:
    """One step of the stream and what the replay decided for it."""

    step: StreamStep
    p_value: float
    decision: Decision
    calibration: bool  # a pre-pass step, judged leave-one-out

    @property
    def rejected(self) -> bool:
        return self.decision is not Decision.ACCEPT


def pre_pass(run: RecordedRun, config: RunConfig) -> set[tuple[str, int]]:
    """The (question, sample) keys whose round-0 step the run drafted in a pre-pass."""
    if config.calibration == "question":
        return {key for key in run.samples if key[1] < config.calibration_m}
    if config.calibration in POOLED_WARMUP:
        return set(warmup_order(run.samples)[: config.warmup_size])
    return set()


def replay_run(
    run: RecordedRun, config: RunConfig, initial_scores: Sequence[float] = ()
) -> list[Replayed]:
    """Every step of ``run.steps`` judged under ``config``, in the order of the stream."""
    judge = Judge(config, initial_scores)
    keys = pre_pass(run, config)
    for step in run.steps:  # pre-passes end before any decision that waits for them
        if step.first and (step.question_id, step.sample_index) in keys:
            judge.add(step.question_id, step.score)
    out: list[Replayed] = []
    for step in run.steps:
        own = step.first and (step.question_id, step.sample_index) in keys
        try:
            p, decision = judge.decide(step.question_id, step.round, step.score,
                                       own_in_bank=own, sample_index=step.sample_index)
        except CalibrationError as err:
            hint = ""
            if config.calibration == "question" and run.samples:
                hint = (" (a replay sees only recorded steps: with calibration_m > samples "
                        "the calibration-only first steps are missing)")
            raise CalibrationError(f"{run.path}: {err}{hint}") from err
        if config.grow_bank and not own:
            judge.add(step.question_id, step.score)
        out.append(Replayed(step, p, decision, own))
    return out


def agreement(replayed: Sequence[Replayed]) -> dict[str, Any]:
    """How many replayed decisions equal the recorded ones (steps that recorded one)."""
    compared = [r for r in replayed if r.step.decision is not None]
    same = sum(r.decision.value == r.step.decision for r in compared)
    return {"compared": len(compared), "same": same}
