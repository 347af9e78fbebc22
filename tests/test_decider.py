"""The Decider and the run's banks: which bank judges which key, the order (decide, then add),
the cold-bank rule, leave-one-out pre-pass steps, planned decisions and the guard's message.

The p-values are checked against the formula computed independently here (numpy counts over
the bank), not against the code under test."""

from __future__ import annotations

import numpy as np
import pytest

from atts.config import RunConfig
from atts.conformal import (
    CalibrationError,
    Decider,
    Decision,
    DecisionKey,
    DecisionPolicy,
    StrataBanks,
    Thresholds,
)
from atts.pipeline.calibration import prepass_keys, step_banks, step_decider


def formula(bank: list[float], score: float, *, leave_one_out: bool = False) -> float:
    """(1 + #{s_i >= s}) / (n + 1), with the own score taken out of both when left out."""
    ge = sum(b >= score for b in bank) - (1 if leave_one_out else 0)
    n = len(bank) - (1 if leave_one_out else 0)
    return (1 + ge) / (n + 1)


def test_a_fixed_policy_classifies_the_formulas_p_value_at_alpha_and_alpha_discard():
    bank = [float(x) for x in range(1, 20)]  # n = 19
    decider = Decider(DecisionPolicy(Thresholds(0.25, 0.1)), StrataBanks(initial=bank))
    for score, expected in ((18.5, Decision.REGENERATE), (16.5, Decision.CONTINUE),
                            (3.0, Decision.ACCEPT)):
        verdict = decider.decide(DecisionKey("q"), score)
        assert verdict.p_value == formula(bank, score)
        assert verdict.decision is expected
        assert verdict.rejected is (expected is not Decision.ACCEPT)


def test_nothing_joins_a_fixed_bank_but_an_online_or_growing_one_takes_each_score_after():
    bank = [1.0, 2.0, 3.0, 4.0]
    fixed = StrataBanks(initial=bank)
    grows = StrataBanks(initial=bank, grow=True)
    policy = DecisionPolicy(Thresholds(0.25))
    for banks in (fixed, grows):
        first = Decider(policy, banks).decide(DecisionKey("q"), 10.0)
        assert first.p_value == formula(bank, 10.0) == 1 / 5  # judged before it was added
    assert fixed.size() == 4 and grows.size() == 5
    second = Decider(policy, grows).decide(DecisionKey("q"), 10.0)
    assert second.p_value == formula([*bank, 10.0], 10.0) == 2 / 6


def test_a_pre_pass_score_is_judged_leave_one_out_and_not_added_again():
    bank = [1.0, 2.0, 2.0, 3.0, 5.0]
    banks = StrataBanks(initial=bank, grow=True)
    verdict = Decider(DecisionPolicy(Thresholds(0.5)), banks).decide(
        DecisionKey("q"), 2.0, own_in_bank=True)
    assert verdict.p_value == formula(bank, 2.0, leave_one_out=True) == 4 / 5
    assert banks.size() == 5


def test_a_cold_bank_raises_for_a_run_and_takes_the_cold_decision_elsewhere():
    run = Decider(DecisionPolicy(Thresholds(0.1), fix="raise warmup"), StrataBanks(initial=[1.0]))
    with pytest.raises(CalibrationError, match=r"the pooled bank holds 1 scores.*at least 9.*"
                       r"raise warmup"):
        run.decide(DecisionKey("q"), 1.0)
    banks = StrataBanks(initial=[1.0] * 7, grow=True)
    server = Decider(DecisionPolicy(Thresholds(0.1), cold=Decision.CONTINUE), banks)
    verdicts = [server.decide(DecisionKey("q", i), 5.0) for i in range(3)]
    assert [(v.p_value, v.decision) for v in verdicts[:2]] == [(None, Decision.CONTINUE)] * 2
    assert verdicts[2].p_value == formula([1.0] * 7 + [5.0] * 2, 5.0)  # n = 9: warm at last
    assert server.cold_decisions == 2


def test_planned_decisions_replace_the_computed_ones_and_the_banks_still_move():
    banks = StrataBanks(initial=[1.0, 2.0, 3.0, 4.0], grow=True)
    decider = Decider(DecisionPolicy(Thresholds(0.25)), banks,
                      planned=lambda key: Decision.REGENERATE if key.round == 2 else
                      Decision.ACCEPT)
    low = decider.decide(DecisionKey("q", 0, 2), 0.5)
    high = decider.decide(DecisionKey("q", 0, 1), 99.0)
    assert (low.decision, high.decision) == (Decision.REGENERATE, Decision.ACCEPT)
    assert low.p_value == formula([1.0, 2.0, 3.0, 4.0], 0.5) and banks.size() == 6


