"""Where the embedded engines read a context again (issue 30): every target row accounted for.

ATTS (alpha 0.5, regenerate, adaptive calibration with its warm-up of 8) on GSM8K questions
0-5 x N = 4, 4 rounds of 48-token steps, 8 samples in flight, with two separate engines of the
tiny model (SmolLM2-135M) as draft and target, so it runs in minutes on two cores.  Three
settings of the engines' cache of sequences:

- ``prefix only``: requests carry no sample key (the pool before cache keys): a sample whose
  step was discarded may land in a sibling's sequence that shares its prompt;
- ``keys``: each call names its sample (``cache_key``), which goes back to its own sequence;
- ``keys + warm-up room``: and one sequence more per warm-up first step (``runner.build``).

For each: the target's prefill rows, of which rows read again after an eviction (counted by
the engine from the samples' keys, so only where requests carry them), and the target rows per
drafted token beyond one read of each sample's prompt (counted here from the prompts): 1.0 is
the floor, one row per scored token.

    .venv/bin/python bench/bench_rereads.py      # writes bench/results/rereads.md
"""

from __future__ import annotations

import asyncio
import platform
import tempfile
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atts.config import RunConfig
from atts.data import load_dataset
from atts.engines.base import Engine, SamplingParams, StepScore
from atts.engines.compute import ComputePool
from atts.engines.llama_cpp import LlamaCppEngine
from atts.pipeline.prompt import question_messages
from atts.runner.build import contexts
from atts.runner.machine import cpu_model
from atts.runner.run_folder import RunFolder
from atts.runner.runner import execute

ROOT = Path(__file__).resolve().parents[1]
CONFIG = RunConfig(engine="llama_cpp", draft="smollm2-135m", target="smollm2-135m",
                   n_ctx=2048, limit=6, samples=4, rounds=4, alpha=0.5, draft_tokens=48,
                   target_tokens=48, max_active_samples=8, warmup=8)


class NoKeys:
    """An engine whose callers name no sample: the prefix-only pool of before."""

    def __init__(self, engine: LlamaCppEngine) -> None:
        self.engine = engine

    def __getattr__(self, name: str) -> Any:
        return getattr(self.engine, name)

    async def generate(self, prompt_ids: Sequence[int], params: SamplingParams,
                       on_tokens: Any = None) -> Any:
        from dataclasses import replace

        return await self.engine.generate(prompt_ids, replace(params, cache_key=None),
                                          on_tokens)

    async def score(self, prefix_ids: Sequence[int], step_ids: Sequence[int], *,
                    cache_key: str | None = None) -> StepScore:
        return await self.engine.score(prefix_ids, step_ids)


def measure(label: str, keys: bool, n_contexts: int) -> str:
    pool = ComputePool(2)
    engines = [LlamaCppEngine("smollm2-135m", n_ctx=CONFIG.n_ctx, n_contexts=n_contexts,
                              n_threads=2, compute=pool) for _ in range(2)]
    draft: Engine = engines[0] if keys else NoKeys(engines[0])
    target: Engine = engines[1] if keys else NoKeys(engines[1])
    folder = RunFolder(tempfile.mkdtemp())
    folder.prepare({"config": CONFIG.to_dict()})
    problems = load_dataset("gsm8k", limit=CONFIG.limit)
    try:
        asyncio.run(execute(CONFIG, problems, draft, target, folder, show_progress=False))
        stats = engines[1].call_stats
        rows = folder.rows()
        # A sample's first scoring reads its prompt but the last token (whose row is the
        # step's first log-probability).
        prompts = sum(len(engines[1].render_chat(question_messages(r["question"]))) - 1
                      for r in rows)
    finally:
        for engine in engines:
            asyncio.run(engine.close())
    drafted = sum(s["tokens"] for r in rows for s in r["steps"] if s["author"] == "draft")
    beyond = (stats.prefill_rows - prompts) / drafted
    evicted = f"{stats.evicted_rows:,}" if keys else "not counted"
    return (f"| {label} | {n_contexts} | {stats.prefill_rows:,} | {evicted} | {prompts:,} | "
            f"{drafted:,} | {beyond:.2f} |")


def main() -> None:
    rows = [measure("prefix only", False, CONFIG.max_active_samples),
            measure("keys", True, CONFIG.max_active_samples),
            measure("keys + warm-up room", True, contexts(CONFIG))]
    text = "\n".join([
        "# Where the embedded engines read a context again", "",
        f"Command: `python bench/bench_rereads.py` ({cpu_model()}, {platform.machine()}; "
        "two engines of SmolLM2-135M as draft and target).", "",
        "| pool | sequences | target prefill rows | read again after an eviction | prompt "
        "tokens, one read per sample | drafted tokens | target rows per drafted token beyond "
        "one prompt read per sample |",
        "|---|---:|---:|---:|---:|---:|---:|", *rows, ""])
    (ROOT / "bench/results/rereads.md").write_text(text)
    print(text)


if __name__ == "__main__":
    main()
