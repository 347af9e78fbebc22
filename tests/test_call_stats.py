"""atts.engines.call_stats: the per-engine call totals a run records, by hand."""

from __future__ import annotations

import pytest

from atts.engines.call_stats import CallStats


def test_calls_add_up_by_kind_and_a_session_is_a_difference() -> None:
    stats = CallStats().plus("prefill", 40, 0.5, 0.1, 2)
    earlier = stats
    stats = stats.plus("decode", 8, 0.25, 0.0, 2).plus("decode", 2, 0.2, 0.05, 1)
    assert (stats.decode_calls, stats.decode_rows, stats.prefill_calls, stats.prefill_rows) == (
        2, 10, 1, 40)
    assert stats.decode_seconds == pytest.approx(0.45)
    assert stats.wait_seconds == pytest.approx(0.15)
    assert stats.thread_seconds == pytest.approx(2 * 0.5 + 2 * 0.25 + 1 * 0.2)
    session = stats.since(earlier)
    assert (session.decode_calls, session.prefill_calls, session.prefill_rows) == (2, 0, 0)
    assert session.thread_seconds == pytest.approx(0.7)


def test_the_record_gives_the_mean_batch_and_the_busy_share() -> None:
    stats = CallStats().plus("decode", 8, 0.3, 0.0, 2).plus("decode", 2, 0.2, 0.0, 2)
    record = stats.to_dict(wall_seconds=2.0)
    assert record["mean_decode_batch"] == pytest.approx(5.0)
    assert record["busy_share"] == pytest.approx(0.25)
    empty = CallStats().to_dict(wall_seconds=0.0)
    assert empty["mean_decode_batch"] is None and empty["busy_share"] is None


def test_a_call_of_another_kind_is_refused_not_counted_as_a_prefill() -> None:
    with pytest.raises(ValueError, match="decode or a prefill"):
        CallStats().plus("score", 1, 0.1, 0.0, 1)  # type: ignore[arg-type]
