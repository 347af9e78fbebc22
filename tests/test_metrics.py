"""Metrics from samples.jsonl rows, checked against hand-computed values."""

from __future__ import annotations

import json
import math
from typing import Any

import pytest

from atts.report.metrics import (
    accuracy,
    beta_ppf,
    clopper_pearson,
    control_accuracy,
    majority_vote,
    pass_at_k,
    percentile,
    rejection_stats,
    speedup,
    summarize,
    timing,
    token_totals,
)


def step(round_: int, decision: str | None, author: str = "draft") -> dict[str, Any]:
    return {"round": round_, "author": author, "kind": "step", "text": "s", "tokens": 10,
            "kept": decision != "regenerate", "score": 1.0 if decision else None,
            "p_value": 0.5 if decision else None, "decision": decision, "seconds": 0.1}


def row(qid: str, index: int, answer: str | None, correct: bool, *, steps: Any = (),
        started: float = 0.0, finished: float = 1.0, dataset: str = "math500",
        tokens: tuple[int, int, int] = (0, 0, 0)) -> dict[str, Any]:
    return {"question_id": qid, "dataset": dataset, "sample_index": index, "seed": index,
            "strategy": "atts", "status": "ok" if answer is not None else "error",
            "error": None, "answer": answer, "gold": "?", "text": "", "rounds": 1,
            "steps": list(steps), "correct": correct,
            "tokens": dict(zip(("draft_decode", "target_decode", "target_score"), tokens,
                               strict=True)),
            "seconds": {"draft": 0.0, "score": 0.0, "target": 0.0, "wall": finished - started},
            "started_at": started, "finished_at": finished}


@pytest.mark.parametrize(("n", "c", "k"), [(10, 3, 1), (10, 3, 2), (10, 3, 8), (16, 0, 4),
                                           (16, 16, 16), (16, 1, 16), (200, 7, 50)])
def test_pass_at_k_matches_the_closed_form(n: int, c: int, k: int) -> None:
    expected = 1 - math.comb(n - c, k) / math.comb(n, k)
    assert pass_at_k(n, c, k) == pytest.approx(expected, abs=1e-12)


def test_pass_at_k_rejects_impossible_arguments() -> None:
    with pytest.raises(ValueError):
        pass_at_k(4, 5, 1)
    with pytest.raises(ValueError):
        pass_at_k(4, 1, 5)


def test_majority_vote_normalises_breaks_ties_by_first_occurrence_and_skips_none() -> None:
    assert majority_vote([r"\frac12", "3", "0.5", "3"]) == 0  # 1/2 and 3 tie: 1/2 came first
    assert majority_vote([None, "7", "8", "8", None, None]) == 2
    assert majority_vote(["084", "84", "85"], "aime24") == 0
    assert majority_vote([None, None]) is None
    assert majority_vote([]) is None


def test_accuracy_on_a_hand_computed_run() -> None:
    rows = [
        # q1: 2 of 4 right; the vote is a tie (1/2 vs 3) won by the first, right answer.
        row("q1", 0, r"\frac12", True), row("q1", 1, "3", False),
        row("q1", 2, "0.5", True), row("q1", 3, "3", False),
        # q2: 1 of 4 right; majority "7" is wrong.
        row("q2", 3, "7", False), row("q2", 0, "7", False),
        row("q2", 1, "9", True), row("q2", 2, None, False),
        # q3: nobody answered: wrong everywhere.
        row("q3", 0, None, False), row("q3", 1, None, False),
        row("q3", 2, None, False), row("q3", 3, None, False),
    ]
    acc = accuracy(rows)
    assert (acc.questions, acc.samples, acc.n, acc.min_n) == (3, 12, 4, 4)
    assert acc.pass_at_1 == pytest.approx((2 / 4 + 1 / 4 + 0) / 3)
    assert acc.maj_at_n == pytest.approx(1 / 3)
    assert acc.pass_at_n == pytest.approx(2 / 3)
    assert acc.pass_at_k[1] == pytest.approx(acc.pass_at_1)
    assert acc.pass_at_k[2] == pytest.approx((1 - 1 / 6 + 1 - 3 / 6 + 0) / 3)
    assert acc.pass_at_k[4] == pytest.approx(acc.pass_at_n)
    assert (acc.errors, acc.no_answer) == (5, 5)
    as_dict = acc.to_dict()
    assert {"pass@1", "maj@4", "pass@4", "pass@k"} <= set(as_dict)
    assert as_dict["pass@k"]["2"] == acc.pass_at_k[2]


def test_accuracy_needs_graded_rows() -> None:
    ungraded = row("q", 0, "1", True)
    del ungraded["correct"]
    with pytest.raises(ValueError, match="grade them first"):
        accuracy([ungraded])


@pytest.mark.parametrize(
    ("x", "n", "confidence", "low", "high"),
    [  # reference values: binomial-CDF bisection (independent of the beta code)
        (0, 10, 0.95, 0.0, 0.3084971),
        (10, 10, 0.95, 0.6915029, 1.0),
        (3, 10, 0.95, 0.0667395, 0.6524529),
        (50, 100, 0.95, 0.3983211, 0.6016789),
        (1, 1000, 0.99, 5.0125e-06, 0.0074063),
        (40, 160, 0.90, 0.1944176, 0.3126703),
    ],
)
def test_clopper_pearson_against_known_values(x: int, n: int, confidence: float, low: float,
                                              high: float) -> None:
    got_low, got_high = clopper_pearson(x, n, confidence)
    assert got_low == pytest.approx(low, rel=1e-4, abs=1e-9)
    assert got_high == pytest.approx(high, rel=1e-4)


