"""Admission: which waiting sample takes the next free slot, and when its task is made.

A run's samples wait in a queue, not as tasks: a task is made only when a sample takes one of
the ``max_active`` slots, and the queue reads what it is pushed lazily (a run pushes a
generator of its pending samples), so memory does not grow with ``--samples``: a million
samples wait as one generator, not a million specs or tasks.  Work pushed with ``first=True``
(a question's escalated samples) goes ahead of everything still waiting, so it starts at the
next free slot instead of after every question the run has not begun.

``by_question``: a question's samples take their slots together (a barrier strategy, sync,
needs every live sample of a question in flight at once; ``admission = question`` asks for the
authors' schedule).  One dispatcher takes the slots in queue order, so two groups can never
each hold part of what they need.

A task that raises (a result that cannot be written) stops the run: the others are cancelled
and awaited, and the error goes on.  Cancelling the run cancels every task and waits for it.
"""

from __future__ import annotations

import asyncio
import itertools
from collections import deque
from collections.abc import Awaitable, Callable, Iterable, Iterator
from typing import Generic, TypeVar

__all__ = ["Admission"]

Spec = TypeVar("Spec")


class Admission(Generic[Spec]):
    """Runs ``one(spec)`` for every spec pushed, at most ``max_active`` at a time."""

    def __init__(self, one: Callable[[Spec], Awaitable[None]], *, max_active: int,
                 by_question: bool = False, question: Callable[[Spec], str] = str) -> None:
        if max_active < 1:
            raise ValueError(f"max_active must be >= 1, got {max_active}")
        self._one = one
        self._max_active = max_active
        self._by_question = by_question
        self._question = question
        # Units read out of a source, or pushed first; then the sources not yet read.
        self._waiting: deque[list[Spec]] = deque()
        self._sources: deque[Iterator[list[Spec]]] = deque()
        self._free = max_active
        self._changed = asyncio.Event()  # a slot was freed or work was pushed

    def push(self, specs: Iterable[Spec], *, first: bool = False) -> None:
        """Queue ``specs`` (a question's samples next to each other), read lazily as slots free
        up; ``first``: ahead of everything still waiting, in their order (read at once)."""
        units = self._units(specs)
        if first:
            self._waiting.extendleft(reversed(list(units)))
        else:
            self._sources.append(units)
        self._changed.set()

    def _head(self) -> list[Spec] | None:
        """The unit that takes the next free slots, read from the sources when none is out."""
        while not self._waiting and self._sources:
            unit = next(self._sources[0], None)
            if unit is None:
                self._sources.popleft()
            else:
                self._waiting.append(unit)
        return self._waiting[0] if self._waiting else None

    async def run(self) -> None:
        """Admit until nothing waits and nothing runs (a running task may push more)."""
        running: set[asyncio.Task[None]] = set()
        try:
            while (head := self._head()) is not None or running:
                for task in running:
                    if task.done() and not task.cancelled() and task.exception() is not None:
                        raise task.exception()  # type: ignore[misc]
                running = {t for t in running if not t.done()}
                need = min(len(head), self._max_active) if head is not None else 0
                if head is not None and self._free >= need:
                    unit = self._waiting.popleft()
                    self._free -= need
                    running.add(asyncio.ensure_future(self._run_unit(unit, need)))
                    continue
                self._changed.clear()
                if running or head is not None:
                    await self._changed.wait()
        finally:
            for task in running:
                task.cancel()
            await asyncio.gather(*running, return_exceptions=True)

    async def _run_unit(self, unit: list[Spec], taken: int) -> None:
        try:
            # Every sample of a group ends before the group's slots are given back.
            results = await asyncio.gather(*(self._one(spec) for spec in unit),
                                           return_exceptions=True)
        finally:
            self._free += taken
            self._changed.set()
        for result in results:
            if isinstance(result, BaseException):
                raise result

    def _units(self, specs: Iterable[Spec]) -> Iterator[list[Spec]]:
        if not self._by_question:
            return ([spec] for spec in specs)
        return (list(group) for _, group in itertools.groupby(specs, key=self._question))
