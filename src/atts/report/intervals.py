"""Intervals for accuracy figures: percentile bootstrap over questions.

A run's samples are not independent draws: the N samples of one question share its difficulty,
so a binomial interval over samples is too narrow.  The question is the unit that is resampled
(Efron and Tibshirani 1993, ch. 13, the percentile interval): draw the questions with
replacement, average their per-question values (pass@1 = a question's fraction of correct
samples, maj@N = whether its majority answer is correct), and take the 2.5% and 97.5%
quantiles of those means.  A difference between two runs on the same questions resamples the
questions once for both (paired), which is far tighter than two separate intervals.

With few questions (the 6-problem benchmark slice) the bootstrap interval is itself rough and
too narrow (it cannot show values the sample never took); the text that quotes it says so.
The seed is fixed, so a report is reproducible.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass

import numpy as np

RESAMPLES = 4000
SEED = 20250915  # fixed: the same rows always give the same interval


@dataclass(frozen=True)
class Interval:
    estimate: float
    low: float
    high: float
    questions: int

    def overlaps(self, other: Interval) -> bool:
        return self.low <= other.high and other.low <= self.high

    def text(self, spec: str = ".3f") -> str:
        return f"{self.estimate:{spec}} [{self.low:{spec}}, {self.high:{spec}}]"


def bootstrap_mean(values: Sequence[float], confidence: float = 0.95) -> Interval:
    """The mean of per-question values with its percentile-bootstrap interval."""
    data = np.asarray(values, dtype=np.float64)
    if data.size == 0:
        raise ValueError("a bootstrap interval needs at least one question")
    rng = np.random.default_rng(SEED)
    means = data[rng.integers(0, data.size, size=(RESAMPLES, data.size))].mean(axis=1)
    tail = (1 - confidence) / 2
    low, high = np.quantile(means, [tail, 1 - tail])
    return Interval(float(data.mean()), float(low), float(high), int(data.size))


def paired_difference(run: Mapping[str, float], baseline: Mapping[str, float],
                      confidence: float = 0.95) -> Interval | None:
    """``run - baseline`` over the questions both answered, questions resampled together;
    None when they share no question (a difference would compare other questions)."""
    shared = sorted(set(run) & set(baseline))
    if not shared:
        return None
    return bootstrap_mean([run[q] - baseline[q] for q in shared], confidence)
