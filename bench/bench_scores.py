"""Which nonconformity score tells wrong solutions from right ones, measured on recorded runs.

Takes finished run folders (by default the equal-hardware draft-only run of BENCHMARKS.md
section 0), re-reads every sample's written steps with both models (one prefill per sample per
model: the target's log-probabilities of each step token, and the draft's, as its generation
would have reported them), computes every score of ``atts.conformal.scores`` per step, and
asks how well each separates the samples whose final answer is wrong from the right ones:

- AUROC of the sample's highest step score (a wrong solution should hold at least one step the
  target finds unlikely), with a 95% bootstrap interval over samples (fixed seed);
- the same for the mean step score.

An AUROC of 0.5 is a coin; the score to prefer is the one whose interval sits highest.  This is
a proxy (a conformal test judges steps one at a time against a bank, and the text after a
rejection changes), chosen because it costs one prefill per sample instead of a full run per
score; the accuracy benchmark (bench_strategies.py) is the judge of record.

    .venv/bin/python bench/bench_scores.py runs/bench/equal/gsm8k-20q-n4/draft_only/rep0
"""

from __future__ import annotations

import argparse
import asyncio
import os
import platform
import sys
import time
from pathlib import Path
from typing import Any

import numpy as np

from atts.config import RunConfig
from atts.conformal.scores import SCORES, step_score
from atts.grading import Grader
from atts.pipeline.prompt import question_messages
from atts.report.graded_run import load_run
from atts.runner.build import build_engines

DEFAULT_RUN = Path("runs/bench/equal/gsm8k-20q-n4/draft_only/rep0")


def auroc(wrong: list[float], right: list[float]) -> float:
    """P(a wrong sample scores above a right one), ties counted half (Mann-Whitney U / nm)."""
    w, r = np.asarray(wrong)[:, None], np.asarray(right)[None, :]
    return float(((w > r).sum() + 0.5 * (w == r).sum()) / (w.size * r.size))


def auroc_interval(values: np.ndarray, wrong: np.ndarray, draws: int = 2000,
                   seed: int = 0) -> tuple[float, float]:
    """95% percentile bootstrap over samples (both classes resampled together)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(draws):
        pick = rng.integers(0, values.size, values.size)
        v, y = values[pick], wrong[pick]
        if y.all() or not y.any():
            continue
        out.append(auroc(v[y].tolist(), v[~y].tolist()))
    return float(np.percentile(out, 2.5)), float(np.percentile(out, 97.5))


async def step_logprobs(rows: list[dict[str, Any]], config: RunConfig
                        ) -> list[list[tuple[list[float], list[float]]]]:
    """Per sample, per written step: (target log-probabilities, draft log-probabilities)."""
    from tqdm import tqdm

    draft, target = build_engines(config)
    slots = asyncio.Semaphore(config.max_active_samples)
    bar = tqdm(total=len(rows), unit="sample", desc="score", file=sys.stderr)

    async def one(row: dict[str, Any]) -> list[tuple[list[float], list[float]]]:
        prompt = target.render_chat(question_messages(row["question"]))
        steps = [target.tokenize(s["text"]) for s in row["steps"]
                 if s["kind"] == "step" and s["text"]]
        ids = [t for step in steps for t in step]
        if not ids:
            bar.update(1)
            return []
        async with slots:
            t_score, d_score = await asyncio.gather(target.score(prompt, ids),
                                                    draft.score(prompt, ids))
        bar.update(1)
        out, start = [], 0
        for step in steps:
            end = start + len(step)
            out.append((list(t_score.logprobs[start:end]), list(d_score.logprobs[start:end])))
            start = end
        return out

    try:
        return list(await asyncio.gather(*(one(r) for r in rows)))
    finally:
        bar.close()
        await draft.close()
        await target.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("runs", nargs="*", type=Path, default=[DEFAULT_RUN])
    parser.add_argument("--k", type=int, default=4, help="tail_mean's k")
    parser.add_argument("--limit", type=int, default=None,
                        help="score only the first LIMIT samples (the full draft-only run is "
                        "80 samples, about 50k tokens per model: some 20 minutes on 2 cores)")
    parser.add_argument("--results", type=Path, default=Path("bench/results/scores.md"))
    args = parser.parse_args()
    rows: list[dict[str, Any]] = []
    with Grader() as grader:
        for folder in args.runs:
            rows += [r for r in load_run(folder, grader).rows if r["status"] == "ok"]
    rows = rows[: args.limit]
    started = time.time()
    per_sample = asyncio.run(step_logprobs(rows, RunConfig()))
    seconds = time.time() - started
    keep = [i for i, steps in enumerate(per_sample) if steps]
    wrong = np.array([not rows[i]["correct"] for i in keep])
    lines = [f"Runs: {', '.join(str(f) for f in args.runs)}; {len(keep)} samples "
             f"({int(wrong.sum())} wrong, {int((~wrong).sum())} right), "
             f"{sum(len(per_sample[i]) for i in keep)} steps; tail_mean k = {args.k}.",
             f"Machine: {platform.machine()}, {os.cpu_count()} cores, load "
             f"{os.getloadavg()[0]:.2f} at the end; scoring took {seconds:.0f} s; written "
             f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", "",
             "| score | AUROC of the highest step score [95% CI] | AUROC of the mean step "
             "score [95% CI] |", "|---|---|---|"]
    for name in SCORES:
        values = [[step_score(name, t, d, k=args.k) for t, d in per_sample[i]] for i in keep]
        cells = []
        for reduce in (np.max, np.mean):
            v = np.array([float(reduce(s)) for s in values])
            low, high = auroc_interval(v, wrong)
            cells.append(f"{auroc(v[wrong].tolist(), v[~wrong].tolist()):.3f} "
                         f"[{low:.2f}, {high:.2f}]")
        lines.append(f"| {name} | {cells[0]} | {cells[1]} |")
    command = "python bench/bench_scores.py " + " ".join(sys.argv[1:])
    text = "\n".join(lines) + "\n"
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(f"# Score discrimination\n\nCommand: `{command}`\n\n{text}")
    print(text)


if __name__ == "__main__":
    main()
