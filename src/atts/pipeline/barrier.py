"""The per-question, per-round barrier of the synchronous baseline (the ``sync`` strategy).

Every round, the live samples of a question all draft and score, wait here, and the
``budget`` worst-scored steps (highest score) go to the target: the slowest sample sets the
pace of the round (docs/METHOD.md section 5), which is what ATTS removes.
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field


@dataclass
class _Round:
    scores: list[float] = field(default_factory=list)
    waiters: list[asyncio.Future[bool]] = field(default_factory=list)


class SyncCoordinator:
    """The per-question, per-round barrier of the synchronous baseline."""

    def __init__(self, budget: int) -> None:
        self._budget = budget
        self._parties: dict[str, int] = {}
        self._rounds: dict[str, _Round] = {}

    def join(self, question_id: str) -> None:
        self._parties[question_id] = self._parties.get(question_id, 0) + 1

    def leave(self, question_id: str) -> None:
        self._parties[question_id] -= 1
        self._release_if_full(question_id)

    async def rank(self, question_id: str, score: float) -> bool:
        """Wait for every live sample of the question; True if this step is among the
        ``budget`` highest scores of the round (it goes to the target)."""
        current = self._rounds.setdefault(question_id, _Round())
        future: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
        current.scores.append(score)
        current.waiters.append(future)
        self._release_if_full(question_id)
        return await future

    def _release_if_full(self, question_id: str) -> None:
        current = self._rounds.get(question_id)
        if current is None or len(current.waiters) < self._parties.get(question_id, 0):
            return
        del self._rounds[question_id]
        order = sorted(range(len(current.scores)), key=lambda i: -current.scores[i])
        chosen = set(order[: self._budget])
        for i, future in enumerate(current.waiters):
            if not future.done():
                future.set_result(i in chosen)
