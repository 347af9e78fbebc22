"""The llama.cpp engine's pool of cached sequences: which sequence a request computes in.

Many samples interleave, so the engine keeps up to ``n_contexts`` sequences (``seq_id`` of one
llama.cpp context, each with its own KV cells).  Each request takes the sequence whose cached
token ids it extends (or cuts back a little); the engine then drops that sequence's cache after
the common prefix and evaluates only the rest, so a sample's history is not re-evaluated while
it keeps "its" sequence, and the pool size bounds KV memory.  A request that names its sample
(``owner``, the engine call's ``cache_key``) goes back to the sequence that sample used last,
whatever it must cut back there (a discarded step, the ids after a cue): by prefix alone it
cannot tell its own cache from a sibling's that shares the same prompt, and taking the
sibling's would evict that sibling's history.  When none fits, the request takes the one whose
loss costs least: a sequence released by a finished sample (``release``) first, never a live
sibling's just because it shares the prompt.

A sequence in use (a generation decoding, a step being scored) is held: ``acquire`` never
hands it out again until ``give_back``.  Choices run under one lock, so ``release`` may come
from any thread.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Sequence

from atts.engines._prefix import ReleaseQueue, common_prefix, extends


class Slot:
    """One sequence and the token ids whose KV entries it currently holds."""

    def __init__(self, seq: int) -> None:
        self.seq = seq  # its seq_id in the engine's context
        self.tokens: list[int] = []
        self.last_used = 0
        self.released = False  # its sample ended: its cache is worth nothing to keep
        self.busy = False  # a request is computing in it
        self.owner: str | None = None  # the sample whose history it holds (cache_key)


class ContextPool:
    def __init__(self, n_contexts: int, open_slot: Callable[[], Slot]) -> None:
        self._n_contexts = n_contexts
        self._open_slot = open_slot
        self.slots: list[Slot] = []
        self._released = ReleaseQueue()
        self._clock = 0
        self._owners: set[str] = set()  # every sample that has had a sequence
        self._lock = threading.Lock()

    def release(self, token_ids: Sequence[int]) -> None:
        self._released.put(token_ids)  # applied at the next acquire, under the lock

    def has_idle(self) -> bool:
        with self._lock:
            return len(self.slots) < self._n_contexts or any(not s.busy for s in self.slots)

    def acquire(self, ids: Sequence[int], owner: str | None = None) -> tuple[Slot, int, str]:
        """Pick an idle sequence for a request; return it, held, with its common-prefix length
        and what the request's context is to it: ``"own"`` (its sample's sequence), ``"first"``
        (a sample's first call, or a request that names none), ``"evicted"`` (its sample had a
        sequence, and it went to another).

        The sequence ``owner`` (the request's sample) used last is taken when it is idle.
        Otherwise a context the request extends (``extends``) is taken, longest prefix first.
        Otherwise a fresh context is opened while the pool has room.  With the pool full, a
        context whose sample ended is taken first (released, or unused for ``4 x n_contexts``
        requests: every live sample calls about once or twice per round), longest prefix
        first; only when every context is live does the request take the one whose loss costs
        least (the tokens it reuses minus the tokens it evicts).  Taking a live sibling's
        context because it shares the prompt would evict that sibling's whole history, and
        the two would evict each other at every step.  Least recently used breaks ties.
        """
        with self._lock:
            self._clock += 1
            self._apply_releases()
            history = "first" if owner is None or owner not in self._owners else "evicted"
            idle = [slot for slot in self.slots if not slot.busy]
            scored = [(common_prefix(slot.tokens, ids), slot) for slot in idle]
            near = [(n, s) for n, s in scored if extends(s.tokens, n)]
            if owner is not None:
                # Its own sequence first; never another live sample's by prefix alone.
                own = [(n, s) for n, s in scored if s.owner == owner]
                near = own or [(n, s) for n, s in near if s.owner is None or s.released]
            free = [(n, s) for n, s in scored
                    if s.released or self._clock - s.last_used > 4 * self._n_contexts]
            if near:
                shared, best = max(near, key=lambda item: (item[0], -item[1].last_used))
            elif len(self.slots) < self._n_contexts:
                shared, best = 0, self._open_slot()
                self.slots.append(best)
            elif free:
                shared, best = max(free, key=lambda item: (item[0], -item[1].last_used))
            elif scored:
                shared, best = max(scored, key=lambda item: (2 * item[0] - len(item[1].tokens),
                                                             -item[1].last_used))
            else:  # callers check has_idle() first
                raise RuntimeError("every sequence is busy")
            best.last_used = self._clock
            best.released = False
            best.busy = True
            if owner is not None and best.owner == owner:
                history = "own"
            best.owner = owner
            if owner is not None:
                self._owners.add(owner)
            return best, shared, history

    def trade(self, a: Slot, b: Slot) -> None:
        """Swap the sequences of two slots (the engine moved their caches)."""
        with self._lock:
            a.seq, b.seq = b.seq, a.seq

    def give_back(self, slot: Slot) -> None:
        with self._lock:
            slot.busy = False

    def _apply_releases(self) -> None:
        for ids in self._released.take():
            for slot in self.slots:
                if slot.tokens and extends(slot.tokens, common_prefix(slot.tokens, ids)):
                    slot.released = True
