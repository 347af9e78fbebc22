"""LlamaCppEngine on the tiny model (smollm2-135m): scores, prefix reuse, sampling, limits.

The model-backed tests skip only when the tiny model is not installed
(``atts models pull tiny``); the sampler and registry tests need no model.
"""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import numpy as np
import pytest

from atts.engines import create_engine, parse_spec
from atts.engines._sampling import log_softmax, sample_token, token_logprobs
from atts.engines.base import (
    ChatMessage,
    ContextOverflowError,
    Engine,
    ModelNotFoundError,
    SamplingParams,
)
from atts.models import resolve_model

QUESTION = [ChatMessage("user", "Explain why the sky is blue in two sentences.")]
STEP_TEXT = (
    "The sky looks blue because air molecules scatter short wavelengths of sunlight more "
    "strongly than long ones, so blue light reaches our eyes from every direction."
)
# Tolerance of the score against an independent single-batch evaluation.  Observed: 0.0 (same
# kernels, flash attention off); the bound leaves room for summation-order noise only.
SCORE_ATOL = 1e-3


def run(coro: Any) -> Any:
    return asyncio.run(coro)


def _tiny_path() -> str:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (atts[llama])")
    try:
        return str(resolve_model("smollm2-135m"))
    except ModelNotFoundError as err:
        pytest.skip(f"tiny model absent, run `atts models pull tiny`: {err}")


@pytest.fixture(scope="module")
def engine() -> Iterator[Any]:
    from atts.engines.llama_cpp import LlamaCppEngine

    eng = LlamaCppEngine(_tiny_path(), n_ctx=1024, n_contexts=3, n_threads=2)
    yield eng
    run(eng.close())


@pytest.fixture(scope="module")
def prompt(engine: Any) -> list[int]:
    return list(engine.render_chat(QUESTION))


def _reference_logprobs(path: str, prefix: list[int], step: list[int]) -> np.ndarray:
    """Independent computation: the high-level API evaluates prefix+step in one fresh batch
    with logits for every position; row j-1 predicts token j."""
    from llama_cpp import Llama

    ref = Llama(path, n_ctx=256, logits_all=True, flash_attn=False, n_threads=2, verbose=False)
    try:
        ref.eval(prefix + step)
        logp = log_softmax(np.asarray(ref.scores[: len(prefix) + len(step)]))
        return np.array([logp[len(prefix) + i - 1, t] for i, t in enumerate(step)])
    finally:
        ref.close()


def test_is_an_engine_and_reports_info(engine: Any) -> None:
    assert isinstance(engine, Engine)
    info = engine.info
    assert info.backend == "llama_cpp"
    assert info.model_sha256 == "b179c9523d0e6a0f98a330c7562b682750a6f8c8c15e5bc70ea373728110db53"
    assert info.context_length == 1024
    assert info.vocab_size == 49152


def test_text_round_trip_and_chat_template(engine: Any, prompt: list[int]) -> None:
    ids = engine.tokenize(STEP_TEXT)
    assert engine.detokenize(ids) == STEP_TEXT
    assert engine.tokenize("<|im_end|>") != engine.tokenize("x")  # plain text, not special
    assert len(engine.tokenize("<|im_end|>")) > 1
    # The template's special markers are parsed into single control tokens.
    end = engine.tokenize("assistant\n")
    assert prompt[-len(end):] == end
    assert prompt.count(prompt[-len(end) - 1]) >= 3  # <|im_start|> opens each of 3 turns


def test_score_matches_independent_single_batch_evaluation(
    engine: Any, prompt: list[int]
) -> None:
    step = engine.tokenize(STEP_TEXT)
    # Leave another continuation in the cache first, so the score runs on a reused prefix.
    run(engine.generate(prompt, SamplingParams(max_tokens=8, temperature=0)))
    got = run(engine.score(prompt, step))
    assert got.cached_tokens == len(prompt) - 1
    want = _reference_logprobs(str(engine.info.extra["path"]), prompt, step)
    assert len(got.logprobs) == len(step)
    np.testing.assert_allclose(got.logprobs, want, atol=SCORE_ATOL, rtol=0)


