"""Prefix arithmetic over token ids, shared by the in-process engines' caches."""

from __future__ import annotations

import threading
from collections.abc import Sequence


def common_prefix(a: Sequence[int], b: Sequence[int]) -> int:
    """The number of leading ids ``a`` and ``b`` share."""
    n = min(len(a), len(b))
    return next((i for i in range(n) if a[i] != b[i]), n)


def extends(cached: Sequence[int], shared: int) -> bool:
    """Whether a request sharing ``shared`` ids with a cache of ``cached`` continues it: it
    keeps the whole cache, or cuts back at most a quarter of the shared length (a sample whose
    last step was replaced or discarded)."""
    return 4 * (len(cached) - shared) <= shared


class ReleaseQueue:
    """Sequences whose samples ended (``Engine.release``), queued from the event loop and
    taken by the engine's worker thread, which alone touches its cache."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._pending: list[tuple[int, ...]] = []

    def put(self, token_ids: Sequence[int]) -> None:
        with self._lock:
            self._pending.append(tuple(int(t) for t in token_ids))

    def take(self) -> list[tuple[int, ...]]:
        with self._lock:
            pending, self._pending = self._pending, []
        return pending
