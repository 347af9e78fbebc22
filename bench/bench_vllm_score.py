"""Scoring a step on a real vLLM server: from its prefix cache against the old re-read (issue 31).

For each prefix length L, one ``generate`` call puts the prefix in the server's cache (as a run's
own generation does), then REPEATS different 32-token steps are scored through the cached path
(``/inference/v1/generate``) and the same steps again through the old one (``/v1/completions``
with ``prompt_logprobs``, which re-reads the whole trajectory).  Medians per path, the cache's
reach as the server reports it, the steps sent back to the old path (``refused``: an answer
the server could not encode, see ``atts.engines.remote.vllm``), and the largest difference
between the two paths' values.

Start a server first (docs/REMOTE.md; on a CPU ``bash scripts/vllm_cpu_env.sh`` once), e.g.

    .venv-vllm/bin/python -m vllm.entrypoints.openai.api_server \\
        --model ~/.cache/atts/hf/qwen2.5-coder-0.5b --port 8011 --dtype float32 \\
        --max-model-len 2048 --enable-prefix-caching --enable-prompt-tokens-details \\
        --enable-scale-out
    .venv/bin/python bench/bench_vllm_score.py --url http://127.0.0.1:8011 \\
        --model ~/.cache/atts/hf/qwen2.5-coder-0.5b   # writes bench/results/vllm_score.md
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import statistics
import sys
import time
from pathlib import Path
from typing import Any

from atts.engines.base import ChatMessage, SamplingParams
from atts.engines.remote.vllm import VllmEngine
from atts.runner.machine import cpu_model

ROOT = Path(__file__).resolve().parents[1]
# Off the cache's block boundaries (16 tokens on GPUs, 128 on the CPU build): a prefix ending
# on one is scored the old way by design.
LENGTHS = (64, 500, 1500)


async def measure(engine: VllmEngine, lengths: tuple[int, ...], repeats: int
                  ) -> list[dict[str, Any]]:
    head = engine.render_chat([ChatMessage("user", "Add the numbers below, step by step.")])
    filler = engine.tokenize(" ".join(str(7 * i % 97) for i in range(4000)))
    steps = [engine.tokenize(f" So far the running total is {4242 + k}, and the next number "
                             f"adds {k + 7}.")[:32] for k in range(repeats)]
    rows = []
    for length in lengths:
        prefix = (head + filler)[:length]
        await engine.generate(prefix, SamplingParams(max_tokens=1, temperature=0.0))
        refused = engine.refused_scores
        timings: dict[bool, list[float]] = {True: [], False: []}
        values: dict[bool, list[tuple[float, ...]]] = {True: [], False: []}
        reach = []
        for cached in (True, False):
            engine._cached_scoring = cached
            for step in steps:
                started = time.perf_counter()
                score = await engine.score(prefix, step)
                timings[cached].append(time.perf_counter() - started)
                values[cached].append(score.logprobs)
                if cached:
                    reach.append(score.cached_tokens)
        engine._cached_scoring = True
        diff = max(abs(a - b) for x, y in zip(values[True], values[False], strict=True)
                   for a, b in zip(x, y, strict=True))
        rows.append({"L": length, "cached_s": statistics.median(timings[True]),
                     "old_s": statistics.median(timings[False]), "reach": max(reach),
                     "refused": engine.refused_scores - refused, "diff": diff})
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--model", required=True, help="the folder the server loaded")
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/vllm_score.md")
    args = parser.parse_args()
    engine = VllmEngine(os.path.expanduser(args.model), base_url=args.url, timeout=600.0)
    if not engine.info.extra["score_path"].startswith("/inference"):
        sys.exit(f"bench_vllm_score: {args.url} offers no cached scoring "
                 f"({engine.info.extra['score_path']}); start it with --enable-scale-out and "
                 "--enable-prompt-tokens-details")
    load = os.getloadavg()[0]
    rows = asyncio.run(measure(engine, LENGTHS, args.repeats))
    asyncio.run(engine.close())
    lines = [f"Command: `python bench/bench_vllm_score.py {' '.join(sys.argv[1:])}`", "",
             f"Machine: {cpu_model()}, {os.cpu_count()} cores, {platform.python_version()}; "
             f"load average at start {load:.2f}; {time.strftime('%Y-%m-%d %H:%M %Z')}.  "
             f"Median of {args.repeats} different 32-token steps per row.", "",
             "| L | cached path | old path | old / cached | cached tokens reported | "
             "sent back (refused) | max difference, nats |",
             "|---:|---:|---:|---:|---:|---:|---:|"]
    for r in rows:
        lines.append(f"| {r['L']} | {r['cached_s']:.2f} s | {r['old_s']:.2f} s | "
                     f"{r['old_s'] / r['cached_s']:.1f}x | {r['reach']} | "
                     f"{r['refused']} of {args.repeats} | {r['diff']:.1e} |")
    body = "\n".join(lines) + "\n"
    args.results.write_text(f"# Scoring on vLLM: cached against re-read\n\n{body}")
    print(body)


if __name__ == "__main__":
    main()
