"""The embedded engine: a GGUF model in this process through llama.cpp's low-level API.

Scoring is one prefill over the step on top of a cached prefix.  Token j's log-probability is
read from the logits at position j-1 (log-softmax, accumulated in float64), never from
``echo=True``, which is shifted by one position in llama-cpp-python 0.3.36.

All llama.cpp work runs in the engine's ``DecodeLoop`` (``_llama_loop.py``): one context with
one cached sequence per sample in flight (chosen by ``_context_pool.py``), and every decoding
sample's next token computed in one batched ``llama_decode`` call.  With a ``ComputePool`` (the
run's compute budget, ``compute.py``) each call runs on the cores free at its start, shared
with the other engine; without one, on ``n_threads`` threads.
"""

from __future__ import annotations

import asyncio
import contextlib
import ctypes
import os
from collections.abc import Sequence
from concurrent.futures import Future
from pathlib import Path
from typing import Any

from atts.engines._llama_loop import DecodeLoop
from atts.engines._requests import Request
from atts.engines.base import (
    ChatMessage,
    ContextOverflowError,
    EngineError,
    EngineInfo,
    EngineUnavailableError,
    Generation,
    SamplingParams,
    StepScore,
    TokenSink,
)
from atts.engines.call_stats import CallStats
from atts.engines.chat_template import render_chat_template
from atts.engines.compute import ComputePool
from atts.models.registry import lookup
from atts.models.store import model_sha256, resolve_model


