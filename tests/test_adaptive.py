"""Adaptive conformal inference and smoothed p-values: the guarantees, checked exactly.

ACI (Gibbs and Candes 2021, Prop. 4.1): for ANY sequence of p-values, after T decisions
``|mean err - alpha| <= (max(alpha_1, 1 - alpha_1) + gamma) / (gamma T)``.  It is checked at
every prefix of adversarial and drifting sequences, on the bare tracker and per stratum of a
run's ``Decider``.  Smoothed p-values are exactly uniform, so with heavily tied scores they
reject at alpha where the deterministic ones reject far below it.
"""

from __future__ import annotations

import math
import random

import numpy as np
import pytest

from atts.config import ConfigError, RunConfig
from atts.conformal import Decision, DecisionKey, classify, p_value_sorted
from atts.conformal.aci import AdaptiveLevel, aci_bound
from atts.conformal.strata import round_bucket
from atts.pipeline.calibration import step_banks, step_decider, warmup_order
from pipeline_helpers import config, engines, run

EPS = 1e-9  # float round-off of the running level only


def adversaries(alpha: float):
    rng = random.Random(0)
    yield "always-reject", lambda level, t: 0.0
    yield "never-reject", lambda level, t: 1.0
    yield "at-the-level", lambda level, t: min(max(level, 0.0), 1.0)
    yield "just-above", lambda level, t: min(max(level + 1e-6, 0.0), 1.0)
    yield "alternating", lambda level, t: 0.0 if t % 2 else 1.0
    yield "bursts", lambda level, t: 0.0 if (t // 50) % 2 else 1.0
    yield "drift", lambda level, t: min(1.0, rng.random() ** (1 + 3 * math.sin(t / 40) ** 2))
    yield "shift", lambda level, t: rng.random() * (0.2 if t > 300 else 1.0)


@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.4])
@pytest.mark.parametrize("gamma", [0.005, 0.02, 0.1])
def test_aci_bound_holds_at_every_prefix_of_adversarial_and_drifting_sequences(alpha, gamma):
    for name, adversary in adversaries(alpha):
        state = AdaptiveLevel.start(alpha, gamma)
        for t in range(1, 1001):
            p = adversary(state.level, t)
            state = state.update(p <= state.level)
            assert -gamma - EPS <= state.level <= 1 + gamma + EPS, name
            gap = abs(state.errors / state.steps - alpha)
            assert gap <= aci_bound(alpha, gamma, state.steps) + EPS, (name, t, gap)


def test_the_level_moves_by_gamma_times_alpha_minus_err():
    state = AdaptiveLevel.start(0.25, 0.1)
    assert state.update(True).level == pytest.approx(0.25 + 0.1 * (0.25 - 1))
    assert state.update(False).level == pytest.approx(0.25 + 0.1 * 0.25)
    with pytest.raises(ValueError, match="adaptive_gamma"):
        AdaptiveLevel.start(0.25, 0.0)


def test_the_ordinal_decision_at_a_moving_level_keeps_the_discard_ratio():
    """The adaptive Decider classifies at (level, ratio x level): the rule of issue 4's
    ordinal scale, with alpha_discard / alpha kept as the level moves."""
    assert classify(0.30, 0.25, 0.5 * 0.25) is Decision.ACCEPT
    assert classify(0.20, 0.25, 0.5 * 0.25) is Decision.CONTINUE
    assert classify(0.10, 0.25, 0.5 * 0.25) is Decision.REGENERATE
    assert classify(0.01, 0.25, 0.0) is Decision.CONTINUE  # 0: never regenerate
    assert classify(0.0, 0.25, 0.0) is Decision.CONTINUE  # not even at p = 0
    assert classify(0.25, 0.25, 0.25) is Decision.REGENERATE  # 1: pure replacement
    assert classify(1.0, 1.05, 0.0) is Decision.CONTINUE  # a level above 1 rejects all


def run_decider(cfg: RunConfig, initial=()):
    """A run's Decider and its banks under ``cfg``."""
    banks = step_banks(cfg, initial)
    return step_decider(cfg, banks), banks


def decide(decider, question: str, round_index: int, score: float, *, own_in_bank=False,
           sample_index: int = 0):
    verdict = decider.decide(DecisionKey(question, sample_index, round_index), score,
                             own_in_bank=own_in_bank)
    return verdict.p_value, verdict.decision


def drifting_judge(alpha: float, gamma: float, strata: str = "none", by: str = "round"):
    cfg = RunConfig(calibration="adaptive", alpha=alpha, warmup=20, adaptive_gamma=gamma,
                    strata=strata, adaptive_strata=by, alpha_discard=alpha / 2)
    judge, banks = run_decider(cfg)
    rng = np.random.default_rng(1)
    banks.add("", rng.lognormal(1.0, 0.3, 20))
    decisions: dict[int, list[Decision]] = {}
    for t in range(3000):
        q, r = f"q{t % 37}", t % 7
        shift = 0.8 if t > 1500 else 0.0  # a dataset shift half-way
        mean = {0: 1.0, 1: 1.6}.get(r, 0.6) + shift + 0.1 * (t % 37 % 5)
        _, d = decide(judge, q, r, float(rng.lognormal(mean, 0.3)), sample_index=t % 4)
        decisions.setdefault(round_bucket(r), []).append(d)
    return decisions


