"""Split-conformal p-values over a sorted bank of nonconformity scores, and their guards.

Owns the formula of docs/METHOD.md section 3 and nothing else: scores in, p-values out.

    p(s)       = (1 + #{i : s_i >= s}) / (n + 1)                      (deterministic)
    p_rand(s)  = (#{i : s_i > s} + U * (1 + #{i : s_i == s})) / (n + 1),  U ~ Uniform(0, 1]

Under exchangeability of the test score with the n calibration scores,
`P(p <= alpha) <= alpha`, and for continuous scores `P(p <= alpha) = floor(alpha (n+1)) / (n+1)
> alpha - 1/(n+1)`. The randomised p-value is exactly Uniform(0, 1), so `P(p_rand <= alpha) =
alpha` even with ties. Counts come from two binary searches on the sorted bank, so a query costs
O(log n) and a batch of queries is one vectorised `np.searchsorted`.
"""

from __future__ import annotations

import math
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from atts.errors import AttsError

ArrayLike = npt.ArrayLike
FloatArray = npt.NDArray[np.float64]

__all__ = [
    "CalibrationError",
    "check_alpha",
    "check_bank_size",
    "check_finite",
    "min_bank_size",
    "p_value",
    "p_value_of",
    "p_value_sorted",
]


class CalibrationError(AttsError, ValueError):
    """The bank cannot support a decision at this alpha; the message says what to change."""


def check_alpha(alpha: float, name: str = "alpha") -> float:
    """Return `alpha` as a float after checking it lies strictly inside (0, 1)."""
    if isinstance(alpha, bool) or not isinstance(alpha, (int, float, np.integer, np.floating)):
        raise ValueError(f"{name} must be a number in (0, 1), got {alpha!r}")
    value = float(alpha)
    if not (0.0 < value < 1.0):  # also rejects NaN
        raise ValueError(
            f"{name} must lie strictly between 0 and 1 (it is the target rejection rate; "
            f"e.g. alpha = B/m from alpha_for_budget), got {alpha!r}"
        )
    return value


def min_bank_size(alpha: float) -> int:
    """Smallest bank size n for which a step can be rejected at level `alpha`.

    The smallest deterministic p-value is 1/(n+1), so rejection is possible iff
    1/(n+1) <= alpha, i.e. n >= ceil(1/alpha) - 1. The closed form is corrected against the
    same float division the p-value uses, so e.g. alpha=0.1 gives 9 and alpha=1/3 gives 2.
    """
    a = check_alpha(alpha)
    n = max(math.ceil(1.0 / a) - 1, 0)
    while n > 0 and 1.0 / n <= a:
        n -= 1
    while 1.0 / (n + 1) > a:
        n += 1
    return n


def check_bank_size(n: int, alpha: float, *, where: str = "the calibration bank",
                    fix: str = "") -> None:
    """The one bank-size guard of every decision: raise ``CalibrationError`` unless a bank of
    `n` scores can reject anything at level `alpha` (n + 1 >= 1/alpha).  ``where`` names the
    bank, ``fix`` says what to change (default: add scores or raise alpha)."""
    if n <= 0:
        raise CalibrationError(
            f"{where} is empty: add calibration scores first "
            "(run `atts calibrate`, or let the online warm-up fill the bank)"
        )
    need = min_bank_size(alpha)
    if n < need:
        raise CalibrationError(
            f"{where} holds {n} scores, but alpha={alpha} needs at least {need} "
            f"(= ceil(1/alpha) - 1, so that n + 1 >= 1/alpha) before any step can ever be "
            "rejected; "
            + (fix or f"add {need - n} more calibration scores (wait for warm-up) or raise "
               "alpha")
        )


def check_finite(values: np.ndarray, what: str) -> None:
    """Raise if `values` holds NaN or +-inf; `what` names them in the message."""
    if values.size and not np.isfinite(values).all():
        bad = values[~np.isfinite(values)]
        raise ValueError(
            f"{what} must be finite, got {bad.size} non-finite value(s) (first: {bad.flat[0]}); "
            "a NaN or infinite perplexity means the scorer failed: drop that step or fix the "
            "scorer before it reaches the conformal bank"
        )


def _as_bank(calibration_scores: ArrayLike) -> FloatArray:
    bank = np.asarray(calibration_scores, dtype=np.float64)
    if bank.ndim > 1:
        raise ValueError(
            f"calibration scores must be one-dimensional, got shape {bank.shape}; "
            "flatten them (np.ravel) if they really form one bank"
        )
    bank = bank.reshape(-1)
    if bank.size == 0:
        raise ValueError(
            "the calibration bank is empty: add calibration scores first "
            "(run `atts calibrate`, or let the online warm-up fill the bank)"
        )
    check_finite(bank, "calibration scores")
    return bank


