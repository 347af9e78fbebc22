"""Moving a sample's cache to another sequence of the llama.cpp context, so that the
generations decoding at once sit on adjacent sequences (``_gaps.better_place`` chooses where;
``_llama_loop`` asks when a generation starts).

llama.cpp copies a whole KV buffer between sequences of separate buffers (``seq_cp`` over all
positions; a part is refused) at the start of the next decode, in the order asked, and the
bits move unchanged.  So two slots trade sequences through one spare sequence the pool never
hands out: three copies (one when the other slot holds nothing), each keeping its own cache.
"""

from __future__ import annotations

from collections.abc import Collection
from typing import Any

from atts.engines._context_pool import ContextPool, Slot
from atts.engines._gaps import better_place


class Mover:
    """Moves for one context whose pool has ``n_seq`` sequences.  The context is made with
    ``streams`` sequences: one more than the pool's (the spare) when moves are on."""

    def __init__(self, lib: Any, n_seq: int, enabled: bool) -> None:
        self._lib = lib
        # Without room for the spare, under llama.cpp's cap on sequences, nothing moves.
        self.enabled = enabled and 1 < n_seq < lib.llama_max_parallel_sequences()
        self._spare = n_seq
        self.streams = n_seq + self.enabled

    def place(self, ctx: Any, pool: ContextPool, slot: Slot, decoding: Collection[int]) -> bool:
        """Move ``slot`` (a generation starting) beside the ``decoding`` sequences when that
        saves a pass or a throwaway row at each of its tokens; True if it moved."""
        if not self.enabled:
            return False
        idle = {s.seq: s for s in pool.slots if not s.busy and s is not slot}
        seq = better_place(slot.seq, decoding, idle)
        if seq is None:
            return False
        self._trade(ctx, pool, slot, idle[seq])
        return True

    def _trade(self, ctx: Any, pool: ContextPool, a: Slot, b: Slot) -> None:
        memory = self._lib.llama_get_memory(ctx.ctx)
        copy = self._lib.llama_memory_seq_cp
        if b.tokens:
            copy(memory, a.seq, self._spare, -1, -1)
            copy(memory, b.seq, a.seq, -1, -1)
            copy(memory, self._spare, b.seq, -1, -1)
            ctx.kv_cache_seq_rm(self._spare, 0, -1)
        else:
            copy(memory, a.seq, b.seq, -1, -1)
            ctx.kv_cache_seq_rm(a.seq, 0, -1)
        pool.trade(a, b)
