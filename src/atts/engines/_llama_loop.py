"""The llama.cpp engine's decode loop: one context, one sequence per sample, batched decoding.

Every sample in flight owns a sequence (``seq_id``) of one llama.cpp context, chosen by the
``ContextPool`` so that it keeps its prefix cached.  One thread runs the loop:

1. it starts the requests that arrived, each in an idle sequence: a score is evaluated at once
   (one prefill of the step with every row's logits, ``score``); a generation prefills its
   prompt and joins the decoding set;
2. it decodes one token of *every* generation in the set in a single ``llama_decode`` call, a
   batch with one row per sequence, and samples each sequence's next token from its row.

A decode step reads the weights once for the whole batch instead of once per sample (the 1.5B
target: 15-19 tok/s one sequence at a time, 30-33 with four per call on the team's 2 cores;
``bench/bench_llama_anchor.py``).

Each sequence has its own KV buffer (``kv_unified = false``), so a row attends only to its
own sequence's cells and a sample's numbers do not depend on which siblings are cached beside
it: on the tiny model the tests find samples decoded together exactly equal to the same
requests made alone.  (One shared buffer, ``kv_unified = true``, moved a step's scores by up to
0.18 nat with the siblings resident; not taken.)  The price: llama.cpp computes a batch as one
graph per run of consecutive ``seq_id``s ("sequential" split), so the batch goes in seq_id
order and gaps cost (0.5B draft, 8 sequences on 2 cores: 75 tok/s in order, 39 shuffled,
hence the sort; 37 for 5 sequences with gaps).  So a generation that starts away from those
decoding is first moved beside them (``_gaps.better_place``: its cache and an idle sample's
trade sequences, whole KV buffers copied through one spare sequence, ``_moves``), and the
short gaps left are filled with throwaway rows (``_gaps.decode_rows``) whose KV entries are
removed right after the call.

Threads: with a ``ComputePool`` each decode call takes the cores that are free when it starts
(at least one, at most ``max_threads``), so a draft and a target loop share the run's budget:
whichever model has work uses the idle cores.  Requests and results cross threads through
``concurrent.futures.Future``; a cancelled request is dropped at the next step.
"""

from __future__ import annotations

import queue
import threading
import time
from collections.abc import Callable
from typing import Any

import numpy as np

from atts.engines._context_pool import ContextPool, Slot
from atts.engines._gaps import decode_rows
from atts.engines._moves import Mover
from atts.engines._requests import Decoding, Request, settle
from atts.engines._sampling import sample_token, token_logprobs
from atts.engines.base import (
    EngineError,
    FinishReason,
    Generation,
    StepScore,
)
from atts.engines.call_stats import CallKind, CallStats
from atts.engines.compute import ComputePool

STOP = object()  # put on the queue by close()