def test_greedy_continuation_scores_higher_than_its_shuffle(
    engine: Any, prompt: list[int]
) -> None:
    gen = run(engine.generate(prompt, SamplingParams(max_tokens=32, temperature=0)))
    own = run(engine.score(prompt, gen.token_ids))
    shuffled = list(np.random.default_rng(0).permutation(gen.token_ids))
    assert shuffled != list(gen.token_ids)
    assert own.mean_logprob > run(engine.score(prompt, shuffled)).mean_logprob


def test_second_score_reuses_prefix_and_agrees(engine: Any, prompt: list[int]) -> None:
    step = engine.tokenize(" Blue light has a shorter wavelength.")
    first = run(engine.score(prompt, step))
    second = run(engine.score(prompt, step))
    assert second.cached_tokens == len(prompt) - 1 > 0
    np.testing.assert_allclose(second.logprobs, first.logprobs, atol=1e-6, rtol=0)
    # Scoring the next step only evaluates that step: the previous one is in the cache.
    nxt = run(engine.score(prompt + step, engine.tokenize(" Red light scatters less.")))
    assert nxt.cached_tokens == len(prompt) + len(step) - 1


def test_pool_keeps_interleaved_samples_cached() -> None:
    # Its own engine: with the module's pool full of earlier tests' contexts, which one a new
    # request takes depends on their lengths (see the next test).
    from atts.engines.llama_cpp import LlamaCppEngine

    engine = LlamaCppEngine(_tiny_path(), n_ctx=1024, n_contexts=2, n_threads=2)
    try:
        a = engine.render_chat([ChatMessage("user", "Count from one to ten.")])
        b = engine.render_chat([ChatMessage("user", "Name three primary colours.")])
        step = engine.tokenize(" One, two, three.")
        for _ in range(2):
            run(engine.score(a, step))
            run(engine.score(b, step))
            again = run(engine.score(a + step, step))
            assert again.cached_tokens == len(a) + len(step) - 1
            a = a + step
    finally:
        run(engine.close())


LONG_TEXT = " ".join(f"Step {i}: the count goes on to {i + 1}." for i in range(30))


def test_full_pool_evicts_the_cheapest_context_and_released_ones_first() -> None:
    """With the pool full, a sibling sharing only the prompt must not take a live sample's
    context (the two would evict each other every round): it takes the context whose loss
    costs least, and a context released by an ended sample costs nothing."""
    from atts.engines.llama_cpp import LlamaCppEngine

    for release in (False, True):
        eng = LlamaCppEngine(_tiny_path(), n_ctx=1024, n_contexts=2, n_threads=2)
        try:
            prompt = eng.render_chat([ChatMessage("user", "Count from one to ten.")])
            other = eng.render_chat([ChatMessage("user", "Name three primary colours.")])
            history = prompt + eng.tokenize(LONG_TEXT)
            step = eng.tokenize(" One, two, three.")
            run(eng.score(history, step))  # sample A: a long live history
            # An unrelated sample: short when it stays live, longer than A's when it ended.
            ended = other + eng.tokenize(LONG_TEXT + LONG_TEXT) if release else other
            run(eng.score(ended, step))
            if release:
                eng.release(ended + step)
            run(eng.score(prompt, step))  # A's sibling: shares only the prompt with A
            again = run(eng.score(history + step, step))  # A goes on: its cache survived
            assert again.cached_tokens == len(history) + len(step) - 1, release
        finally:
            run(eng.close())


def test_a_regenerated_step_reads_its_samples_own_cache_not_a_siblings() -> None:
    """Two samples of one question each score a step; the first's step is rejected and the
    target regenerates it from the prompt.  By prefix both sequences fit; with the samples'
    cache keys the regeneration goes back to its own and the sibling's history survives, and
    the engine's counts say no context row was read again after an eviction."""
    from atts.engines.llama_cpp import LlamaCppEngine

    eng = LlamaCppEngine(_tiny_path(), n_ctx=1024, n_contexts=2, n_threads=2)
    try:
        prompt = eng.render_chat([ChatMessage("user", "Count from one to ten.")])
        step_a, step_b = eng.tokenize(" One, two, three."), eng.tokenize(" Uno, dos, tres.")
        run(eng.score(prompt, step_a, cache_key="q#0"))
        run(eng.score(prompt, step_b, cache_key="q#1"))
        regenerated = run(eng.generate(prompt, SamplingParams(max_tokens=4, temperature=0,
                                                              cache_key="q#0")))
        assert regenerated.cached_tokens == len(prompt) - 1  # its own prompt, still cached
        again = run(eng.score(prompt + step_b, step_a, cache_key="q#1"))
        assert again.cached_tokens == len(prompt) + len(step_b) - 1  # the sibling's too
        stats = eng.call_stats
        assert stats.evicted_rows == 0
        assert stats.first_rows == 2 * (len(prompt) - 1)  # each sample read its prompt once
    finally:
        run(eng.close())


