"""Agreement among a question's samples, and the question-level escalation rate it drives.

The rate is checked the way the step-level guarantee is (tests/test_conformal_coverage.py):
seeded streams of questions whose answers tie as real votes do (N answers give few distinct
scores), every decision taken by ``Escalation`` (the run's own code), and exact binomial tails
at a Bonferroni-corrected level over the grid.  Smoothed p-values against the online bank are
independent Uniform(0, 1) (Vovk), so after the warm-up the escalation count is Binomial(T,
alpha) exactly: both tails are checked.  (The warm-up's leave-one-out decisions are each valid
but depend on one another; they are left out of the count.)  Deterministic p-values are valid but
conservative under ties: only the upper tail is."""

from __future__ import annotations

import math
import random

import pytest

from atts.config import RunConfig
from atts.conformal import min_bank_size
from atts.grading.agreement import cluster_answers, question_score
from atts.pipeline.escalation import Escalation, QuestionDecision
from test_conformal_coverage import binom_cdf, binom_sf

# (answers, dataset, clusters by position, disagreement)
VOTES = [
    (["42", "42", "42", "42"], "gsm8k", ((0, 1, 2, 3),), 0.0),
    (["42", "$42$", "42.0", "7"], "gsm8k", ((0, 1, 2), (3,)), 0.25),
    (["1", "2", "2", "1"], "gsm8k", ((0, 3), (1, 2)), 0.5),  # tie: first seen first
    (["1", None, "2", None], "gsm8k", ((0,), (2,)), 0.75),
    ([None, None], "gsm8k", (), 1.0),
    (["\\frac{1}{2}", "0.5", "1/2"], "math", ((0, 1, 2),), 0.0),
    (["18 dollars", "\\$18", "18"], "gsm8k", ((0, 1, 2),), 0.0),
]


@pytest.mark.parametrize(("answers", "dataset", "clusters", "disagreement"), VOTES)
def test_answers_cluster_by_the_graders_normal_form(answers, dataset, clusters, disagreement):
    vote = cluster_answers(answers, dataset)
    assert vote.clusters == clusters
    assert question_score("disagreement", vote) == pytest.approx(disagreement)
    assert vote.samples == len(answers)


def test_entropy_counts_every_unanswered_sample_as_its_own_answer():
    two_two = cluster_answers(["1", "1", "2", "2"], "gsm8k")
    two_one_one = cluster_answers(["1", "1", "2", None], "gsm8k")
    assert question_score("entropy", two_two) == pytest.approx(math.log(2))
    assert question_score("entropy", two_one_one) == pytest.approx(
        -(0.5 * math.log(0.5) + 2 * 0.25 * math.log(0.25)))
    # Disagreement cannot tell the two apart; entropy ranks the split vote lower.
    assert question_score("disagreement", two_two) == question_score("disagreement",
                                                                     two_one_one)
    with pytest.raises(ValueError, match=r"unknown question score 'mode'.*disagreement"):
        question_score("mode", two_two)
    with pytest.raises(ValueError, match="at least one finished sample"):
        cluster_answers([], "gsm8k")


def test_math_answers_with_different_forms_merge_when_the_checker_says_equal():
    def equivalent(a: str, b: str) -> bool:
        return {a, b} == {"\\sqrt{18}", "3\\sqrt{2}"}

    vote = cluster_answers(["\\sqrt{18}", "3\\sqrt{2}", "4"], "math", equivalent=equivalent)
    assert vote.clusters == ((0, 1), (2,))
    # Integer datasets never ask the checker: different numbers are different answers.
    assert cluster_answers(["18", "19"], "gsm8k", equivalent=lambda a, b: True).clusters == (
        (0,), (1,))


# -- the escalation rate ---------------------------------------------------------------------
ALPHAS = (0.2, 0.5, 0.7, 0.9)
SIZES = (2, 4, 8)  # samples per question
SCORES = ("disagreement", "entropy")
QUESTIONS = 1500
LEVEL = 0.001 / (len(ALPHAS) * len(SIZES) * len(SCORES) * 3)  # smoothed: 2 tails, det: 1


def stream(n: int, seed: int) -> list[list[str | None]]:
    """Questions whose N answers follow a draft that is right with a question's own
    probability (uniform), wrong answers spread over a few values, some unanswered."""
    rng = random.Random(seed)
    out = []
    for _ in range(QUESTIONS):
        right = rng.random()
        out.append([None if rng.random() < 0.05 else
                    "42" if rng.random() < right else str(rng.randint(1, 4))
                    for _ in range(n)])
    return out


