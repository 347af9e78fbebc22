"""The embedded engine: a GGUF model in this process through llama.cpp's low-level API.

Scoring is one prefill over the step on top of a cached prefix.  Token j's log-probability is
read from the logits at position j-1 (log-softmax in float64), never from ``echo=True``, which
is shifted by one position in llama-cpp-python 0.3.36.

Many samples interleave, so the engine keeps a pool of ``n_contexts`` contexts over one
mmapped model.  Each request takes the context whose cached token ids it extends (or cuts back
a little), drops that context's KV cache after the common prefix and evaluates only the rest:
a sample's history is not re-evaluated while it keeps "its" context, and the pool size bounds
KV memory.  When no context fits, the request takes the one whose loss costs least: a context
released by a finished sample (``release``) first, never a live sibling's just because it
shares the prompt.  All llama.cpp work runs in the engine's one worker thread, so requests queue
there (back-pressure) and a draft and a target engine compute at the same time.
"""

from __future__ import annotations

import asyncio
import ctypes
import functools
import os
import time
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

import numpy as np

from atts.engines._prefix import ReleaseQueue, common_prefix, extends
from atts.engines._sampling import sample_token, token_logprobs
from atts.engines.base import (
    ChatMessage,
    ContextOverflowError,
    EngineError,
    EngineInfo,
    EngineUnavailableError,
    FinishReason,
    Generation,
    SamplingParams,
    StepScore,
)
from atts.models.chat_template import render_chat_template
from atts.models.registry import lookup
from atts.models.store import model_sha256, resolve_model

T = TypeVar("T")


