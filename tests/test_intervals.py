"""Bootstrap intervals over questions: reproducible, centred, paired differences."""

from __future__ import annotations

import numpy as np
import pytest

from atts.report.intervals import bootstrap_mean, paired_difference


def test_the_interval_is_reproducible_and_holds_the_estimate() -> None:
    values = [0.0, 0.25, 0.5, 1.0, 0.75, 0.0, 1.0, 0.5]
    first, again = bootstrap_mean(values), bootstrap_mean(values)
    assert first == again  # a fixed seed: the same rows give the same interval
    assert first.estimate == pytest.approx(np.mean(values))
    assert 0.0 <= first.low < first.estimate < first.high <= 1.0
    assert first.questions == 8


def test_the_interval_shrinks_with_more_questions_like_a_standard_error() -> None:
    rng = np.random.default_rng(1)
    small = bootstrap_mean(rng.random(20).tolist())
    large = bootstrap_mean(rng.random(2000).tolist())
    assert (large.high - large.low) < (small.high - small.low) / 5  # ~ 1/sqrt(100) = 1/10
    # For a large sample the percentile interval is the normal one: mean +- 1.96 sd/sqrt(n).
    values = rng.random(2000)
    interval = bootstrap_mean(values.tolist())
    half = 1.96 * values.std(ddof=1) / np.sqrt(values.size)
    assert interval.high - interval.low == pytest.approx(2 * half, rel=0.1)


def test_a_constant_sample_has_a_point_interval_and_no_sample_is_refused() -> None:
    point = bootstrap_mean([1.0, 1.0, 1.0])
    assert (point.low, point.estimate, point.high) == (1.0, 1.0, 1.0)
    with pytest.raises(ValueError, match="at least one question"):
        bootstrap_mean([])


def test_paired_differences_resample_questions_together() -> None:
    run = {"a": 1.0, "b": 0.5, "c": 0.0}
    same = paired_difference(run, run)
    assert same is not None and (same.low, same.estimate, same.high) == (0.0, 0.0, 0.0)
    shifted = paired_difference({q: v + 0.25 for q, v in run.items()}, run)
    assert shifted is not None and shifted.low == shifted.high == pytest.approx(0.25)
    assert paired_difference({"x": 1.0}, run) is None  # no shared question: no difference
    assert bootstrap_mean([0.0, 1.0]).overlaps(bootstrap_mean([1.0, 1.0]))
