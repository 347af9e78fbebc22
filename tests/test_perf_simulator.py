"""The discrete-event simulator: engine timing, batching limits, barriers, calibration waits.

Deterministic and fast: no real time is measured anywhere.
"""

from __future__ import annotations

import dataclasses

import pytest

from atts.perf.devices import Device, EngineSpec, ModelSpec, engine
from atts.perf.plan_run import simulate
from atts.perf.roofline import Chunk, iteration_seconds, request_seconds
from atts.perf.simulator import Signal, Simulation
from atts.perf.workload import ParametricSpec, RoundPlan, SamplePlan, Workload, parametric


def ideal(kv_heads: int = 0, memory: float = 1e15) -> EngineSpec:
    """Every iteration takes exactly 1 s, whatever the batch (weights dominate, no KV bytes,
    compute free): an engine with unlimited parallelism."""
    model = ModelSpec("ideal", params=1e6, layers=1, hidden=4, vocab=10, kv_heads=kv_heads,
                      head_dim=4)
    device = Device("ideal", 1e30, model.weight_bytes, memory)
    return EngineSpec(model, device, mfu=1.0, mbu=1.0, overhead=0.0, chunk_tokens=1 << 20,
                      memory_fraction=1.0)


def gpu() -> tuple[EngineSpec, EngineSpec]:
    return engine("qwen2.5-7b", "a100-80gb"), engine("qwq-32b", "a100-80gb", 2)


def plan(question: str, index: int, drafts: list[int], *, decisions: list[str] | None = None,
         targets: list[int] | None = None, prompt: int = 10, first: bool = False) -> SamplePlan:
    decisions = decisions or ["accept"] * len(drafts)
    targets = targets or [0] * len(drafts)
    rounds = tuple(RoundPlan(d, c, t) for d, c, t in zip(drafts, decisions, targets,
                                                         strict=True))
    return SamplePlan(question, index, prompt, rounds, calibration_first=first)


def test_one_request_alone_takes_exactly_its_roofline_time():
    draft, target = gpu()
    sim = Simulation(draft, target)
    done = sim.call("target", prefill=300, decode=200, context=0)
    sim.run()
    assert done.time == pytest.approx(request_seconds(target, prefill=300, decode=200),
                                      rel=1e-12)


def test_one_target_only_sample_takes_its_requests_back_to_back():
    draft, target = gpu()
    workload = Workload("target_only", (SamplePlan("q", 0, 150, (RoundPlan(target_tokens=500),
                                                                 RoundPlan(target_tokens=80))),))
    result = simulate(workload, draft, target)
    expected = (request_seconds(target, prefill=150, decode=500)
                + request_seconds(target, prefill=1, decode=80, context=649))
    assert result.wall_seconds == pytest.approx(expected, rel=1e-12)


def test_a_request_arriving_mid_decode_joins_at_the_next_iteration():
    draft, target = gpu()
    sim = Simulation(draft, target)
    first = sim.call("target", prefill=1, decode=100)
    prefill = iteration_seconds(target, (), [Chunk(1, 0, 1)])
    d1, d2 = iteration_seconds(target, [1]), iteration_seconds(target, [2])
    late: list[Signal] = []
    # Arrives halfway through the first request's second decode iteration.
    sim.at(prefill + d1 + 0.5 * d2, lambda: late.append(sim.call("target", prefill=1, decode=3)))
    sim.run()
    expected = (prefill + d1 + d2
                + iteration_seconds(target, [3], [Chunk(1, 0, 1)])  # its prefill joins
                + iteration_seconds(target, [4, 1]) + iteration_seconds(target, [5, 2]))
    assert late[0].time == pytest.approx(expected, rel=1e-12)
    assert first.time is not None and first.time > expected


def test_kv_memory_caps_the_batch():
    spec = ideal(kv_heads=1)
    per_token = spec.model.kv_bytes_per_token
    capped = dataclasses.replace(
        spec, device=dataclasses.replace(spec.device, memory_bytes=spec.model.memory_bytes
                                         + 3.5 * 100 * per_token))
    sim = Simulation(capped, capped)
    done = [sim.call("target", prefill=50, decode=50) for _ in range(10)]
    sim.run()
    assert sim.engines["target"].stats.peak_batch == 3  # 100 tokens each, room for 3.5
    finish = sorted(d.time for d in done if d.time is not None)
    assert finish[2] < finish[3]  # the fourth waited for memory


def test_sync_barrier_makes_the_fast_sample_wait_for_the_slow_one():
    fast = plan("q", 0, [5, 5, 5])
    slow = plan("q", 1, [50, 50, 50])
    spec = ideal()
    sync = simulate(Workload("sync", (fast, slow)), spec, spec)
    atts = simulate(Workload("atts", (fast, slow)), spec, spec)
    # Each round is draft (L iterations) then score (1 iteration).  Alone, the fast sample
    # needs 3 x 6 s; at the barrier it waits for the slow one every round.
    assert atts.sample_seconds[("q", 0)][1] == pytest.approx(18.0)
    assert sync.sample_seconds[("q", 0)][1] >= 2 * 51 + 6
    assert sync.barrier_wait > 0 and atts.barrier_wait == 0


def test_async_is_never_slower_than_sync_on_the_same_plans():
    spec = ideal()
    for seed in range(4):
        for n in (2, 4, 8):
            params = ParametricSpec(questions=3, samples=n, rounds=6, draft_step=20,
                                    target_step=30, step_cap=80, step_cv=0.8, stop=0.2,
                                    prompt_tokens=10, seed=seed)
            sync = parametric(params, "sync", max_active=3 * n)
            atts = dataclasses.replace(sync, strategy="atts")  # same plans, no barrier
            a, s = simulate(atts, spec, spec), simulate(sync, spec, spec)
            assert a.wall_seconds <= s.wall_seconds
            for key, (_, finish) in a.sample_seconds.items():
                assert finish <= s.sample_seconds[key][1]


