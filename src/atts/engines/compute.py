"""The compute budget of a run: how many cores its in-process engines keep busy, and how.

Every strategy spends the same budget (``RunConfig.cores``, default: the cores this process may
run on), so a comparison between strategies is one at equal hardware.  The budget is a pool of
cores shared by the draft and the target engine.  Each engine decodes all its samples' next
tokens in one batched ``llama_decode`` call (``_llama_loop.py``), and each call takes the cores
that are free when it starts: a single-model strategy runs every call on every core; under
ATTS whichever model has work takes the free cores, instead of one core pinned to each model
idling while its model waits.  There is no queue order: with both engines busy a call usually
finds every core free and takes them all, so the two tend to alternate on two threads rather
than run side by side on one each (which decodes 10-20% faster on these CPUs; a fairer split is
future work, measured in BENCHMARKS.md section 0).

Measured on the team's 2-core Xeon (``bench/bench_llama_anchor.py``; BENCHMARKS.md, "Equal
hardware"): the 1.5B target decodes 15 tok/s on one context with two threads, 17.5-19 with two
one-thread contexts at once, and 30-33 with four sequences per call; batching is the one
that pays.  ``draft_threads`` / ``target_threads`` override the plan for one engine: that
engine then runs every call on that many threads of its own, outside the pool.
"""

from __future__ import annotations

import os
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from typing import Any


def machine_cores() -> int:
    """The cores this process may run on (its CPU affinity, which containers narrow)."""
    try:
        return len(os.sched_getaffinity(0))
    except (AttributeError, OSError):  # not Linux
        return os.cpu_count() or 1


class ComputePool:
    """``cores`` permits shared by the engines of one run; a call computes while it holds
    ``threads`` of them (one for the pool's own one-thread workers)."""

    def __init__(self, cores: int) -> None:
        if cores < 1:
            raise ValueError(f"a compute pool needs at least one core, got {cores}")
        self.cores = cores
        self._free = cores
        self._changed = threading.Condition()
        self.peak_busy = 0

    @contextmanager
    def hold(self, threads: int = 1) -> Iterator[None]:
        if not 1 <= threads <= self.cores:
            raise ValueError(f"a call may hold 1..{self.cores} cores, asked for {threads}")
        with self._changed:
            self._changed.wait_for(lambda: self._free >= threads)
            self._free -= threads
            self.peak_busy = max(self.peak_busy, self.cores - self._free)
        try:
            yield
        finally:
            with self._changed:
                self._free += threads
                self._changed.notify_all()


    @contextmanager
    def hold_up_to(self, most: int) -> Iterator[int]:
        """Wait for one free core, then take every other free one up to ``most``; yields how
        many were taken.  A call that starts while the other engine computes gets what is
        left; waiters are not served in order."""
        if most < 1:
            raise ValueError(f"a call needs at least one core, asked for {most}")
        with self._changed:
            self._changed.wait_for(lambda: self._free >= 1)
            taken = min(most, self._free)
            self._free -= taken
            self.peak_busy = max(self.peak_busy, self.cores - self._free)
        try:
            yield taken
        finally:
            with self._changed:
                self._free += taken
                self._changed.notify_all()


@dataclass(frozen=True)
class EngineShare:
    """How one engine spends its part of the budget."""

    threads: int  # the most threads one decode call runs on
    pooled: bool  # its calls take free cores from the run's shared pool (False: an override)


@dataclass(frozen=True)
class ComputePlan:
    """The budget of a run and how its engines spend it; recorded in the manifest."""

    cores: int
    machine_cores: int
    draft: EngineShare
    target: EngineShare

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def plan_compute(cores: int | None, draft_threads: int | None = None,
                 target_threads: int | None = None) -> ComputePlan:
    """The plan for a budget of ``cores`` (None: every core of the machine).  An explicit
    thread count takes that engine out of the pool: every call on that many threads."""
    machine = machine_cores()
    budget = machine if cores is None else cores
    if not 1 <= budget <= machine:
        # RunConfig checks this first with its own message; this guards direct callers.
        raise ValueError(f"cores must lie in [1, {machine}] (this machine has {machine}), "
                         f"got {budget}")

    def share(threads: int | None) -> EngineShare:
        if threads is None:
            return EngineShare(threads=budget, pooled=True)
        return EngineShare(threads=threads, pooled=False)

    return ComputePlan(budget, machine, share(draft_threads), share(target_threads))