def test_clopper_pearson_closed_forms_and_beta_quantiles() -> None:
    # x = 0: upper = 1 - (tail)^(1/n); Beta(a, 1) quantile = q^(1/a); Beta(2, 3) median.
    for n in (1, 5, 37, 400):
        assert clopper_pearson(0, n)[1] == pytest.approx(1 - 0.025 ** (1 / n), rel=1e-9)
    assert beta_ppf(0.3, 4.0, 1.0) == pytest.approx(0.3 ** 0.25, rel=1e-9)
    assert beta_ppf(0.5, 2.0, 3.0) == pytest.approx(0.3857275681323897, rel=1e-9)
    assert beta_ppf(0.5, 50.0, 50.0) == pytest.approx(0.5, abs=1e-12)


def test_rejection_rate_overall_and_per_round() -> None:
    rows = [
        row("q1", 0, "1", True, steps=[step(0, "accept"), step(1, "continue"),
                                       step(1, None, "target"), step(2, "accept")]),
        row("q1", 1, "1", True, steps=[step(0, "regenerate"), step(0, None, "target"),
                                       step(1, "accept")]),
        row("q2", 0, "1", True, steps=[step(0, "accept"), step(1, None)]),  # unscored: ignored
    ]
    rej = rejection_stats(rows, alpha=0.25)
    assert rej.overall is not None
    assert (rej.overall.rejections, rej.overall.steps) == (2, 6)
    assert rej.overall.rate == pytest.approx(1 / 3)
    assert (rej.overall.low, rej.overall.high) == pytest.approx(clopper_pearson(2, 6))
    assert {r: (v.rejections, v.steps) for r, v in rej.per_round.items()} == {
        0: (1, 3), 1: (1, 2), 2: (0, 1)}
    assert rej.alpha_in_interval is True
    assert json.loads(json.dumps(rej.to_dict()))["per_round"]["1"]["rate"] == 0.5
    assert rejection_stats([row("q", 0, "1", True)]).overall is None


def test_control_accuracy_per_question() -> None:
    # B = 4 of m = 16: q1 rejects 1 of 4 steps -> actual 4 -> 1.0; q2 2 of 4 -> 8 -> 0.0;
    # q3 1 of 8 -> 2 -> 0.5.
    def run(qid: str, decisions: list[str]) -> dict[str, Any]:
        return row(qid, 0, "1", True, steps=[step(i, d) for i, d in enumerate(decisions)])

    rows = [run("q1", ["continue", "accept", "accept", "accept"]),
            run("q2", ["continue", "regenerate", "accept", "accept"]),
            run("q3", ["continue"] + ["accept"] * 7),
            row("q4", 0, "1", True)]
    assert control_accuracy(rows, budget=4, m=16) == pytest.approx(
        {"q1": 1.0, "q2": 0.0, "q3": 0.5})
    with pytest.raises(ValueError):
        control_accuracy(rows, budget=0, m=16)


def test_tokens_timing_throughput_and_speedup() -> None:
    rows = [row("q1", 0, "1", True, started=100.0, finished=104.0, tokens=(10, 20, 30)),
            row("q1", 1, "1", True, started=101.0, finished=106.0, tokens=(1, 2, 3)),
            row("q2", 0, "1", True, started=102.0, finished=103.0, tokens=(5, 0, 0)),
            row("q3", 0, "1", True, started=100.0, finished=110.0, tokens=(0, 0, 0))]
    assert token_totals(rows) == {"draft_decode": 16, "target_decode": 22, "target_score": 33,
                                  "decode": 38, "total": 71}
    t = timing(rows)
    assert t.wall_seconds == 10.0
    # question latencies: q1 6, q2 1, q3 10 -> p50 6, p90 = 6 + 0.8 * (10 - 6)
    assert (t.latency_p50, t.latency_p90) == pytest.approx((6.0, 9.2))
    assert (t.samples_per_second, t.decode_tokens_per_second) == pytest.approx((0.4, 3.8))
    assert speedup(run_wall=10.0, baseline_wall=57.0) == pytest.approx(5.7)
    with pytest.raises(ValueError):
        speedup(0.0, 1.0)
    assert percentile([3.0], 90) == 3.0


def test_summary_is_plain_json_with_the_required_keys() -> None:
    rows = [row(f"q{q}", i, "1", i == 0, steps=[step(0, "accept"), step(1, "continue")],
                started=float(i), finished=float(i + 2)) for q in range(2) for i in range(4)]
    summary = summarize(rows, alpha=0.25, budget=4, m=16)
    again = json.loads(json.dumps(summary, allow_nan=False))
    assert again["pass@1"] == pytest.approx(0.25)
    assert again["maj@4"] == 1.0  # every sample answered "1": the first (correct) one wins
    assert again["rejection_rate"] == 0.5
    assert again["control_accuracy"]["mean"] == pytest.approx(0.0)  # 8 per 16 vs B = 4
    assert again["timing"]["wall_seconds"] == 5.0
