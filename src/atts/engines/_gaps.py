"""Decode batches without gaps: short runs of idle sequences filled with throwaway rows.

With one KV buffer per sequence (``_llama_loop.py``) llama.cpp computes a decode batch as one
pass per run of consecutive ``seq_id``s, and each pass reads every weight again: the same 8
rows on seq_ids 0, 2, 4, ... cost 2.0x the consecutive batch on the 1.5B target and 1.5x on
the 0.5B draft (bench/bench_row_cost.py, BENCHMARKS section 0.6).  A sample keeps its own
sequence (the context pool), so when only some samples decode, as ATTS's target does when it
regenerates the rejected steps of a few, their rows are scattered.

A call costs about a + b x rows (1.5B at 1k context: a = 71 ms, b = 27 ms), so filling a gap of
g idle sequences with one throwaway row each costs g x b and saves a pass, a: worth it while
g x b < a, g <= ``PAD_GAP`` on these CPUs.  A throwaway row sits at its sequence's next
position and asks for no logits; the loop removes its KV entry right after the call, so the
idle sequence's cache, and every later score computed from it, is what it was.

A throwaway row still computes; better still is no gap at all.  ``better_place`` picks, when a
generation starts, the idle sequence beside those already decoding: the loop swaps the two
sequences' caches there (``llama_memory_seq_cp`` of whole KV buffers, exact: the bits move),
so the sample decodes next to the others for the rest of its generation.  A swap copies three
buffers (about 115 MB each for the 1.5B at 4k context, once per generation); the run of passes
or throwaway rows it saves recurs at every token of the generation.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence

__all__ = ["PAD_GAP", "PAD_ROW", "PAD_TOKEN", "batch_cost", "better_place", "decode_rows"]

PAD_GAP = 2  # b / a is 0.3-0.4 for both models at 1-4k context on the team's CPU
PAD_TOKEN = 0  # any id costs the same, and its entry is removed
PAD_ROW = 0.38  # a throwaway row's cost in passes: b / a, 27 / 71 ms for the 1.5B at 1k context

Row = tuple[int, int, int, bool]  # token, position, seq_id, wants logits


def decode_rows(live: Sequence[tuple[int, int, int]], cached: Mapping[int, int], n_ctx: int,
                pad_gap: int = PAD_GAP) -> tuple[list[Row], list[int], list[tuple[int, int]]]:
    """The batch for ``live`` (token, position, seq_id), in seq_id order, with every gap of at
    most ``pad_gap`` idle sequences filled; ``cached``: tokens each opened sequence holds (an
    unopened one holds none); ``n_ctx``: the positions a sequence has.  Returns the rows, the
    batch index of each live row (whose logits to read), and the (seq_id, position) of each
    throwaway row (to remove after the call).  A gap with a full sequence is left open."""
    rows: list[Row] = []
    where: list[int] = []
    pads: list[tuple[int, int]] = []
    previous: int | None = None
    for token, position, seq in live:
        if previous is not None and previous >= seq:
            raise ValueError(f"decode rows must come in increasing seq_id order, got {seq} "
                             f"after {previous}")
        gap = range(previous + 1, seq) if previous is not None else range(0)
        positions = [cached.get(g, 0) for g in gap]
        if 0 < len(gap) <= pad_gap and all(p < n_ctx for p in positions):
            for idle, at in zip(gap, positions, strict=True):
                rows.append((PAD_TOKEN, at, idle, False))
                pads.append((idle, at))
        where.append(len(rows))
        rows.append((token, position, seq, True))
        previous = seq
    return rows, where, pads


def batch_cost(seqs: Iterable[int], pad_gap: int = PAD_GAP) -> float:
    """A decode batch on ``seqs`` in passes: one per run of sequences that padding joins (gaps
    of at most ``pad_gap``), plus ``PAD_ROW`` per throwaway row that joins them."""
    cost, previous = 0.0, None
    for seq in sorted(set(seqs)):
        gap = None if previous is None else seq - previous - 1
        cost += 1.0 if gap is None or gap > pad_gap else gap * PAD_ROW
        previous = seq
    return cost


def better_place(seq: int, decoding: Collection[int], idle: Collection[int],
                 pad_gap: int = PAD_GAP) -> int | None:
    """The idle sequence a generation starting in ``seq`` should decode in, beside the
    ``decoding`` ones, or None when ``seq`` costs as little (nothing decodes, it is already
    beside them, or no idle one is better by at least half a throwaway row).  Ties go to the
    sequence nearest ``seq``."""
    if not decoding:
        return None
    here = batch_cost([*decoding, seq], pad_gap)
    candidates = [t for t in idle if t != seq and t not in decoding]
    if not candidates:
        return None
    best = min(candidates, key=lambda t: (batch_cost([*decoding, t], pad_gap), abs(t - seq), t))
    return best if batch_cost([*decoding, best], pad_gap) <= here - PAD_ROW / 2 else None
