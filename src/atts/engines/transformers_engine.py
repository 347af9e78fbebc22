"""The transformers engine: exact float log-probabilities (the reference) and the lent-GPU engine.

It loads a GGUF file (dequantised to float by transformers; needs the ``gguf`` package) or a
Hugging Face folder, and serves the engine protocol of ``atts.engines.base``:

- ``score``: one forward pass over the step; the log-probability of step token j comes from the
  logits at the position before it, ``log p(s_j | x, s_<j) = z[s_j] - logsumexp(z)`` computed in
  float64, the first step token included (its logits sit at the prefix's last position);
- ``generate``: a KV-cached decode loop with the sampler shared with the llama.cpp engine
  (``atts.engines._sampling``: temperature, top-p, a numpy generator seeded by ``params.seed``;
  greedy at temperature 0), so equal logits give equal tokens in both engines.  A step ends at
  ``max_tokens``, after the token that completes a stop string (kept), or at an end-of-turn
  token, which is kept as the last id as in the llama.cpp engine; ``detokenize`` renders
  special tokens as nothing, as llama.cpp does, so a step's text never shows it.

Prefix cache: the engine keeps the KV caches of its last ``prefix_cache_size`` sequences in an
LRU keyed by the exact token ids each cache covers.  A request reuses the entry sharing the
longest common prefix with it, capped one token short of the prefix (that position's logits are
needed and are not stored).  An entry that is a prefix of the request is taken and extended in
place; one that diverges is copied and the copy truncated (the original stays).  Results agree
with an uncached pass up to float rounding (the same positions, other matmul shapes).
``release`` (a sample ended) frees the caches of that sample at the next call.

All model work runs on one worker thread per engine, so calls from many asyncio tasks queue up
there and the cache needs no lock.  torch and transformers are imported in the constructor.
"""

from __future__ import annotations

import asyncio
import copy
import threading
import time
from collections import OrderedDict
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar, cast

import numpy as np

from atts.engines._prefix import ReleaseQueue, common_prefix, extends
from atts.engines._sampling import sample_token, token_logprobs
from atts.engines.base import (
    ChatMessage,
    ContextOverflowError,
    EngineInfo,
    EngineUnavailableError,
    FinishReason,
    Generation,
    SamplingParams,
    StepScore,
    TokenSink,
)
from atts.models import lookup

T = TypeVar("T")

# Texts of end-of-generation tokens llama.cpp also stops at; found in the vocabulary at load.
_EOG_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>")
_DTYPES = ("auto", "float32", "bfloat16", "float16")


