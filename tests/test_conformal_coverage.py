"""The conformal guarantee itself, by seeded simulation: realised rejection rates lie in the band.

For exchangeable scores and a bank of n, the rejection rate P(p <= alpha) must satisfy

    deterministic p, continuous scores:   alpha - 1/(n+1) <= rate <= alpha
    deterministic p, scores with ties:                        rate <= alpha   (only)
    randomised p, any scores:             alpha - 1/(n+1) <= rate <= alpha   (in fact = alpha)

Grid: 3 score laws (normal; log-normal with sigma 2, heavy-tailed; integers 0..5, many ties) x
n in {10, 20, 50, 100, 1000} x alpha in {0.1, 0.25, 0.4} x 4 settings (one marginal bank; per-
question banks; per-round banks; one bank fed online). Each setting counts rejections over
independent Bernoulli trials, so a count is compared with exact binomial tails (computed with
`math.lgamma`, no scipy): the upper check fails when P(Bin(N, alpha) >= k) < LEVEL, the lower
check when P(Bin(N, alpha - 1/(n+1)) <= k) < LEVEL. LEVEL = 0.001 / (number of one-sided checks
in the grid, 660): Bonferroni, so a correct implementation fails anywhere with probability at
most 0.001 (and, with fixed seeds, deterministically passes). With N = 6000 trials and
alpha = 0.25 that tolerance is about +-0.026 around the band.

Every p-value comes from the code runs execute: a ``Decider`` (deterministic or smoothed, seeded
per key as in a run) over ``StrataBanks`` (one pooled bank, per-question banks, round strata,
or one bank that grows after every decision: the server's bank and the question-level bank of
escalation), and every rejection from ``classify``, the one rule.

Why the trials are independent Bernoullis with the stated rates: marginal and grouped trials use
fresh draws per repetition (and per group). Online, position t decides score t against the t-1
before it (bank >= n0): for continuous scores the deterministic rejections depend only on
sequential ranks, which are independent with rates in [alpha - 1/t, alpha]; smoothed online
p-values are independent Uniform(0, 1) (Vovk), so the randomised count is exactly Bin(N, alpha),
and since p_rand <= p_det pointwise the deterministic count with ties is stochastically below it.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import numpy as np
import pytest

from atts.conformal import (
    Decider,
    Decision,
    DecisionKey,
    DecisionPolicy,
    StrataBanks,
    Thresholds,
    classify,
)

ALPHAS = (0.1, 0.25, 0.4)
NS = (10, 20, 50, 100, 1000)
DISTS = ("normal", "lognormal", "discrete")
SETTINGS = ("marginal", "question", "round", "online")
CHECKS_PER_CELL = {"normal": 4, "lognormal": 4, "discrete": 3}  # det up/low (no low with ties),
N_CHECKS = len(SETTINGS) * len(NS) * len(ALPHAS) * sum(CHECKS_PER_CELL.values())  # rand up/low
LEVEL = 0.001 / N_CHECKS

TRIALS = 6000  # Bernoulli trials per (setting, law, n), shared by the three alphas
GROUPS = 4
ONLINE_POSITIONS = 200


# -- exact binomial tails --------------------------------------------------------------------


def _log_pmf(j: int, n: int, p: float) -> float:
    return (
        math.lgamma(n + 1)
        - math.lgamma(j + 1)
        - math.lgamma(n - j + 1)
        + j * math.log(p)
        + (n - j) * math.log1p(-p)
    )


def _sum_from(start: int, step: int, n: int, p: float) -> float:
    total, j = 0.0, start
    while 0 <= j <= n:
        term = math.exp(_log_pmf(j, n, p))
        total += term
        if term < 1e-17 * total:  # past the mode the terms fall geometrically
            break
        j += step
    return total


def binom_sf(k: int, n: int, p: float) -> float:
    """P(X >= k) for X ~ Binomial(n, p)."""
    if k <= 0 or p >= 1.0:
        return 1.0
    if k > n or p <= 0.0:
        return 0.0
    if k <= n * p:
        return 1.0 - binom_cdf(k - 1, n, p)
    return min(1.0, _sum_from(k, +1, n, p))


def binom_cdf(k: int, n: int, p: float) -> float:
    """P(X <= k) for X ~ Binomial(n, p)."""
    if k < 0:
        return 0.0
    if k >= n or p <= 0.0:
        return 1.0
    if p >= 1.0:
        return 0.0
    if k >= n * p:
        return 1.0 - binom_sf(k + 1, n, p)
    return min(1.0, _sum_from(k, -1, n, p))


def test_binomial_tails_match_direct_sums() -> None:
    for n, p in [(1, 0.3), (20, 0.1), (37, 0.5), (200, 0.93), (500, 0.02)]:
        pmf = [math.comb(n, j) * p**j * (1 - p) ** (n - j) for j in range(n + 1)]
        for k in range(-1, n + 2):
            assert binom_sf(k, n, p) == pytest.approx(sum(pmf[max(k, 0) :]), abs=1e-12)
            assert binom_cdf(k, n, p) == pytest.approx(sum(pmf[: max(k + 1, 0)]), abs=1e-12)
    assert binom_sf(0, 10, 0.0) == 1.0 and binom_sf(1, 10, 0.0) == 0.0
    assert binom_cdf(9, 10, 1.0) == 0.0 and binom_cdf(10, 10, 1.0) == 1.0


# -- simulations -----------------------------------------------------------------------------


def draw(dist: str, rng: np.random.Generator, size: tuple[int, ...]) -> np.ndarray:
    if dist == "normal":
        return rng.standard_normal(size)
    if dist == "lognormal":
        return rng.lognormal(0.0, 2.0, size)
    return rng.integers(0, 6, size).astype(np.float64)


def _rng(setting: str, dist: str, n: int) -> np.random.Generator:
    return np.random.default_rng([SETTINGS.index(setting), DISTS.index(dist), n, 20260101])


# The p-value does not depend on alpha: one policy at the smallest alpha (the bank-size guard
# allows every n of the grid) gives the p-values every alpha of the grid is checked on.
DETERMINISTIC = DecisionPolicy(Thresholds(min(ALPHAS)))
SMOOTHED = DecisionPolicy(Thresholds(min(ALPHAS)), smoothed=True, seed=20260101)


def p_values(banks: StrataBanks, key: DecisionKey, score: float) -> tuple[float, float]:
    """The deterministic and smoothed p-values two run Deciders give ``score`` at ``key``.
    The deterministic Decider only reads (its ``after`` would add the score a second time to
    a growing bank); the smoothed one decides as a run does, then adds."""
    det = Decider(DETERMINISTIC, banks).banks.judging(key).p_value_of(score)
    verdict = Decider(SMOOTHED, banks).decide(key, score)
    assert verdict.p_value is not None
    return det, verdict.p_value


def simulate_marginal(dist: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """TRIALS repetitions: a fresh pooled bank of n scores decides one fresh score."""
    rng = _rng("marginal", dist, n)
    data = draw(dist, rng, (TRIALS, n + 1))  # row r: n calibration scores, then the test score
    det, ran = np.empty(TRIALS), np.empty(TRIALS)
    for r in range(TRIALS):
        banks = StrataBanks(initial=data[r, :n])
        det[r], ran[r] = p_values(banks, DecisionKey(f"t{r}"), float(data[r, n]))
    return det, ran


def group_banks(mode: str, n: int, scores: np.ndarray) -> StrataBanks:
    """GROUPS groups' n scores each, in per-question banks or in round strata (group g is
    round g; round 0 is the pooled bank, the others their own strata once they hold n)."""
    if mode == "question":
        banks = StrataBanks(per_question=True)
        for g in range(GROUPS):
            banks.add(f"q{g}", scores[g])
        return banks
    banks = StrataBanks(strata="round", warmup_size=n)
    banks.add("", scores[0])
    for g in range(1, GROUPS):
        banks.add_round(g, scores[g])
    return banks


def simulate_groups(mode: str, dist: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """GROUPS strata of different laws (scale and shift per group) share one run's banks;
    each group's bank holds only its own n scores and decides one fresh score of its law."""
    rng = _rng(mode, dist, n)
    reps = TRIALS // GROUPS
    scale = np.arange(1, GROUPS + 1, dtype=np.float64)[None, :, None]
    data = draw(dist, rng, (reps, GROUPS, n + 1)) * scale + 3.0 * scale
    det, ran = np.empty((reps, GROUPS)), np.empty((reps, GROUPS))
    for r in range(reps):
        banks = group_banks(mode, n, data[r, :, :n])
        for g in range(GROUPS):
            key = DecisionKey(f"q{g}", r, g)
            assert banks.judging(key).n == n
            det[r, g], ran[r, g] = p_values(banks, key, float(data[r, g, n]))
    return det.ravel(), ran.ravel()


