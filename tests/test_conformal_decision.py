"""Ordinal decisions (docs/METHOD.md section 4), their thresholds' guards, and alpha = B/m."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import pytest

from atts.conformal import Decision, Thresholds, alpha_for_budget, classify


def test_decision_is_a_string_enum_matching_the_run_format() -> None:
    assert [d.value for d in Decision] == ["accept", "continue", "regenerate"]
    assert Decision("continue") is Decision.CONTINUE
    assert isinstance(Decision.ACCEPT, str) and Decision.ACCEPT == "accept"
    assert json.dumps({"decision": Decision.REGENERATE}) == '{"decision": "regenerate"}'


# (alpha, alpha_discard, p, expected): the boundaries belong to the lower outcome (p <= level).
TABLE = [
    (0.25, 0.0, 0.26, Decision.ACCEPT),
    (0.25, 0.0, 0.25, Decision.CONTINUE),
    (0.25, 0.0, 0.01, Decision.CONTINUE),
    (0.25, 0.0, 0.0, Decision.CONTINUE),  # alpha_discard = 0 never regenerates, even at p = 0
    (0.25, 0.1, 0.5, Decision.ACCEPT),
    (0.25, 0.1, 0.25, Decision.CONTINUE),
    (0.25, 0.1, 0.1000001, Decision.CONTINUE),
    (0.25, 0.1, 0.1, Decision.REGENERATE),
    (0.25, 0.1, 0.0, Decision.REGENERATE),
    (0.25, 0.25, 0.25, Decision.REGENERATE),  # alpha_discard = alpha: pure replacement
    (0.25, 0.25, 0.2500001, Decision.ACCEPT),
    (0.25, 0.0, 1.0, Decision.ACCEPT),
]


@pytest.mark.parametrize(("alpha", "alpha_discard", "p", "expected"), TABLE)
def test_classify_table(alpha: float, alpha_discard: float, p: float, expected: Decision) -> None:
    th = Thresholds(alpha, alpha_discard)
    assert classify(p, th.alpha, th.alpha_discard) is expected


def test_the_discard_ratio_keeps_its_meaning() -> None:
    assert Thresholds(0.25).discard_ratio == 0.0  # never regenerate
    assert Thresholds(0.25, 0.25).discard_ratio == 1.0  # pure replacement
    assert Thresholds(0.4, 0.1).discard_ratio == pytest.approx(0.25)


def test_thresholds_are_frozen_and_normalised() -> None:
    th = Thresholds(np.float32(0.25), 0)  # type: ignore[arg-type]
    assert type(th.alpha) is float and type(th.alpha_discard) is float
    assert th.min_bank_size == 3
    with pytest.raises(dataclasses.FrozenInstanceError):
        th.alpha = 0.5  # type: ignore[misc]


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.2, 1.2, float("nan"), float("inf"), None, True])
def test_alpha_outside_open_unit_interval_is_refused(alpha: object) -> None:
    with pytest.raises(ValueError, match=r"alpha must .*\(0, 1\)|alpha must lie strictly"):
        Thresholds(alpha)  # type: ignore[arg-type]


@pytest.mark.parametrize("alpha_discard", [-0.01, 0.3, float("nan"), None])
def test_alpha_discard_outside_zero_to_alpha_is_refused(alpha_discard: object) -> None:
    with pytest.raises(ValueError, match=r"alpha_discard must .*0.*alpha"):
        Thresholds(0.25, alpha_discard)  # type: ignore[arg-type]


def test_bad_alpha_discard_message_says_what_to_use() -> None:
    with pytest.raises(ValueError, match="use 0 to never regenerate, or alpha for pure"):
        Thresholds(0.2, 0.5)


@pytest.mark.parametrize("p", [-0.1, 1.1, float("nan")])
def test_classify_refuses_values_that_are_not_p_values(p: float) -> None:
    with pytest.raises(ValueError, match=r"\[0, 1\].*p_value"):
        classify(p, 0.2, 0.0)


def test_alpha_for_budget() -> None:
    assert alpha_for_budget(4, 16) == 0.25  # the paper's control experiment
    assert alpha_for_budget(1.5, 10) == 0.15
    assert Thresholds(alpha_for_budget(4, 16)).alpha == 0.25


@pytest.mark.parametrize(
    ("budget", "m", "match"),
    [
        (0, 16, "0 < B < m"),
        (16, 16, "0 < B < m"),
        (20, 16, "0 < B < m"),
        (-1, 16, "0 < B < m"),
        (float("nan"), 16, "0 < B < m"),
        (4, 0, "positive integer"),
        (4, 16.0, "positive integer"),
        (4, True, "positive integer"),
        ("4", 16, "budget must be a number"),
    ],
)
def test_alpha_for_budget_guards(budget: object, m: object, match: str) -> None:
    with pytest.raises(ValueError, match=match):
        alpha_for_budget(budget, m)  # type: ignore[arg-type]
