"""Certified settings: the cheapest escalate_alpha whose accuracy loss is at most epsilon with
probability at least 1 - delta, by learn-then-test (Angelopoulos, Bates, Candes, Jordan and
Lei 2021, "Learn then Test: Calibrating Predictive Algorithms to Achieve Risk Control").

Each setting (an escalate_alpha) is a null hypothesis H_alpha: "its expected loss exceeds
epsilon".  A question's loss is how much pass@1 the cascade gives up against the target there,
``max(0, target_q - cascade_q)`` in [0, 1]: the positive part, so gains on some questions never
pay for losses on others (conservative).  Each hypothesis gets the Hoeffding-Bentkus p-value of
the mean loss over the n calibration questions (LTT, eq. 7 and Prop. 3):

    p_HB = min( exp(-n h(min(R, eps), eps)),  e P(Binomial(n, eps) <= ceil(n R)) ),
    h(a, b) = a log(a / b) + (1 - a) log((1 - a) / (1 - b)),

and the settings are tested in a fixed sequence from the most expensive (the highest alpha,
closest to target-only) down, stopping at the first that is not rejected at delta; fixed-
sequence testing controls the family-wise error at delta without a Bonferroni split.  Every
setting rejected so far is certified: with probability >= 1 - delta over the calibration
questions, each has expected loss <= epsilon on new questions from the same pool.  The
cheapest of them is chosen.

What it does not cover: questions from another pool, and the dependence the online bank puts
between questions' decisions (each question's loss is treated as one draw).  Few questions
cannot certify anything: with no loss at all the smallest p-value is (1 - eps)^n, so
n >= log(delta) / log(1 - eps) questions are needed before any setting can pass.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

__all__ = ["Certificate", "certify", "hb_p_value", "losses_of", "questions_needed"]


def _h(a: float, b: float) -> float:
    first = 0.0 if a == 0 else a * math.log(a / b)
    return first + (0.0 if a == 1 else (1 - a) * math.log((1 - a) / (1 - b)))


def _binom_cdf(k: int, n: int, p: float) -> float:
    if k >= n:
        return 1.0
    return math.fsum(math.exp(math.lgamma(n + 1) - math.lgamma(j + 1) - math.lgamma(n - j + 1)
                              + j * math.log(p) + (n - j) * math.log1p(-p))
                     for j in range(0, k + 1))


def hb_p_value(mean_loss: float, n: int, epsilon: float) -> float:
    """The Hoeffding-Bentkus p-value of H: E[loss] > epsilon, for n losses in [0, 1] whose mean
    is ``mean_loss``."""
    if n < 1 or not 0 < epsilon < 1 or not 0 <= mean_loss <= 1:
        raise ValueError(f"need n >= 1, 0 < epsilon < 1 and a mean loss in [0, 1]; got n={n}, "
                         f"epsilon={epsilon}, mean={mean_loss}")
    hoeffding = math.exp(-n * _h(min(mean_loss, epsilon), epsilon))
    bentkus = math.e * _binom_cdf(math.ceil(n * mean_loss - 1e-12), n, epsilon)
    return min(1.0, hoeffding, bentkus)


def questions_needed(epsilon: float, delta: float) -> int:
    """The fewest questions at which a setting with no loss at all passes: (1 - eps)^n <= delta."""
    return math.ceil(math.log(delta) / math.log(1 - epsilon))


@dataclass(frozen=True)
class Certificate:
    epsilon: float
    delta: float
    questions: int
    tested: tuple[tuple[float, float, float], ...]  # (alpha, mean loss, p-value), in order
    certified: tuple[float, ...]  # alphas whose H was rejected
    chosen: float | None  # the cheapest certified alpha
    reason: str  # one line: what was chosen, or why nothing could be


def certify(target: Mapping[str, float], cascades: Mapping[float, Mapping[str, float]],
            costs: Mapping[float, float | None], *, epsilon: float, delta: float) -> Certificate:
    """LTT over ``cascades`` (alpha -> pass@1 per question) against ``target`` (pass@1 per
    question, the same questions); ``costs``: alpha -> relative cost (None: unknown)."""
    if not 0 < delta < 1:
        raise ValueError(f"delta must lie in (0, 1), got {delta}")
    n = len(target)
    need = questions_needed(epsilon, delta)
    tested: list[tuple[float, float, float]] = []
    certified: list[float] = []
    for alpha in sorted(cascades, reverse=True):  # the most expensive setting first
        cascade = cascades[alpha]
        loss = sum(losses_of(target, cascade)) / n
        p = hb_p_value(loss, n, epsilon)
        tested.append((alpha, loss, p))
        if p > delta:
            break
        certified.append(alpha)
    if not certified:
        if n < need:
            reason = (f"too few questions: {n} cannot certify a loss of at most {epsilon:g} at "
                      f"delta {delta:g} (even with no loss on any, p = (1 - {epsilon:g})^{n} = "
                      f"{(1 - epsilon) ** n:.3f}); at least {need} are needed")
        else:
            alpha, loss, p = tested[0]
            reason = (f"nothing certified: the most expensive setting (alpha {alpha:g}) loses "
                      f"{loss:.3f} on average, p = {p:.3f} > delta {delta:g}")
        return Certificate(epsilon, delta, n, tuple(tested), (), None, reason)
    known = [a for a in certified if costs.get(a) is not None]
    chosen = (min(known, key=lambda a: (costs[a], a)) if known else min(certified))
    cost = costs.get(chosen)
    reason = (f"certified {len(certified)} setting(s) on {n} questions; the cheapest is "
              f"escalate_alpha {chosen:g}" + (f" (cost {cost:.2f})" if cost is not None else "")
              + f": expected pass@1 loss <= {epsilon:g} with probability >= {1 - delta:g}")
    return Certificate(epsilon, delta, n, tuple(tested), tuple(certified), chosen, reason)


def losses_of(target: Mapping[str, float], cascade: Mapping[str, float]) -> Sequence[float]:
    """Each question's loss (the positive part of the pass@1 it gives up)."""
    return [max(0.0, target[q] - cascade[q]) for q in target]
