"""The modelled engines of ``atts simulate``: continuous batching on a virtual clock.

Time only moves at events.  Each engine batches continuously: an iteration takes every request
in flight (as many as ``max_batch`` and the KV memory allow, admitted in arrival order; the
run's per-engine concurrency limits are the runner's own, in ``GuardedEngine``); a request
first prefills (in chunks of ``chunk_tokens``), then decodes one token per iteration; the
iteration costs what ``atts.perf.roofline.iteration_seconds`` says.  When only decodes run,
the engine skips ahead to the next completion in one event and is cut back to the current
iteration's end if a request arrives meanwhile, which is exactly what iteration-by-iteration
simulation gives.  An engine on measured rates (the CPU) runs one request at a time.

``shared_device``: both models' servers on the same devices (the equal-hardware setting on
GPUs: the memory split between them, target-only given all of it).  Their iterations then take
turns on the devices, never overlapping: an iteration starts when the device is free, and
decode runs go one iteration at a time so that the other engine's work interleaves.

The clock is a ``VirtualClockLoop``: the real runner drives these engines through
``atts.perf.cost_engine`` (``atts.perf.plan_run`` puts them together); this module owns the
engines' time and the ``Signal`` a request's caller awaits.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Generator
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from atts.perf.devices import EngineSpec
from atts.perf.roofline import Chunk, decode_run_seconds, iteration_seconds, request_seconds
from atts.perf.virtual_clock import VirtualClockLoop


class Signal:
    """A one-shot event on the simulation's loop: awaitable, and ``time`` says when it fired."""

    def __init__(self, sim: Simulation) -> None:
        self._sim = sim
        self.fired = False
        self.time: float | None = None
        self._future = sim.loop.create_future()

    def fire(self) -> None:
        if self.fired:
            return
        self.fired, self.time = True, self._sim.now
        self._future.set_result(None)

    def __await__(self) -> Generator[Any, None, None]:
        return self._future.__await__()


@dataclass
class Request:
    prefill: int  # tokens evaluated before decoding (>= 1); scoring: the missing prefix + step
    rows: int  # logits rows among them (scoring: the step's tokens; generation: 1)
    decode: int  # tokens generated (the first comes from the last prefill row)
    context: int  # tokens already cached for the sequence
    done: Signal
    kind: str = "generate"  # generate | score
    prefilled: int = 0
    left: int = 0  # decode iterations still to run once the prefill is done

    @property
    def kv_tokens(self) -> int:
        return self.context + self.prefill + self.decode

    @property
    def length(self) -> int:
        return self.context + self.prefilled + max(0, self.decode - 1 - self.left)


@dataclass
class EngineStats:
    busy_seconds: float = 0.0
    iterations: int = 0
    peak_batch: int = 0
    tokens: dict[str, int] = field(default_factory=lambda: {"prefill": 0, "decode": 0})
    seconds_by_kind: dict[str, float] = field(default_factory=dict)  # one-at-a-time engines


