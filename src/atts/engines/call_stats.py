"""How a llama.cpp engine spent its compute over a session: calls, batch sizes, seconds.

ATTS's wall time on shared cores is the sum of what each engine's calls cost and of what they
wait for: the two engines draw on one pool of cores (``compute.py``), and each batched decode
call reads all of a model's weights whatever the batch, so a call that carries 2 sequences
costs nearly what one carrying 8 does. Token counts cannot show that (the default ATTS measured
0.40x of target-only's speed on GSM8K-20, BENCHMARKS.md section 0.3, against a bound of 0.83x
from per-token costs at full batches, section 0.2); these counts can. The decode loop adds one
entry per ``llama_decode`` call; the runner records each engine's counts for the session in the
manifest (``last_session.engine_calls``).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields, replace
from typing import Any, Literal

CallKind = Literal["decode", "prefill"]


@dataclass(frozen=True)
class CallStats:
    """Totals over an engine's calls.  ``decode``: one new token for each sequence decoding
    (rows = sequences); ``prefill``: a prompt or a scored step evaluated (rows = tokens)."""

    decode_calls: int = 0
    decode_rows: int = 0
    decode_seconds: float = 0.0
    prefill_calls: int = 0
    prefill_rows: int = 0
    prefill_seconds: float = 0.0
    wait_seconds: float = 0.0  # waiting for a free core of the run's pool
    thread_seconds: float = 0.0  # threads held x seconds computing
    # Of the prefill rows, the context rows of a sample's first call (its prompt, read once),
    # and those of a call whose sample's cached sequence had gone to another sample (evicted:
    # read again).  The rest are scored steps' tokens and the text new since a sample's last
    # call in its own sequence (the other model's step, a cue, one row for the logits).
    first_rows: int = 0
    evicted_rows: int = 0
    # Throwaway rows that filled gaps between decoding sequences (computed, not counted in
    # decode_rows), and generations moved beside the decoding sequences (``_gaps``).
    padded_rows: int = 0
    moves: int = 0

    def plus(self, kind: CallKind, rows: int, seconds: float, wait: float,
             threads: int) -> CallStats:
        """These totals and one more call."""
        if kind not in ("decode", "prefill"):
            raise ValueError(f"a call is a decode or a prefill, not {kind!r}")
        return replace(self, **{f"{kind}_calls": getattr(self, f"{kind}_calls") + 1,
                                f"{kind}_rows": getattr(self, f"{kind}_rows") + rows,
                                f"{kind}_seconds": getattr(self, f"{kind}_seconds") + seconds},
                       wait_seconds=self.wait_seconds + wait,
                       thread_seconds=self.thread_seconds + threads * seconds)

    def context(self, first: int, evicted: int) -> CallStats:
        """These totals with a request's first-read and evicted context rows added."""
        return replace(self, first_rows=self.first_rows + first,
                       evicted_rows=self.evicted_rows + evicted)

    def layout(self, padded: int = 0, moves: int = 0) -> CallStats:
        """These totals with throwaway rows and moves added."""
        return replace(self, padded_rows=self.padded_rows + padded, moves=self.moves + moves)

    def since(self, earlier: CallStats) -> CallStats:
        """The calls made after ``earlier`` was taken (one session of a longer-lived engine)."""
        return CallStats(**{f.name: getattr(self, f.name) - getattr(earlier, f.name)
                            for f in fields(self)})

    def to_dict(self, wall_seconds: float) -> dict[str, Any]:
        """The totals with what they mean over a session of ``wall_seconds``: the mean batch
        of a decode call and the share of the wall the engine spent computing."""
        out: dict[str, Any] = asdict(self)
        out["mean_decode_batch"] = (self.decode_rows / self.decode_calls
                                    if self.decode_calls else None)
        busy = self.decode_seconds + self.prefill_seconds
        out["busy_share"] = busy / wall_seconds if wall_seconds > 0 else None
        return out