def decide_all(escalation: Escalation, stream: list[list[str | None]]) -> list[QuestionDecision]:
    made = [d for i, answers in enumerate(stream)
            for d in escalation.add(f"q{i}", answers, "gsm8k")]
    return made + escalation.flush()


def escalation_counts(alpha: float, n: int, score: str, pvalue: str) -> tuple[int, int]:
    """(escalated, decided) over the questions after the warm-up."""
    cfg = RunConfig(escalate_alpha=alpha, escalate_score=score, escalate_pvalue=pvalue, seed=5)
    decided = decide_all(Escalation(cfg), stream(n, seed=n))
    assert [d.question_id for d in decided] == [f"q{i}" for i in range(QUESTIONS)]
    assert all(d.p_value is not None for d in decided)  # the warm-up leaves nothing cold
    counted = decided[cfg.escalate_warmup_size:]
    return sum(d.escalated for d in counted), len(counted)


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_the_escalation_rate_is_alpha_with_smoothed_p_values(alpha, n, score):
    k, trials = escalation_counts(alpha, n, score, "smoothed")
    assert binom_sf(k, trials, alpha) >= LEVEL, (k / trials, alpha)
    assert binom_cdf(k, trials, alpha) >= LEVEL, (k / trials, alpha)


@pytest.mark.parametrize("score", SCORES)
@pytest.mark.parametrize("n", SIZES)
@pytest.mark.parametrize("alpha", ALPHAS)
def test_the_escalation_rate_is_at_most_alpha_with_deterministic_p_values(alpha, n, score):
    k, trials = escalation_counts(alpha, n, score, "deterministic")
    assert binom_sf(k, trials, alpha) >= LEVEL, (k / trials, alpha)


def test_the_check_has_power_against_a_level_off_by_one_question():
    """An escalation rule that escalated at alpha + 0.1 would fail the upper tail."""
    k, trials = escalation_counts(0.5, 4, "disagreement", "smoothed")
    wrong = k + int(0.1 * trials)
    assert binom_sf(wrong, trials, 0.5) < LEVEL


def test_the_warmup_waits_then_decides_leave_one_out_and_later_questions_go_online():
    cfg = RunConfig(escalate_alpha=0.5, escalate_pvalue="deterministic", escalate_warmup=3)
    escalation = Escalation(cfg)
    votes = [["1", "2"], ["1", "1"], ["1", "2", "3"], ["5", "5"]]  # scores 1/2, 0, 2/3, 0
    assert escalation.add("q0", votes[0], "gsm8k") == []
    assert escalation.add("q1", votes[1], "gsm8k") == []
    warm = escalation.add("q2", votes[2], "gsm8k")
    # Each against the other two: (1 + #{others >= s}) / 3.
    assert [(d.question_id, d.p_value) for d in warm] == [("q0", 2 / 3), ("q1", 1.0),
                                                          ("q2", 1 / 3)]
    assert [d.escalated for d in warm] == [False, False, True]
    (online,) = escalation.add("q3", votes[3], "gsm8k")
    assert online.p_value == (1 + 3) / 4 and not online.escalated


def test_a_run_smaller_than_the_warmup_is_decided_when_flushed():
    cfg = RunConfig(escalate_alpha=0.5, escalate_pvalue="deterministic", escalate_warmup=8)
    escalation = Escalation(cfg)
    assert escalation.add("q0", ["1", "2"], "gsm8k") == []
    (alone,) = escalation.flush()  # one question: nothing to compare with, so it escalates
    assert alone.p_value is None and alone.escalated
    assert min_bank_size(0.5) == 1


def test_a_resumed_escalation_continues_the_bank_of_recorded_decisions():
    cfg = RunConfig(escalate_alpha=0.5, escalate_pvalue="deterministic", escalate_warmup=2)
    made = decide_all(Escalation(cfg), [["1", "2"], ["1", "1"], ["1", "2"], ["3", "4"]])
    rows = [QuestionDecision.from_row(d.to_row()) for d in made]
    again = Escalation(cfg, rows[:3])
    assert again.add("q3", ["3", "4"], "gsm8k") == [made[3]]
