"""Our engine against llama.cpp itself: decode, prefill and scoring on the same model, threads
and context, and the ways of spending the cores that the compute budget chooses between.

Part 1, the anchor (per operation, one call at a time, ``--threads`` threads):
- ``decode``: greedy tokens after a cached prompt.  Raw: ``llama_decode`` of one token and an
  argmax of its logits row; ours: ``LlamaCppEngine.generate`` at temperature 0.
- ``prefill``: a fresh prompt of ``--prompt`` tokens, logits for the last token only.  Raw: one
  ``llama_decode`` batch; ours: ``generate`` with ``max_tokens=1`` on a prompt the cache does not
  hold (one prefill and one sampled token).
- ``score``: a ``--step``-token step after a cached prefix of ``--prompt`` tokens.  Raw: one
  batch with every row's logits and a float64 log-softmax (the best llama.cpp can do for
  scoring); ours: ``LlamaCppEngine.score``.  Beside it, the plain prefill of the same step
  (last-token logits only): scoring needs every row, so its cost is compared with that.
Our engine should reach 90% of llama.cpp's rate for each operation, and scoring should cost at
most 1.25x a plain prefill of the step.

Part 2, throughput of one model on the whole budget (``--cores``), aggregate decode tok/s:
one context on all cores; one 1-thread context per core decoding at the same time; one context
decoding several sequences per ``llama_decode`` call (``seq_id`` batching, what our engine's
decode loop does); and our engine itself with several samples at once and one at a time.
The compute plan of ``atts.engines.compute`` was chosen by this.

Run (models installed with ``atts models pull all``), on a quiet machine:
    .venv/bin/python bench/bench_llama_anchor.py --models target draft --out bench/results/anchor.md
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import statistics
import threading
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from atts.engines._sampling import token_logprobs
from atts.engines.base import ChatMessage, SamplingParams
from atts.engines.llama_cpp import LlamaCppEngine
from atts.models.store import resolve_model
from atts.runner.machine import cpu_model

TEXT = (
    "We prove the claim by induction on n. For the base case n = 1 both sides equal one. "
    "Assume the identity holds for some n and consider n + 1: the left side gains the term "
    "(n + 1)^3, while the right side becomes ((n + 1)(n + 2) / 2)^2. Expanding the square and "
    "subtracting (n (n + 1) / 2)^2 leaves exactly (n + 1)^3, which completes the step. "
)


class RawModel:
    """llama-cpp-python's low-level API with none of our code: the reference rates."""

    def __init__(self, path: str, n_ctx: int) -> None:
        import llama_cpp
        from llama_cpp import _internals, _logger

        _logger.set_verbose(False)
        llama_cpp.llama_backend_init()
        self.lib, self.internals, self.n_ctx = llama_cpp, _internals, n_ctx
        self.model = _internals.LlamaModel(path_model=path,
                                           params=_internals.LlamaModel.default_params(),
                                           verbose=False)
        self.n_vocab = self.model.n_vocab()

    def context(self, threads: int, n_seq: int = 1, n_outputs: int = 128) -> Any:
        params = self.internals.LlamaContext.default_params()
        params.n_ctx = self.n_ctx
        params.n_batch = params.n_ubatch = 512
        params.n_seq_max = n_seq
        params.n_outputs_max = n_outputs
        params.n_threads = params.n_threads_batch = threads
        params.no_perf = True
        params.flash_attn_type = self.lib.LLAMA_FLASH_ATTN_TYPE_DISABLED  # as our engine
        return self.internals.LlamaContext(model=self.model, params=params, verbose=False)

    def decode(self, ctx: Any, batch: Any, items: list[tuple[int, int, int, bool]]) -> None:
        """One ``llama_decode`` of (token, position, seq_id, wants_logits) items."""
        b = batch.batch
        b.n_tokens = len(items)
        for i, (token, pos, seq, logits) in enumerate(items):
            b.token[i], b.pos[i], b.n_seq_id[i], b.logits[i] = token, pos, 1, logits
            b.seq_id[i][0] = seq
        if self.lib.llama_decode(ctx.ctx, b) != 0:
            raise RuntimeError("llama_decode failed")

    def row(self, ctx: Any, i: int) -> np.ndarray:
        ptr = self.lib.llama_get_logits_ith(ctx.ctx, i)
        return np.ctypeslib.as_array(ptr, shape=(self.n_vocab,))

    def batch(self, n: int, n_seq: int = 1) -> Any:
        return self.internals.LlamaBatch(n_tokens=n, embd=0, n_seq_max=n_seq, verbose=False)


