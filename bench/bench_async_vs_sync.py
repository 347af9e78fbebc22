"""Asynchronous (atts) against synchronous (sync) scheduling at N in {4, 8, 16}, same engines.

The engines are the scripted ``FakeEngine`` (one token per character) behind the real runner,
with delays taken from real runs: seconds per token of draft decode, target scoring and target
decode (from ``--from-run`` run folders' engine seconds, else bench/results/engines.md), and
step lengths and stopping rounds drawn to match (lognormal lengths with the recorded mean and
spread; a sample boxes its answer after each round with probability 1 / mean rounds).  Every
delay is multiplied by ``--time-scale`` so a benchmark takes minutes, not hours; reported times
are divided by it again (seconds of the real engines).  Each engine serves one request at a
time (``--concurrency 1``), like the embedded llama.cpp engines on our two cores, so the draft
and the target work at the same time only on different samples.

Both strategies see the same draws: a step's length and content follow from its seed, which
depends on (question, sample, round, role) only.  The synchronous baseline sends the
B = alpha x N worst-scored steps of each round to the target; ATTS rejects by p-value at alpha
against a fixed bank, so both hand about the same share of steps to the target.

Each run is also simulated (``atts.perf``, trace-driven with the same per-token delays): the
predicted wall time is printed beside the measured one.

    .venv/bin/python bench/bench_async_vs_sync.py --from-run runs/bench/gsm8k-6q-n4/*/rep0
"""

from __future__ import annotations

import argparse
import asyncio
import dataclasses
import math
import os
import platform
import random
import statistics
import sys
import time
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from atts.config import RunConfig
from atts.data import Problem
from atts.engines.fake import FakeCall, FakeEngine
from atts.perf.devices import MeasuredRates, cpu_2core_rates, engine
from atts.perf.plan_run import simulate
from atts.perf.report import replace_section, table
from atts.perf.stats import load_run_stats
from atts.runner.run_folder import RunFolder
from atts.runner.runner import execute

BANK = tuple(1.0 + 9.0 * (i + 0.5) / 200 for i in range(200))  # perplexities, p ~ uniform


@dataclass(frozen=True)
class Profile:
    """Per-token seconds of the real engines, and the step statistics to draw from."""

    draft_decode: float
    target_score: float
    target_decode: float
    step_mean: float
    step_cv: float
    rounds_mean: float
    source: str


def profile_from_runs(paths: list[str]) -> Profile:
    if not paths:
        d, t = cpu_2core_rates("qwen2.5-coder-0.5b"), cpu_2core_rates("qwen2.5-coder-1.5b")
        return Profile(d.decode, t.score, t.decode, 60.0, 0.6, 4.0,
                       "bench/results/engines.md rates; assumed steps (60 tokens, cv 0.6, "
                       "4 rounds)")
    seconds = {"draft": 0.0, "score": 0.0, "target": 0.0}
    tokens = {"draft_decode": 0, "target_score": 0, "target_decode": 0}
    steps, cvs, rounds = [], [], []
    for path in paths:
        stats = load_run_stats(path)
        for k in seconds:
            seconds[k] += stats.engine_seconds[k]
        for k in tokens:
            tokens[k] += stats.tokens[k]
        summary = stats.step_summary()
        for name in ("draft_step", "target_step"):
            if summary[f"{name}_mean"]:
                steps.append(summary[f"{name}_mean"])
                cvs.append(summary[f"{name}_cv"])
        rounds.append(summary["rounds_mean"])

    def rate(kind: str, key: str, default: float) -> float:
        return seconds[kind] / tokens[key] if tokens[key] else default

    d, t = cpu_2core_rates("qwen2.5-coder-0.5b"), cpu_2core_rates("qwen2.5-coder-1.5b")
    return Profile(rate("draft", "draft_decode", d.decode), rate("score", "target_score", t.score),
                   rate("target", "target_decode", t.decode), statistics.mean(steps),
                   statistics.mean(cvs), statistics.mean(rounds),
                   "engine seconds per token and steps of " + ", ".join(paths))