def _default_threads() -> int:
    # Half the cores: without a compute pool a draft and a target engine compute at the same
    # time, and llama.cpp's threads spin at barriers, so oversubscribing the cores slows both.
    # Runs always pass a pool (runner/build.py); this serves engines built by hand.
    return max(1, (os.cpu_count() or 2) // 2)


class LlamaCppEngine:
    """A GGUF model served in-process by llama.cpp (the default engine).

    - ``model``: a named model (``qwen2.5-coder-0.5b``, ``draft``, ``tiny``, ...; see
      ``atts models list``) or a path to a GGUF file;
    - ``n_ctx``: tokens per sequence (prompt + step must fit);
    - ``n_contexts``: cached sequences, i.e. how many samples keep their prefix cached and
      decode in one batch (KV memory, allocated at start, grows with n_ctx x n_contexts);
    - ``compute``: the run's compute budget, shared with the other engine: each call runs on
      the cores free at its start, at most ``n_threads`` (default: all of the pool's);
      without it, every call on ``n_threads`` threads (default: half the cores);
    - ``n_batch``: tokens per llama_decode call when prefilling; ``score_chunk``: step tokens
      per scoring call (bounds the logits buffer to score_chunk x vocabulary floats);
    - ``flash_attn``: off by default (see ``_llama_loop.py``); ``n_gpu_layers`` for GPU builds;
    - ``compact``: move a starting generation beside the decoding ones (``_gaps``; off only to
      measure what it saves).
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
        compute: ComputePool | None = None,
        compact: bool = True,
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
        _logger.set_verbose(verbose)
        llama_cpp.llama_backend_init()

        spec = lookup(os.fspath(model))
        self._name = spec.name if spec is not None else os.fspath(model)
        self._path: Path = resolve_model(model)
        if compute is not None and n_threads is not None and n_threads > compute.cores:
            raise ValueError(f"n_threads {n_threads} exceeds the compute pool's "
                             f"{compute.cores} cores")
        self._n_threads = n_threads or (compute.cores if compute else _default_threads())
        self._compute = compute
        self._score_chunk = min(score_chunk, n_batch)
        self._n_contexts = n_contexts
        self._flash_attn = flash_attn
        model_params = _internals.LlamaModel.default_params()
        model_params.n_gpu_layers = n_gpu_layers
        self._model = _internals.LlamaModel(
            path_model=str(self._path), params=model_params, verbose=verbose
        )
        trained = self._model.n_ctx_train()
        if n_ctx > trained:
            self._model.close()  # read n_ctx_train first: the closed model cannot answer it
            raise ValueError(f"n_ctx {n_ctx} exceeds the model's training context {trained}; "
                             f"set --n-ctx {trained} or less")
        self._n_ctx = n_ctx
        self._n_vocab = self._model.n_vocab()
        metadata = self._model.metadata()
        self._template = metadata.get("tokenizer.chat_template")
        self._loop = DecodeLoop(
            llama_cpp, _internals, self._model, n_seq=n_contexts, n_ctx=n_ctx,
            n_batch=n_batch, score_chunk=self._score_chunk, max_threads=self._n_threads,
            compute=compute, flash_attn=flash_attn, piece=self._piece, verbose=verbose,
            compact=compact,
        )
        self._sha256: str | None = None
        self._closed = False

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
                   "n_threads": str(self._n_threads), "batched": "true",
                   "compute_pool": str(self._compute.cores if self._compute else "none"),
                   "flash_attn": str(self._flash_attn)},
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

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                       on_tokens: TokenSink | None = None) -> Generation:
        prompt = self._checked(prompt_ids, "prompt_ids")
        if len(prompt) + params.max_tokens > self._n_ctx:
            raise ContextOverflowError(
                f"prompt ({len(prompt)} tokens) + max_tokens ({params.max_tokens}) exceeds the "
                f"context length {self._n_ctx}; shorten the prompt or raise n_ctx"
            )
        sink = None if on_tokens is None else _on_loop(asyncio.get_running_loop(), on_tokens)
        return await self._submit(Request(prompt, Future(), params=params, on_tokens=sink,
                                          owner=params.cache_key))

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int], *,
                    cache_key: str | None = None) -> StepScore:
        prefix = self._checked(prefix_ids, "prefix_ids")
        step = self._checked(step_ids, "step_ids")
        if len(prefix) + len(step) > self._n_ctx:
            raise ContextOverflowError(
                f"prefix ({len(prefix)} tokens) + step ({len(step)} tokens) exceeds the context "
                f"length {self._n_ctx}; raise n_ctx"
            )
        return await self._submit(Request(prefix + step, Future(), prefix_len=len(prefix),
                                          owner=cache_key))

    async def close(self) -> None:
        """Stop the decode loop, then free its context and the model, in that order and in
        one worker thread: a close interrupted by a second Ctrl-C (a cancellation) goes on in
        that thread instead of freeing the model under a decode still running (a segfault),
        and ``asyncio.run`` waits for the thread before the process exits."""
        if self._closed:
            return
        self._closed = True
        await asyncio.shield(asyncio.ensure_future(asyncio.to_thread(self._free)))

    def _free(self) -> None:
        try:
            self._loop.close()  # joins the decode thread first
        finally:
            self._model.close()

    @property
    def peak_batch(self) -> int:
        """The most sequences one decode call carried (how much batching a run got)."""
        return self._loop.peak_batch

    @property
    def call_stats(self) -> CallStats:
        """Every ``llama_decode`` call so far: batch sizes, seconds computing and waiting."""
        return self._loop.calls

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

    async def _submit(self, request: Request) -> Any:
        if self._closed:
            raise EngineUnavailableError(f"engine for {self._name} is closed")
        self._loop.submit(request)
        return await asyncio.wrap_future(request.future)

    def release(self, token_ids: Sequence[int]) -> None:
        self._loop.pool.release(token_ids)


def _on_loop(loop: asyncio.AbstractEventLoop, on_tokens: TokenSink) -> TokenSink:
    """``on_tokens`` as the decode thread may call it: run on the caller's event loop, in
    order, before the generation's own result (both go through ``call_soon_threadsafe``)."""

    def sink(ids: tuple[int, ...]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is listening
            loop.call_soon_threadsafe(on_tokens, ids)

    return sink