def p_value_of(sorted_scores: FloatArray, score: float, *, leave_one_out: bool = False,
               rng: np.random.Generator | None = None) -> float:
    """One step's p-value against a sorted, non-empty bank: the formula every decision calls
    (runs, replays and the server), counting ``#{s_i >= s}`` directly.

    ``leave_one_out``: the step's own score is in the bank (a pre-drafted first step judged
    against the bank it joined); it is one of the ``s_i >= s`` and none of the ``s_i > s``, so
    it is taken out of both the count and n.  ``rng``: the smoothed p-value, else the
    deterministic one.
    """
    if not math.isfinite(score):
        raise ValueError(
            f"the query score must be finite, got {score}; a NaN or infinite perplexity means "
            "the scorer failed: drop that step or fix the scorer"
        )
    n = sorted_scores.shape[0]
    ge = n - int(np.searchsorted(sorted_scores, score, side="left"))
    gt = n - int(np.searchsorted(sorted_scores, score, side="right"))
    if leave_one_out:
        ge, n = ge - 1, n - 1
    if rng is None:
        return (1 + ge) / (n + 1)
    # U in (0, 1]: 1 - random() keeps p > 0, so alpha_discard = 0 can never regenerate.
    u = 1.0 - float(rng.random())
    return (gt + u * (1 + ge - gt)) / (n + 1)


@overload
def p_value_sorted(
    sorted_scores: FloatArray,
    scores: float,
    *,
    randomized: bool = ...,
    rng: np.random.Generator | None = ...,
) -> float: ...
@overload
def p_value_sorted(
    sorted_scores: FloatArray,
    scores: npt.NDArray[Any],
    *,
    randomized: bool = ...,
    rng: np.random.Generator | None = ...,
) -> FloatArray: ...
@overload
def p_value_sorted(
    sorted_scores: FloatArray,
    scores: ArrayLike,
    *,
    randomized: bool = ...,
    rng: np.random.Generator | None = ...,
) -> float | FloatArray: ...
def p_value_sorted(
    sorted_scores: FloatArray,
    scores: ArrayLike,
    *,
    randomized: bool = False,
    rng: np.random.Generator | None = None,
) -> float | FloatArray:
    """p-values of `scores` against an already sorted, finite, non-empty float64 bank.

    The fast path used by the banks: the bank is trusted (not re-checked, not re-sorted; an
    unsorted bank gives wrong answers), the queries are checked for NaN/inf. A scalar query
    returns a float, anything else an ndarray of the query's shape.
    """
    n = sorted_scores.shape[0]
    if n == 0:
        raise ValueError(
            "the calibration bank is empty: add calibration scores first "
            "(run `atts calibrate`, or let the online warm-up fill the bank)"
        )
    if randomized and rng is None:
        raise ValueError(
            "randomized=True needs a random generator: pass rng=np.random.default_rng(seed)"
        )
    if isinstance(scores, (float, int, np.floating, np.integer)) and not isinstance(scores, bool):
        return p_value_of(sorted_scores, float(scores), rng=rng if randomized else None)

    query = np.asarray(scores, dtype=np.float64)
    check_finite(query, "query scores")
    ge_arr = n - np.searchsorted(sorted_scores, query, side="left")
    if not randomized:
        out = (1.0 + ge_arr) / (n + 1)
    else:
        assert rng is not None
        gt_arr = n - np.searchsorted(sorted_scores, query, side="right")
        u_arr = 1.0 - rng.random(query.shape)
        out = (gt_arr + u_arr * (1 + ge_arr - gt_arr)) / (n + 1)
    if query.ndim == 0:
        return float(out)
    return out


@overload
def p_value(
    calibration_scores: ArrayLike,
    scores: float,
    *,
    randomized: bool = ...,
    rng: np.random.Generator | None = ...,
) -> float: ...
@overload
def p_value(
    calibration_scores: ArrayLike,
    scores: npt.NDArray[Any],
    *,
    randomized: bool = ...,
    rng: np.random.Generator | None = ...,
) -> FloatArray: ...
@overload
def p_value(
    calibration_scores: ArrayLike,
    scores: ArrayLike,
    *,
    randomized: bool = ...,
    rng: np.random.Generator | None = ...,
) -> float | FloatArray: ...
def p_value(
    calibration_scores: ArrayLike,
    scores: ArrayLike,
    *,
    randomized: bool = False,
    rng: np.random.Generator | None = None,
) -> float | FloatArray:
    """Split-conformal p-values of `scores` against `calibration_scores` (any order).

    `p = (1 + #{s_i >= s}) / (n + 1)`; with `randomized=True` (and `rng` a
    `np.random.Generator`) the smoothed `(#{s_i > s} + U (1 + #{s_i == s})) / (n + 1)`.
    A scalar in gives a float out; an array in gives an ndarray of the same shape.
    Sorting costs O(n log n) per call: for repeated queries keep a `CalibrationBank`.
    """
    bank = _as_bank(calibration_scores)
    return p_value_sorted(np.sort(bank), scores, randomized=randomized, rng=rng)
