"""The llama.cpp and transformers engines agree on the real tiny model (smollm2-135m).

Both read the same GGUF file (SmolLM2-135M-Instruct, Q4_1).  transformers dequantises the
weights to float32 and computes in float32; llama.cpp multiplies the 4-bit weights with
activations it quantises to 8 bits, so per-token log-probabilities differ by that rounding, not
by more.  Measured on this file (4 chat prompts, each with a 21-32 token greedy step and the
same step shuffled, 2 CPU cores, llama-cpp-python 0.3.36, transformers 5.24.0):

- |log p_llama - log p_transformers| per token: max 0.34, mean per step <= 0.115 (greedy steps:
  max 0.17, mean <= 0.038);
- step perplexity ratio PPL_llama / PPL_transformers in [0.989, 1.030].

The bounds below are about twice those figures.  A position off by one, a wrong tokenisation or
a template mismatch moves log-probabilities by nats, far beyond them.  Also checked: both
engines render the chat prompt and tokenise text to the same ids, and each engine scores its
own greedy continuation far better (lower perplexity) than the same tokens shuffled.
"""

from __future__ import annotations

import asyncio
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (atts[llama])")
pytest.importorskip("transformers", reason="transformers is not installed (atts[hf])")
pytest.importorskip("gguf", reason="gguf is not installed (atts[hf])")

from atts.engines.base import ChatMessage, SamplingParams

MAX_ABS_DIFF = 0.75  # per token, nats (measured max 0.34)
MEAN_ABS_DIFF = 0.25  # per step, nats (measured max 0.115)
PPL_RTOL = 0.10  # |PPL_llama / PPL_transformers - 1| (measured max 0.030)
QUESTION = [ChatMessage("user", "Explain why the sky is blue in two sentences.")]
GREEDY = SamplingParams(max_tokens=32, temperature=0)


@pytest.fixture(scope="module")
def engines(tiny_model: Path) -> Iterator[tuple[Any, Any]]:
    from atts.engines.llama_cpp import LlamaCppEngine
    from atts.engines.transformers_engine import TransformersEngine

    llama = LlamaCppEngine(tiny_model, n_ctx=1024, n_contexts=2, n_threads=2)
    hf = TransformersEngine(tiny_model, device="cpu", n_ctx=1024)
    yield llama, hf
    asyncio.run(llama.close())
    asyncio.run(hf.close())


def _greedy_step(engine: Any, prompt: list[int]) -> list[int]:
    gen = asyncio.run(engine.generate(prompt, GREEDY))
    # An end-of-turn token ends the step as its last id; a step to score stops before it.
    return list(gen.token_ids[:-1] if gen.finish_reason == "eos" else gen.token_ids)


def _shuffled(step: list[int]) -> list[int]:
    out = list(step)
    random.Random(0).shuffle(out)
    assert out != step
    return out


def test_prompts_and_text_give_the_same_ids(engines: tuple[Any, Any]) -> None:
    llama, hf = engines
    assert llama.render_chat(QUESTION) == hf.render_chat(QUESTION)
    text = "Rayleigh scattering: intensity ~ 1/lambda^4, so 450 nm scatters 5.5x more.\n"
    assert llama.tokenize(text) == hf.tokenize(text)
    assert hf.detokenize(hf.tokenize(text)) == text


def test_same_step_same_logprobs(engines: tuple[Any, Any]) -> None:
    llama, hf = engines
    prompt = llama.render_chat(QUESTION)
    step = _greedy_step(llama, prompt)
    assert len(step) >= 20
    for ids in (step, _shuffled(step)):
        a = asyncio.run(llama.score(prompt, ids))
        b = asyncio.run(hf.score(prompt, ids))
        diffs = [abs(x - y) for x, y in zip(a.logprobs, b.logprobs, strict=True)]
        assert len(diffs) == len(ids)
        assert max(diffs) <= MAX_ABS_DIFF, diffs
        assert sum(diffs) / len(diffs) <= MEAN_ABS_DIFF, diffs
        assert abs(a.perplexity / b.perplexity - 1) <= PPL_RTOL, (a.perplexity, b.perplexity)


@pytest.mark.parametrize("which", ["llama_cpp", "transformers"])
def test_own_greedy_step_beats_its_shuffle(engines: tuple[Any, Any], which: str) -> None:
    engine = engines[0] if which == "llama_cpp" else engines[1]
    prompt = engine.render_chat(QUESTION)
    step = _greedy_step(engine, prompt)
    own = asyncio.run(engine.score(prompt, step))
    mixed = asyncio.run(engine.score(prompt, _shuffled(step)))
    # Measured: PPL 1.8 against about 2,700 in both engines.
    assert own.perplexity < 5 < 100 < mixed.perplexity