def test_round_strata_judge_against_their_round_once_it_holds_the_warmup():
    cfg = RunConfig(calibration="marginal", strata="round", warmup=3, alpha=0.5)
    banks = step_banks(cfg, [1.0, 2.0, 3.0])
    decider = step_decider(cfg, banks)
    round_one = DecisionKey("q", 0, 1)
    for score in (10.0, 11.0, 12.0):  # judged against round 0 while round 1 is cold
        assert decider.decide(round_one, score).p_value == formula([1.0, 2.0, 3.0], score)
    assert banks.sizes() == {"": 3, "round 1": 3}
    assert decider.decide(round_one, 10.5).p_value == formula([10.0, 11.0, 12.0], 10.5)
    assert decider.decide(DecisionKey("q", 0, 0), 2.5).p_value == formula([1.0, 2.0, 3.0], 2.5)


def test_question_round_strata_use_the_siblings_bank_once_it_can_reject():
    cfg = RunConfig(calibration="marginal", strata="question_round", warmup=2, alpha=0.5)
    banks = step_banks(cfg, [1.0, 2.0])
    decider = step_decider(cfg, banks)
    for score in (5.0, 6.0):  # question a, round 2: siblings fill "a#2" and "round 2"
        decider.decide(DecisionKey("a", 0, 2), score)
    # min_bank_size(0.5) = 1: a's own bank is used; b, with none, falls back to the round's.
    assert decider.decide(DecisionKey("a", 1, 2), 5.5).p_value == formula([5.0, 6.0], 5.5)
    assert decider.decide(DecisionKey("b", 0, 2), 5.5).p_value == formula([5.0, 6.0, 5.5], 5.5)
    assert banks.sizes()["a#2"] == 3 and "b#2" in banks.sizes()


def test_question_banks_are_separate_and_the_pooled_one_pools():
    per_question, pooled = StrataBanks(per_question=True), StrataBanks()
    for banks in (per_question, pooled):
        banks.add("easy", np.arange(10.0))
        banks.add("hard", np.arange(100.0, 110.0))
    assert per_question.judging(DecisionKey("easy")).p_value_of(50.0) == 1 / 11
    assert pooled.judging(DecisionKey("easy")).p_value_of(50.0) == 11 / 21
    assert per_question.sizes() == {"easy": 10, "hard": 10} and pooled.sizes() == {"": 20}
    assert per_question.judging(DecisionKey("unseen")).n == 0


def test_adaptive_levels_move_per_round_bucket_and_restore_from_recorded_decisions():
    cfg = RunConfig(calibration="adaptive", alpha=0.25, adaptive_gamma=0.1, warmup=4)
    first = step_decider(cfg, step_banks(cfg, [1.0, 2.0, 3.0, 4.0]))
    # Each score tops the bank it is judged against: p = 1/5, 1/6 (9.0 joined), 1/7.
    verdicts = [first.decide(DecisionKey("q", 0, r), s) for r, s in ((0, 9.0), (0, 10.0),
                                                                     (1, 11.0))]
    assert [v.p_value for v in verdicts] == [1 / 5, 1 / 6, 1 / 7]
    assert all(v.rejected for v in verdicts)  # under levels 0.25, 0.175 and 0.25
    expected = {0: 0.25 + 2 * 0.1 * (0.25 - 1), 1: 0.25 + 0.1 * (0.25 - 1)}
    assert first.levels() == pytest.approx(expected)
    resumed = step_decider(cfg, step_banks(cfg))
    for r in (0, 0, 1):
        resumed.restore(DecisionKey("q", 0, r), True)
    assert resumed.levels() == pytest.approx(expected)


def test_prepass_keys_follow_the_mode():
    samples = [(q, s) for q in ("a", "b") for s in range(2)]
    question = RunConfig(calibration="question", calibration_m=3, alpha=0.5)
    assert prepass_keys(question, samples) == [("a", 0), ("a", 1), ("a", 2), ("b", 0),
                                               ("b", 1), ("b", 2)]
    warm = RunConfig(calibration="marginal", warmup=6, samples=2, alpha=0.5)
    assert prepass_keys(warm, samples) == [("a", 0), ("b", 0), ("a", 1), ("b", 1), ("a", 2),
                                           ("b", 2)]  # then calibration-only first steps
    assert prepass_keys(warm, samples, have=5) == [("a", 0)]
    assert prepass_keys(RunConfig(calibration="file", calibration_file="x"), samples) == []