@pytest.mark.parametrize("strata", ["none", "round"])
@pytest.mark.parametrize("alpha", [0.1, 0.25, 0.4])
def test_every_round_bucket_meets_the_bound_under_drift_questions_and_shift(alpha, strata):
    gamma = 0.02
    for bucket, decisions in drifting_judge(alpha, gamma, strata).items():
        rejected = sum(d is not Decision.ACCEPT for d in decisions)
        gap = abs(rejected / len(decisions) - alpha)
        assert gap <= aci_bound(alpha, gamma, len(decisions)) + EPS, (bucket, gap)
        two_se = 2 * math.sqrt(alpha * (1 - alpha) / len(decisions))
        assert gap <= max(0.03, two_se), (bucket, rejected / len(decisions))  # issue 14's bar
        if alpha == 0.4:  # alpha_discard = alpha / 2 still splits the rejected steps
            assert Decision.REGENERATE in decisions and Decision.CONTINUE in decisions


def test_a_first_step_bank_without_adaptation_misses_alpha_on_the_same_stream():
    cfg = RunConfig(calibration="marginal", alpha=0.25, warmup=20, grow_bank=True)
    judge, banks = run_decider(cfg)
    rng = np.random.default_rng(1)
    banks.add("", rng.lognormal(1.0, 0.3, 20))
    rejected = {1: 0, 2: 0}
    for t in range(1400):
        r = 1 + t % 2
        _, d = decide(judge, "q", r, float(rng.lognormal({1: 1.6}.get(r, 0.6), 0.3)))
        rejected[r] += d is not Decision.ACCEPT
    assert rejected[1] / 700 > 0.35 and rejected[2] / 700 < 0.15


def test_adaptive_runs_bring_every_round_near_alpha(tmp_path):
    means = {0: 1.0, 1: 1.6}

    def drifting(call):
        ppl = random.Random(call.params.seed).lognormvariate(
            means.get(call.prompt.count("ppl="), 0.6), 0.3)
        return f"s ppl={ppl:.6f}\n\n"

    cfg = config(calibration="adaptive", calibration_file=None, warmup=10, alpha=0.2,
                 samples=4, rounds=4, adaptive_gamma=0.05, max_active_samples=8)
    draft, target = engines(drifting)
    _, rows = run(cfg, draft, target, tmp_path, bank=(), questions=50)
    by_round: dict[int, list[bool]] = {}
    for row in rows:
        for step in row["steps"]:
            if step["author"] == "draft" and step["decision"] is not None:
                by_round.setdefault(step["round"], []).append(step["decision"] != "accept")
    for r, errs in by_round.items():
        assert abs(sum(errs) / len(errs) - 0.2) <= aci_bound(0.2, 0.05, len(errs)) + EPS, r


def test_a_resumed_adaptive_run_restores_its_levels_from_the_recorded_decisions(tmp_path):
    """A resumed run used to restart every tracker at alpha; the recorded decisions, replayed
    in order, put each level where alpha_1 + gamma (k alpha - rejections) says it ended."""
    from atts.pipeline.calibration import Calibrator
    from atts.runner.recorded import recorded_decisions

    def steps(call):
        return f"s ppl={random.Random(call.params.seed).lognormvariate(1.0, 0.4):.6f}\n\n"

    cfg = config(calibration="adaptive", calibration_file=None, warmup=8, alpha=0.25,
                 samples=4, rounds=3, adaptive_gamma=0.05)
    draft, target = engines(steps)
    _, rows = run(cfg, draft, target, tmp_path, bank=(), questions=3)
    decisions = recorded_decisions(rows, tmp_path / "samples.jsonl")
    judged = [s for row in rows for s in row["steps"] if s["decision"] is not None]
    assert len(decisions) == len(judged) > 20

    async def unused(question_id: str, sample_index: int):
        raise AssertionError("a restore drafts nothing")

    levels = Calibrator(cfg, unused, recorded_decisions=decisions).decider.levels()
    expected: dict[int, list[bool]] = {}
    for key, rejected in decisions:
        expected.setdefault(min(key.round, 3), []).append(rejected)
    assert levels.keys() == expected.keys()
    for bucket, errs in expected.items():
        assert levels[bucket] == pytest.approx(0.25 + 0.05 * (0.25 * len(errs) - sum(errs)))
    assert any(level != pytest.approx(0.25) for level in levels.values())