class Script:
    """Deterministic steps and delays: everything follows from the call's seed or text."""

    def __init__(self, profile: Profile, scale: float) -> None:
        self.p, self.scale = profile, scale

    def _length(self, rng: random.Random) -> int:
        sigma = math.sqrt(math.log1p(self.p.step_cv ** 2))
        mu = math.log(self.p.step_mean) - sigma * sigma / 2
        return max(4, min(160, round(rng.lognormvariate(mu, sigma))))

    def draft_step(self, call: FakeCall) -> str:
        return self._step(call, answers=True)

    def target_step(self, call: FakeCall) -> str:
        # Only draft steps box the answer, so a sample runs the same rounds under both
        # strategies, whichever of its steps went to the target.
        return self._step(call, answers=False)

    def _step(self, call: FakeCall, *, answers: bool) -> str:
        assert call.params is not None
        if call.params.max_tokens < 32:  # a forced answer completion
            return "42}"
        rng = random.Random(call.params.seed)
        length = self._length(rng)
        if answers and rng.random() < 1.0 / max(1.0, self.p.rounds_mean):
            return "x" * max(0, length - 14) + " \\boxed{42}\n\n"
        return "x" * (length - 2) + "\n\n"

    def draft_delay(self, call: FakeCall) -> float:
        return self._delay(call, self.p.draft_decode, self.draft_step)

    def target_delay(self, call: FakeCall) -> float:
        if call.kind == "score":
            return len(call.step) * self.p.target_score * self.scale
        return self._delay(call, self.p.target_decode, self.target_step)

    def _delay(self, call: FakeCall, per_token: float, step: Callable[[FakeCall], str]) -> float:
        assert call.params is not None
        tokens = min(len(step(call)), call.params.max_tokens)
        return tokens * per_token * self.scale

    @staticmethod
    def score(call: FakeCall) -> float:
        u = zlib.crc32((call.prompt + call.step).encode()) / 2**32
        return -math.log(1.0 + 9.0 * u)  # perplexity uniform on [1, 10], like the bank


def run_once(args: argparse.Namespace, profile: Profile, strategy: str, n: int,
             folder: Path) -> float:
    script = Script(profile, args.time_scale)
    draft = FakeEngine("draft", step=script.draft_step, delay=script.draft_delay)
    target = FakeEngine("target", step=script.target_step, score=script.score,
                        delay=script.target_delay)
    config = RunConfig.from_mapping(dict(
        engine="fake", dataset="fake", limit=args.questions, samples=n, strategy=strategy,
        alpha=args.alpha, calibration="file", calibration_file="fixed-bank", rounds=args.rounds,
        sync_budget=max(1, round(args.alpha * n)),
        max_active_samples=n if args.one_question_at_a_time else n * args.questions,
        draft_concurrency=args.concurrency, target_concurrency=args.concurrency,
        draft_tokens=160, target_tokens=160, max_retries=0, seed=args.seed))
    problems = [Problem(f"fake/{i}", "fake", f"Question {i}: what is six times seven?", "42")
                for i in range(args.questions)]
    run = RunFolder(folder)
    run.prepare({"config": config.to_dict()}, overwrite=True)
    outcome = asyncio.run(execute(config, problems, draft, target, run, bank_scores=BANK,
                                  show_progress=False))
    run.update_manifest(last_session={"wall_seconds": outcome.wall_seconds, "skipped": 0,
                                      "written": outcome.written})
    return outcome.wall_seconds