class SimEngine:
    def __init__(self, sim: Simulation, name: str, spec: EngineSpec) -> None:
        self.sim, self.name, self.spec = sim, name, spec
        self.cap = max(1, spec.max_batch)
        self.waiting: deque[Request] = deque()
        self.running: list[Request] = []
        self.stats = EngineStats()
        self._busy = False
        self._version = 0
        self._macro: tuple[float, np.ndarray] | None = None  # (start, cumulative end times)

    def submit(self, request: Request) -> None:
        if request.prefill < 1:
            raise ValueError("a request evaluates at least one token")
        request.left = max(0, request.decode - 1)
        self.stats.tokens["prefill"] += request.prefill
        self.stats.tokens["decode"] += request.decode
        self.waiting.append(request)
        if not self._busy:
            self._busy = True
            self.sim.at(self.sim.now, self._start, last=True)
        elif self._macro is not None:
            self._cut_macro()

    def _cut_macro(self) -> None:
        """A request arrived during a skip-ahead: end it with the iteration now running."""
        assert self._macro is not None
        start, ends = self._macro
        # The iteration ending at or after now is the one running; a request arriving exactly
        # at a boundary joins the next iteration.
        current = int(np.searchsorted(ends, self.sim.now - start, side="left"))
        if current + 1 >= len(ends):
            return
        self._version += 1
        self._schedule_end(start, ends[: current + 1])

    def _start(self) -> None:
        if self.spec.rates is not None:
            self._start_alone()
            return
        kv_limit = self.spec.kv_capacity_tokens
        used = sum(r.kv_tokens for r in self.running)
        while self.waiting and len(self.running) < self.cap:
            need = self.waiting[0].kv_tokens
            if need > kv_limit:
                raise ValueError(f"{self.name}: a {need}-token sequence exceeds the KV memory "
                                 f"of {kv_limit} tokens; use more devices or shorter steps")
            if used + need > kv_limit:
                break
            used += need
            self.running.append(self.waiting.popleft())
        if not self.running:
            self._busy = False
            return
        self.stats.peak_batch = max(self.stats.peak_batch, len(self.running))
        filling = [r for r in self.running if r.prefilled < r.prefill]
        decoding = [r for r in self.running if r.prefilled >= r.prefill and r.left > 0]
        if filling:
            budget, chunks = self.spec.chunk_tokens, []
            for r in filling:
                take = min(budget, r.prefill - r.prefilled)
                if take <= 0:
                    break
                tail = r.prefill - r.prefilled - take  # rows sit at the end of the prefill
                chunks.append((r, take, Chunk(take, r.context + r.prefilled,
                                              max(0, min(take, r.rows - tail)))))
                budget -= take
            seconds = iteration_seconds(self.spec, [r.length for r in decoding],
                                        [c for _, _, c in chunks])
            self._macro = None
            self.stats.iterations += 1
            self.stats.busy_seconds += seconds
            start = self.sim.claim(seconds)
            self.sim.at(start + seconds, lambda: self._end_single(chunks, decoding))
            return
        steps = 1 if self.sim.shared_device else min(r.left for r in decoding)
        ends = np.cumsum(decode_run_seconds(self.spec, len(decoding),
                                            float(sum(r.length for r in decoding)), steps))
        self._version += 1
        self._schedule_end(self.sim.claim(float(ends[-1])), ends)

    def _schedule_end(self, start: float, ends: np.ndarray) -> None:
        self._macro = (start, ends)
        version = self._version
        self.sim.at(start + float(ends[-1]), lambda: self._end_macro(version, start, ends))

    def _end_single(self, chunks: list[tuple[Request, int, Chunk]],
                    decoding: list[Request]) -> None:
        for r, take, _ in chunks:
            r.prefilled += take
        for r in decoding:
            r.left -= 1
        self._finish()

    def _end_macro(self, version: int, start: float, ends: np.ndarray) -> None:
        if version != self._version:
            return  # cut back: a later event ends this skip-ahead
        self._macro = None
        self.stats.iterations += len(ends)
        self.stats.busy_seconds += float(ends[-1])
        for r in self.running:
            r.left -= len(ends)
        self._finish()

    def _finish(self) -> None:
        done = [r for r in self.running if r.prefilled >= r.prefill and r.left <= 0]
        self.running = [r for r in self.running if not (r.prefilled >= r.prefill and r.left <= 0)]
        for r in done:
            r.done.fire()
        self.sim.at(self.sim.now, self._start, last=True)

    def _start_alone(self) -> None:
        if not self.waiting:
            self._busy = False
            return
        r = self.waiting.popleft()
        seconds = request_seconds(self.spec, prefill=r.prefill, decode=r.decode,
                                  context=r.context, rows=r.rows)
        self.stats.iterations += 1
        self.stats.peak_batch = 1
        self.stats.busy_seconds += seconds
        kinds = self.stats.seconds_by_kind
        kinds[r.kind] = kinds.get(r.kind, 0.0) + seconds

        def end() -> None:
            r.done.fire()
            self.sim.at(self.sim.now, self._start_alone, last=True)

        self.sim.at(self.sim.now + seconds, end)


class Simulation:
    """The clock and the two engines.  ``loop``: the virtual-clock loop the runner runs on;
    without one the simulation owns a loop of its own, which ``run`` drains and closes."""

    def __init__(self, draft: EngineSpec, target: EngineSpec, *,
                 loop: VirtualClockLoop | None = None, shared_device: bool = False) -> None:
        self.shared_device = shared_device
        self._device_free = 0.0  # when the shared device finishes what it was given
        self._owns_loop = loop is None
        self.loop = loop if loop is not None else VirtualClockLoop()
        self.engines = {"draft": SimEngine(self, "draft", draft),
                        "target": SimEngine(self, "target", target)}

    @property
    def now(self) -> float:
        return self.loop.time()

    def at(self, time: float, action: Callable[[], None], *, last: bool = False) -> None:
        """Run ``action`` at ``time``; ``last``: after every other event of that time (an engine
        forms its batch only once all requests arriving at that instant are in)."""
        if not last:
            self.loop.call_at(time, action)
        elif time <= self.now:
            self.loop.call_when_idle(action)
        else:
            self.loop.call_at(time, lambda: self.loop.call_when_idle(action))

    def claim(self, seconds: float) -> float:
        """When an iteration of ``seconds`` starting now may start: now, or (a shared device)
        once the other engine's work given to the device is done; the device is then held."""
        if not self.shared_device:
            return self.now
        start = max(self.now, self._device_free)
        self._device_free = start + seconds
        return start

    def signal(self) -> Signal:
        return Signal(self)

    def call(self, engine: str, *, prefill: int, decode: int = 0, rows: int = 1,
             context: int = 0, kind: str = "generate") -> Signal:
        """Submit a request now; the returned signal fires when it completes."""
        done = self.signal()
        self.engines[engine].submit(Request(prefill, rows, decode, context, done, kind))
        return done

    def run(self) -> float:
        """Run every event to the end (a simulation that owns its loop); returns the clock."""
        if not self._owns_loop:
            raise RuntimeError("this simulation runs on the runner's loop")
        try:
            return self.loop.run_until_idle()
        finally:
            self.loop.close()

    def engine_summary(self) -> dict[str, Any]:
        return {name: {"busy_seconds": e.stats.busy_seconds, "iterations": e.stats.iterations,
                       "peak_batch": e.stats.peak_batch, "tokens": dict(e.stats.tokens),
                       "seconds_by_kind": dict(e.stats.seconds_by_kind)}
                for name, e in self.engines.items()}