def test_concurrent_requests_match_sequential(engine: Any, prompt: list[int]) -> None:
    params = [SamplingParams(max_tokens=12, temperature=0.9, seed=s) for s in range(4)]
    sequential = [run(engine.generate(prompt, p)).token_ids for p in params]

    async def together() -> list[Any]:
        return await asyncio.gather(*(engine.generate(prompt, p) for p in params))

    assert [g.token_ids for g in run(together())] == sequential


def test_generation_is_deterministic(engine: Any, prompt: list[int]) -> None:
    greedy = SamplingParams(max_tokens=16, temperature=0)
    assert run(engine.generate(prompt, greedy)).token_ids == run(
        engine.generate(prompt, greedy)).token_ids
    seeded = SamplingParams(max_tokens=16, temperature=1.0, top_p=0.95, seed=7)
    first = run(engine.generate(prompt, seeded))
    assert run(engine.generate(prompt, seeded)).token_ids == first.token_ids
    others = {run(engine.generate(prompt, SamplingParams(max_tokens=16, temperature=1.0,
                                                         seed=s))).token_ids for s in range(3)}
    assert len(others) > 1


def test_generation_logprobs_are_the_models_own_and_match_its_scoring(
    engine: Any, prompt: list[int]
) -> None:
    """The draft side of the llr score: log p(token) under the model's temperature-1
    distribution, whatever the sampling temperature, and about the numbers a scoring pass over
    the generated ids gives.  Not exactly: a decode row (one token) and a prefill row (a batch)
    run different quantised matmul kernels in llama.cpp; observed on this model: the first
    token equal, the others up to 0.073 nat apart, 0.03 on average."""
    plain = run(engine.generate(prompt, SamplingParams(max_tokens=12, temperature=0.7, seed=3)))
    assert plain.logprobs is None
    asked = run(engine.generate(prompt, SamplingParams(max_tokens=12, temperature=0.7, seed=3,
                                                       logprobs=True)))
    assert asked.token_ids == plain.token_ids
    assert asked.logprobs is not None and len(asked.logprobs) == len(asked.token_ids)
    scored = run(engine.score(prompt, asked.token_ids))
    gap = np.abs(np.asarray(asked.logprobs) - np.asarray(scored.logprobs))
    assert gap[0] <= SCORE_ATOL  # the first token's row comes from the prompt's prefill
    assert gap.max() <= 0.15 and gap.mean() <= 0.05
    assert all(v <= 0 for v in asked.logprobs)


def test_stop_string_ends_step_after_the_completing_token(
    engine: Any, prompt: list[int]
) -> None:
    free = run(engine.generate(prompt, SamplingParams(max_tokens=40, temperature=0)))
    words = free.text.split()
    assert len(words) > 3
    stop = words[2]
    got = run(engine.generate(prompt, SamplingParams(max_tokens=40, temperature=0, stop=(stop,))))
    assert got.finish_reason == "stop"
    assert stop in got.text
    assert stop not in engine.detokenize(got.token_ids[:-1])
    assert got.token_ids == free.token_ids[: len(got.token_ids)]


def test_max_tokens_and_eos(engine: Any, prompt: list[int]) -> None:
    got = run(engine.generate(prompt, SamplingParams(max_tokens=3, temperature=0)))
    assert got.finish_reason == "length"
    assert len(got.token_ids) == 3
    assert got.prompt_tokens == len(prompt)
    # Greedy decoding of this question ends with <|im_end|>, which is kept in the ids.
    done = run(engine.generate(prompt, SamplingParams(max_tokens=200, temperature=0)))
    assert done.finish_reason == "eos"
    assert engine.detokenize(done.token_ids[-1:]) == ""