def predict(folder: Path, profile: Profile, scale: float) -> tuple[float, float, str]:
    """The simulator's wall time for the run in ``folder``: its own plans, the fake delays as
    measured rates (prompt tokens cost nothing: the fake engines charge only for steps);
    the same plans without the barrier (the barrier's own cost: same work); and the run's
    work: rounds and rejected steps (which the target continued)."""
    rates_d = MeasuredRates(profile.draft_decode * scale, 0.0, 0.0, "fake delays")
    rates_t = MeasuredRates(profile.target_decode * scale, 0.0, profile.target_score * scale,
                            "fake delays")
    draft = engine("qwen2.5-coder-0.5b", "cpu-2core", rates=rates_d)
    target = engine("qwen2.5-coder-1.5b", "cpu-2core", rates=rates_t)
    stats = load_run_stats(folder)
    rounds = sum(len(p.rounds) for p in stats.workload.plans)
    rejected = sum(r.decision == "continue" for p in stats.workload.plans for r in p.rounds)
    free = dataclasses.replace(stats.workload, strategy="atts")
    return (simulate(stats.workload, draft, target).wall_seconds,
            simulate(free, draft, target).wall_seconds, f"{rounds} / {rejected}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--from-run", nargs="*", default=[], metavar="RUN",
                        help="run folders whose per-token seconds and steps to replay")
    parser.add_argument("--samples", nargs="+", type=int, default=[4, 8, 16])
    parser.add_argument("--questions", type=int, default=4)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--alpha", type=float, default=0.25)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--time-scale", type=float, default=0.02)
    parser.add_argument("--concurrency", type=int, default=1)
    parser.add_argument("--one-question-at-a-time", action="store_true",
                        help="N slots, as in the authors' code (default: every sample admitted "
                        "at once)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=Path("runs/bench/async_vs_sync"))
    parser.add_argument("--results", type=Path, default=Path("bench/results/async_vs_sync.md"))
    parser.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--section", default="bench_async_vs_sync",
                        help="the BENCHMARKS.md section to write")
    args = parser.parse_args()
    profile = profile_from_runs(args.from_run)
    rows, started = [], time.time()
    load = os.getloadavg()[0]
    for n in args.samples:
        walls: dict[str, list[float]] = {"atts": [], "sync": []}
        ratios, predicted, work, unbarred = [], {}, {}, 0.0
        for repeat in range(args.repeats):
            for strategy in ("atts", "sync"):
                setting = f"{args.questions}q{'-serial' if args.one_question_at_a_time else ''}"
                folder = args.root / f"{setting}-n{n}" / strategy / f"rep{repeat}"
                walls[strategy].append(run_once(args, profile, strategy, n, folder)
                                       / args.time_scale)
                if repeat == 0 and args.concurrency == 1:
                    wall, free, work[strategy] = predict(folder, profile, args.time_scale)
                    predicted[strategy] = wall / args.time_scale
                    unbarred = free / args.time_scale
            ratios.append(walls["sync"][-1] / walls["atts"][-1])
        atts, sync = statistics.median(walls["atts"]), statistics.median(walls["sync"])
        rows.append([n, f"{atts:.0f}", f"{sync:.0f}", f"{statistics.median(ratios):.2f}x",
                     " / ".join(f"{r:.2f}" for r in ratios),
                     f"{predicted.get('atts', 0):.0f} / {predicted.get('sync', 0):.0f}",
                     f"{unbarred:.0f} ({predicted.get('sync', 0) / unbarred:.2f}x)"
                     if unbarred else "-",
                     f"{work.get('atts', '-')} vs {work.get('sync', '-')}"])
        print(f"N={n}: atts {atts:.0f} s, sync {sync:.0f} s, sync/atts "
              f"{statistics.median(ratios):.2f}x", file=sys.stderr, flush=True)
    command = "python bench/bench_async_vs_sync.py " + " ".join(sys.argv[1:])
    body = (
        f"Command: `{command}`\n\n"
        f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
        f"{platform.python_version()}, load {load:.2f} at the start; "
        f"{time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime(started))}, "
        f"{time.time() - started:.0f} s in all.\n"
        f"Engines: FakeEngine behind the real runner, one request at a time each; delays per "
        f"token: draft decode {profile.draft_decode * 1e3:.1f} ms, target score "
        f"{profile.target_score * 1e3:.1f} ms, target decode {profile.target_decode * 1e3:.1f} "
        f"ms ({profile.source}); steps {profile.step_mean:.0f} tokens (cv "
        f"{profile.step_cv:.2f}), a sample answers after each round with probability "
        f"1/{profile.rounds_mean:.1f}; {args.questions} questions, T = {args.rounds}, alpha = "
        f"{args.alpha}, sync budget B = alpha x N; slots = "
        f"{'N (one question at a time)' if args.one_question_at_a_time else 'all samples'}; "
        f"time scale {args.time_scale} (times below are "
        f"real-engine seconds: measured / scale); "
        f"medians of {args.repeats} repeats.\n\n"
        + table(["N", "atts wall s", "sync wall s", "sync / atts (median)",
                 "per repeat", "simulated atts / sync s (rep 0)",
                 "simulated: sync's plans without the barrier s (barrier's cost)",
                 "rounds / rejected steps, atts vs sync"], rows))
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text("# Asynchronous vs synchronous (fake engines)\n\n" + body)
    replace_section(args.benchmarks, args.section, body)
    print(body)


if __name__ == "__main__":
    main()
