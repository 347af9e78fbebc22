"""The simulator runs the real runner: the virtual clock, the plan replay, admission.

Deterministic and fast: every duration is modelled, no real time is measured.
"""

from __future__ import annotations

import asyncio
import dataclasses

import pytest

from atts.perf.devices import engine
from atts.perf.plan_run import PlanBook, run_config, simulate
from atts.perf.virtual_clock import SimulationStalled, VirtualClockLoop, run_virtual
from atts.perf.workload import ParametricSpec, RoundPlan, SamplePlan, Workload, parametric
from test_perf_simulator import ideal, plan


def test_the_virtual_clock_jumps_to_the_next_timer():
    async def main(loop: VirtualClockLoop) -> list[float]:
        seen = []
        for delay in (3600.0, 0.5, 86400.0):
            await asyncio.sleep(delay)
            seen.append(loop.time())
        return seen

    assert run_virtual(main) == pytest.approx([3600.0, 3600.5, 90000.5])


def test_an_idle_callback_runs_after_everything_due_at_that_instant():
    order: list[str] = []
    loop = VirtualClockLoop()
    loop.call_at(5.0, lambda: (order.append("first"), loop.call_when_idle(
        lambda: order.append("idle"))))
    loop.call_at(5.0, lambda: order.append("second"))
    loop.call_at(6.0, lambda: order.append("later"))
    assert loop.run_until_idle() == 6.0
    loop.close()
    assert order == ["first", "second", "idle", "later"]


def test_a_wait_nothing_will_end_is_reported_not_slept_through():
    async def main(loop: VirtualClockLoop) -> None:
        await loop.create_future()  # nobody will ever set it

    with pytest.raises(SimulationStalled, match="stalled"):
        run_virtual(main)


def test_every_planned_token_is_written_by_the_engine_the_plan_names():
    spec = ParametricSpec(questions=3, samples=4, rounds=5, draft_step=30, target_step=40,
                          step_cap=120, step_cv=0.6, stop=0.3, rejection=0.3,
                          mode="regenerate", prompt_tokens=60, forced_tokens=12)
    draft, target = engine("qwen2.5-7b", "a100-80gb"), engine("qwq-32b", "a100-80gb", 2)
    for strategy in ("atts", "sync", "target_only", "draft_only"):
        workload = parametric(spec, strategy, max_active=6)
        result = simulate(workload, draft, target)
        plans = workload.plans
        drafted = sum(max(1, r.draft_tokens) for p in plans for r in p.rounds
                      if strategy in ("atts", "sync", "draft_only"))
        written = sum(max(1, r.target_tokens) for p in plans for r in p.rounds
                      if strategy == "target_only" or r.decision in ("continue", "regenerate"))
        forced = sum(p.forced_tokens for p in plans)
        tokens = {name: e["tokens"]["decode"] for name, e in result.engines.items()}
        author = "draft" if strategy == "draft_only" else "target"
        assert tokens[author] == (drafted if author == "draft" else written) + forced
        if strategy in ("atts", "sync"):
            assert tokens["draft"] == drafted
        assert result.samples == len(plans)


def test_question_admission_starts_a_question_once_the_last_one_ended():
    spec = ideal()
    plans = (plan("q0", 0, [40]), plan("q0", 1, [5]), plan("q1", 0, [5]))
    free = simulate(Workload("draft_only", plans, max_active=2), spec, spec)
    whole = simulate(Workload("draft_only", plans, max_active=2, question_admission=True),
                     spec, spec)
    # Per sample, q1's sample takes the slot q0's short sample frees; the authors' schedule
    # makes it wait for q0's long one.
    assert free.sample_seconds[("q1", 0)][0] == pytest.approx(5.0)
    assert whole.sample_seconds[("q1", 0)][0] == pytest.approx(40.0)


def test_the_settings_follow_the_plans():
    plans = (SamplePlan("q", 0, 10, (RoundPlan(5, "accept"), RoundPlan(5, "continue", 7)),
                        forced_tokens=4, forced_author="draft"),
             SamplePlan("q", 1, 10, (RoundPlan(5, "continue", 3),)))
    config = run_config(Workload("sync", plans, max_active=3))
    assert (config.samples, config.rounds, config.force_answer, config.sync_budget,
            config.max_active_samples) == (2, 2, "draft", 1, 3)
    book = PlanBook(Workload("sync", plans), config)
    with pytest.raises(ValueError, match="no draft call"):
        book.call("draft", 12345)


def test_a_workload_reads_the_same_after_a_replay():
    spec = ParametricSpec(questions=2, samples=3, rounds=4, stop=0.3)
    workload = parametric(spec, "atts", max_active=3)
    first = simulate(workload, *[engine("qwen2.5-7b", "a100-80gb")] * 2)
    again = simulate(dataclasses.replace(workload), *[engine("qwen2.5-7b", "a100-80gb")] * 2)
    assert first == again


def test_the_simulated_strategies_are_the_runners():
    from atts.perf.workload import SIMULATED_STRATEGIES
    from atts.pipeline.strategies import STRATEGIES

    # The cascades' cost follows from their two tiers' recorded runs (atts replay
    # --escalate-to); the simulator does not plan question-level escalation.
    assert set(SIMULATED_STRATEGIES) == set(STRATEGIES) - {"judge", "cascade", "atts_cascade"}


def test_a_sample_missing_from_a_recorded_run_is_skipped_and_its_first_step_drafted():
    # Sample 1 of q failed in the recorded run (no plan); the per-question pre-pass of m = 3
    # still drafts its first step, as the runner did, and the run skips it.
    plans = (plan("q", 0, [5, 5], first=True), plan("q", 2, [5], first=True))
    spec = ideal()
    result = simulate(Workload("atts", plans, calibration="question", calibration_m=3),
                      spec, spec)
    assert sorted(result.sample_seconds) == [("q", 0), ("q", 2)]
    assert result.engines["draft"]["tokens"]["decode"] == 5 + 5 + 5 + 5  # and q/1's first
