"""Stop strings (``StopStrings``): where a returned text ends, and what of a text still being
written may be sent, so that a stream ends where the whole answer does."""

from __future__ import annotations

import pytest

from atts.serve.stops import StopStrings


def test_the_text_is_cut_before_the_first_stop_string_and_without_it():
    stops = StopStrings(("\n\n", "Q:"))
    assert stops.final("step one\n\nstep two") == ("step one", True)
    assert stops.final("A: 4 Q: next\n\n") == ("A: 4 ", True)
    assert stops.final("no stop here") == ("no stop here", False)
    assert StopStrings().final("anything\n\n") == ("anything\n\n", False)


def test_first_means_the_stop_string_complete_first_as_the_text_grows():
    # "ab" is complete at 3, "xabyz" only at 6, though it starts earlier: a model stopping
    # as it writes stops at "ab".
    assert StopStrings(("xabyz", "ab")).cut("-xabyz") == 2
    # Both complete at the same place: the longer one, which starts earlier, cuts.
    assert StopStrings(("b", "ab")).cut("-ab") == 1


def test_a_tail_that_could_begin_a_stop_string_is_held_back_until_it_is_known():
    stops = StopStrings(("\n\nQ:",))
    assert stops.visible("one\n") == ("one", False)
    assert stops.visible("one\n\nQ") == ("one", False)
    assert stops.visible("one\n\nQ:") == ("one", True)
    assert stops.visible("one\n\nA") == ("one\n\nA", False)  # not a stop after all


@pytest.mark.parametrize("text", ["abcab", "xxabyab", "aab", "b", "ab" * 5])
def test_what_is_sent_while_writing_is_always_a_prefix_of_the_final_text(text):
    stops = StopStrings(("abc", "by", "ba"))
    final, _ = stops.final(text)
    for end in range(len(text) + 1):
        visible, stopped = stops.visible(text[:end])
        assert final.startswith(visible)
        if stopped:
            assert visible == final


def test_an_empty_stop_string_is_refused():
    with pytest.raises(ValueError, match="non-empty"):
        StopStrings(("x", ""))
