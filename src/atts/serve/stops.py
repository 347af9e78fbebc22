"""Stop strings of a legacy completion (``stop``): where the returned text ends.

OpenAI's semantics: the text is cut before the first stop string the model wrote, and the
stop string itself is not returned.  ATTS cannot stop its reasoning there (a sample runs to
its ``\\boxed{}`` answer, which the vote needs), so the cut applies to the text a client sees
only; the samples, the vote and the ``atts`` object see the whole text.

"First" means the stop string that is complete first as the text grows, so a streamed answer
and a non-streamed one end at the same place.  While a text is still being written, its tail
that could be the beginning of a stop string is held back (``visible``) until the next piece
says whether it is one.
"""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True)
class StopStrings:
    strings: tuple[str, ...] = ()

    def __post_init__(self) -> None:
        if any(not s for s in self.strings):
            raise ValueError("stop strings must be non-empty")

    def cut(self, text: str) -> int | None:
        """Where ``text`` ends for the client: the start of the stop string whose end comes
        first (ties: the longer one), or None when no stop string occurs."""
        first: tuple[int, int] | None = None  # (end, start) of the earliest-ending match
        for stop in self.strings:
            start = text.find(stop)
            if start >= 0:
                match = (start + len(stop), start)
                first = match if first is None else min(first, match)
        return None if first is None else first[1]

    def final(self, text: str) -> tuple[str, bool]:
        """The returned text of a finished sample, and whether a stop string cut it."""
        at = self.cut(text)
        return (text, False) if at is None else (text[:at], True)

    def visible(self, text: str) -> tuple[str, bool]:
        """What of a text still being written may be sent: up to a stop string (True: the
        text ends there for good), else all but a tail that could begin one."""
        at = self.cut(text)
        if at is not None:
            return text[:at], True
        held = max((k for stop in self.strings for k in range(1, len(stop))
                    if text.endswith(stop[:k])), default=0)
        return text[:len(text) - held], False