def test_question_calibration_waits_for_the_pre_pass_of_m_first_steps():
    plans = (plan("q", 0, [5, 5], first=True), plan("q", 1, [40, 5], first=True),
             plan("q", 2, [5, 5]))
    spec = ideal()
    result = simulate(Workload("atts", plans, calibration="question", calibration_m=2),
                      spec, spec)
    # Sample 0's first decision waits until sample 1's first step (40 + 1 s) is scored.
    assert result.calibration_wait > 0
    assert result.sample_seconds[("q", 0)][1] >= 41 + 6
    free = simulate(Workload("atts", plans, calibration="file"), spec, spec)
    assert free.sample_seconds[("q", 0)][1] == pytest.approx(12.0)


def test_slots_bound_the_samples_in_flight():
    plans = tuple(plan("q", i, [10]) for i in range(4))
    spec = ideal()
    one = simulate(Workload("draft_only", plans, max_active=1), spec, spec)
    four = simulate(Workload("draft_only", plans, max_active=4), spec, spec)
    assert one.wall_seconds == pytest.approx(4 * four.wall_seconds)


def test_the_draft_reads_only_what_it_has_not_seen():
    spec = ideal()
    common = dict(drafts=[30, 30], targets=[20, 0], prompt=10)
    keep = plan("q", 0, decisions=["continue", "accept"], **common)  # type: ignore[arg-type]
    drop = plan("q", 0, decisions=["regenerate", "accept"], **common)  # type: ignore[arg-type]
    kept = simulate(Workload("atts", (keep,)), spec, spec).engines["draft"]["tokens"]
    dropped = simulate(Workload("atts", (drop,)), spec, spec).engines["draft"]["tokens"]
    # continue: the prompt, then its own step's last token and the target's 20 tokens;
    # regenerate: the prompt, then the target's 20 tokens (its cache is cut back to the prompt).
    assert kept == {"prefill": 10 + 1 + 20, "decode": 60}
    assert dropped == {"prefill": 10 + 20, "decode": 60}


def test_simulation_is_deterministic():
    draft, target = gpu()
    params = ParametricSpec(questions=2, samples=4, rounds=4, step_cv=0.5, stop=0.3)
    workload = parametric(params, "atts", max_active=4)
    assert simulate(workload, draft, target) == simulate(workload, draft, target)


def test_cpu_preset_runs_one_request_at_a_time():
    draft = engine("qwen2.5-coder-0.5b", "cpu-2core")
    target = engine("qwen2.5-coder-1.5b", "cpu-2core")
    sim = Simulation(draft, target)
    done = [sim.call("target", prefill=10, decode=10) for _ in range(3)]
    sim.run()
    one = request_seconds(target, prefill=10, decode=10)
    assert [d.time for d in done] == pytest.approx([one, 2 * one, 3 * one])


def test_a_pool_of_contexts_makes_evicted_samples_read_their_history_again():
    spec = ideal()
    plans = (plan("q0", 0, [20, 20], prompt=100), plan("q1", 0, [20, 20], prompt=100))
    cached = simulate(Workload("draft_only", plans), spec, spec)
    assert cached.engines["draft"]["tokens"]["prefill"] == 100 + 100 + 1 + 1
    pooled = simulate(Workload("draft_only", plans, contexts=1), spec, spec)
    # One context: each call evicts the other sample, whose next call keeps only the prefix
    # every question shares (45 tokens) and reads the rest of its 120 tokens again.
    assert pooled.engines["draft"]["tokens"]["prefill"] == 100 + (100 - 45) + 2 * (120 - 45)
    siblings = (plan("q", 0, [20], prompt=100), plan("q", 1, [20], prompt=100))
    shared = simulate(Workload("draft_only", siblings, contexts=1), spec, spec)
    assert shared.engines["draft"]["tokens"]["prefill"] == 100 + 1  # the sibling's prompt


def test_an_ended_sample_gives_its_context_up_before_a_live_sibling_does():
    spec = ideal()
    # A runs 3 rounds, B one; C (A's sibling) starts when B ends, with the pool full.  The
    # runner admits by question, then sample: B's question first, then A and C.
    plans = (plan("p", 0, [20], prompt=100), plan("q", 0, [20, 20, 20], prompt=100),
             plan("q", 1, [20, 20], prompt=100))
    result = simulate(Workload("draft_only", plans, max_active=2, contexts=2), spec, spec)
    # C takes B's released context (only the shared 45 tokens reusable), not A's, so A never
    # reads its history again: A 100 + 1 + 1, B 100, C (100 - 45) + 1.
    assert result.engines["draft"]["tokens"]["prefill"] == 102 + 100 + 56


@pytest.mark.parametrize("shared", [False, True])
def test_engines_on_one_device_take_turns_and_on_their_own_overlap(shared):
    """Each engine prefills one row and decodes three more tokens (4 iterations of 1 s) from
    t = 0.  On their own devices both end at 4 s; sharing one device their iterations never
    overlap, so the 8 iterations end at 8 s, the two requests at 7 s and 8 s."""
    sim = Simulation(ideal(), ideal(), shared_device=shared)
    done = {name: sim.call(name, prefill=1, decode=4) for name in ("draft", "target")}
    sim.run()
    ends = sorted(signal.time for signal in done.values())
    assert ends == ([pytest.approx(7.0), pytest.approx(8.0)] if shared else
                    [pytest.approx(4.0), pytest.approx(4.0)])
