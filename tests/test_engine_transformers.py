"""TransformersEngine on a tiny random Qwen2 model built offline (no download, a few seconds).

The tokenizer is byte-level with one token per printable ASCII byte (plus newline and the ChatML
specials), so any generated text decodes exactly.  Guarantees checked:
- score equals log_softmax of one uncached full forward pass, the first step token included;
- reusing a cached prefix (extended, or copied and truncated) changes no value beyond float
  rounding, and reports how many tokens it reused;
- greedy generation is the argmax chain of uncached forward passes, is deterministic, and stops
  at max_tokens, at the token completing a stop string, and at EOS (kept as the last id, as
  in the llama.cpp engine);
- seeded sampling is reproducible; a vanishing top_p is greedy;
- context overflow, bad ids and missing models fail before any work, with typed errors.
"""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")

from atts.engines.base import (  # noqa: E402
    ChatMessage,
    ContextOverflowError,
    Engine,
    EngineUnavailableError,
    ModelNotFoundError,
    SamplingParams,
)
from atts.engines.transformers_engine import TransformersEngine  # noqa: E402

SPECIALS = ["<|endoftext|>", "<|im_start|>", "<|im_end|>"]
CHATML = (
    "{% for m in messages %}<|im_start|>{{ m.role }}\n{{ m.content }}<|im_end|>\n{% endfor %}"
    "{% if add_generation_prompt %}<|im_start|>assistant\n{% endif %}"
)
TOL = 1e-5  # float32 forward passes of different shapes differ by rounding only


def _byte_to_unicode() -> dict[int, str]:
    """GPT-2's printable stand-in for each byte (the ByteLevel pre-tokenizer's alphabet)."""
    keep = [*range(33, 127), *range(161, 173), *range(174, 256)]
    chars, extra = list(keep), 0
    for b in range(256):
        if b not in keep:
            keep.append(b)
            chars.append(256 + extra)
            extra += 1
    return {b: chr(c) for b, c in zip(keep, chars, strict=True)}


def _build_model(folder: Path) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers
    from transformers import PreTrainedTokenizerFast, Qwen2Config, Qwen2ForCausalLM

    stand_in = _byte_to_unicode()
    vocab = {s: i for i, s in enumerate(SPECIALS)}
    for b in [10, *range(32, 127)]:
        vocab[stand_in[b]] = len(vocab)
    tok = Tokenizer(models.BPE(vocab=vocab, merges=[]))
    tok.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=False)
    tok.decoder = decoders.ByteLevel()
    tok.add_special_tokens(SPECIALS)
    fast = PreTrainedTokenizerFast(
        tokenizer_object=tok, eos_token="<|im_end|>", pad_token="<|endoftext|>"
    )
    fast.chat_template = CHATML
    config = Qwen2Config(
        vocab_size=len(fast),
        hidden_size=32,
        intermediate_size=64,
        num_hidden_layers=2,
        num_attention_heads=4,
        num_key_value_heads=2,
        max_position_embeddings=256,
        initializer_range=0.3,
        tie_word_embeddings=True,
        eos_token_id=2,
    )
    with torch.random.fork_rng():
        torch.manual_seed(0)
        model = Qwen2ForCausalLM(config)
    model.save_pretrained(folder)
    fast.save_pretrained(folder)


@pytest.fixture(scope="module")
def folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("tiny-qwen2")
    _build_model(path)
    return path


@pytest.fixture(scope="module")
def engine(folder: Path):
    # No EOS: a random model may pick it at any point, and most tests want exact lengths.
    eng = TransformersEngine(folder, device="cpu", eos_token_ids=[])
    yield eng
    asyncio.run(eng.close())


@pytest.fixture(scope="module")
def reference(folder: Path):
    model = transformers.AutoModelForCausalLM.from_pretrained(folder, dtype=torch.float32)
    return model.eval()


def _logprobs(reference, ids: list[int]) -> list[float]:
    """log p(ids[i] | ids[:i]) for i >= 1, from one uncached forward pass in float64."""
    with torch.inference_mode():
        logits = reference(torch.tensor([ids]), use_cache=False).logits[0].double()
    lp = torch.log_softmax(logits[:-1], dim=-1)
    return lp.gather(-1, torch.tensor(ids[1:]).unsqueeze(-1)).squeeze(-1).tolist()


def _greedy(reference, prompt: list[int], n: int) -> list[int]:
    ids = list(prompt)
    with torch.inference_mode():
        for _ in range(n):
            ids.append(int(reference(torch.tensor([ids]), use_cache=False).logits[0, -1].argmax()))
    return ids[len(prompt) :]


