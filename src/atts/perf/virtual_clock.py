"""An asyncio event loop on a virtual clock: time jumps to the next timer instead of passing.

The simulator runs the real runner (``atts.runner.runner.execute``) on this loop, with engines
whose calls take modelled time (``atts.perf.cost_engine``).  Everything the runner awaits
(semaphores, futures, ``asyncio.sleep`` in the retry backoff) behaves as on a real loop; only
the clock differs: whenever no callback is ready, the loop moves ``time()`` straight to the
earliest scheduled timer, so a simulated day passes in as long as its events take to process.

Two additions the engines need:
- ``call_when_idle``: run a callback once every callback due at the current instant has run
  (an engine forms its batch only after all requests arriving at that instant are in);
- a stall check: with nothing ready, nothing scheduled and the awaited work unfinished, no
  event can ever come (a barrier or a pre-pass that never releases), so the loop raises
  ``SimulationStalled`` rather than wait for ever.  ``run_until_idle`` instead stops there.
"""

from __future__ import annotations

import asyncio
import selectors
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

T = TypeVar("T")


class SimulationStalled(RuntimeError):
    """The simulated work waits on an event that no timer or engine will ever fire."""


class _VirtualSelector(selectors.DefaultSelector):
    """Polls the real file descriptors without blocking (the loop's self-pipe), then lets the
    loop advance its clock by the timeout it would have slept."""

    def __init__(self) -> None:
        super().__init__()
        self.loop: VirtualClockLoop | None = None

    def select(self, timeout: float | None = None) -> list[tuple[selectors.SelectorKey, int]]:
        events = super().select(0)
        if events or timeout == 0 or self.loop is None:
            return events
        self.loop._on_idle(timeout)
        return []


class VirtualClockLoop(asyncio.SelectorEventLoop):
    def __init__(self) -> None:
        selector = _VirtualSelector()
        super().__init__(selector)
        selector.loop = self
        self._now = 0.0
        self._idle: list[Callable[[], None]] = []
        self._stop_when_idle = False

    def time(self) -> float:
        return self._now

    def call_when_idle(self, callback: Callable[[], None]) -> None:
        """Run ``callback`` at the current instant, after every callback due at it has run."""
        self._idle.append(callback)

    def _on_idle(self, timeout: float | None) -> None:
        """Nothing is ready at ``time()``: run the idle callbacks, else jump to the next timer
        (``timeout`` seconds ahead), else stop or report the stall."""
        if self._idle:
            callbacks, self._idle = self._idle, []
            for callback in callbacks:
                self.call_soon(callback)
            return
        if timeout is None:
            if self._stop_when_idle:
                self.stop()
                return
            raise SimulationStalled(
                "simulation stalled: the runner waits on an event nothing will fire (a barrier "
                "or a calibration pre-pass that never releases)")
        self._now += timeout

    def run_until_idle(self) -> float:
        """Run every scheduled callback until none is left; returns the clock."""
        self._stop_when_idle = True
        try:
            self.run_forever()
        finally:
            self._stop_when_idle = False
        return self._now


def run_virtual(main: Callable[[VirtualClockLoop], Coroutine[Any, Any, T]]) -> T:
    """Run ``main(loop)`` to completion on a fresh virtual-clock loop, then close the loop."""
    loop = VirtualClockLoop()
    try:
        asyncio.set_event_loop(loop)
        return loop.run_until_complete(main(loop))
    finally:
        asyncio.set_event_loop(None)
        loop.close()