class DecodeLoop:
    def __init__(self, lib: Any, internals: Any, model: Any, *, n_seq: int, n_ctx: int,
                 n_batch: int, score_chunk: int, max_threads: int, compute: ComputePool | None,
                 flash_attn: bool, piece: Callable[[int], bytes], verbose: bool,
                 compact: bool = True) -> None:
        self._lib, self._model, self._piece = lib, model, piece
        self._n_vocab = model.n_vocab()
        self._n_batch, self._score_chunk = n_batch, score_chunk
        self._n_ctx = n_ctx  # per sequence
        self._max_threads, self._compute = max_threads, compute
        self._mover = Mover(lib, n_seq, compact)  # one more sequence: the moves' spare
        streams = self._mover.streams
        params = internals.LlamaContext.default_params()
        params.n_ctx = n_ctx * streams  # split evenly: each sequence holds n_ctx tokens
        params.n_seq_max = streams
        params.kv_unified = False
        params.n_batch = params.n_ubatch = max(n_batch, n_seq)
        # The logits buffer holds n_outputs_max x vocab floats (150k vocab: 0.6 MB per row).
        params.n_outputs_max = max(score_chunk, n_seq)
        params.n_threads = params.n_threads_batch = max_threads
        params.no_perf = True
        # Off by default: on CPU, flash attention makes logits depend on how a sequence was
        # batched (0.5 nat per token on SmolLM2); without it scores are exact (tests).
        params.flash_attn_type = (lib.LLAMA_FLASH_ATTN_TYPE_ENABLED if flash_attn
                                  else lib.LLAMA_FLASH_ATTN_TYPE_DISABLED)
        self._ctx = internals.LlamaContext(model=model, params=params, verbose=verbose)
        self._batch = internals.LlamaBatch(n_tokens=max(n_batch, n_seq), embd=0, n_seq_max=1,
                                           verbose=verbose)
        self.pool: ContextPool = ContextPool(n_seq, lambda: Slot(len(self.pool.slots)))
        self._queue: queue.Queue[Any] = queue.Queue()
        self._waiting: list[Request] = []
        self._decoding: list[Decoding] = []
        self.peak_batch = 0  # the most sequences one decode call has carried
        self.calls = CallStats()  # written by the loop thread only, read whole by others
        self._lock = threading.Lock()  # orders submit() against the loop's end
        self._dead: Exception | None = None
        self._thread = threading.Thread(target=self._run, name="atts-llama", daemon=True)
        self._thread.start()

    def submit(self, request: Request) -> None:
        with self._lock:
            if self._dead is not None:
                settle(request.future, error=self._dead)
                return
            self._queue.put(request)

    def close(self) -> None:
        self._queue.put(STOP)
        self._thread.join()
        self._drain(EngineError("the engine was closed"))
        self._ctx.close()
        self._batch.close()

    def _drain(self, error: Exception) -> None:
        """Fail every request still queued, and refuse new ones with ``error``."""
        with self._lock:
            self._dead = error
            while True:
                try:
                    item = self._queue.get_nowait()
                except queue.Empty:
                    return
                if item is not STOP:
                    settle(item.future, error=error)

    # -- the loop ------------------------------------------------------------------------------

    def _run(self) -> None:
        try:
            self._serve()
        except BaseException as err:  # a bug in the loop must fail the callers, not hang them
            failure = EngineError(f"the llama.cpp decode loop stopped: {err!r}")
            self._fail_all(failure)
            self._drain(failure)
            raise

    def _serve(self) -> None:
        while True:
            # Block only when nothing is decoding; otherwise take what has arrived and go on.
            incoming = [self._queue.get()] if not self._decoding and not self._waiting else []
            while True:
                try:
                    incoming.append(self._queue.get_nowait())
                except queue.Empty:
                    break
            if STOP in incoming:
                self._waiting += [r for r in incoming if r is not STOP]
                self._fail_all(EngineError("the engine was closed"))
                return
            self._waiting += incoming
            self._start_waiting()
            if self._decoding:
                self._guarded(self._decoding, self._step)

    def _start_waiting(self) -> None:
        """Start waiting requests, oldest first, while idle sequences remain.  A score runs to
        its end when it starts, so while generations are decoding at most one score starts
        between two decode steps: the batch is held up by one score, not by a queue of them."""
        scored = False
        for request in list(self._waiting):
            if not self.pool.has_idle():
                break
            is_score = request.params is None
            if is_score and scored and self._decoding:
                continue
            self._waiting.remove(request)
            if request.future.cancelled():
                continue
            scored = scored or is_score
            slot, shared, history = self.pool.acquire(request.ids, request.owner)
            self._guarded_start(request, slot, shared, history)

    def _guarded_start(self, request: Request, slot: Slot, shared: int, history: str) -> None:
        start = self._score if request.params is None else self._begin
        try:
            keep = start(request, slot, shared, history)
        except Exception as err:  # the request fails alone; the loop goes on
            self._clear(slot)
            self.pool.give_back(slot)
            settle(request.future, error=err)
            return
        if not keep:
            self.pool.give_back(slot)

    def _guarded(self, active: list[Decoding], step: Callable[[], None]) -> None:
        try:
            step()
        except Exception as err:  # a failed batch fails its generations, not the loop
            for item in active:
                self._clear(item.slot)
                self.pool.give_back(item.slot)
                settle(item.request.future, error=err)
            self._decoding = []

    def _fail_all(self, error: Exception) -> None:
        for item in self._decoding:
            settle(item.request.future, error=error)
        for request in self._waiting:
            settle(request.future, error=error)
        self._decoding, self._waiting = [], []

    # -- llama.cpp calls -------------------------------------------------------------------------

    def _decode(self, items: list[tuple[int, int, int, bool]], kind: CallKind,
                rows: int | None = None) -> None:
        """One ``llama_decode`` of (token, position, seq_id, wants_logits) rows, on the cores
        the budget has free; counted in ``calls`` as ``rows`` rows (default: all; throwaway
        rows are not counted, their cost is)."""
        batch = self._batch.batch
        batch.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            batch.token[i], batch.pos[i], batch.n_seq_id[i], batch.logits[i] = (token, pos, 1,
                                                                                 logits)
            batch.seq_id[i][0] = seq
        asked = time.perf_counter()
        if self._compute is None:
            threads, started = self._max_threads, asked
            code = self._lib.llama_decode(self._ctx.ctx, batch)
            done = time.perf_counter()
        else:
            with self._compute.hold_up_to(self._max_threads) as threads:
                started = time.perf_counter()
                self._ctx.set_n_threads(threads, threads)
                code = self._lib.llama_decode(self._ctx.ctx, batch)
                done = time.perf_counter()  # before the cores go back: waits are not compute
        self.calls = self.calls.plus(kind, len(items) if rows is None else rows, done - started,
                                     started - asked, threads)
        if code != 0:
            raise EngineError(f"llama_decode failed with code {code}")

    def _row(self, i: int) -> np.ndarray:
        """Row ``i`` of the last decode: a view of llama.cpp's buffer, read before the next
        decode overwrites it (copying 0.6 MB per sequence per token cost 10% of a batch)."""
        ptr = self._lib.llama_get_logits_ith(self._ctx.ctx, i)
        if not ptr:
            raise EngineError(f"llama.cpp returned no logits for batch row {i}")
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,))

    def _rows(self, n: int) -> np.ndarray:
        """Every row of a batch that asked for all of them: llama.cpp stores them contiguously
        in batch order, so this is a view of its buffer (valid until the next decode)."""
        ptr = self._lib.llama_get_logits(self._ctx.ctx)
        if not ptr:
            raise EngineError("llama.cpp returned no logits for the scored batch")
        return np.ctypeslib.as_array(ptr, shape=(n, self._n_vocab))

    def _clear(self, slot: Slot) -> None:
        self._ctx.kv_cache_seq_rm(slot.seq, 0, -1)
        slot.tokens = []

    def _truncate(self, slot: Slot, keep: int) -> None:
        if len(slot.tokens) > keep:
            if not self._ctx.kv_cache_seq_rm(slot.seq, keep, -1):
                self._clear(slot)
                return
            del slot.tokens[keep:]

    def _extend(self, slot: Slot, ids: list[int], end: int, last_logits: bool) -> None:
        """Bring the sequence's cache to ``ids[:end]`` in chunks of ``n_batch``; the last
        chunk's last row keeps its logits when ``last_logits``."""
        for lo in range(len(slot.tokens), end, self._n_batch):
            chunk = ids[lo:min(end, lo + self._n_batch)]
            final = lo + len(chunk) == end
            self._decode([(t, lo + i, slot.seq, last_logits and final and i == len(chunk) - 1)
                          for i, t in enumerate(chunk)], "prefill")
            slot.tokens.extend(chunk)

    # -- requests ----------------------------------------------------------------------------

    def _count_context(self, history: str, rows: int) -> None:
        """Count a request's context rows as a first read or a re-read after an eviction."""
        if history != "own":
            self.calls = self.calls.context(*((rows, 0) if history == "first" else (0, rows)))

    def _score(self, request: Request, slot: Slot, shared: int, history: str) -> bool:
        t0 = time.perf_counter()
        full, n_prefix = request.ids, request.prefix_len
        # Logits are not cached, so the prefix's last token is always evaluated again: its row
        # gives log p(step[0] | prefix).
        cached = min(shared, n_prefix - 1)
        self._count_context(history, n_prefix - 1 - cached)
        self._truncate(slot, cached)
        self._extend(slot, full, n_prefix - 1, last_logits=False)
        logprobs: list[float] = []
        # Batch row i holds the distribution of the token after position lo + i (log p(x_j |
        # x_<j) = log_softmax(z_{j-1})[x_j]); the last step token itself needs no row.
        for lo in range(n_prefix - 1, len(full) - 1, self._score_chunk):
            hi = min(len(full) - 1, lo + self._score_chunk)
            self._decode([(full[j], j, slot.seq, True) for j in range(lo, hi)], "prefill")
            slot.tokens.extend(full[lo:hi])
            logprobs.extend(token_logprobs(self._rows(hi - lo), full[lo + 1:hi + 1]).tolist())
        settle(request.future, StepScore(tuple(logprobs), cached_tokens=cached,
                                          seconds=time.perf_counter() - t0))
        return False

    def _begin(self, request: Request, slot: Slot, shared: int, history: str) -> bool:
        """Prefill a generation's prompt and sample its first token; True if it decodes on."""
        assert request.params is not None
        t0 = time.perf_counter()
        if self._mover.place(self._ctx, self.pool, slot, [d.slot.seq for d in self._decoding]):
            self.calls = self.calls.layout(moves=1)
        prompt = request.ids
        cached = min(shared, len(prompt) - 1)
        self._count_context(history, len(prompt) - cached)
        self._truncate(slot, cached)
        # cached < len(prompt): at least the last prompt token is evaluated, and its row is
        # the distribution of the first new token.
        self._extend(slot, prompt, len(prompt), last_logits=True)
        row = self._row(self._batch.batch.n_tokens - 1)
        item = Decoding(request, slot, cached, t0, np.random.default_rng(request.params.seed))
        if self._advance(item, row):
            self._decoding.append(item)
            return True
        return False

    def _step(self) -> None:
        """One token of every decoding generation, in one batch."""
        # One look at each future: a cancel from the event loop between two looks would hand a
        # sequence back and still decode in it.
        cancelled = [d.request.future.cancelled() for d in self._decoding]
        for item, gone in zip(self._decoding, cancelled, strict=True):
            if gone:
                self.pool.give_back(item.slot)
        # In seq_id order: llama.cpp computes each run of consecutive seq_ids as one graph.
        live = sorted((d for d, gone in zip(self._decoding, cancelled, strict=True) if not gone),
                      key=lambda d: d.slot.seq)
        self._decoding = live
        if not live:
            return
        self.peak_batch = max(self.peak_batch, len(live))
        cached = {slot.seq: len(slot.tokens) for slot in self.pool.slots}
        items, where, pads = decode_rows(
            [(d.out[-1], len(d.slot.tokens), d.slot.seq) for d in live], cached, self._n_ctx)
        self._decode(items, "decode", rows=len(live))
        rows = [self._row(i) for i in where]
        for seq, pos in pads:  # the throwaway rows leave nothing behind
            self._ctx.kv_cache_seq_rm(seq, pos, -1)
        self.calls = self.calls.layout(padded=len(pads))
        still = []
        for item, row in zip(live, rows, strict=True):
            item.slot.tokens.append(item.out[-1])
            if self._advance(item, row):
                still.append(item)
            else:
                self.pool.give_back(item.slot)
        self._decoding = still

    def _advance(self, item: Decoding, row: np.ndarray) -> bool:
        """Sample the next token of a generation from its row; settle it when it ends."""
        params = item.request.params
        assert params is not None
        token = sample_token(row, params.temperature, params.top_p, item.rng)
        item.out.append(token)
        if params.logprobs:
            item.logprobs.append(float(token_logprobs(row[None, :], [token])[0]))
        finish: FinishReason | None = None
        if self._lib.llama_vocab_is_eog(self._model.vocab, token):
            finish = "eos"
        else:
            before = len(item.text.decode("utf-8", errors="ignore"))
            item.text += self._piece(token)
            decoded = item.text.decode("utf-8", errors="ignore")
            if any(decoded.find(s, max(0, before - len(s))) >= 0 for s in params.stop if s):
                finish = "stop"
            elif len(item.out) >= params.max_tokens:
                finish = "length"
        if finish is None:
            if item.request.on_tokens is not None:
                item.request.on_tokens(tuple(item.out))
            return True
        text = b"".join(self._piece(t) for t in item.out).decode("utf-8", errors="replace")
        settle(item.request.future, Generation(
            token_ids=tuple(item.out), text=text, finish_reason=finish,
            prompt_tokens=len(item.request.ids), cached_tokens=item.cached,
            seconds=time.perf_counter() - item.started,
            logprobs=tuple(item.logprobs) if params.logprobs else None,
        ))
        return False
