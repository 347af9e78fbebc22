"""The p-value formula (docs/METHOD.md section 3), its exact rank law, and its input guards."""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest

from atts.conformal import check_bank_size, min_bank_size, p_value, p_value_sorted


def brute_force(cal: np.ndarray, s: float) -> float:
    return (1 + int(np.sum(cal >= s))) / (len(cal) + 1)


def test_matches_brute_force_with_ties_and_any_order() -> None:
    rng = np.random.default_rng(1)
    cal = rng.integers(0, 6, size=37).astype(float)  # many ties, unsorted
    queries = np.concatenate([np.arange(-1.0, 7.0, 0.5), cal[:5]])
    got = p_value(cal, queries)
    assert isinstance(got, np.ndarray) and got.shape == queries.shape
    np.testing.assert_array_equal(got, [brute_force(cal, q) for q in queries])


def test_extremes_and_hand_values() -> None:
    cal = [1.0, 2.0, 3.0]
    assert p_value(cal, 0.0) == 1.0  # below everything: never rejected
    assert p_value(cal, 9.0) == 0.25  # above everything: the smallest p, 1/(n+1)
    assert p_value(cal, 2.0) == 0.75  # ties count as ">=": (1 + 2) / 4


def test_scalar_in_float_out_array_in_array_out() -> None:
    cal = np.array([0.5, 1.5, 2.5])
    for scalar in (1.0, 1, np.float64(1.0), np.float32(1.0), np.int64(1), np.array(1.0)):
        assert type(p_value(cal, scalar)) is float
    assert isinstance(p_value(cal, [1.0]), np.ndarray)
    assert p_value(cal, np.ones((2, 3))).shape == (2, 3)
    assert p_value(cal, np.array([])).shape == (0,)


def test_sorted_fast_path_equals_general_path() -> None:
    rng = np.random.default_rng(2)
    cal = rng.normal(size=500)
    q = rng.normal(size=200)
    np.testing.assert_array_equal(p_value_sorted(np.sort(cal), q), p_value(cal, q))
    assert p_value_sorted(np.sort(cal), float(q[0])) == p_value(cal, q[:1])[0]


def test_randomized_formula_with_known_uniforms() -> None:
    cal = np.array([1.0, 2.0, 2.0, 2.0, 3.0])
    q = np.array([2.0, 0.0, 4.0, 3.0])
    got = p_value(cal, q, randomized=True, rng=np.random.default_rng(7))
    u = 1.0 - np.random.default_rng(7).random(q.shape)  # the same draws, U in (0, 1]
    gt = np.array([1, 5, 0, 0])
    eq = np.array([3, 0, 0, 1])
    np.testing.assert_allclose(got, (gt + u * (1 + eq)) / 6, rtol=0, atol=1e-15)
    scalar = p_value(cal, 2.0, randomized=True, rng=np.random.default_rng(7))
    assert type(scalar) is float
    assert scalar == pytest.approx((1 + u[0] * 4) / 6, abs=1e-15)


def test_randomized_never_exceeds_deterministic_and_stays_positive() -> None:
    rng = np.random.default_rng(3)
    cal = rng.integers(0, 4, size=50).astype(float)
    q = rng.integers(-1, 5, size=5000).astype(float)
    det = p_value(cal, q)
    ran = p_value(cal, q, randomized=True, rng=rng)
    assert np.all(ran <= det) and np.all(ran > 0.0)
    assert np.all(ran > det - (1 + np.sum(cal[None, :] == q[:, None], axis=1)) / 51)


@pytest.mark.parametrize("n", [1, 2, 5, 9, 10, 19, 20, 37, 99, 100, 1000])
@pytest.mark.parametrize("alpha", ["0.01", "0.05", "0.1", "0.25", "0.29", "0.4", "0.5", "0.9"])
def test_exact_rejection_probability_by_rank_enumeration(n: int, alpha: str) -> None:
    """With continuous exchangeable scores the test point's rank among the n+1 points is uniform,
    so enumerating all n+1 positions gives P(p <= alpha) exactly: floor(alpha (n+1)) / (n+1)."""
    cal = np.arange(n, dtype=float)  # distinct values: continuous scores have no ties
    tests = np.arange(n + 1, dtype=float) - 0.5  # one test point in each rank position
    rejected = int(np.sum(p_value(cal, tests) <= float(alpha)))
    assert rejected == math.floor(Fraction(alpha) * (n + 1))
    rate = rejected / (n + 1)
    assert float(alpha) - 1 / (n + 1) < rate <= float(alpha)


