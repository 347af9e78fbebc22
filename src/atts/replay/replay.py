"""Replay the decision layer over a recorded run: the same ``Decider``, the same order.

What a replay cannot know: the trajectories are fixed.  A step the replay accepts where the run
rejected it (or the other way round) would have changed everything the sample wrote after it,
so a replay measures how a calibration setting judges *these* steps, not the run it would have
made; and a calibration-only first step (``calibration_m > samples``) was never recorded.

The pre-pass steps are the ones the run would stash (``prepass_keys``, the run's own rule): in
question mode the round-0 steps of samples ``0..calibration_m - 1`` of each question, added to
its bank before its first decision; in the marginal and adaptive modes the round-0 steps of the
first ``warmup`` samples in ``warmup_order`` of the admission order, added to the pooled bank
before any decision.  Each is judged leave-one-out, as in the run; every other judged score
joins the banks after its decision as the run's settings say (the Decider's bank store).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from atts.config import RunConfig
from atts.conformal import Decision, DecisionKey
from atts.conformal.pvalue import CalibrationError
from atts.pipeline.calibration import prepass_keys, step_banks, step_decider
from atts.replay.stream import RecordedRun, StreamStep


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


def replay_run(
    run: RecordedRun, config: RunConfig, initial_scores: Sequence[float] = ()
) -> list[Replayed]:
    """Every step of ``run.steps`` judged under ``config``, in the order of the stream."""
    banks = step_banks(config, initial_scores)
    decider = step_decider(config, banks)
    keys = set(prepass_keys(config, run.samples))
    for step in run.steps:  # pre-passes end before any decision that waits for them
        if step.first and (step.question_id, step.sample_index) in keys:
            banks.add(step.question_id, step.score)
    out: list[Replayed] = []
    for step in run.steps:
        own = step.first and (step.question_id, step.sample_index) in keys
        key = DecisionKey(step.question_id, step.sample_index, step.round)
        try:
            verdict = decider.decide(key, step.score, own_in_bank=own)
        except CalibrationError as err:
            hint = ""
            if config.calibration == "question" and run.samples:
                hint = (" (a replay sees only recorded steps: with calibration_m > samples "
                        "the calibration-only first steps are missing)")
            raise CalibrationError(f"{run.path}: {err}{hint}") from err
        assert verdict.p_value is not None  # a run's Decider raises on a cold bank
        out.append(Replayed(step, verdict.p_value, verdict.decision, own))
    return out


def agreement(replayed: Sequence[Replayed]) -> dict[str, Any]:
    """How many replayed decisions equal the recorded ones (steps that recorded one)."""
    compared = [r for r in replayed if r.step.decision is not None]
    same = sum(r.decision.value == r.step.decision for r in compared)
    return {"compared": len(compared), "same": same}