def _close(a, b, tol: float = TOL) -> bool:
    return len(a) == len(b) and all(abs(x - y) <= tol for x, y in zip(a, b, strict=True))


def test_protocol_and_text_round_trip(engine: TransformersEngine) -> None:
    assert isinstance(engine, Engine)
    info = engine.info
    assert (info.backend, info.context_length, info.vocab_size) == ("transformers", 256, 99)
    text = "Step 1: 2 + 2 = 4.\n"
    assert engine.detokenize(engine.tokenize(text)) == text
    ids = engine.render_chat([ChatMessage("user", "hi")])
    expected = "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
    assert ids == engine.tokenize(expected)  # specials in text map to their single ids
    assert engine.detokenize(ids) == "user\nhi\nassistant\n"  # specials print as nothing
    no_prompt = engine.render_chat([ChatMessage("user", "hi")], add_generation_prompt=False)
    assert ids[: len(no_prompt)] == no_prompt and len(no_prompt) < len(ids)


def test_score_equals_full_forward_pass(engine, reference) -> None:
    prefix, step = engine.tokenize("Question: what is 3*4?\n"), engine.tokenize("It is 12.")
    got = asyncio.run(engine.score(prefix, step))
    want = _logprobs(reference, prefix + step)[len(prefix) - 1 :]
    assert _close(got.logprobs, want)
    single = asyncio.run(engine.score(prefix[:1], step[:1]))  # one-token context and step
    assert _close(single.logprobs, _logprobs(reference, prefix[:1] + step[:1]))


def test_prefix_cache_reuse_is_exact(folder: Path, reference) -> None:
    eng = TransformersEngine(folder, device="cpu", eos_token_ids=[], prefix_cache_size=4)
    try:
        p, a, b = (eng.tokenize(t) for t in ("Solve x+1=3.\n", "x = 2.\n", "Subtract 1.\n"))
        first = asyncio.run(eng.score(p, a))
        assert first.cached_tokens == 0
        # The sample goes on: the cached p+a is extended in place.
        on = asyncio.run(eng.score(p + a, b))
        assert on.cached_tokens == len(p + a) - 1
        assert _close(on.logprobs, _logprobs(reference, p + a + b)[len(p + a) - 1 :])
        # Another sample diverges after p: a truncated copy serves it, the original stays.
        other = asyncio.run(eng.score(p, b))
        assert other.cached_tokens == len(p) - 1
        assert _close(other.logprobs, _logprobs(reference, p + b)[len(p) - 1 :])
        again = asyncio.run(eng.score(p + a, b))
        assert again.cached_tokens == len(p + a) - 1
        assert _close(again.logprobs, on.logprobs)
    finally:
        asyncio.run(eng.close())
    off = TransformersEngine(folder, device="cpu", prefix_cache_size=0)
    try:
        asyncio.run(off.score(p, a))
        assert asyncio.run(off.score(p + a, b)).cached_tokens == 0
    finally:
        asyncio.run(off.close())


def test_concurrent_calls_match_sequential(engine) -> None:
    steps = [engine.tokenize(t) for t in ("A.", "B is longer.", "C\n", "A.")]
    prefix = engine.tokenize("Context: ")

    async def many():
        return await asyncio.gather(*(engine.score(prefix, s) for s in steps))

    together = asyncio.run(many())
    for s, got in zip(steps, together, strict=True):
        assert _close(got.logprobs, asyncio.run(engine.score(prefix, s)).logprobs)


def test_greedy_is_the_argmax_chain_and_deterministic(engine, reference) -> None:
    prompt = engine.tokenize("Once upon a time")
    params = SamplingParams(max_tokens=12, temperature=0)
    first = asyncio.run(engine.generate(prompt, params))
    second = asyncio.run(engine.generate(prompt, params))
    assert first.token_ids == second.token_ids
    assert list(first.token_ids) == _greedy(reference, prompt, 12)
    assert first.finish_reason == "length" and len(first.token_ids) == 12
    assert first.text == engine.detokenize(first.token_ids)
    assert first.prompt_tokens == len(prompt)
    assert second.cached_tokens == len(prompt) - 1
    # The generated step scores from the decode loop's cache, with the same values.
    scored = asyncio.run(engine.score(prompt, first.token_ids))
    assert scored.cached_tokens == len(prompt) - 1
    assert _close(scored.logprobs, _logprobs(reference, prompt + list(first.token_ids))[-12:])


def test_stop_string_ends_the_step_after_its_last_token(engine) -> None:
    prompt = engine.tokenize("Once upon a time")
    free = asyncio.run(engine.generate(prompt, SamplingParams(max_tokens=30, temperature=0)))
    ids = list(free.token_ids)
    stop = engine.detokenize(ids[6:8])
    k = next(i for i in range(1, 31) if stop in engine.detokenize(ids[:i]))
    got = asyncio.run(
        engine.generate(prompt, SamplingParams(max_tokens=30, temperature=0, stop=("@@@", stop)))
    )
    assert got.finish_reason == "stop"
    assert list(got.token_ids) == ids[:k] and stop in got.text


