"""Grading: answer extraction, normalisation and equivalence on real tricky pairs."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from typing import Any

import pytest

from atts.data import load_dataset
from atts.grading import (
    Grader,
    answer_family,
    extract_boxed,
    grade_rows,
    is_equivalent,
    normalize_answer,
)


@pytest.fixture(scope="module")
def grader() -> Iterator[Grader]:
    with Grader(workers=2, timeout=20.0) as g:
        yield g


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (r"so the answer is $\boxed{5}$.", "5"),
        (r"\boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"first \boxed{1}, then \boxed{2}", "2"),
        (r"\boxed{\left\{ 1, \frac{2}{3} \right\}}", r"\left\{ 1, \frac{2}{3} \right\}"),
        (r"\boxed{\text{(C) }\sqrt{2}}", r"\text{(C) }\sqrt{2}"),
        (r"\fbox{42}", "42"),
        (r"\boxed {7}", "7"),
        (r"\boxed{\boxed{3}}", r"\boxed{3}"),  # a box inside a box belongs to the outer one
        (r"\boxed{1} and a truncated \boxed{\frac{2", "1"),  # unbalanced last box: skipped
        (r"\boxed{\frac{2", None),
        ("no box here: 42", None),
        ("", None),
        (None, None),
        (r"\boxedx{3}", None),
        # Brace-less boxes, as LaTeX allows and the checker accepts (issue 17):
        (r"so the answer is \boxed 5", "5"),
        (r"$\boxed 12$.", "12"),
        (r"\boxed 7.", "7"),
        (r"\boxed{3} and then \boxed 7", "7"),  # the last box wins, braced or not
        (r"\boxed 7 and then \boxed{\frac{1}{2}}", r"\frac{1}{2}"),
        (r"\boxed  ", None),
    ],
)
def test_extract_boxed(text: str | None, expected: str | None) -> None:
    assert extract_boxed(text) == expected


@pytest.mark.parametrize(
    ("answer", "dataset", "expected"),
    [
        ("084", "aime24", "84"),
        ("27.0", "amc23", "27"),
        ("1,000", "gsm8k", "1000"),
        ("The solution ... #### 1,600", "gsm8k", "1600"),
        (r"\$18.00", "gsm8k", "18"),
        ("18 dollars.", "gsm8k", "18"),
        (r"\text{5 apples}", "gsm8k", "5"),
        ("3 and 4", "gsm8k", "3and4"),  # two numbers: ambiguous, left for math-verify
        (r"\dfrac{1}{2}", "math500", "1/2"),
        (r"\frac12", "math500", "1/2"),
        ("0.50", "math500", "1/2"),
        (r"-\frac{3}{6}", "math500", "-1/2"),
        (r"\left( 3, \frac{\pi}{2} \right)", "math500", r"(3,\frac{\pi}{2})"),
        (r"$x = 5$", "math500", "5"),
        (r"90^\circ", "math500", "90"),
        (r"10\%", "math500", "10"),
        (r"11,\! 111,\! 111,\! 100", "math500", "11111111100"),
        (r"\text{Evelyn}", "math500", "Evelyn"),
        (r"\pi r^2", "math500", r"\pi r^2"),
        (None, "math500", None),
    ],
)
def test_normalize_answer(answer: str | None, dataset: str, expected: str | None) -> None:
    assert normalize_answer(answer, dataset) == expected


def test_answer_family() -> None:
    assert [answer_family(d) for d in ("gsm8k_train", "aime25", "amc23", "math100", "mine")] == [
        "gsm8k", "aime", "amc", "math", "math"]


EQUIVALENT = [  # (pred, gold, dataset)
    (r"\frac12", "0.5", "math500"),
    (r"\dfrac{1}{2}", r"\frac{1}{2}", "math500"),
    ("084", "84", "aime24"),
    ("84", "084", "aime24"),
    ("27", "27", "amc23"),
    ("27.0", "27", "amc23"),
    ("1,000", "1000", "gsm8k"),
    (r"\$1,000.00", "1000", "gsm8k"),
    ("1000 dollars", "1000", "gsm8k"),
    (r"1,\!000", "1000", "math500"),
    ("(1, 2]", "(1,2]", "math500"),
    (r"\left[ \frac{\pi^2}{8}, \frac{5 \pi^2}{4} \right]", r"[\pi^2/8, 5\pi^2/4]", "math500"),
    (r"(3, \frac{\pi}{2})", r"\left( 3, \frac{\pi}{2} \right)", "math500"),
    ("(-2,1)", r"\left(-2, 1\right)", "math500"),
    (r"3\sqrt{2}", r"\sqrt{18}", "math500"),
    ("x^2+2x+1", "(x+1)^2", "math500"),
    (r"\{2, 1\}", r"\{1,2\}", "math500"),
    (r"\text{Evelyn}", "Evelyn", "math500"),
    (r"The final answer is $\boxed{\frac{14}{3}}$.", r"\frac{14}{3}", "math500"),
    (r"so $\boxed{\left\{ 1, \frac{2}{3} \right\}}$", r"\{\frac23, 1\}", "math500"),
    (r"90^\circ", "90", "math500"),
    ("x = 5", "5", "math500"),
]

NOT_EQUIVALENT = [
    ("6", "5", "math500"),
    ("85", "084", "aime24"),
    ("26.5", "27", "amc23"),
    ("1,001", "1000", "gsm8k"),
    ("[1, 2)", "(1,2]", "math500"),
    (r"(3, \pi)", r"\left( 3, \frac{\pi}{2} \right)", "math500"),
    ("0.333", r"\frac13", "math500"),
    (r"\sqrt{2}", "2", "math500"),
    ("(2, 3)", "(3, 2)", "math500"),
    (r"\frac{1}{2}", "2", "math500"),
    ("Emily", r"\text{Evelyn}", "math500"),
    (r"\boxed{}", "5", "math500"),
    ("", "5", "math500"),
    (None, "5", "math500"),
]


def test_equivalent_pairs_grade_right(grader: Grader) -> None:
    verdicts = grader.grade_many(EQUIVALENT)
    assert [pair for pair, ok in zip(EQUIVALENT, verdicts, strict=True) if not ok] == []


def test_wrong_answers_stay_wrong(grader: Grader) -> None:
    verdicts = grader.grade_many(NOT_EQUIVALENT)
    assert [pair for pair, ok in zip(NOT_EQUIVALENT, verdicts, strict=True) if ok] == []


def test_no_answer_and_fast_path_never_start_math_verify() -> None:
    with Grader(workers=1) as g:
        assert g.grade(None, "5") is False
        assert g.grade("", "5") is False
        assert g.grade("084", "84", "aime24") is True
        assert g.grade("85", "84", "aime24") is False
        assert g._pool is None
        assert (g.stats.no_answer, g.stats.fast_path, g.stats.verified) == (2, 2, 0)


def test_identical_pairs_are_verified_once(grader: Grader) -> None:
    before = grader.stats
    pairs = [(r"\sqrt{8}", r"2\sqrt{2}", "math500")] * 5
    assert grader.grade_many(pairs) == [True] * 5
    assert grader.grade(r"\sqrt{8}", r"2\sqrt{2}", "math500") is True
    after = grader.stats
    assert after.verified - before.verified == 1
    assert after.cache_hits - before.cache_hits == 5


def test_every_math500_gold_verifies_against_its_boxed_self(grader: Grader) -> None:
    problems = load_dataset("math500")
    with Grader(workers=2, timeout=20.0, fast_path=False) as audit:
        verdicts = audit.grade_many(
            [(rf"\boxed{{{p.gold}}}", p.gold, "math500") for p in problems])
        assert audit.stats.timeouts == 0
    assert [p.gold for p, ok in zip(problems, verdicts, strict=True) if not ok] == []


def test_grade_rows_reads_answer_gold_and_dataset(grader: Grader) -> None:
    rows: list[dict[str, Any]] = [
        {"answer": "0.5", "gold": r"\frac12", "dataset": "math500"},
        {"answer": None, "gold": "3", "dataset": "gsm8k"},
        {"answer": "007", "gold": "7", "dataset": "aime25"},
    ]
    assert grade_rows(rows, grader) == [True, False, True]


def hang_on_marker(gold: str, pred: str) -> bool:
    """A comparison that hangs on pred "HANG" (spawned workers import it from this module)."""
    if "HANG" in pred:
        time.sleep(120)
    return gold == pred


def test_a_hung_comparison_times_out_is_reported_and_the_pool_recovers() -> None:
    with Grader(workers=1, timeout=1.0, fast_path=False, verify=hang_on_marker) as g:
        verdicts = g.grade_many([("HANG", "1", "math"), ("2", "2", "math")])
        assert verdicts == [False, True]
        assert g.stats.timeouts == 1
        assert [(f.pred, f.reason) for f in g.failures] == [("HANG", "timeout after 1.0s")]
        assert g.grade("3", "3", "math") is True  # the recreated pool still works


def test_is_equivalent_in_process_and_off_the_main_thread_guard() -> None:
    assert is_equivalent(r"3\sqrt{2}", r"\sqrt{18}") is True
    assert is_equivalent(r"\frac12", "0.5") is True
    assert is_equivalent("1", "2") is False
    errors: list[BaseException] = []

    def run() -> None:
        try:
            Grader(workers=0).grade(r"\sqrt{8}", r"2\sqrt{2}")
        except ValueError as err:
            errors.append(err)

    thread = threading.Thread(target=run)
    thread.start()
    thread.join()
    assert len(errors) == 1 and "main thread" in str(errors[0])


def test_invalid_arguments() -> None:
    with pytest.raises(ValueError, match="workers"):
        Grader(workers=-1)
    with pytest.raises(ValueError, match="timeout"):
        Grader(timeout=0)
