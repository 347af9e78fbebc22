"""The roofline bound of ATTS over target-only, and the iteration cost model."""

from __future__ import annotations

import math

import numpy as np
import pytest

from atts.perf import roofline
from atts.perf.devices import Device, EngineSpec, MeasuredRates, ModelSpec, engine
from atts.perf.roofline import Chunk, TokenCosts, TokenTotals

COSTS = TokenCosts(draft_decode=0.1, target_decode=1.0, target_score=0.1)


def test_per_token_speedup_counts_continued_target_tokens_as_kept():
    # continue: 1 + r tokens kept per drafted token, for c_dd + c_ts + r c_td seconds.
    assert roofline.per_token_speedup(COSTS, 0.25) == pytest.approx(1.25 / 0.45)
    # regenerate drops the rejected draft step: 1 - r + r = 1 token kept.
    assert roofline.per_token_speedup(COSTS, 0.25, mode="regenerate") == pytest.approx(1 / 0.45)
    # overlapped engines: the busier one sets the pace.
    assert roofline.per_token_speedup(COSTS, 0.25, overlap=True) == pytest.approx(1.25 / 0.35)


def test_bound_at_zero_rejections_is_target_decode_over_draft_plus_score():
    assert roofline.per_token_speedup(COSTS, 0.0) == pytest.approx(1.0 / 0.2)
    assert roofline.per_token_speedup(COSTS, 0.0, overlap=True) == pytest.approx(1.0 / 0.1)


def test_longer_target_steps_are_counted():
    # target steps twice as long as draft steps: kept = 1 + 2r, cost = c_dd + c_ts + 2r c_td.
    value = roofline.per_token_speedup(COSTS, 0.5, step_ratio=2.0)
    assert value == pytest.approx(2.0 / 1.2)


def test_break_even_rejection_rate():
    costs = TokenCosts(draft_decode=0.3, target_decode=1.0, target_score=0.2)
    # regenerate, serial: speedup = 1 / (0.5 + r), which is 1 at r = 0.5.
    assert roofline.break_even_rejection(costs, mode="regenerate") == pytest.approx(0.5)
    assert roofline.break_even_rejection(COSTS) is None  # continue: wins at every r here
    cpu = TokenCosts(draft_decode=0.049, target_decode=0.061, target_score=0.063)
    assert roofline.break_even_rejection(cpu) == 0.0  # scoring costs as much as decoding


def test_token_bound_uses_each_run_s_own_token_totals():
    costs = TokenCosts(draft_decode=0.5, target_decode=1.0, target_score=0.25)
    run = TokenTotals(draft_decode=100, target_score=100, target_decode=20)
    base = TokenTotals(target_decode=300)
    # serial: 300 / (50 + 25 + 20); overlapped: 300 / max(50, 45).
    assert roofline.token_bound(costs, run, base, overlap=False) == pytest.approx(300 / 95)
    assert roofline.token_bound(costs, run, base, overlap=True) == pytest.approx(300 / 50)
    assert roofline.efficiency(3.0, 6.0) == pytest.approx(0.5)


def test_costs_from_run_summaries():
    run = {"tokens": {"draft_decode": 100, "target_score": 50, "target_decode": 0},
           "engine_seconds": {"draft_decode": 5.0, "target_score": 4.0, "target_decode": 0.0}}
    base = {"tokens": {"draft_decode": 0, "target_score": 0, "target_decode": 10},
            "engine_seconds": {"draft_decode": 0.0, "target_score": 0.0, "target_decode": 2.0}}
    costs = TokenCosts.from_summaries(run, base)
    assert costs == TokenCosts(0.05, 0.2, 0.08)
    assert TokenCosts.from_summaries(run, run) is None  # nobody decoded with the target


@pytest.mark.parametrize("bad", [dict(r=-0.1), dict(r=1.5), dict(r=0.2, mode="drop"),
                                 dict(r=0.2, step_ratio=0.0)])
def test_invalid_arguments_raise(bad):
    with pytest.raises(ValueError):
        roofline.per_token_speedup(COSTS, **bad)


def _toy(bandwidth: float = 1e9, flops: float = 1e12, kv_heads: int = 1) -> EngineSpec:
    model = ModelSpec("toy", params=1e6, layers=2, hidden=8, vocab=100, kv_heads=kv_heads,
                      head_dim=4)
    device = Device("toy", flops, bandwidth, 1e12)
    return EngineSpec(model, device, mfu=1.0, mbu=1.0, overhead=0.001)


def test_decode_is_memory_bound_and_long_prefill_compute_bound():
    spec = _toy()
    model = spec.model
    one = roofline.iteration_seconds(spec, [10])
    expected = 0.001 + (model.weight_bytes + model.kv_bytes_per_token * 11) / 1e9
    assert one == pytest.approx(expected)
    long = roofline.iteration_seconds(spec, (), [Chunk(100_000, 0, 1)])
    flops = (100_000 * model.body_flops + model.head_flops
             + model.attention_flops * (100_000 * 99_999 / 2))
    assert long == pytest.approx(0.001 + flops / 1e12)


def test_skip_ahead_matches_iteration_by_iteration():
    spec = _toy(bandwidth=1e8)
    contexts = [5, 17, 40]
    fast = roofline.decode_run_seconds(spec, len(contexts), float(sum(contexts)), 6)
    slow = [roofline.iteration_seconds(spec, [c + i for c in contexts]) for i in range(6)]
    np.testing.assert_allclose(fast, slow, rtol=1e-12)


def test_request_on_measured_rates_is_linear():
    rates = MeasuredRates(decode=0.05, prefill=0.01, score=0.06)
    spec = engine("qwen2.5-coder-0.5b", "cpu-2core", rates=rates)
    assert roofline.request_seconds(spec, prefill=100, decode=20) == pytest.approx(1.0 + 1.0)
    assert roofline.request_seconds(spec, prefill=70, rows=50) == pytest.approx(0.2 + 3.0)


def test_gpu_presets_make_scoring_much_cheaper_than_decoding():
    draft, target = engine("qwen2.5-7b", "a100-80gb"), engine("qwq-32b", "a100-80gb", 2)
    costs = roofline.per_token_costs(draft, target, batch=1, context=1000, step=500)
    assert costs.target_score * 20 < costs.target_decode
    assert costs.draft_decode < costs.target_decode
    assert math.isfinite(roofline.per_token_speedup(costs, 0.25))


def test_a_model_that_does_not_fit_is_refused():
    with pytest.raises(ValueError, match="does not fit"):
        engine("llama-3.3-70b", "a100-80gb", 1)