@pytest.mark.parametrize(
    ("alpha", "expected"),
    [
        (0.1, 9),
        (0.05, 19),
        (0.01, 99),
        (0.25, 3),
        (0.2, 4),
        (1 / 3, 2),
        (0.4, 2),
        (0.5, 1),
        (0.07, 14),
        (0.99, 1),
        (0.001, 999),
    ],
)
def test_min_bank_size(alpha: float, expected: int) -> None:
    assert min_bank_size(alpha) == expected
    # The definition it must agree with: the smallest n whose smallest p-value 1/(n+1) <= alpha.
    n = min_bank_size(alpha)
    assert p_value(np.arange(float(n)), 1e9) <= alpha
    if n > 1:
        assert p_value(np.arange(float(n - 1)), 1e9) > alpha


@pytest.mark.parametrize("alpha", [0.0, 1.0, -0.1, 1.5, float("nan"), True, "0.1"])
def test_min_bank_size_rejects_bad_alpha(alpha: object) -> None:
    with pytest.raises(ValueError, match="alpha"):
        min_bank_size(alpha)  # type: ignore[arg-type]


def test_bank_size_guard_says_how_many_scores_are_needed() -> None:
    check_bank_size(9, 0.1)
    with pytest.raises(ValueError, match=r"holds 8 scores.*at least 9.*ceil\(1/alpha\) - 1"):
        check_bank_size(8, 0.1)
    with pytest.raises(ValueError, match="add 15 more calibration scores"):
        check_bank_size(4, 0.05)
    with pytest.raises(ValueError, match=r"empty.*atts calibrate"):
        check_bank_size(0, 0.1)


def test_empty_bank_guard() -> None:
    with pytest.raises(ValueError, match=r"empty.*add calibration scores"):
        p_value([], 1.0)
    with pytest.raises(ValueError, match="empty"):
        p_value_sorted(np.empty(0), np.ones(3))


@pytest.mark.parametrize("bad", [float("nan"), float("inf"), -float("inf")])
def test_non_finite_scores_are_refused_in_bank_and_queries(bad: float) -> None:
    with pytest.raises(ValueError, match=r"calibration scores must be finite.*fix the scorer"):
        p_value([1.0, bad, 2.0], 1.0)
    with pytest.raises(ValueError, match=r"must be finite.*drop that step"):
        p_value([1.0, 2.0], bad)
    with pytest.raises(ValueError, match="query scores must be finite"):
        p_value([1.0, 2.0], [0.5, bad])
    with pytest.raises(ValueError, match="finite"):
        p_value_sorted(np.array([1.0, 2.0]), np.float32(bad))


def test_randomized_needs_a_generator_and_bank_must_be_1d() -> None:
    with pytest.raises(ValueError, match=r"rng=np.random.default_rng\(seed\)"):
        p_value([1.0, 2.0], 1.5, randomized=True)
    with pytest.raises(ValueError, match="one-dimensional"):
        p_value(np.ones((2, 2)), 1.0)


def test_leave_one_out_counts_as_if_the_own_score_were_not_in_the_bank():
    """p_value_of(leave_one_out=True) counts #{s_i >= s} directly minus the own score, the
    same number as the bank without it (no float p-value turned back into a count)."""
    from atts.conformal.pvalue import p_value_of

    rng = np.random.default_rng(5)
    for _ in range(200):
        bank = np.sort(rng.integers(0, 6, size=int(rng.integers(2, 30))).astype(np.float64))
        own = float(rng.choice(bank))
        without = np.delete(bank, int(np.searchsorted(bank, own)))
        assert p_value_of(bank, own, leave_one_out=True) == p_value_of(without, own)
        seed = int(rng.integers(1 << 30))
        assert p_value_of(bank, own, leave_one_out=True, rng=np.random.default_rng(seed)) == (
            p_value_of(without, own, rng=np.random.default_rng(seed)))