def _default_threads() -> int:
    # Half the cores: a draft and a target engine compute at the same time, and llama.cpp's
    # threads spin at barriers, so oversubscribing the cores slows both down.
    return max(1, (os.cpu_count() or 2) // 2)


class _Slot:
    """One llama.cpp context and the token ids whose KV entries it currently holds."""

    def __init__(self, ctx: Any) -> None:
        self.ctx = ctx
        self.tokens: list[int] = []
        self.last_used = 0
        self.released = False  # its sample ended: its cache is worth nothing to keep


class LlamaCppEngine:
    """A GGUF model served in-process by llama.cpp (the default engine).

    - ``model``: a named model (``qwen2.5-coder-0.5b``, ``draft``, ``tiny``, ...; see
      ``atts models list``) or a path to a GGUF file;
    - ``n_ctx``: tokens per context (prompt + step must fit);
    - ``n_contexts``: size of the context pool, i.e. how many samples keep their prefix cached
      (KV memory grows with n_ctx x n_contexts; contexts open on demand);
    - ``n_threads``: compute threads (default: half the cores, so that a draft and a target
      engine share the machine without oversubscribing it);
    - ``n_batch``: tokens per llama_decode call when prefilling; ``score_chunk``: step tokens
      per scoring call (bounds the logits buffer to score_chunk x vocabulary floats);
    - ``flash_attn``: off by default, see ``_new_slot``; ``n_gpu_layers`` for GPU builds.
    """

    def __init__(
        self,
        model: str | os.PathLike[str],
        *,
        n_ctx: int = 4096,
        n_contexts: int = 4,
        n_threads: int | None = None,
        n_batch: int = 512,
        score_chunk: int = 128,
        n_gpu_layers: int = 0,
        flash_attn: bool = False,
        verbose: bool = False,
    ) -> None:
        for label, value in (("n_ctx", n_ctx), ("n_contexts", n_contexts), ("n_batch", n_batch),
                             ("score_chunk", score_chunk)):
            if value < 1:
                raise ValueError(f"{label} must be >= 1, got {value}")
        if n_threads is not None and n_threads < 1:
            raise ValueError(f"n_threads must be >= 1 or None (automatic), got {n_threads}")
        import llama_cpp  # heavy, optional: pip install 'atts[llama]'
        from llama_cpp import _internals, _logger

        self._lib = llama_cpp
        self._internals = _internals
        _logger.set_verbose(verbose)
        llama_cpp.llama_backend_init()

        spec = lookup(os.fspath(model))
        self._name = spec.name if spec is not None else os.fspath(model)
        self._path: Path = resolve_model(model)
        self._n_threads = n_threads or _default_threads()
        self._n_batch = n_batch
        self._score_chunk = min(score_chunk, n_batch)
        self._n_contexts = n_contexts
        self._verbose = verbose
        self._flash_attn = flash_attn
        model_params = _internals.LlamaModel.default_params()
        model_params.n_gpu_layers = n_gpu_layers
        self._model = _internals.LlamaModel(
            path_model=str(self._path), params=model_params, verbose=verbose
        )
        if n_ctx > self._model.n_ctx_train():
            self._model.close()
            raise ValueError(
                f"n_ctx {n_ctx} exceeds the model's training context {self._model.n_ctx_train()}"
            )
        self._n_ctx = n_ctx
        self._n_vocab = self._model.n_vocab()
        metadata = self._model.metadata()
        self._template = metadata.get("tokenizer.chat_template")
        self._batch = _internals.LlamaBatch(n_tokens=n_batch, embd=0, n_seq_max=1,
                                            verbose=verbose)
        self._slots: list[_Slot] = []
        self._released = ReleaseQueue()
        self._clock = 0
        self._sha256: str | None = None
        self._closed = False
        self._executor = ThreadPoolExecutor(max_workers=1, thread_name_prefix="atts-llama")

    # -- metadata and text ------------------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        if self._sha256 is None:
            self._sha256 = model_sha256(self._path)
        return EngineInfo(
            backend="llama_cpp",
            model=self._name,
            model_sha256=self._sha256,
            context_length=self._n_ctx,
            vocab_size=self._n_vocab,
            extra={"path": str(self._path), "n_contexts": str(self._n_contexts),
                   "n_threads": str(self._n_threads), "flash_attn": str(self._flash_attn)},
        )

    def tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        return list(self._model.tokenize(text.encode("utf-8"), False, False))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        # Piece by piece: LlamaModel.detokenize strips a leading space after BOS, which would
        # make the text of a step depend on what precedes it.
        return b"".join(self._piece(t) for t in token_ids).decode("utf-8", errors="replace")

    def _piece(self, token: int) -> bytes:
        size = 64
        buffer = ctypes.create_string_buffer(size)
        n = self._lib.llama_token_to_piece(self._model.vocab, token, buffer, size, 0, False)
        if n < 0:  # the piece is longer than the buffer; -n is its length
            buffer = ctypes.create_string_buffer(-n)
            n = self._lib.llama_token_to_piece(self._model.vocab, token, buffer, -n, 0, False)
        return bytes(buffer.raw[: max(n, 0)])

    def render_chat(
        self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True
    ) -> list[int]:
        if self._template is None:
            raise EngineError(f"model {self._name} has no chat template in its GGUF metadata")
        text = render_chat_template(
            self._template,
            messages,
            add_generation_prompt=add_generation_prompt,
            bos_token=self._token_text(self._model.token_bos()),
            eos_token=self._token_text(self._model.token_eos()),
        )
        ids = list(self._model.tokenize(text.encode("utf-8"), False, True))
        bos = self._model.token_bos()
        if self._model.add_bos_token() and bos >= 0 and (not ids or ids[0] != bos):
            ids.insert(0, bos)
        return ids

    def _token_text(self, token: int) -> str:
        if token < 0:
            return ""
        return str(self._model.token_get_text(token))

    # -- async API ---------------------------------------------------------------------------

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams) -> Generation:
        prompt = self._checked(prompt_ids, "prompt_ids")
        if len(prompt) + params.max_tokens > self._n_ctx:
            raise ContextOverflowError(
                f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                f"context length {self._n_ctx}; shorten the prompt or raise n_ctx"
            )
        return await self._run(self._generate_sync, prompt, params)

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int]) -> StepScore:
        prefix = self._checked(prefix_ids, "prefix_ids")
        step = self._checked(step_ids, "step_ids")
        if len(prefix) + len(step) > self._n_ctx:
            raise ContextOverflowError(
                f"prefix ({len(prefix)} tokens) + step ({len(step)} tokens) exceeds the context "
                f"length {self._n_ctx}; raise n_ctx"
            )
        return await self._run(self._score_sync, prefix, step)

    async def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        loop = asyncio.get_running_loop()
        await loop.run_in_executor(self._executor, self._free)
        self._executor.shutdown(wait=True)

    def _checked(self, ids: Sequence[int], label: str) -> list[int]:
        out = [int(t) for t in ids]
        if not out:
            raise ValueError(f"{label} must not be empty")
        bad = [t for t in out if not 0 <= t < self._n_vocab]
        if bad:
            # llama.cpp aborts the process on an out-of-range id: refuse it here.
            raise ValueError(f"{label} holds ids outside the vocabulary [0, {self._n_vocab}): "
                             f"{bad[:5]}")
        return out

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        if self._closed:
            raise EngineUnavailableError(f"engine for {self._name} is closed")
        loop = asyncio.get_running_loop()
        return await loop.run_in_executor(self._executor, functools.partial(fn, *args))

    # -- worker-thread side ------------------------------------------------------------------

    def release(self, token_ids: Sequence[int]) -> None:
        self._released.put(token_ids)  # applied by the worker thread, which owns the slots

    def _apply_releases(self) -> None:
        for ids in self._released.take():
            for slot in self._slots:
                if slot.tokens and extends(slot.tokens, common_prefix(slot.tokens, ids)):
                    slot.released = True

    def _acquire(self, ids: Sequence[int]) -> tuple[_Slot, int]:
        """Pick the context for a request and return it with its common-prefix length.

        A context the request extends (``extends``) is taken, longest prefix first.
        Otherwise a fresh context is opened while the pool has room.  With the pool full, a
        context whose sample ended is taken first (released, or unused for ``4 x n_contexts``
        requests: every live sample calls about once or twice per round), longest prefix
        first; only when every context is live does the request take the one whose loss costs
        least (the tokens it reuses minus the tokens it evicts).  Taking a live sibling's
        context because it shares the prompt would evict that sibling's whole history, and
        the two would evict each other at every step.  Least recently used breaks ties.
        """
        self._clock += 1
        self._apply_releases()
        scored = [(common_prefix(slot.tokens, ids), slot) for slot in self._slots]
        near = [(n, s) for n, s in scored if extends(s.tokens, n)]
        free = [(n, s) for n, s in scored
                if s.released or self._clock - s.last_used > 4 * self._n_contexts]
        if near:
            shared, best = max(near, key=lambda item: (item[0], -item[1].last_used))
        elif len(self._slots) < self._n_contexts:
            shared, best = 0, self._new_slot()
        elif free:
            shared, best = max(free, key=lambda item: (item[0], -item[1].last_used))
        else:
            shared, best = max(scored, key=lambda item: (2 * item[0] - len(item[1].tokens),
                                                         -item[1].last_used))
        best.last_used = self._clock
        best.released = False
        return best, shared

    def _new_slot(self) -> _Slot:
        params = self._internals.LlamaContext.default_params()
        params.n_ctx = self._n_ctx
        params.n_batch = self._n_batch
        params.n_ubatch = self._n_batch
        params.n_seq_max = 1
        # The logits buffer holds n_outputs_max x vocab floats (150k vocab: 0.6 MB per row);
        # scoring asks for at most score_chunk rows per decode.
        params.n_outputs_max = self._score_chunk
        params.n_threads = self._n_threads
        params.n_threads_batch = self._n_threads
        params.no_perf = True
        # Off by default: on CPU, flash attention makes a token's logits depend on how the
        # sequence was split into batches (0.5 nat per token measured on SmolLM2), so a step's
        # score would depend on the cache history.  Without it, the tiny model's scores equal
        # a single-batch evaluation exactly (tests/test_engine_llama_cpp.py).
        params.flash_attn_type = (
            self._lib.LLAMA_FLASH_ATTN_TYPE_ENABLED
            if self._flash_attn
            else self._lib.LLAMA_FLASH_ATTN_TYPE_DISABLED
        )
        slot = _Slot(self._internals.LlamaContext(model=self._model, params=params,
                                                  verbose=self._verbose))
        self._slots.append(slot)
        return slot

    def _truncate(self, slot: _Slot, keep: int) -> None:
        if len(slot.tokens) > keep:
            if not slot.ctx.kv_cache_seq_rm(0, keep, -1):
                slot.ctx.kv_cache_clear()
                slot.tokens = []
                return
            del slot.tokens[keep:]

    def _decode(self, slot: _Slot, tokens: Sequence[int], start: int, logits: bool) -> None:
        """Evaluate ``tokens`` at positions ``start``.. (one batch); ``logits`` asks for every
        row, otherwise only the last row is kept."""
        batch = self._batch.batch
        n = len(tokens)
        batch.n_tokens = n
        for i, token in enumerate(tokens):
            batch.token[i] = token
            batch.pos[i] = start + i
            batch.seq_id[i][0] = 0
            batch.n_seq_id[i] = 1
            batch.logits[i] = logits
        batch.logits[n - 1] = True
        code = self._lib.llama_decode(slot.ctx.ctx, batch)
        if code != 0:
            slot.ctx.kv_cache_clear()
            slot.tokens = []
            raise EngineError(f"llama_decode failed with code {code}")
        slot.tokens.extend(tokens)

    def _prefill(self, slot: _Slot, ids: Sequence[int], end: int) -> int:
        """Bring the slot's cache to ``ids[:end]`` (its cache already holds a prefix of ids);
        returns the size of the last batch, whose last row holds logits (0: nothing to do)."""
        last = 0
        for lo in range(len(slot.tokens), end, self._n_batch):
            chunk = ids[lo:min(end, lo + self._n_batch)]
            self._decode(slot, chunk, lo, logits=False)
            last = len(chunk)
        return last

    def _row(self, slot: _Slot, i: int) -> np.ndarray:
        ptr = self._lib.llama_get_logits_ith(slot.ctx.ctx, i)
        if not ptr:
            raise EngineError(f"llama.cpp returned no logits for batch row {i}")
        return np.ctypeslib.as_array(ptr, shape=(self._n_vocab,)).copy()

    def _score_sync(self, prefix: list[int], step: list[int]) -> StepScore:
        t0 = time.perf_counter()
        full = prefix + step
        slot, shared = self._acquire(full)
        # Logits are not cached, so the prefix's last token is always evaluated again: its row
        # gives log p(step[0] | prefix).
        cached = min(shared, len(prefix) - 1)
        self._truncate(slot, cached)
        self._prefill(slot, full, len(prefix) - 1)
        logprobs: list[float] = []
        # Batch row i holds the distribution of the token after position lo + i (Eq.: log p(x_j
        # | x_<j) = log_softmax(z_{j-1})[x_j]); the last step token itself needs no row.
        for lo in range(len(prefix) - 1, len(full) - 1, self._score_chunk):
            hi = min(len(full) - 1, lo + self._score_chunk)
            self._decode(slot, full[lo:hi], lo, logits=True)
            rows = np.stack([self._row(slot, i) for i in range(hi - lo)])
            logprobs.extend(token_logprobs(rows, full[lo + 1:hi + 1]).tolist())
        return StepScore(tuple(logprobs), cached_tokens=cached,
                         seconds=time.perf_counter() - t0)

    def _generate_sync(self, prompt: list[int], params: SamplingParams) -> Generation:
        t0 = time.perf_counter()
        slot, shared = self._acquire(prompt)
        cached = min(shared, len(prompt) - 1)
        self._truncate(slot, cached)
        # cached < len(prompt), so at least the last prompt token is evaluated: its row is the
        # distribution of the first new token.
        row = self._row(slot, self._prefill(slot, prompt, len(prompt)) - 1)
        rng = np.random.default_rng(params.seed)
        vocab = self._model.vocab
        out: list[int] = []
        text = b""
        finish: FinishReason = "length"
        while True:
            token = sample_token(row, params.temperature, params.top_p, rng)
            out.append(token)
            if self._lib.llama_vocab_is_eog(vocab, token):
                finish = "eos"
                break
            before = len(text.decode("utf-8", errors="ignore"))
            text += self._piece(token)
            decoded = text.decode("utf-8", errors="ignore")
            if any(decoded.find(s, max(0, before - len(s))) >= 0 for s in params.stop if s):
                finish = "stop"
                break
            if len(out) >= params.max_tokens:
                break
            self._decode(slot, [token], len(prompt) + len(out) - 1, logits=False)
            row = self._row(slot, 0)
        return Generation(
            token_ids=tuple(out),
            text=self.detokenize(out),
            finish_reason=finish,
            prompt_tokens=len(prompt),
            cached_tokens=cached,
            seconds=time.perf_counter() - t0,
        )

    def _free(self) -> None:
        for slot in self._slots:
            slot.ctx.close()
        self._slots.clear()
        self._batch.close()
        self._model.close()