class TransformersEngine:
    """One causal LM through transformers.

    ``model``: a named model or GGUF path (resolved by ``atts.models.resolve_model``) or a Hugging
    Face folder.  ``device``: "cpu", "cuda", "cuda:N"; default cuda when available.  ``dtype``:
    "auto" is float32 on CPU (exact reference) and bfloat16 on CUDA.  ``tokenizer_path``: a folder
    or GGUF file, default the model's own.  ``n_ctx``: context limit, default the model's
    ``max_position_embeddings``.  ``prefix_cache_size``: KV caches kept (0 disables reuse).
    ``eos_token_ids``: tokens that end generation, default the model's EOS and end-of-turn tokens.
    ``model`` may also be a causal LM already built in memory, with its ``tokenizer`` object
    (used as they are, dtype included; bench/gpu_check.py builds random-weight models of real
    shapes that way, with nothing on disk).
    """

    def __init__(
        self,
        model: str | Path | Any,
        *,
        device: str | None = None,
        dtype: str = "auto",
        tokenizer_path: str | Path | None = None,
        n_ctx: int | None = None,
        prefix_cache_size: int = 8,
        eos_token_ids: Sequence[int] | None = None,
        tokenizer: Any | None = None,
    ) -> None:
        import torch
        from transformers import AutoModelForCausalLM, AutoTokenizer

        if dtype not in _DTYPES:
            raise ValueError(f"dtype must be one of {_DTYPES}, got {dtype!r}")
        if prefix_cache_size < 0:
            raise ValueError(f"prefix_cache_size must be >= 0, got {prefix_cache_size}")
        self._torch = torch
        self._device = torch.device(device or ("cuda" if torch.cuda.is_available() else "cpu"))
        if isinstance(model, str | Path):
            if dtype == "auto":
                dtype = "float32" if self._device.type == "cpu" else "bfloat16"
            path, gguf_name, sha = _locate(model)
            spec = lookup(str(model))
            name = spec.name if spec is not None else str(model)
            source = str(path / gguf_name if gguf_name else path)
            load_kwargs: dict[str, Any] = {"local_files_only": True}
            if gguf_name is not None:
                load_kwargs["gguf_file"] = gguf_name
            self._model: Any = cast(
                Any,
                AutoModelForCausalLM.from_pretrained(
                    str(path), dtype=getattr(torch, dtype), **load_kwargs
                ),
            )
        else:  # built in memory (random weights of a real shape): used as it is
            if tokenizer is None:
                raise ValueError("a model built in memory needs its tokenizer object")
            self._model = model
            name = source = str(getattr(model, "name_or_path", "") or type(model).__name__)
            dtype, sha = str(model.dtype).removeprefix("torch."), None
        self._model.to(self._device).eval()
        if tokenizer is not None:
            self._tokenizer = tokenizer
        elif tokenizer_path is None:
            self._tokenizer = AutoTokenizer.from_pretrained(str(path), **load_kwargs)
        else:
            tok_dir, tok_gguf, _ = _locate(tokenizer_path, hash_file=False)
            tok_kwargs: dict[str, Any] = {"local_files_only": True}
            if tok_gguf is not None:
                tok_kwargs["gguf_file"] = tok_gguf
            self._tokenizer = AutoTokenizer.from_pretrained(str(tok_dir), **tok_kwargs)

        config = self._model.config
        max_positions = int(getattr(config, "max_position_embeddings", 0) or 0) or 1 << 30
        if n_ctx is not None and not 0 < n_ctx <= max_positions:
            raise ValueError(f"n_ctx must be in [1, {max_positions}] for this model, got {n_ctx}")
        self._n_ctx = n_ctx or max_positions
        self._n_vocab = int(self._model.get_input_embeddings().num_embeddings)
        self._eos = frozenset(eos_token_ids if eos_token_ids is not None else self._find_eos())
        self._info = EngineInfo(
            backend="transformers",
            model=name,
            model_sha256=sha,
            context_length=self._n_ctx,
            vocab_size=int(config.vocab_size),
            extra={
                "device": str(self._device),
                "dtype": dtype,
                "path": source,
            },
        )

        self._cache_size = prefix_cache_size
        self._cache: OrderedDict[tuple[int, ...], Any] = OrderedDict()
        self._released = ReleaseQueue()
        # Cropping is exact only for plain full-attention layers; sliding-window or recurrent
        # layers have dropped states, so diverging entries are not reused for them.
        layer_types = getattr(config, "layer_types", None) or ()
        self._can_crop = all(t == "full_attention" for t in layer_types) and not getattr(
            config, "use_sliding_window", False
        )
        self._tok_lock = threading.Lock()  # fast tokenizers refuse concurrent mutable borrows
        self._executor: ThreadPoolExecutor | None = ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="atts-transformers"
        )

    # -- protocol: text <-> ids ----------------------------------------------------------------

    @property
    def info(self) -> EngineInfo:
        return self._info

    def tokenize(self, text: str) -> list[int]:
        with self._tok_lock:
            return list(self._tokenizer.encode(text, add_special_tokens=False))

    def detokenize(self, token_ids: Sequence[int]) -> str:
        with self._tok_lock:
            return str(
                self._tokenizer.decode(
                    list(token_ids), skip_special_tokens=True, clean_up_tokenization_spaces=False
                )
            )

    def render_chat(
        self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True
    ) -> list[int]:
        if self._tokenizer.chat_template is None:
            raise ValueError(f"{self._info.model}: the tokenizer has no chat template")
        convo = [{"role": m.role, "content": m.content} for m in messages]
        with self._tok_lock:
            out: Any = self._tokenizer.apply_chat_template(
                convo, tokenize=True, add_generation_prompt=add_generation_prompt
            )
        # transformers 5 returns a BatchEncoding here; 4.x returned the list itself.
        ids = out["input_ids"] if hasattr(out, "keys") else out
        return [int(t) for t in ids]

    # -- protocol: model calls -----------------------------------------------------------------

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                       on_tokens: TokenSink | None = None) -> Generation:
        """The reference engine does not stream: ``on_tokens`` is never called."""
        prompt = self._check_ids(prompt_ids, "prompt_ids")
        if len(prompt) + params.max_tokens > self._n_ctx:
            raise ContextOverflowError(
                f"prompt of {len(prompt)} tokens + max_tokens {params.max_tokens} exceeds the "
                f"context of {self._n_ctx}; shorten the prompt or lower max_tokens"
            )
        return await self._run(lambda: self._generate_sync(prompt, params))

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int], *,
                    cache_key: str | None = None) -> StepScore:
        prefix = self._check_ids(prefix_ids, "prefix_ids")
        step = self._check_ids(step_ids, "step_ids")
        if len(prefix) + len(step) > self._n_ctx:
            raise ContextOverflowError(
                f"prefix of {len(prefix)} + step of {len(step)} tokens exceeds the context of "
                f"{self._n_ctx}"
            )
        return await self._run(lambda: self._score_sync(prefix, step))

    async def close(self) -> None:
        executor, self._executor = self._executor, None
        if executor is not None:
            await asyncio.get_running_loop().run_in_executor(None, executor.shutdown, True)
            self._cache.clear()

    # -- worker-thread side --------------------------------------------------------------------

    def _score_sync(self, prefix: tuple[int, ...], step: tuple[int, ...]) -> StepScore:
        started = time.perf_counter()
        torch = self._torch
        seq = prefix + step
        n, m = len(prefix), len(step)
        cache, reused = self._take_cache(seq, limit=n - 1)
        # Positions reused..n+m-2 are fed; the last m of them (n-1..n+m-2) predict the step.
        logits = self._forward(seq[reused : n + m - 1], cache, keep=m)[0]
        logprobs = torch.log_softmax(logits.to(torch.float64), dim=-1)
        target = torch.tensor(step, device=logprobs.device).unsqueeze(-1)
        values = logprobs.gather(-1, target).squeeze(-1).tolist()
        self._put_cache(seq[: n + m - 1], cache)
        return StepScore(tuple(values), cached_tokens=reused, seconds=time.perf_counter() - started)

    def _generate_sync(self, prompt: tuple[int, ...], params: SamplingParams) -> Generation:
        started = time.perf_counter()
        rng = np.random.default_rng(params.seed)
        stops = [s for s in params.stop if s]

        cache, reused = self._take_cache(prompt, limit=len(prompt) - 1)
        fed = list(prompt)
        logits = self._forward(prompt[reused:], cache, keep=1)[0, -1]
        out: list[int] = []
        logprobs: list[float] = []
        finish: FinishReason = "length"
        while True:
            row = logits.float().cpu().numpy()  # numpy has no bfloat16
            token = sample_token(row, params.temperature, params.top_p, rng)
            out.append(token)
            if params.logprobs:
                logprobs.append(float(token_logprobs(row[None, :], [token])[0]))
            if token in self._eos:
                finish = "eos"
                break
            if stops and any(s in self.detokenize(out) for s in stops):
                finish = "stop"
                break
            if len(out) >= params.max_tokens:
                break
            logits = self._forward((token,), cache, keep=1)[0, -1]
            fed.append(token)
        self._put_cache(tuple(fed), cache)
        return Generation(
            token_ids=tuple(out),
            text=self.detokenize(out),
            finish_reason=finish,
            prompt_tokens=len(prompt),
            cached_tokens=reused,
            seconds=time.perf_counter() - started,
            logprobs=tuple(logprobs) if params.logprobs else None,
        )

    def _forward(self, ids: Sequence[int], cache: Any, keep: int) -> Any:
        torch = self._torch
        input_ids = torch.tensor([list(ids)], dtype=torch.long, device=self._device)
        with torch.inference_mode():
            try:
                out = self._model(
                    input_ids=input_ids, cache=cache, use_cache=True, logits_to_keep=keep
                )
            except torch.OutOfMemoryError as err:
                self._cache.clear()
                raise EngineUnavailableError(
                    f"{self._info.model}: out of memory on {self._device}; lower the number of "
                    "concurrent samples or prefix_cache_size"
                ) from err
        return out.logits

    def release(self, token_ids: Sequence[int]) -> None:
        self._released.put(token_ids)  # applied by the worker thread, which owns the cache

    def _drop_released(self) -> None:
        """Free the caches of ended samples now rather than when the LRU reaches them."""
        for ids in self._released.take():
            for key in [k for k in self._cache if extends(k, common_prefix(k, ids))]:
                del self._cache[key]

    def _take_cache(self, seq: tuple[int, ...], limit: int) -> tuple[Any, int]:
        """A KV cache holding exactly ``seq[:reused]`` for the largest ``reused <= limit``."""
        self._drop_released()
        best_key: tuple[int, ...] | None = None
        best = 0
        for key in self._cache:
            shared = min(common_prefix(key, seq), limit)
            if shared > best and (shared == len(key) or self._can_crop):
                best_key, best = key, shared
        if best_key is None:
            from transformers import DynamicCache

            return DynamicCache(config=self._model.config), 0
        if best == len(best_key):
            return self._cache.pop(best_key), best
        self._cache.move_to_end(best_key)
        cache = copy.deepcopy(self._cache[best_key])
        cache.crop(best - len(best_key))  # a negative count removes that many trailing tokens
        return cache, best

    def _put_cache(self, covered: tuple[int, ...], cache: Any) -> None:
        if self._cache_size == 0 or cache.get_seq_length() != len(covered):
            return
        self._cache[covered] = cache
        self._cache.move_to_end(covered)
        while len(self._cache) > self._cache_size:
            self._cache.popitem(last=False)

    async def _run(self, work: Callable[[], T]) -> T:
        if self._executor is None:
            raise EngineUnavailableError(f"{self._info.model}: the engine is closed")
        return await asyncio.get_running_loop().run_in_executor(self._executor, work)

    def _check_ids(self, ids: Sequence[int], what: str) -> tuple[int, ...]:
        out = tuple(int(t) for t in ids)
        if not out:
            raise ValueError(f"{what} must not be empty")
        if min(out) < 0 or max(out) >= self._n_vocab:
            raise ValueError(f"{what} holds ids outside the vocabulary [0, {self._n_vocab})")
        return out

    def _find_eos(self) -> set[int]:
        found: set[int] = set()
        for source in (self._tokenizer, self._model.config, self._model.generation_config):
            value = getattr(source, "eos_token_id", None)
            if isinstance(value, int):
                found.add(value)
            elif isinstance(value, list | tuple):
                found.update(int(v) for v in value)
        vocab = self._tokenizer.get_vocab()
        found.update(vocab[text] for text in _EOG_TEXTS if text in vocab)
        return found


def _locate(model: str | Path, hash_file: bool = True) -> tuple[Path, str | None, str | None]:
    """(folder to load from, GGUF file name in it or None, sha256 of the GGUF or None)."""
    from atts.models import lookup, model_sha256, resolve_model

    path = Path(model).expanduser()
    if path.is_dir() and lookup(str(model)) is None:
        return path, None, None
    file = resolve_model(model)  # raises ModelNotFoundError naming `atts models pull NAME`
    if file.suffix != ".gguf":
        raise ValueError(f"{file}: expected a .gguf file or a Hugging Face model folder")
    return file.parent, file.name, model_sha256(file) if hash_file else None