def test_smoothed_p_values_reject_at_alpha_with_ties_where_deterministic_ones_do_not():
    rng = np.random.default_rng(7)
    alpha, trials, n = 0.1, 20000, 19
    values = np.array([1.0, 2.0, 3.0])
    smoothed = deterministic = 0
    for _ in range(trials):
        bank = np.sort(rng.choice(values, n, p=[0.05, 0.05, 0.9]))
        s = float(rng.choice(values, p=[0.05, 0.05, 0.9]))
        smoothed += p_value_sorted(bank, s, randomized=True, rng=rng) <= alpha
        deterministic += p_value_sorted(bank, s) <= alpha
    sd = math.sqrt(alpha * (1 - alpha) / trials)
    assert abs(smoothed / trials - alpha) <= 4 * sd  # exactly alpha in expectation
    assert deterministic / trials < alpha / 5


def test_the_decider_draws_smoothed_p_values_reproducibly_per_step():
    cfg = RunConfig(calibration="marginal", warmup=8, pvalue="smoothed", seed=3)
    first, _ = run_decider(cfg, [1.0] * 4 + [2.0] * 4)
    second, _ = run_decider(cfg, [1.0] * 4 + [2.0] * 4)
    a = [decide(first, "q", r, 1.0, sample_index=s)[0] for r in range(3) for s in range(3)]
    b = [decide(second, "q", r, 1.0, sample_index=s)[0] for r in range(3) for s in range(3)]
    assert a == b and len(set(a)) == len(a)  # same per step, different across steps
    assert all(4 / 9 < p <= 1.0 for p in a)  # (#{>} + U (1 + #{==})) / (n + 1): gt=4, eq=4


def test_leave_one_out_smoothed_p_value_excludes_only_the_own_score():
    cfg = RunConfig(calibration="marginal", warmup=8, pvalue="smoothed")
    judge, _ = run_decider(cfg, [1.0, 2.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0])
    p, _ = decide(judge, "q", 0, 2.0, own_in_bank=True)
    assert 6 / 9 < p <= 8 / 9  # others: 6 above, 1 tie, n - 1 = 8


def test_warmup_is_drawn_round_robin_across_questions():
    pending = [(q, s) for q in ("a", "b", "c") for s in range(3)]
    assert warmup_order(pending)[:4] == [("a", 0), ("b", 0), ("c", 0), ("a", 1)]


def test_adaptive_settings_are_validated():
    with pytest.raises(ConfigError, match="adaptive_gamma"):
        RunConfig(calibration="adaptive", adaptive_gamma=1.5)
    with pytest.raises(ConfigError, match="grow_bank"):
        RunConfig(calibration="adaptive", grow_bank=True)
    with pytest.raises(ConfigError, match="pvalue"):
        RunConfig(pvalue="random")
    with pytest.raises(ConfigError, match="strata"):
        RunConfig(calibration="question", strata="question_round")


def test_a_run_smaller_than_the_warmup_drafts_calibration_only_first_steps(tmp_path):
    """With adaptive calibration the default, `atts run --limit 1 --samples 2` must still
    decide: the warm-up tops itself up with first steps of samples N, N+1, ..."""
    cfg = config(calibration="adaptive", calibration_file=None, warmup=8, alpha=0.25,
                 samples=2, rounds=2)
    draft, target = engines(lambda call: f"s ppl={(call.params.seed % 40) + 1}\\n\\n")
    _, rows = run(cfg, draft, target, tmp_path, bank=(), questions=1)
    assert len(rows) == 2 and {r["status"] for r in rows} == {"ok"}, rows[0].get("error")
    first_steps = [c for c in draft.calls if c.kind == "generate"
                   and "ppl=" not in c.prompt]
    assert len(first_steps) == 8  # 2 samples' first steps + 6 calibration-only ones


def test_the_warmup_rises_to_what_alpha_needs(tmp_path, capsys):
    """With adaptive the default, `--alpha 0.1` (or a replay at 0.1) must not need a matching
    `--warmup`: the warm-up is raised to n + 1 >= 1/alpha plus the one left out."""
    from atts.cli.main import main
    from atts.config import RunConfig

    assert RunConfig(alpha=0.1).warmup_size == 10
    assert RunConfig(alpha=0.25).warmup_size == 8
    assert RunConfig(alpha=0.25, warmup=20).warmup_size == 20
    path = fake_adaptive_run(tmp_path)
    (path / "manifest.json").unlink()  # a trace from elsewhere: the defaults judge it
    assert main(["replay", str(path / "samples.jsonl"), "--alpha", "0.1", "--json"]) == 0
    assert '"alpha": 0.1' in capsys.readouterr().out


def fake_adaptive_run(tmp_path):
    cfg = config(calibration="adaptive", calibration_file=None, alpha=0.25, samples=4,
                 rounds=3)
    draft, target = engines(
        lambda call: f"s ppl={random.Random(call.params.seed).lognormvariate(1.0, 0.4):.6f}"
                     "\n\n")
    run(cfg, draft, target, tmp_path, bank=(), questions=4)
    return tmp_path