def test_context_overflow_is_raised_before_any_work() -> None:
    from atts.engines.llama_cpp import LlamaCppEngine

    small = LlamaCppEngine(_tiny_path(), n_ctx=32, n_threads=1)
    try:
        with pytest.raises(ContextOverflowError, match="context length 32"):
            run(small.generate(list(range(30)), SamplingParams(max_tokens=3)))
        with pytest.raises(ContextOverflowError):
            run(small.score(list(range(20)), list(range(13))))
        assert small._loop.pool.slots == []  # no sequence was even taken
        with pytest.raises(ValueError, match="outside the vocabulary"):
            run(small.score([1], [10**6]))
    finally:
        run(small.close())


def test_missing_model_names_the_pull_command(monkeypatch: pytest.MonkeyPatch,
                                              tmp_path: Any) -> None:
    pytest.importorskip("llama_cpp", reason="llama-cpp-python is not installed (atts[llama])")
    from atts.engines.llama_cpp import LlamaCppEngine

    monkeypatch.setenv("ATTS_HOME", str(tmp_path))
    with pytest.raises(ModelNotFoundError, match="atts models pull smollm2-135m"):
        LlamaCppEngine("tiny")


def test_create_engine_builds_llama_cpp(monkeypatch: pytest.MonkeyPatch) -> None:
    _tiny_path()
    eng = create_engine("llama_cpp:tiny", "draft", n_ctx=256, n_contexts=1)
    try:
        assert eng.info.backend == "llama_cpp"
        assert eng.info.context_length == 256
    finally:
        run(eng.close())


# -- no model needed -------------------------------------------------------------------------


def test_parse_spec() -> None:
    assert parse_spec("llama_cpp", "draft") == ("llama_cpp", "draft")
    assert parse_spec("llama_cpp:tiny", "target") == ("llama_cpp", "tiny")
    assert parse_spec("qwen2.5-coder-1.5b", "target") == ("llama_cpp", "qwen2.5-coder-1.5b")
    assert parse_spec("transformers", "target") == ("transformers", "target")
    assert parse_spec("fake", "draft") == ("fake", None)
    assert parse_spec("fake:script", "draft") == ("fake", "script")
    with pytest.raises(ValueError, match="role"):
        parse_spec("fake", "judge")


def test_log_softmax_is_normalised() -> None:
    z = np.random.default_rng(1).normal(size=(3, 1000)).astype(np.float32) * 20
    logp = log_softmax(z)
    assert logp.dtype == np.float64
    np.testing.assert_allclose(np.exp(logp).sum(axis=1), 1.0, atol=1e-12)
    targets = [5, 999, 0]
    np.testing.assert_allclose(token_logprobs(z, targets), logp[[0, 1, 2], targets], atol=1e-12)


def test_sampler_greedy_seeded_and_top_p() -> None:
    rng = np.random.default_rng(3)
    logits = rng.normal(size=5000)
    assert sample_token(logits, 0.0, 1.0, np.random.default_rng(0)) == int(np.argmax(logits))

    def draws(seed: int, top_p: float) -> list[int]:
        g = np.random.default_rng(seed)
        return [sample_token(logits, 0.7, top_p, g) for _ in range(200)]

    assert draws(5, 0.9) == draws(5, 0.9)
    # Top-p keeps exactly the smallest most-probable set with mass >= p (brute force below).
    p = np.exp((logits - logits.max()) / 0.7)
    p /= p.sum()
    order = np.argsort(-p)
    nucleus = set(order[: int(np.searchsorted(np.cumsum(p[order]), 0.5)) + 1].tolist())
    assert set(draws(6, 0.5)) <= nucleus
    assert len(set(draws(6, 0.5))) > 1
    # Frequencies follow the softmax: the favourite's share is close to its probability.
    g = np.random.default_rng(8)
    two = np.array([0.0, np.log(3.0)])
    share = np.mean([sample_token(two, 1.0, 1.0, g) for _ in range(4000)])
    assert abs(share - 0.75) < 0.03


def test_n_ctx_above_the_training_context_is_an_error_not_a_crash() -> None:
    """The engine used to close the model and then ask it for n_ctx_train: a segmentation
    fault with no output.  Run in a child process so that a crash fails only this test."""
    import subprocess
    import sys

    path = _tiny_path()
    code = ("from atts.engines.llama_cpp import LlamaCppEngine\n"
            "try:\n"
            f"    LlamaCppEngine({path!r}, n_ctx=10**6)\n"
            "except ValueError as err:\n"
            "    print(err)\n")
    child = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                           timeout=120)
    assert child.returncode == 0, child.stderr[-500:]
    assert "exceeds the model's training context 8192; set --n-ctx 8192 or less" in child.stdout


