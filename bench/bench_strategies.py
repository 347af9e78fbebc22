"""Benchmark ATTS against its baselines on the embedded Qwen pair, side by side.

Runs every (dataset, strategy, sweep point, repeat) into its own run folder under ``--root``
(resumable: the same command finishes what an interrupted one left), then grades them and
writes ``bench/results/strategies.md`` and the matching section of ``BENCHMARKS.md``:
accuracy (pass@1, maj@N), wall time (median over repeats), speedup over target-only (the
median of ratios taken within the same repeat), the realised rejection rate against alpha,
tokens by kind, and the roofline bound of ``atts.perf.roofline`` with the orchestration
efficiency (measured speedup / bound).

Before each run it waits while the 1-minute load average is above ``--max-load`` (other jobs
share the 2 cores), for at most ``--wait-minutes``; runs already complete are skipped.

Reduced set (what fits now):
    .venv/bin/python bench/bench_strategies.py --datasets gsm8k:6 \
        --strategies atts target_only draft_only
Full set (about 2 hours of both cores):
    .venv/bin/python bench/bench_strategies.py --datasets gsm8k:20 math500:10 \
        --strategies atts target_only draft_only sync --repeats 2
Sweeps (options): ``--alphas 0.1 0.25 0.4``, ``--calibrations question marginal``,
``--modes continue regenerate``.  ``--report-only`` grades and writes without running.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atts.config import RunConfig
from atts.conformal import min_bank_size
from atts.runner.run_folder import RunFolder

ATTS_LIKE = ("atts", "sync")
BASELINE = "target_only"


@dataclass(frozen=True)
class Job:
    dataset: str
    limit: int
    strategy: str
    alpha: float
    calibration: str
    mode: str  # continue | regenerate
    repeat: int

    @property
    def label(self) -> str:
        if self.strategy == "atts":
            return f"atts-a{self.alpha:g}-{self.calibration}-{self.mode}"
        if self.strategy == "sync":
            return f"sync-b{self.alpha:g}"
        return self.strategy

    def folder(self, root: Path, samples: int) -> Path:
        return root / f"{self.dataset}-{self.limit}q-n{samples}" / self.label / f"rep{self.repeat}"

    def config(self, args: argparse.Namespace) -> RunConfig:
        needed = min_bank_size(self.alpha) + 1
        values: dict[str, Any] = {
            "dataset": self.dataset, "limit": self.limit, "samples": args.samples,
            "strategy": self.strategy, "seed": args.seed,
        }
        if self.strategy == "atts":
            values.update(
                alpha=self.alpha, calibration=self.calibration,
                alpha_discard=self.alpha if self.mode == "regenerate" else 0.0,
                calibration_m=max(args.samples, needed), warmup=max(8, needed),
            )
        if self.strategy == "sync":
            # The synchronous baseline sends the B = alpha x N worst-scored steps of each round
            # to the target (the paper's budget form alpha = B / m).
            values["sync_budget"] = max(1, round(self.alpha * args.samples))
        return RunConfig.from_mapping(values)


def jobs(args: argparse.Namespace) -> list[Job]:
    out = []
    for spec in args.datasets:
        name, _, limit = spec.partition(":")
        for repeat in range(args.repeats):
            for strategy in args.strategies:
                if strategy == "atts":
                    out += [Job(name, int(limit or 6), "atts", a, c, m, repeat)
                            for a in args.alphas for c in args.calibrations for m in args.modes]
                elif strategy == "sync":
                    out += [Job(name, int(limit or 6), "sync", a, "question", "continue", repeat)
                            for a in args.alphas]
                else:
                    out.append(Job(name, int(limit or 6), strategy, 0.25, "question",
                                   "continue", repeat))
    return out


def complete(folder: Path, config: RunConfig) -> bool:
    run = RunFolder(folder)
    if not run.manifest_path.exists():
        return False
    return len(run.finished(include_errors=False)) >= (config.limit or 0) * config.samples


def wait_for_quiet(max_load: float, minutes: float) -> float:
    """Wait (2-minute naps) while the 1-minute load average exceeds ``max_load``; returns it."""
    deadline = time.monotonic() + 60 * minutes
    load = os.getloadavg()[0]
    while load > max_load and time.monotonic() < deadline:
        print(f"bench: load {load:.2f} > {max_load}: waiting 120 s", file=sys.stderr, flush=True)
        time.sleep(120)
        load = os.getloadavg()[0]
    return load


def run_all(args: argparse.Namespace, todo: list[Job]) -> None:
    from atts.runner.session import run_job

    for job in todo:
        config = job.config(args)
        folder = job.folder(args.root, args.samples)
        if complete(folder, config):
            continue
        load = wait_for_quiet(args.max_load, args.wait_minutes)
        print(f"bench: {folder} (load {load:.2f})", file=sys.stderr, flush=True)
        outcome = run_job(config, folder, show_progress=not args.no_progress)
        print(f"bench: {folder}: {outcome.written} samples in {outcome.wall_seconds:.0f} s, "
              f"{outcome.errors} errors", file=sys.stderr, flush=True)
        record_load(args.root, folder, load, os.getloadavg()[0])


def record_load(root: Path, folder: Path, before: float, after: float) -> None:
    """Keep the load averages around each run (other jobs share the cores) in root/loads.json."""
    path = root / "loads.json"
    loads = json.loads(path.read_text()) if path.exists() else {}
    loads[str(folder.relative_to(root))] = {"start": round(before, 2), "end": round(after, 2)}
    path.write_text(json.dumps(loads, indent=1, sort_keys=True) + "\n")


def loads_of(root: Path, folders: list[Path]) -> str:
    path = root / "loads.json"
    loads = json.loads(path.read_text()) if path.exists() else {}
    seen = [loads.get(str(f.relative_to(root))) for f in folders]
    known = [f"{x['start']:.1f}-{x['end']:.1f}" for x in seen if x]
    return ", ".join(known) if known else "-"


# -- report ----------------------------------------------------------------------------------
def summaries(args: argparse.Namespace, todo: list[Job]) -> dict[Job, dict[str, Any]]:
    from atts.grading import Grader
    from atts.report.graded_run import load_run
    from atts.report.summary import summarize_run

    out: dict[Job, dict[str, Any]] = {}
    with Grader() as grader:
        for job in todo:
            folder = job.folder(args.root, args.samples)
            if not complete(folder, job.config(args)):
                continue
            out[job] = summarize_run(load_run(folder, grader))
    return out


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


def report(args: argparse.Namespace, todo: list[Job]) -> str:
    from atts.perf.roofline import TokenCosts, TokenTotals, efficiency, token_bound

    done = summaries(args, todo)
    groups: dict[tuple[str, int], dict[str, list[tuple[Job, dict[str, Any]]]]] = defaultdict(
        lambda: defaultdict(list))
    for job, summary in done.items():
        groups[(job.dataset, job.limit)][job.label].append((job, summary))
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}; engine llama_cpp, draft qwen2.5-coder-0.5b, "
             f"target qwen2.5-coder-1.5b, 1 thread each; N = {args.samples}; "
             f"written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.", ""]
    missing = [job for job in todo if job not in done]
    for (dataset, limit), labels in groups.items():
        base = {j.repeat: s for j, s in labels.get(BASELINE, [])}
        lines += [f"### {dataset}, {limit} problems x N = {args.samples}", "",
                  "| run | reps | pass@1 | maj@N | wall s (median) | speedup vs target_only "
                  "| rejected (95% CI) vs alpha | draft decode / target score / target decode "
                  "tokens | bound (overlap / serial) | efficiency |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for label, entries in labels.items():
            walls = [s["wall_seconds"] for _, s in entries]
            ratios = [base[j.repeat]["wall_seconds"] / s["wall_seconds"]
                      for j, s in entries if j.repeat in base and s["wall_seconds"] > 0]
            first = entries[0][1]
            n = first["n"]
            rej = first["rejection"]["overall"]
            rej_text = "-" if rej is None else (
                f"{rej['rate']:.2f} ({rej['low']:.2f}-{rej['high']:.2f})"
                + (f" vs {first['alpha']:g}" if first["alpha"] is not None else ""))
            tok = first["tokens"]
            bound_text, eff_text = "-", "-"
            if label != BASELINE and 0 in base:
                costs = TokenCosts.from_summaries(first, base[0])
                if costs is not None:
                    run_tokens = TokenTotals.from_summary(first)
                    base_tokens = TokenTotals.from_summary(base[0])
                    overlap = token_bound(costs, run_tokens, base_tokens, overlap=True)
                    serial = token_bound(costs, run_tokens, base_tokens, overlap=False)
                    bound_text = f"{overlap:.2f}x / {serial:.2f}x"
                    if ratios:
                        eff_text = f"{efficiency(statistics.median(ratios), overlap):.0%}"
            lines.append(
                f"| {label} | {len(entries)} | {first['pass@1']:.3f} | {first[f'maj@{n}']:.3f} "
                f"| {_fmt(_median(walls), '.0f')} | {_fmt(_median(ratios), '.2f', 'x')} "
                f"| {rej_text} | {tok['draft_decode']:,} / {tok['target_score']:,} / "
                f"{tok['target_decode']:,} | {bound_text} | {eff_text} |")
        lines.append("")
    if missing:
        lines.append(f"Not run yet ({len(missing)} runs): "
                     + ", ".join(sorted({str(j.folder(args.root, args.samples).parent.parent)
                                         + '/' + j.label for j in missing})) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["gsm8k:6"], metavar="NAME:LIMIT")
    parser.add_argument("--strategies", nargs="+", default=["atts", "target_only"],
                        choices=["atts", "target_only", "draft_only", "sync"])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--alphas", nargs="+", type=float, default=[0.25])
    parser.add_argument("--calibrations", nargs="+", default=["question"],
                        choices=["question", "marginal"])
    parser.add_argument("--modes", nargs="+", default=["continue"],
                        choices=["continue", "regenerate"])
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--root", type=Path, default=Path("runs/bench"))
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--wait-minutes", type=float, default=20)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--results", type=Path, default=Path("bench/results/strategies.md"))
    parser.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    args = parser.parse_args()
    todo = jobs(args)
    if not args.report_only:
        run_all(args, todo)
    text = report(args, todo)
    command = "python bench/bench_strategies.py " + " ".join(sys.argv[1:])
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(f"# Strategies benchmark\n\nCommand: `{command}`\n\n{text}")
    from atts.perf.report import replace_section

    replace_section(args.benchmarks, "bench_strategies", f"Command: `{command}`\n\n{text}")
    print(text)


if __name__ == "__main__":
    main()