def test_eos_ends_the_step_as_its_last_id(folder: Path, engine) -> None:
    prompt = engine.tokenize("Once upon a time")
    ids = asyncio.run(engine.generate(prompt, SamplingParams(max_tokens=10, temperature=0)))
    cut = next(i for i, t in enumerate(ids.token_ids) if t not in ids.token_ids[:i] and i > 0)
    eng = TransformersEngine(folder, device="cpu", eos_token_ids=[ids.token_ids[cut]])
    try:
        got = asyncio.run(eng.generate(prompt, SamplingParams(max_tokens=10, temperature=0)))
    finally:
        asyncio.run(eng.close())
    assert got.finish_reason == "eos" and got.token_ids == ids.token_ids[: cut + 1]
    default = TransformersEngine(folder, device="cpu")
    try:
        assert {0, 2} <= set(default._eos)  # the tokenizer's EOS and <|endoftext|>
    finally:
        asyncio.run(default.close())


def test_seeded_sampling_is_reproducible(engine) -> None:
    prompt = engine.tokenize("Once upon a time")

    def run(seed: int, top_p: float = 0.9) -> tuple[int, ...]:
        params = SamplingParams(max_tokens=16, temperature=1.0, top_p=top_p, seed=seed)
        return asyncio.run(engine.generate(prompt, params)).token_ids

    assert run(7) == run(7)
    assert run(7) != run(8)
    greedy = asyncio.run(engine.generate(prompt, SamplingParams(max_tokens=16, temperature=0)))
    assert run(3, top_p=1e-9) == greedy.token_ids  # the nucleus keeps only the top token


def test_errors_come_before_any_work(folder: Path, tmp_path: Path) -> None:
    eng = TransformersEngine(folder, device="cpu", n_ctx=32)
    try:
        assert eng.info.context_length == 32
        with pytest.raises(ContextOverflowError):
            asyncio.run(eng.generate([5] * 30, SamplingParams(max_tokens=3)))
        with pytest.raises(ContextOverflowError):
            asyncio.run(eng.score([5] * 30, [6] * 3))
        with pytest.raises(ValueError, match="empty"):
            asyncio.run(eng.score([], [5]))
        with pytest.raises(ValueError, match="vocabulary"):
            asyncio.run(eng.score([5], [10_000]))
    finally:
        asyncio.run(eng.close())
    with pytest.raises(EngineUnavailableError):
        asyncio.run(eng.score([5], [6]))
    with pytest.raises(ValueError, match="n_ctx"):
        TransformersEngine(folder, device="cpu", n_ctx=10_000)
    with pytest.raises(ModelNotFoundError, match="atts models pull"):
        TransformersEngine(tmp_path / "missing.gguf")


def test_separate_tokenizer_path(folder: Path) -> None:
    eng = TransformersEngine(folder, device="cpu", tokenizer_path=folder, prefix_cache_size=0)
    try:
        assert eng.detokenize(eng.tokenize("x = 2\n")) == "x = 2\n"
        assert eng.info.extra["path"] == str(folder)
    finally:
        asyncio.run(eng.close())


@pytest.mark.gpu
def test_cuda_scores_match_the_cpu_reference(folder: Path, reference) -> None:
    if not torch.cuda.is_available():
        pytest.skip("no CUDA device")
    exact = TransformersEngine(folder, device="cuda", dtype="float32", eos_token_ids=[])
    fast = TransformersEngine(folder, device="cuda", eos_token_ids=[])  # auto: bfloat16
    try:
        assert fast.info.extra["dtype"] == "bfloat16"
        prefix, step = exact.tokenize("Question: what is 3*4?\n"), exact.tokenize("It is 12.")
        want = _logprobs(reference, prefix + step)[len(prefix) - 1 :]
        assert _close(asyncio.run(exact.score(prefix, step)).logprobs, want, tol=1e-3)
        rough = asyncio.run(fast.score(prefix, step)).logprobs
        assert all(x == x and x <= 0 for x in rough)  # finite log-probabilities
        params = SamplingParams(max_tokens=12, temperature=0)
        greedy = asyncio.run(exact.generate(prefix, params))
        assert list(greedy.token_ids) == _greedy(reference, prefix, 12)
        assert asyncio.run(fast.generate(prefix, params)).finish_reason == "length"
    finally:
        asyncio.run(exact.close())
        asyncio.run(fast.close())