def test_a_generation_streams_its_tokens_as_they_are_decoded(
    engine: Any, prompt: list[int]
) -> None:
    """on_tokens hears the ids so far after each token, on the event loop, before the result
    (the server's token-level stream of n = 1 rests on this)."""
    heard: list[tuple[int, ...]] = []
    params = SamplingParams(max_tokens=12, temperature=0.0, seed=3)
    gen = run(engine.generate(prompt, params, on_tokens=heard.append))
    assert len(heard) == len(gen.token_ids) - 1  # the last token settles the result instead
    assert [len(ids) for ids in heard] == list(range(1, len(gen.token_ids)))
    assert all(gen.token_ids[: len(ids)] == ids for ids in heard)
    assert run(engine.generate(prompt, params)).token_ids == gen.token_ids  # no side effect


def _five_samples(eng: Any) -> tuple[list[list[int]], list[int], list[SamplingParams]]:
    """Five samples' prompts, one step for all (mid-count: no end of turn next), and each
    sample's sampling parameters (its own cache key)."""
    prompts = [eng.render_chat([ChatMessage("user", f"Count from {i} to {i + 9}.")])
               for i in range(5)]
    step = eng.tokenize(" One, two, three, four,")
    params = [SamplingParams(max_tokens=10, temperature=0.9, seed=i, cache_key=f"q#{i}")
              for i in range(5)]
    return prompts, step, params


async def _three_together(eng: Any, prompts: list[list[int]], step: list[int],
                          params: list[SamplingParams]) -> list[Any]:
    """Each sample scores the step in a sequence of its own (sample i on seq_id i); then
    samples 0, 2 and 4 generate together."""
    for i, prompt in enumerate(prompts):
        await eng.score(prompt, step, cache_key=f"q#{i}")
    return await asyncio.gather(*(eng.generate(prompts[i] + step, params[i]) for i in (0, 2, 4)))


def test_a_batch_with_gaps_is_padded_and_stays_exact() -> None:
    """Five samples each hold a sequence; samples 0, 2 and 4 decode together, so the batch
    has idle sequences 1 and 3 between its rows.  Those gaps are filled with throwaway rows
    (one pass instead of three), the three generations equal the same requests made one at a
    time, and the idle samples' caches are untouched: their next score reuses every cached
    token and equals a fresh evaluation.  Moving generations beside each other is off here
    (it would close the gaps instead: the next test)."""
    from atts.engines.llama_cpp import LlamaCppEngine

    path = _tiny_path()
    eng = LlamaCppEngine(path, n_ctx=1024, n_contexts=5, n_threads=2, compact=False)
    alone = LlamaCppEngine(path, n_ctx=1024, n_contexts=5, n_threads=2)
    try:
        prompts, step, params = _five_samples(eng)
        for i, prompt in enumerate(prompts):
            run(alone.score(prompt, step, cache_key=f"q#{i}"))
        padded = run(_three_together(eng, prompts, step, params))
        assert [s.owner for s in eng._loop.pool.slots] == [f"q#{i}" for i in range(5)]
        assert eng.peak_batch == 3 and eng.call_stats.padded_rows > 0
        assert eng.call_stats.moves == 0
        assert all(len(out.token_ids) == 10 for out in padded)
        for out, i in zip(padded, (0, 2, 4), strict=True):
            assert out.token_ids == run(alone.generate(prompts[i] + step, params[i])).token_ids
        for i in (1, 3):  # the idle samples' histories survived the throwaway rows
            again = run(eng.score(prompts[i] + step, step, cache_key=f"q#{i}"))
            assert again.cached_tokens == len(prompts[i]) + len(step) - 1
            reference = _reference_logprobs(path, prompts[i] + step, step)
            np.testing.assert_allclose(again.logprobs, reference, atol=SCORE_ATOL, rtol=0)
    finally:
        run(eng.close())
        run(alone.close())


