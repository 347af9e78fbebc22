"""Benchmark the llama.cpp engine: step scoring on a cached prefix, and decode/prefill rates.

For each model it measures
- the time to score a 64-token step after H tokens of history (H = 256, 1024, 3072), taken on
  a second call once the history is cached: with the prefix reused, this stays flat in H;
- the same score with nothing cached (the whole history evaluated), for contrast;
- the greedy decode rate (tokens/s) with the prompt cached.

Run (models installed with `atts models pull all`):
    .venv/bin/python bench/bench_engines.py --models draft target --threads 2
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import time
from typing import Any

from atts.engines.base import ChatMessage, SamplingParams
from atts.engines.llama_cpp import LlamaCppEngine

STEP = 64
HISTORIES = (256, 1024, 3072)
TEXT = (
    "We prove the claim by induction on n. For the base case n = 1 both sides equal one. "
    "Assume the identity holds for some n and consider n + 1: the left side gains the term "
    "(n + 1)^3, while the right side becomes ((n + 1)(n + 2) / 2)^2. Expanding the square and "
    "subtracting (n (n + 1) / 2)^2 leaves exactly (n + 1)^3, which completes the step. "
)


def _tokens(engine: LlamaCppEngine, n: int) -> list[int]:
    """A chat prompt followed by a long reasoning-like text, cut to n tokens."""
    ids = engine.render_chat([ChatMessage("user", "Prove that 1^3 + ... + n^3 = (n(n+1)/2)^2.")])
    chunk = engine.tokenize(TEXT)
    while len(ids) < n:
        ids += chunk
    return ids[:n]


async def bench_model(name: str, threads: int, repeats: int, flash_attn: bool) -> dict[str, Any]:
    engine = LlamaCppEngine(name, n_ctx=4096, n_contexts=2, n_threads=threads,
                            flash_attn=flash_attn)
    text = _tokens(engine, max(HISTORIES) + STEP)
    row: dict[str, Any] = {"model": engine.info.model}
    for h in HISTORIES:
        prefix, step = text[:h], text[h:h + STEP]
        await engine.score(prefix, step)  # brings the history into the cache
        times = []
        for _ in range(repeats):
            result = await engine.score(prefix, step)
            assert result.cached_tokens == h - 1, result.cached_tokens
            times.append(result.seconds)
        row[f"score@{h}"] = statistics.median(times)
    # Cold: the same 64-token step after 1024 tokens with nothing reusable in the cache.
    cold = []
    for i in range(max(1, repeats // 2)):
        other = [engine.tokenize(" x")[0] + i, *text[1:1024]]
        result = await engine.score(other, text[1024:1024 + STEP])
        cold.append(result.seconds)
    row["cold@1024"] = statistics.median(cold)
    prompt = engine.render_chat([ChatMessage("user", "Write a long story about a lighthouse.")])
    params = SamplingParams(max_tokens=64, temperature=0)
    await engine.generate(prompt, params)
    rates = []
    for _ in range(repeats):
        gen = await engine.generate(prompt, params)
        rates.append(len(gen.token_ids) / gen.seconds)
    row["decode_tok_s"] = statistics.median(rates)
    row["score_tok_s"] = STEP / row["score@1024"]
    await engine.close()
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["draft", "target"])
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--flash-attn", action="store_true")
    args = parser.parse_args()
    print(f"# {platform.machine()}, {os.cpu_count()} cores, {platform.python_version()}, "
          f"threads={args.threads}, flash_attn={args.flash_attn}, load={os.getloadavg()[0]:.2f}")
    cols = [f"score@{h}" for h in HISTORIES] + ["cold@1024", "score_tok_s", "decode_tok_s"]
    print("| model | " + " | ".join(cols) + " | flat (3072/256) |")
    print("|---" * (len(cols) + 2) + "|")
    for name in args.models:
        t0 = time.perf_counter()
        row = asyncio.run(bench_model(name, args.threads, args.repeats, args.flash_attn))
        flat = row[f"score@{HISTORIES[-1]}"] / row[f"score@{HISTORIES[0]}"]
        cells = [f"{row[c]:.3f} s" if c.startswith(("score@", "cold")) else f"{row[c]:.1f}"
                 for c in cols]
        print(f"| {row['model']} | " + " | ".join(cells) + f" | {flat:.2f}x |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