def simulate_online(dist: str, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Exchangeable streams: after a warm-up of n scores, each next score is decided against the
    bank so far and then added to it by the Decider (the bank grows from n to
    n + ONLINE_POSITIONS - 1): the server's bank, and escalation's bank of questions."""
    rng = _rng("online", dist, n)
    reps = TRIALS // ONLINE_POSITIONS
    data = draw(dist, rng, (reps, n + ONLINE_POSITIONS))
    det, ran = np.empty((reps, ONLINE_POSITIONS)), np.empty((reps, ONLINE_POSITIONS))
    for r in range(reps):
        banks = StrataBanks(grow=True, initial=data[r, :n])
        for j in range(ONLINE_POSITIONS):
            det[r, j], ran[r, j] = p_values(banks, DecisionKey(f"t{r}", j),
                                            float(data[r, n + j]))
        assert banks.size() == n + ONLINE_POSITIONS
    return det.ravel(), ran.ravel()


def band_failures(p: np.ndarray, n: int, *, lower: bool, label: str) -> list[str]:
    """Checks the rejection counts of `p` at every alpha; returns readable failures."""
    failures = []
    trials = p.size
    for alpha in ALPHAS:
        k = sum(classify(float(x), alpha, 0.0) is not Decision.ACCEPT for x in p)
        rate = k / trials
        up = binom_sf(k, trials, alpha)
        if up < LEVEL:
            failures.append(f"{label} alpha={alpha}: rate {rate:.4f} > alpha (tail {up:.2e})")
        if lower:
            floor = max(alpha - 1.0 / (n + 1), 0.0)
            low = binom_cdf(k, trials, floor)
            if low < LEVEL:
                failures.append(
                    f"{label} alpha={alpha}: rate {rate:.4f} < alpha - 1/(n+1) = {floor:.4f} "
                    f"(tail {low:.2e})"
                )
    return failures


def check_cell(dist: str, n: int, det: np.ndarray, ran: np.ndarray) -> None:
    assert det.size == ran.size == TRIALS
    failures = band_failures(det, n, lower=dist != "discrete", label=f"{dist} n={n} det")
    failures += band_failures(ran, n, lower=True, label=f"{dist} n={n} randomised")
    assert not failures, "\n".join(failures)


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("dist", DISTS)
def test_marginal_bank_rejection_rate_in_band(dist: str, n: int) -> None:
    check_cell(dist, n, *simulate_marginal(dist, n))


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("dist", DISTS)
@pytest.mark.parametrize("mode", ["question", "round"])
def test_per_group_banks_rejection_rate_in_band(mode: str, dist: str, n: int) -> None:
    check_cell(dist, n, *simulate_groups(mode, dist, n))


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize("dist", DISTS)
def test_online_bank_rejection_rate_in_band(dist: str, n: int) -> None:
    check_cell(dist, n, *simulate_online(dist, n))


def test_ties_make_the_deterministic_p_value_conservative_and_randomising_fixes_it() -> None:
    """Not a bound but the reason both p-values exist: with 6 tied values and n = 1000 the
    deterministic rate at alpha = 0.1 collapses far below alpha, the randomised one does not."""
    det, ran = simulate_marginal("discrete", 1000)
    assert np.mean(det <= 0.1) < 0.02
    assert abs(np.mean(ran <= 0.1) - 0.1) < 0.02


@pytest.mark.parametrize(
    ("name", "wrong"),
    [
        ("no +1 in the numerator", lambda p, n: p - 1.0 / (n + 1)),
        ("one +1 too many", lambda p, n: np.minimum(p + 1.0 / (n + 1), 1.0)),
    ],
)
def test_the_checks_catch_a_miscalibrated_p_value(
    name: str, wrong: Callable[[np.ndarray, int], np.ndarray]
) -> None:
    """The statistical checks have power: an off-by-one p-value at n = 10 leaves the band."""
    det, _ = simulate_marginal("normal", 10)
    assert band_failures(wrong(det, 10), 10, lower=True, label=name)
