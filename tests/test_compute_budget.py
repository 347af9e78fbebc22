"""The compute budget: one pool of cores shared by both engines, the same for every strategy.

The pool and the plan are tested on their own; the llama.cpp engine's batched loop on the tiny
model (samples decoded together get exactly the tokens and scores they get alone, and never
more cores compute than the pool has); a real run records the budget in its manifest.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

import numpy as np
import pytest

from atts.config import ConfigError, RunConfig
from atts.engines.base import ChatMessage, SamplingParams
from atts.engines.compute import ComputePool, machine_cores, plan_compute


def test_the_pool_never_lets_more_calls_compute_than_it_has_cores() -> None:
    """Eight calls on a pool of two: every holder waits inside the pool for a second holder
    (a barrier, not a sleep), so two at once is reached by construction, and the counts show
    a third never got in."""
    pool = ComputePool(2)
    busy, peak, lock = [0], [0], threading.Lock()
    pair = threading.Barrier(2, timeout=30)

    def work() -> None:
        with pool.hold():
            with lock:
                busy[0] += 1
                peak[0] = max(peak[0], busy[0])
            pair.wait()  # both cores held now
            with lock:
                busy[0] -= 1
            pair.wait()  # both counted out before either frees its core

    threads = [threading.Thread(target=work) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not pair.broken
    assert peak[0] == 2 == pool.peak_busy  # reached, never exceeded


def test_a_call_may_hold_several_cores_but_not_more_than_the_pool() -> None:
    pool = ComputePool(2)
    with pool.hold(2):
        assert pool.peak_busy == 2
    with pytest.raises(ValueError, match=r"1\.\.2 cores"), pool.hold(3):
        pass
    with pytest.raises(ValueError, match="at least one core"):
        ComputePool(0)


def test_hold_up_to_takes_the_free_cores_and_at_least_one() -> None:
    pool = ComputePool(2)
    with pool.hold_up_to(2) as alone:
        assert alone == 2  # the other engine is idle: every core
    with pool.hold(), pool.hold_up_to(2) as shared:
        assert shared == 1  # one core is busy: the call takes the other
    with pytest.raises(ValueError, match="at least one core"), pool.hold_up_to(0):
        pass


def test_the_plan_shares_every_core_unless_an_engine_is_pinned() -> None:
    plan = plan_compute(None)
    assert plan.cores == machine_cores() == plan.machine_cores
    assert plan.draft.pooled and plan.target.pooled
    assert plan.draft.threads == plan.target.threads == plan.cores
    pinned = plan_compute(1, target_threads=1)
    assert pinned.target.pooled is False and pinned.target.threads == 1
    assert pinned.to_dict()["draft"] == {"threads": 1, "pooled": True}


@pytest.mark.parametrize("key", ["cores", "draft_threads", "target_threads"])
@pytest.mark.parametrize("value", [0, -1, "too_many"])
def test_a_budget_of_zero_or_more_cores_than_the_machine_has_is_one_clear_error(
    key: str, value: Any
) -> None:
    bad = machine_cores() + 1 if value == "too_many" else value
    with pytest.raises(ConfigError) as info:
        RunConfig.from_mapping({key: bad})
    message = str(info.value)
    assert f"invalid {key}" in message
    assert f"this machine has {machine_cores()} cores" in message
    assert "\n" not in message


def test_engine_concurrency_is_one_request_per_active_sample_by_default() -> None:
    config = RunConfig(max_active_samples=6)
    assert config.concurrency("target") == 6  # the batched engine decodes them together
    assert RunConfig(target_concurrency=5).concurrency("target") == 5
    assert RunConfig(engine="vllm", draft_url="http://127.0.0.1:1",
                     target_url="http://127.0.0.1:2").concurrency("draft") == 2


# -- the llama.cpp engine's batched decode loop, on the tiny model ----------------------------

def _tiny_engine(pool: ComputePool | None, **kwargs: Any) -> Any:
    from atts.engines.llama_cpp import LlamaCppEngine

    return LlamaCppEngine("tiny", n_ctx=512, compute=pool, **kwargs)


@pytest.mark.usefixtures("tiny_model")
def test_batched_samples_get_exactly_the_tokens_and_scores_they_get_alone() -> None:
    """Four samples decoding in one batch: each one's tokens and scores equal those of the
    same request made alone (rows attend only to their own sequence)."""
    pool = ComputePool(2)
    engine = _tiny_engine(pool, n_contexts=4)
    alone = _tiny_engine(None, n_contexts=1, n_threads=1)
    prompts = [engine.render_chat([ChatMessage("user", q)]) for q in
               ("Count to five.", "Name a colour.", "Say hello.", "Add two and two.")]
    params = [SamplingParams(max_tokens=24 + 4 * s, temperature=0.8, seed=s) for s in range(4)]

    async def both() -> tuple[list[Any], list[Any], list[Any], list[Any]]:
        pairs = list(zip(prompts, params, strict=True))
        gens = await asyncio.gather(*(engine.generate(p, q) for p, q in pairs))
        ref = [await alone.generate(p, q) for p, q in zip(prompts, params, strict=True)]
        steps = [list(g.token_ids) for g in ref]
        scored = list(zip(prompts, steps, strict=True))
        scores = await asyncio.gather(*(engine.score(p, s) for p, s in scored))
        ref_scores = [await alone.score(p, s) for p, s in zip(prompts, steps, strict=True)]
        return gens, ref, list(scores), ref_scores

    try:
        gens, ref, scores, ref_scores = asyncio.run(both())
        assert [g.token_ids for g in gens] == [g.token_ids for g in ref]
        assert [g.finish_reason for g in gens] == [g.finish_reason for g in ref]
        for got, want in zip(scores, ref_scores, strict=True):
            np.testing.assert_allclose(got.logprobs, want.logprobs, atol=1e-5, rtol=0)
        assert engine.peak_batch >= 2  # they did share decode calls
        assert pool.peak_busy <= 2
    finally:
        asyncio.run(engine.close())
        asyncio.run(alone.close())


@pytest.mark.usefixtures("tiny_model")
def test_two_engines_on_one_pool_never_exceed_its_cores() -> None:
    pool = ComputePool(2)
    first, second = _tiny_engine(pool, n_contexts=3), _tiny_engine(pool, n_contexts=3)
    prompt = first.render_chat([ChatMessage("user", "Count to five.")])
    params = [SamplingParams(max_tokens=16, temperature=0.8, seed=s) for s in range(6)]

    async def burst() -> None:
        await asyncio.gather(*(engine.generate(prompt, p)
                               for engine in (first, second) for p in params))

    try:
        asyncio.run(burst())
        assert 1 <= pool.peak_busy <= 2
    finally:
        asyncio.run(first.close())
        asyncio.run(second.close())


@pytest.mark.usefixtures("tiny_model")
def test_a_cancelled_generation_frees_its_sequence_and_the_others_finish() -> None:
    engine = _tiny_engine(None, n_contexts=2, n_threads=1)
    prompt = engine.render_chat([ChatMessage("user", "Count to fifty.")])

    async def scenario() -> Any:
        slow = asyncio.ensure_future(engine.generate(prompt, SamplingParams(max_tokens=200,
                                                                            temperature=0)))
        await asyncio.sleep(0.05)
        slow.cancel()
        # Both sequences must be usable again: two more generations complete.
        return await asyncio.gather(*(engine.generate(prompt, SamplingParams(max_tokens=8,
                                                                             seed=s))
                                      for s in range(2)))

    try:
        done = asyncio.run(scenario())
        assert len(done) == 2
        assert all(g.finish_reason in ("length", "eos") and 1 <= len(g.token_ids) <= 8
                   for g in done)
    finally:
        asyncio.run(engine.close())


@pytest.mark.usefixtures("tiny_model")
def test_a_run_records_its_budget_and_how_it_was_spent(tmp_path: Any) -> None:
    from atts.runner.machine import boot_id
    from atts.runner.run_folder import RunFolder
    from atts.runner.session import run_job

    config = RunConfig(dataset="gsm8k", limit=1, samples=2, strategy="target_only",
                       draft="tiny", target="tiny", n_ctx=1024, rounds=1, target_tokens=8,
                       draft_tokens=8, force_answer="none", cores=1)
    outcome = run_job(config, tmp_path / "run", show_progress=False)
    assert outcome.errors == 0
    manifest = RunFolder(tmp_path / "run").read_manifest()
    assert manifest["compute"]["cores"] == 1
    assert manifest["compute"]["target"] == {"threads": 1, "pooled": True}
    assert manifest["machine"]["cores"] == machine_cores()
    session = manifest["last_session"]
    assert session["cpu_seconds"] > 0
    assert session["cores_used"] == pytest.approx(session["cpu_seconds"]
                                                  / session["wall_seconds"])
    # The engines' calls: the target prefilled each prompt and decoded both samples together.
    calls = session["engine_calls"]
    assert set(calls) <= {"draft", "target", "shared"} and calls
    used = calls.get("target") or calls["shared"]
    assert used["prefill_calls"] >= 1 and used["decode_calls"] >= 1
    assert 1.0 <= used["mean_decode_batch"] <= 2.0
    assert 0.0 < used["busy_share"] <= 1.0
    # Each session names the boot it ran on; opening the finished run again appends an entry
    # that wrote nothing and leaves last_session (the session that did the work) alone.
    (first,) = manifest["sessions"]
    assert first["boot_id"] == boot_id() and first["written"] == 2
    assert first["started_at"] <= first["finished_at"]
    run_job(config, tmp_path / "run", show_progress=False)
    again = RunFolder(tmp_path / "run").read_manifest()
    assert [s["written"] for s in again["sessions"]] == [2, 0]
    assert again["last_session"] == session
