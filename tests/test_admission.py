"""Admission reads its queue lazily: memory does not grow with the samples pushed."""

from __future__ import annotations

import asyncio

import pytest

from atts.runner.admission import Admission


class Enough(Exception):
    """Stops a run whose queue never ends."""


def _run_until(stop_after: int, *, max_active: int, by_question: bool) -> tuple[int, list]:
    read = 0
    started: list = []

    def endless():  # a queue of a billion samples, made as they are read
        nonlocal read
        for i in range(10**9):
            read += 1
            yield (f"q{i // 3}", i % 3)

    async def one(spec):
        started.append(spec)
        await asyncio.sleep(0)
        if len(started) >= stop_after:
            raise Enough

    async def main():
        admission = Admission(one, max_active=max_active, by_question=by_question,
                              question=lambda spec: spec[0])
        admission.push(endless())
        await admission.run()

    with pytest.raises(Enough):
        asyncio.run(main())
    return read, started


@pytest.mark.parametrize("by_question", [False, True])
def test_an_endless_queue_is_read_only_as_slots_free(by_question):
    read, started = _run_until(50, max_active=4, by_question=by_question)
    # One question (3 samples) may be read ahead of the slots it waits for, and groupby reads
    # one spec past a question to see that it ended.
    assert len(started) >= 50
    assert read <= len(started) + 4 + 3 + 1
    assert started[:6] == [("q0", 0), ("q0", 1), ("q0", 2), ("q1", 0), ("q1", 1), ("q1", 2)]


def test_work_pushed_first_goes_ahead_of_the_unread_queue():
    order: list = []

    async def one(spec):
        order.append(spec)
        if spec == ("q0", 0):
            admission.push([("escalated", 0), ("escalated", 1)], first=True)
        await asyncio.sleep(0)

    admission = Admission(one, max_active=1)

    async def main():
        admission.push((f"q{i}", 0) for i in range(4))
        await admission.run()

    asyncio.run(main())
    assert order == [("q0", 0), ("escalated", 0), ("escalated", 1), ("q1", 0), ("q2", 0),
                     ("q3", 0)]


def test_samples_of_one_question_take_their_slots_together():
    in_flight: list[int] = []
    live = 0

    async def one(spec):
        nonlocal live
        live += 1
        in_flight.append(live)
        await asyncio.sleep(0)
        live -= 1

    async def main():
        admission = Admission(one, max_active=3, by_question=True, question=lambda s: s[0])
        admission.push((q, s) for q in ("a", "b") for s in range(3))
        await admission.run()

    asyncio.run(main())
    assert max(in_flight) == 3