def _median_of(repeats: int, fn: Callable[[], float]) -> float:
    return statistics.median(fn() for _ in range(repeats))


def raw_anchor(raw: RawModel, prompt: list[int], step: list[int], threads: int,
               decode_tokens: int, repeats: int) -> dict[str, float]:
    """Seconds per token of each operation with llama.cpp alone (one context)."""
    ctx, batch = raw.context(threads), raw.batch(512)

    def prefill() -> float:
        ctx.kv_cache_clear()
        t0 = time.perf_counter()
        raw.decode(ctx, batch, [(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        raw.row(ctx, len(prompt) - 1).argmax()
        return (time.perf_counter() - t0) / len(prompt)

    def with_prefix() -> None:
        ctx.kv_cache_clear()
        raw.decode(ctx, batch, [(t, i, 0, False) for i, t in enumerate(prompt[:-1])])

    def step_prefill() -> float:  # the step after the cached prefix, last-token logits only
        with_prefix()
        items = [(t, len(prompt) - 1 + i, 0, False) for i, t in enumerate([prompt[-1], *step])]
        items[-1] = (*items[-1][:3], True)
        t0 = time.perf_counter()
        raw.decode(ctx, batch, items)
        raw.row(ctx, len(items) - 1).argmax()
        return (time.perf_counter() - t0) / len(step)

    def score() -> float:  # every row's logits and the log-probabilities of the step tokens
        with_prefix()
        tokens = [prompt[-1], *step[:-1]]
        t0 = time.perf_counter()
        raw.decode(ctx, batch, [(t, len(prompt) - 1 + i, 0, True) for i, t in enumerate(tokens)])
        rows = np.stack([raw.row(ctx, i) for i in range(len(tokens))])
        token_logprobs(rows, step)
        return (time.perf_counter() - t0) / len(step)

    def decode() -> float:
        ctx.kv_cache_clear()
        raw.decode(ctx, batch, [(t, i, 0, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        token, pos = int(raw.row(ctx, len(prompt) - 1).argmax()), len(prompt)
        t0 = time.perf_counter()
        for _ in range(decode_tokens):
            raw.decode(ctx, batch, [(token, pos, 0, True)])
            token, pos = int(raw.row(ctx, 0).argmax()), pos + 1
        return (time.perf_counter() - t0) / decode_tokens

    out = {name: _median_of(repeats, fn) for name, fn in
           (("prefill", prefill), ("step_prefill", step_prefill), ("score", score),
            ("decode", decode))}
    ctx.close()
    batch.close()
    return out


async def engine_anchor(name: str, prompt: list[int], step: list[int], threads: int,
                        decode_tokens: int, repeats: int) -> dict[str, float]:
    """Seconds per token of the same operations through ``LlamaCppEngine`` (one worker)."""
    engine = LlamaCppEngine(name, n_ctx=4096, n_contexts=2, n_threads=threads)
    prefill, score, decode = [], [], []
    for i in range(repeats + 1):
        fresh = [prompt[0] + 1 + i, *prompt[1:]]  # a first token the cache cannot match
        gen = await engine.generate(fresh, SamplingParams(max_tokens=1, temperature=0))
        prefill.append(gen.seconds / len(prompt))
        await engine.score(prompt, step[:1])  # the prefix into the cache
        result = await engine.score(prompt, step)
        score.append(result.seconds / len(step))
        await engine.generate(prompt, SamplingParams(max_tokens=1, temperature=0))
        gen = await engine.generate(prompt, SamplingParams(max_tokens=decode_tokens,
                                                           temperature=0, stop=()))
        # The prompt's last token is evaluated again (logits are not cached): one token of the
        # decode loop's cost, so per generated token this slightly overstates ours.
        decode.append(gen.seconds / len(gen.token_ids))
    await engine.close()
    drop = slice(1, None)  # the first round opens the contexts
    return {"prefill": statistics.median(prefill[drop]), "score": statistics.median(score[drop]),
            "decode": statistics.median(decode[drop])}


def raw_throughput(raw: RawModel, prompt: list[int], cores: int, tokens: int,
                   batched: tuple[int, ...]) -> dict[str, float]:
    """Aggregate decode tok/s of one model on ``cores`` cores, spent three ways."""
    def run_context(threads: int, n_seq: int, out: list[float], gate: threading.Barrier) -> None:
        ctx, batch = raw.context(threads, n_seq=n_seq, n_outputs=max(n_seq, 1)), raw.batch(512,
                                                                                           n_seq)
        for s in range(n_seq):  # each sequence gets its own copy of the prompt
            raw.decode(ctx, batch, [(t, i, s, i == len(prompt) - 1) for i, t in enumerate(prompt)])
        next_tokens = [int(raw.row(ctx, len(prompt) - 1).argmax())] * n_seq
        pos = len(prompt)
        gate.wait()
        t0 = time.perf_counter()
        for _ in range(tokens):
            raw.decode(ctx, batch, [(next_tokens[s], pos, s, True) for s in range(n_seq)])
            next_tokens = [int(raw.row(ctx, s).argmax()) for s in range(n_seq)]
            pos += 1
        out.append(n_seq * tokens / (time.perf_counter() - t0))
        ctx.close()
        batch.close()

    def parallel(workers: int, threads: int, n_seq: int) -> float:
        rates: list[float] = []
        gate = threading.Barrier(workers)
        pool = [threading.Thread(target=run_context, args=(threads, n_seq, rates, gate))
                for _ in range(workers)]
        for t in pool:
            t.start()
        for t in pool:
            t.join()
        return sum(rates)

    result = {"1 context x 1 thread": parallel(1, 1, 1),
              f"1 context x {cores} threads": parallel(1, cores, 1),
              f"{cores} contexts x 1 thread, at once": parallel(cores, 1, 1)}
    for n_seq in batched:
        result[f"1 context x {cores} threads, {n_seq} sequences per decode"] = parallel(
            1, cores, n_seq)
    return result


async def engine_throughput(name: str, prompt: list[int], cores: int, samples: int,
                            tokens: int) -> dict[str, float]:
    """Aggregate decode tok/s of our engine on the whole budget: ``samples`` generations at
    once (decoded in one batch per token), and the same generations one at a time."""
    from atts.engines.compute import ComputePool

    engine = LlamaCppEngine(name, n_ctx=4096, n_contexts=samples, compute=ComputePool(cores))
    prompts = [[prompt[0] + 1 + s, *prompt[1:]] for s in range(samples)]
    first = SamplingParams(max_tokens=1, temperature=0)
    await asyncio.gather(*(engine.generate(p, first) for p in prompts))  # prompts cached now
    params = SamplingParams(max_tokens=tokens, temperature=0, stop=())
    t0 = time.perf_counter()
    gens = await asyncio.gather(*(engine.generate(p, params) for p in prompts))
    together = sum(len(g.token_ids) for g in gens) / (time.perf_counter() - t0)
    t0 = time.perf_counter()
    made = sum([len((await engine.generate(p, params)).token_ids) for p in prompts])
    alone = made / (time.perf_counter() - t0)
    await engine.close()
    return {f"ours: {samples} samples at once on {cores} cores (one batch per token)": together,
            f"ours: the same samples one at a time on {cores} cores": alone}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", nargs="+", default=["target", "draft"])
    parser.add_argument("--threads", type=int, default=1, help="threads of part 1's calls")
    parser.add_argument("--cores", type=int, default=os.cpu_count() or 2, help="part 2's budget")
    parser.add_argument("--prompt", type=int, default=300, help="prompt / cached prefix tokens")
    parser.add_argument("--step", type=int, default=64, help="scored step tokens")
    parser.add_argument("--decode-tokens", type=int, default=48)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--batched", type=int, nargs="*", default=[2, 4],
                        help="sequences per decode call in part 2")
    parser.add_argument("--parts", nargs="+", type=int, default=[1, 2], choices=[1, 2])
    parser.add_argument("--out", type=Path, help="also write the markdown here")
    parser.add_argument("--json", type=Path, help="raw figures as JSON")
    args = parser.parse_args()

    lines = [f"<!-- {cpu_model()}, {os.cpu_count()} cores, load {os.getloadavg()[0]:.2f} at "
             f"start, part 1 at {args.threads} thread(s), part 2 on {args.cores} cores, "
             f"{args.prompt}-token prompt, {args.step}-token step, medians of "
             f"{args.repeats} -->"]
    figures: dict[str, Any] = {}
    for name in args.models:
        engine = LlamaCppEngine(name, n_ctx=4096, n_contexts=1, n_threads=1)
        ids = engine.render_chat([ChatMessage("user", "Prove 1^3 + ... + n^3 = (n(n+1)/2)^2.")])
        chunk = engine.tokenize(TEXT)
        asyncio.run(engine.close())
        while len(ids) < args.prompt + args.step:
            ids += chunk
        prompt, step = ids[:args.prompt], ids[args.prompt:args.prompt + args.step]
        raw = RawModel(str(resolve_model(name)), 4096)
        figures[name] = {}
        if 2 in args.parts:
            tput = raw_throughput(raw, prompt, args.cores, args.decode_tokens,
                                  tuple(args.batched))
            tput.update(asyncio.run(engine_throughput(name, prompt, args.cores,
                                                      max(args.batched, default=1),
                                                      args.decode_tokens)))
            lines += ["", f"### {name}: decode throughput on {args.cores} cores", "",
                      "| how the cores are spent | tok/s (all sequences) |", "|---|---|"]
            lines += [f"| {label} | {rate:.1f} |" for label, rate in tput.items()]
            figures[name]["throughput"] = tput
        if 1 not in args.parts:
            print("\n".join(lines), flush=True)
            continue
        ref = raw_anchor(raw, prompt, step, args.threads, args.decode_tokens, args.repeats)
        ours = asyncio.run(engine_anchor(name, prompt, step, args.threads, args.decode_tokens,
                                         args.repeats))
        lines += ["", f"### {name}: one call at a time, {args.threads} thread(s)", "",
                  "| operation | llama.cpp ms/token | ours ms/token | ours / llama.cpp rate |",
                  "|---|---|---|---|"]
        for op in ("decode", "prefill", "score"):
            lines.append(f"| {op} | {1e3 * ref[op]:.2f} | {1e3 * ours[op]:.2f} | "
                         f"{ref[op] / ours[op]:.0%} |")
        lines.append(f"| plain prefill of the step (last-token logits) | "
                     f"{1e3 * ref['step_prefill']:.2f} | | |")
        lines.append(f"\nScoring per token / plain prefill of the step: llama.cpp "
                     f"{ref['score'] / ref['step_prefill']:.2f}x, ours "
                     f"{ours['score'] / ref['step_prefill']:.2f}x (goal <= 1.25x).")
        figures[name].update(raw=ref, ours=ours)
        print("\n".join(lines), flush=True)
    lines.append(f"\n<!-- load {os.getloadavg()[0]:.2f} at the end -->")
    text = "\n".join(lines) + "\n"
    if args.out:
        args.out.write_text(text)
    if args.json:
        args.json.write_text(json.dumps(figures, indent=1))
    print(text)


if __name__ == "__main__":
    main()