def test_generations_move_beside_the_decoding_ones_and_stay_exact() -> None:
    """The same five samples, with samples 0, 2 and 4 decoding together, but moved: 2 and 4
    trade sequences (caches and all) with idle samples so that the three decode on adjacent
    sequences, with no throwaway row.  The generations equal the requests made one at a time,
    and every idle sample's history survived its move: its next score reuses every cached
    token, in its own (new) sequence, and equals a fresh evaluation."""
    from atts.engines.llama_cpp import LlamaCppEngine

    path = _tiny_path()
    eng = LlamaCppEngine(path, n_ctx=1024, n_contexts=5, n_threads=2)
    alone = LlamaCppEngine(path, n_ctx=1024, n_contexts=5, n_threads=2, compact=False)
    try:
        prompts, step, params = _five_samples(eng)
        moved = run(_three_together(eng, prompts, step, params))
        stats = eng.call_stats
        assert stats.moves == 2 and stats.padded_rows == 0 and eng.peak_batch == 3
        seq = {s.owner: s.seq for s in eng._loop.pool.slots}
        assert sorted(seq[f"q#{i}"] for i in (0, 2, 4)) == [0, 1, 2]
        for out, i in zip(moved, (0, 2, 4), strict=True):
            assert out.token_ids == run(alone.generate(prompts[i] + step, params[i])).token_ids
        for i in (1, 3):  # moved while idle: the history went with the sample
            again = run(eng.score(prompts[i] + step, step, cache_key=f"q#{i}"))
            assert again.cached_tokens == len(prompts[i]) + len(step) - 1
            reference = _reference_logprobs(path, prompts[i] + step, step)
            np.testing.assert_allclose(again.logprobs, reference, atol=SCORE_ATOL, rtol=0)
        # The movers' histories, their generations included, went with them: scored next,
        # they equal the same batch decoded in place (padded, nothing moved), bit for bit.
        run(_three_together(alone, prompts, step, params))
        for i, out in zip((0, 2, 4), moved, strict=True):
            ids = prompts[i] + step + list(out.token_ids)
            again = run(eng.score(ids, step, cache_key=f"q#{i}"))
            assert again.cached_tokens == len(ids) - 1
            assert again.logprobs == run(alone.score(ids, step, cache_key=f"q#{i}")).logprobs
    finally:
        run(eng.close())
        run(alone.close())


def test_a_generation_moves_only_where_it_saves_a_pass_or_a_row() -> None:
    from atts.engines._gaps import PAD_ROW, batch_cost, better_place

    assert batch_cost([0, 1, 2]) == 1 and batch_cost([0, 5]) == 2
    assert batch_cost([0, 2, 4]) == pytest.approx(1 + 2 * PAD_ROW)
    assert better_place(3, [], [0, 1]) is None  # nothing decodes: anywhere is as good
    assert better_place(1, [0], [2, 3]) is None  # already beside
    assert better_place(2, [0], [1, 3, 4]) == 1  # a throwaway row saved
    assert better_place(7, [0, 1, 2], [3, 6]) == 3  # a pass saved; 6 would save nothing
    assert better_place(7, [0, 1, 2], [6]) is None  # no idle sequence is better
    assert better_place(7, [0, 1, 2], [5, 6]) == 5  # two throwaway rows for a pass
    assert better_place(5, [0, 4], [1, 3, 6]) == 3  # into the hole: one pass, not two
    assert better_place(9, [3, 4], [2, 5]) == 5  # ties: the nearest


def test_decode_rows_fill_short_gaps_only() -> None:
    from atts.engines._gaps import PAD_TOKEN, decode_rows

    rows, where, pads = decode_rows([(7, 10, 0), (8, 20, 2), (9, 30, 6)], {1: 5, 3: 4}, 1024)
    # seq 1 (5 cached) is filled; the gap 3-5 is longer than PAD_GAP and stays open.
    assert rows == [(7, 10, 0, True), (PAD_TOKEN, 5, 1, False), (8, 20, 2, True),
                    (9, 30, 6, True)]
    assert where == [0, 2, 3] and pads == [(1, 5)]
    rows, where, pads = decode_rows([(7, 10, 0), (8, 20, 3)], {1: 5, 2: 1024}, 1024)
    assert pads == [] and where == [0, 1]  # sequence 2 is full: no row fits there
    rows, _, pads = decode_rows([(7, 10, 1), (8, 20, 3)], {}, 1024)
    assert pads == [(2, 0)] and rows[1] == (PAD_TOKEN, 0, 2, False)  # never opened: empty
    with pytest.raises(ValueError, match="increasing seq_id"):
        decode_rows([(7, 10, 2), (8, 20, 1)], {}, 1024)
