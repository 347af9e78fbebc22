"""Decode batches with gaps, padded or not (issue 30): what the throwaway rows of
``atts.engines._gaps`` buy on the real models through ``LlamaCppEngine``.

Eight samples each hold a sequence with a cached context of about ``--context`` tokens; then a
subset decodes ``--tokens`` tokens together: every other sample (0, 2, 4, 6: three gaps of
one), three scattered ones (0, 3, 6: the ATTS target's typical 3 of 8), and all eight
(no gaps, the reference).  Each layout runs with padding (``PAD_GAP``) and without (gap
limit 0), alternating, ``--repeats`` times; ms per decoded row = wall / (tokens x samples).
Generations are not moved beside each other here (``compact=False``): the layouts are what is
measured; the moves' effect is measured on the runs (BENCHMARKS section 0.6).

Run on a quiet machine (models installed with ``atts models pull all``):
    .venv/bin/python bench/bench_gaps.py --models target draft --markdown bench/results/gaps.md
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import platform
import statistics
import time
from typing import Any

import atts.engines._llama_loop as loop_module
from atts.engines._gaps import PAD_GAP, decode_rows
from atts.engines.base import ChatMessage, SamplingParams
from atts.engines.llama_cpp import LlamaCppEngine
from atts.models import resolve_model

MODELS = {"target": "qwen2.5-coder-1.5b", "draft": "qwen2.5-coder-0.5b",
          "tiny": "smollm2-135m"}
LAYOUTS = {"every other (0,2,4,6)": (0, 2, 4, 6), "scattered (0,3,6)": (0, 3, 6),
           "all eight": tuple(range(8))}
TEXT = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
        "clips in May. How many clips did Natalia sell altogether in April and May? ")


def _time(engine: LlamaCppEngine, prompts: list[list[int]], samples: tuple[int, ...],
          tokens: int, pad_gap: int, seed: int) -> float:
    loop_module.decode_rows = functools.partial(decode_rows, pad_gap=pad_gap)  # type: ignore
    params = [SamplingParams(max_tokens=tokens, temperature=0.8, seed=seed + i,
                             cache_key=f"s#{i}") for i in range(8)]

    async def together() -> list[Any]:
        return await asyncio.gather(*(engine.generate(prompts[i], params[i]) for i in samples))

    # Each sample goes back to its own sequence and cuts it back to the cached context.
    started = time.perf_counter()
    outs = asyncio.run(together())
    wall = time.perf_counter() - started
    return wall * 1000 / sum(len(o.token_ids) for o in outs)


def measure(model: str, context: int, tokens: int, repeats: int, threads: int) -> list[str]:
    engine = LlamaCppEngine(str(resolve_model(MODELS[model])), n_ctx=context + 8 * tokens * 4,
                            n_contexts=8, n_threads=threads, compact=False)
    try:
        filler = engine.tokenize(TEXT * (1 + context // 30))
        prompts = [engine.render_chat([ChatMessage("user", f"Sample {i}.")]) + filler[:context]
                   for i in range(8)]
        for i, prompt in enumerate(prompts):  # each sample reads its context into its sequence
            asyncio.run(engine.generate(prompt, SamplingParams(max_tokens=1, cache_key=f"s#{i}")))
        owners = [slot.owner for slot in engine._loop.pool.slots]
        assert owners == [f"s#{i}" for i in range(8)], owners  # sample i on seq_id i
        lines = []
        for name, samples in LAYOUTS.items():
            runs: dict[int, list[float]] = {PAD_GAP: [], 0: []}
            for r in range(repeats):
                for gap in (PAD_GAP, 0) if r % 2 == 0 else (0, PAD_GAP):
                    runs[gap].append(_time(engine, prompts, samples, tokens, gap, seed=100 * r))
            padded, plain = statistics.median(runs[PAD_GAP]), statistics.median(runs[0])
            lines.append(f"| {MODELS[model]} | {name} | {plain:.1f} | {padded:.1f} | "
                         f"{plain / padded:.2f}x |")
        return lines
    finally:
        loop_module.decode_rows = decode_rows
        asyncio.run(engine.close())


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["target", "draft"], choices=MODELS)
    parser.add_argument("--context", type=int, default=512)
    parser.add_argument("--tokens", type=int, default=24)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=os.cpu_count() or 2)
    parser.add_argument("--markdown", help="write the table here")
    args = parser.parse_args(argv)
    load = os.getloadavg()[0]
    started = time.perf_counter()
    rows = [line for m in args.models
            for line in measure(m, args.context, args.tokens, args.repeats, args.threads)]
    text = "\n".join([
        f"Decode with gaps, {platform.processor() or platform.machine()}, {args.threads} "
        f"threads, context {args.context}, {args.tokens} tokens per sample, median of "
        f"{args.repeats}; load {load:.2f} before, {os.getloadavg()[0]:.2f} after; "
        f"{time.perf_counter() - started:.0f} s.", "",
        "| model | samples decoding (of 8) | ms per row, gaps left | padded (PAD_GAP "
        f"{PAD_GAP}) | padded speed-up |", "|---|---|---|---|---|", *rows, ""])
    print(text)
    if args.markdown:
        with open(args.markdown, "w", encoding="utf-8") as handle:
            handle.write(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
