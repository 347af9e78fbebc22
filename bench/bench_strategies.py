"""Benchmark ATTS against its baselines on the embedded Qwen pair, side by side.

Runs every (dataset, strategy, sweep point, repeat) into its own run folder under ``--root``
(resumable: the same command finishes what an interrupted one left), waiting before each run
while the load average is above ``--max-load`` (other jobs share the cores) and logging the
load meanwhile; then grades every finished run under the datasets' folders and writes
``bench/results/strategies.md`` and its BENCHMARKS.md section: accuracy, wall time (median of
repeats), speedup over target-only (median of ratios, each run against a target-only run of the
same machine boot, the nearest in time; runs that did not record their boot pair with an
unrecorded target-only run first, by repeat index, and are marked; runs of other boots get no
ratio), rejection rate against
alpha, tokens by kind, and the bound of ``atts.perf.roofline`` with the orchestration
efficiency (measured speedup / bound).

    .venv/bin/python bench/bench_strategies.py --datasets gsm8k:6 \
        --strategies atts target_only draft_only sync --repeats 2
Every sweep defaults to the run defaults (RunConfig), so ``atts`` alone is the ATTS a user
gets.  Sweeps: ``--alphas 0.1 0.25 0.4``, ``--calibrations question marginal``, ``--modes continue
regenerate``, ``--strata none round`` (round: marginal or adaptive calibration), ``--scores ppl
tail_mean`` (atts), ``--judge-thresholds 7`` (the judge strategy), ``--max-active 8 16``
(every strategy: samples in flight, so each side can be measured at its best batch; the
speedup column is against target-only at the default, the ``target_only-mN`` rows say what
target-only gains).  ``--report-only``
grades and writes without running.  BENCHMARKS.md section 7 lists the full set.  Repeats reuse
``--seed``, but adaptive calibration decides in completion order, so their work and accuracy
differ too: accuracy columns show each repeat's value where they differ, then the repeats pooled
(each question's mean over them) with the interval over questions, and the difference from
target-only pools each side's repeats.  Slices of one dataset (``gsm8k:20 gsm8k:20@20``) get
a table more with their questions merged.  ``--section`` names the BENCHMARKS.md section written.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atts.config import RunConfig
from atts.conformal import min_bank_size
from atts.conformal.scores import SCORES
from atts.runner.machine import UNKNOWN_BOOT, boots, same_boots
from atts.runner.run_folder import RunFolder

BASELINE = "target_only"
# The sweep's defaults are the run defaults, so `make bench` measures the ATTS a user gets.
RUN_DEFAULT = RunConfig()
DEFAULT_MODE = "regenerate" if RUN_DEFAULT.discard_level == RUN_DEFAULT.alpha else "continue"
RSS_LOG = "rss_samples.log"


@dataclass(frozen=True)
class Slice:
    """A dataset spec ``NAME[:LIMIT][@OFFSET]``: LIMIT problems (default 6) after the first
    OFFSET (default 0), so a later command can add questions 20-39 beside a run of 0-19."""

    dataset: str
    limit: int
    offset: int = 0

    @classmethod
    def parse(cls, spec: str) -> Slice:
        head, _, offset = spec.partition("@")
        name, _, limit = head.partition(":")
        try:
            return cls(name, int(limit or 6), int(offset or 0))
        except ValueError:
            raise SystemExit(f"bench: dataset spec {spec!r} is not NAME[:LIMIT][@OFFSET] "
                             "(for example gsm8k:20@20)") from None

    @property
    def group(self) -> str:
        """The folder of this slice's runs: ``gsm8k-20q-n4``, ``gsm8k-20q-from20-n4``."""
        return f"{self.dataset}-{self.limit}q" + (f"-from{self.offset}" if self.offset else "")

    @property
    def title(self) -> str:
        if not self.offset:
            return f"{self.dataset}, {self.limit} problems"
        return (f"{self.dataset}, {self.limit} problems (numbers {self.offset}-"
                f"{self.offset + self.limit - 1})")


@dataclass(frozen=True)
class Job:
    slice: Slice
    strategy: str
    alpha: float
    calibration: str
    mode: str  # continue | regenerate
    repeat: int
    strata: str = "none"  # round: one bank per round index (marginal or adaptive)
    score: str = "ppl"  # atts: the nonconformity score (atts.conformal.scores)
    threshold: int = 7  # judge: the rating at or above which a draft step is kept
    # Samples in flight (RunConfig.max_active_samples): each engine batches this many at most.
    max_active: int = RUN_DEFAULT.max_active_samples
    # cascade, atts_cascade: the share of questions the target may take.
    escalate_alpha: float = RUN_DEFAULT.escalate_alpha

    @property
    def label(self) -> str:
        # Folders of the default in-flight count keep their names from before the sweep.
        active = ("" if self.max_active == RUN_DEFAULT.max_active_samples
                  else f"-m{self.max_active}")
        return self._setting + active

    @property
    def _setting(self) -> str:
        if self.strategy == "cascade":
            return f"cascade-e{self.escalate_alpha:g}"
        if self.strategy in ("atts", "atts_cascade"):
            strata = "" if self.strata == "none" else f"-{self.strata}"
            score = "" if self.score == "ppl" else f"-{self.score}"
            escalate = (f"-e{self.escalate_alpha:g}" if self.strategy == "atts_cascade"
                        else "")
            return (f"{self.strategy}-a{self.alpha:g}-{self.calibration}{strata}{score}-"
                    f"{self.mode}{escalate}")
        if self.strategy == "sync":
            return f"sync-b{self.alpha:g}"
        if self.strategy == "judge":
            return f"judge-t{self.threshold}"
        return self.strategy

    def folder(self, root: Path, samples: int) -> Path:
        return root / f"{self.slice.group}-n{samples}" / self.label / f"rep{self.repeat}"

    def config(self, args: argparse.Namespace) -> RunConfig:
        needed = min_bank_size(self.alpha) + 1
        values: dict[str, Any] = {
            "dataset": self.slice.dataset, "limit": self.slice.limit,
            "offset": self.slice.offset, "samples": args.samples,
            "strategy": self.strategy, "seed": args.seed, "cores": args.cores,
            "max_active_samples": self.max_active,
        }
        if self.strategy in ("cascade", "atts_cascade"):
            values["escalate_alpha"] = self.escalate_alpha
        if self.strategy in ("atts", "atts_cascade"):
            values.update(
                alpha=self.alpha, calibration=self.calibration,
                alpha_discard=self.alpha if self.mode == "regenerate" else 0.0,
                calibration_m=max(args.samples, needed), warmup=max(8, needed),
                strata=self.strata, score=self.score,
            )
        if self.strategy == "judge":
            values["judge_threshold"] = self.threshold
        if self.strategy == "sync":
            # The synchronous baseline sends the B = alpha x N worst-scored steps of each round
            # to the target (the paper's budget form alpha = B / m).
            values["sync_budget"] = max(1, round(self.alpha * args.samples))
        return RunConfig.from_mapping(values)


def jobs(args: argparse.Namespace) -> list[Job]:
    out = []
    for spec in args.datasets:
        part = Slice.parse(spec)
        for repeat in range(args.repeats):
            for strategy in args.strategies:
                for active in args.max_active:
                    out += _jobs_of(strategy, part, repeat, active, args)
    return out


def _jobs_of(strategy: str, part: Slice, repeat: int, active: int,
             args: argparse.Namespace) -> list[Job]:
    """One strategy's sweep points at one in-flight count."""
    escalates = args.escalate_alphas if strategy in ("cascade", "atts_cascade") else [
        RUN_DEFAULT.escalate_alpha]
    if strategy in ("atts", "atts_cascade"):
        return [Job(part, strategy, a, c, m, repeat, strata, score, max_active=active,
                    escalate_alpha=e)
                for a in args.alphas for c in args.calibrations for m in args.modes
                for strata in args.strata for score in args.scores for e in escalates
                if strata == "none" or c in ("marginal", "adaptive")]
    if strategy == "cascade":
        return [Job(part, strategy, 0.25, "question", "continue", repeat, max_active=active,
                    escalate_alpha=e) for e in escalates]
    if strategy == "judge":
        return [Job(part, "judge", 0.25, "question", "regenerate", repeat, threshold=t,
                    max_active=active) for t in args.judge_thresholds]
    if strategy == "sync":
        return [Job(part, "sync", a, "question", "continue", repeat, max_active=active)
                for a in args.alphas]
    return [Job(part, strategy, 0.25, "question", "continue", repeat, max_active=active)]


def complete(folder: Path, config: RunConfig) -> bool:
    """Every sample written (a cascade: every question decided, and the target samples of
    each escalated one written too)."""
    run = RunFolder(folder)
    if not run.manifest_path.exists():
        return False
    finished = len(run.finished(include_errors=False))
    if not config.escalates:
        return finished >= (config.limit or 0) * config.samples
    decided = run.question_rows()
    escalated = sum(bool(d.get("escalated")) for d in decided)
    return (len(decided) >= (config.limit or 0)
            and finished >= (len(decided) + escalated) * config.samples)


def wait_for_quiet(max_load: float, minutes: float, nap: float = 20.0) -> float:
    """Wait while the 1-minute load average exceeds ``max_load``; returns it.  Short naps: the
    previous run's own two threads keep the average above 1.5 for about 20 s after it ends
    (it decays with a 60 s time constant), and 2-minute naps lost minutes per sweep."""
    deadline = time.monotonic() + 60 * minutes
    load = os.getloadavg()[0]
    while load > max_load and time.monotonic() < deadline:
        print(f"bench: load {load:.2f} > {max_load}: waiting {nap:.0f} s", file=sys.stderr,
              flush=True)
        time.sleep(nap)
        load = os.getloadavg()[0]
    return load


def _rss_kib() -> int:
    """This process's resident memory (VmRSS, KiB): both engines and every context."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


class LoadLog:
    """Appends ``<unix time> <load1> <load5> <load15>`` to a log every 15 s while runs go on,
    so `atts simulate validate --loads` can correct the predictions for the shared cores, and
    ``<unix time> <RSS KiB>`` to ``rss_samples.log`` beside it (peak memory per run)."""

    def __init__(self, path: Path) -> None:
        self.path, self._stop = path, threading.Event()
        self.rss_path = path.with_name(RSS_LOG)
        self._thread = threading.Thread(target=self._loop, daemon=True)

    def __enter__(self) -> LoadLog:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()

    def _loop(self) -> None:
        while not self._stop.is_set():
            now = time.time()
            with self.path.open("a") as file:
                file.write(f"{now:.0f} " + " ".join(f"{x:.2f}" for x in os.getloadavg()) + "\n")
            with self.rss_path.open("a") as file:
                file.write(f"{now:.0f} {_rss_kib()}\n")
            self._stop.wait(15)


def run_all(args: argparse.Namespace, todo: list[Job]) -> None:
    from atts.runner.session import run_job

    pending = [j for j in todo if not complete(j.folder(args.root, args.samples), j.config(args))]
    with LoadLog(args.root / "load_samples.log"):
        for job in pending:
            folder = job.folder(args.root, args.samples)
            load = wait_for_quiet(args.max_load, args.wait_minutes)
            print(f"bench: {folder} (load {load:.2f})", file=sys.stderr, flush=True)
            outcome = run_job(job.config(args), folder, show_progress=not args.no_progress)
            print(f"bench: {folder}: {outcome.written} samples in {outcome.wall_seconds:.0f} "
                  f"s, {outcome.errors} errors", file=sys.stderr, flush=True)


def loads_of(root: Path, entries: list[Done]) -> str:
    """Mean 1-minute load average while each run went on (from root/load_samples.log), with
    the share of CPU time the host took from the machine meanwhile where the run recorded it
    (its summary's host_steal, atts.runner.machine)."""
    from atts.perf.stats import mean_load

    texts = []
    for e in entries:
        load = mean_load(root / "load_samples.log", *e.span)
        steal = e.summary.get("host_steal")
        parts = ([f"{load:.1f}"] if load is not None else []) + \
            ([f"steal {steal:.0%}"] if steal is not None else [])
        if parts:
            texts.append(" ".join(parts))
    return ", ".join(texts) if texts else "-"


def peak_rss(root: Path, entries: list[Done]) -> str:
    """Highest resident memory (GB) sampled while each run went on (root/rss_samples.log)."""
    from atts.perf.stats import logged_between

    peaks = [max(kib) / 2**20 for e in entries
             if (kib := logged_between(root / RSS_LOG, *e.span))]
    return ", ".join(f"{p:.1f}" for p in peaks) if peaks else "-"


# -- report ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Done:
    """A complete run folder found under the root: its group, label, repeat and summary."""

    slice: Slice
    label: str
    repeat: int
    folder: Path
    summary: dict[str, Any]
    span: tuple[float, float]  # unix time: its first sample started, its last finished
    cpu: str  # the processor its manifest names ("not recorded" before 2026-11-29)
    budget: str  # the compute budget its manifest names ("1 thread per engine" before it)
    batched: bool  # run with a compute plan: batched engines, overlapping call seconds
    cores_used: float | None  # (user + sys CPU) / wall of its last session, when recorded
    boots: frozenset[str] | None  # the boots its sessions ran on (None: not recorded)
    calls: dict[str, dict[str, Any]]  # its last session's engine_calls, by role ({}: none)


def finished_runs(args: argparse.Namespace) -> list[Done]:
    """Every complete run under the requested datasets' folders, whichever command ran it, so
    the report always shows all of them (sweeps run by separate commands included)."""
    from atts.grading import Grader
    from atts.report.graded_run import load_run
    from atts.report.summary import summarize_run

    out = []
    with Grader() as grader:
        for spec in args.datasets:
            part = Slice.parse(spec)
            group = args.root / f"{part.group}-n{args.samples}"
            for folder in sorted(group.glob("*/rep*")):
                run = RunFolder(folder)
                if not run.manifest_path.exists():
                    continue
                manifest = run.read_manifest()
                config = RunConfig.from_mapping(manifest["config"])
                if not complete(folder, config):
                    continue
                rows = run.rows()
                span = (min(r["started_at"] for r in rows), max(r["finished_at"] for r in rows))
                cpu = manifest.get("machine", {}).get("cpu", "not recorded")
                out.append(Done(part, folder.parent.name,
                                int(folder.name[3:]), folder,
                                summarize_run(load_run(folder, grader)), span, cpu,
                                budget_of(manifest), bool(manifest.get("compute")),
                                manifest.get("last_session", {}).get("cores_used"),
                                boots(manifest),
                                manifest.get("last_session", {}).get("engine_calls") or {}))
    return out


def budget_of(manifest: dict[str, Any]) -> str:
    """How a run spent the cores: its compute plan, or the fixed threads of older runs."""
    plan = manifest.get("compute")
    if not plan:
        config = manifest.get("config", {})
        return (f"{config.get('draft_threads') or 1} + {config.get('target_threads') or 1} "
                "threads (one per engine, no budget)")
    shares = [f"{role} up to {plan[role]['threads']} threads"
              + (" from the pool" if plan[role]["pooled"] else " of its own")
              for role in ("draft", "target")]
    return f"budget of {plan['cores']} cores, batched engines ({', '.join(shares)})"


def per_question(summaries: list[dict[str, Any]], key: str) -> dict[str, float]:
    """Each question's ``key`` (pass@1, maj@N or pass@N) averaged over the runs that answered
    it: the repeats of one setting pool into one estimate per question, and disjoint slices of
    a dataset merge into one set of questions."""
    values: dict[str, list[float]] = defaultdict(list)
    for summary in summaries:
        # maj@N and pass@N name the run's own N (the repeats of one setting share it).
        column = key if key == "pass@1" else f"{key.split('@')[0]}@{summary['n']}"
        for question, row in summary.get("per_question", {}).items():
            if column in row:
                values[question].append(row[column])
    return {q: statistics.fmean(v) for q, v in values.items()}


def pooled_accuracy(summaries: list[dict[str, Any]], key: str) -> str:
    """The per-question mean over every run given, with its bootstrap interval over questions
    (atts.report.intervals: the question is the unit resampled, repeats are not)."""
    from atts.report.intervals import bootstrap_mean

    values = per_question(summaries, key)
    return bootstrap_mean(list(values.values())).text() if values else "-"


def accuracy_difference(runs: list[dict[str, Any]], bases: list[dict[str, Any]],
                        key: str) -> str:
    """``runs - bases`` of a per-question accuracy, each side pooled over its repeats, with its
    paired 95% bootstrap interval (the questions resampled once for both sides)."""
    from atts.report.intervals import paired_difference

    mine, theirs = per_question(runs, key), per_question(bases, key)
    diff = paired_difference(mine, theirs)
    if diff is None or set(mine) != set(theirs):
        return "other questions"
    return f"{diff.estimate:+.3f} [{diff.low:+.2f}, {diff.high:+.2f}]"


def pooled_rejection(summaries: list[dict[str, Any]]) -> str:
    """Rejected / judged steps summed over the runs, with its Clopper-Pearson interval."""
    from atts.report.metrics import clopper_pearson

    counts = [s["rejection"]["overall"] for s in summaries if s["rejection"]["overall"]]
    if not counts:
        return "-"
    rejections, steps = sum(c["rejections"] for c in counts), sum(c["steps"] for c in counts)
    low, high = clopper_pearson(rejections, steps)
    alpha = summaries[0]["alpha"]
    return (f"{rejections / steps:.2f} ({low:.2f}-{high:.2f})"
            + (f" vs {alpha:g}" if alpha is not None else ""))


def cpus_of(entries: list[Done]) -> str:
    """The processors named in the runs' manifests, with how many runs each: timings from
    different machines must not be compared (the team's machines differ by 2x)."""
    counts: dict[str, int] = defaultdict(int)
    for entry in entries:
        counts[entry.cpu] += 1
    return ", ".join(f"{cpu} ({n} runs)" for cpu, n in sorted(counts.items())) or "-"


def _median(values: list[float]) -> float | None:
    return statistics.median(values) if values else None


def _fmt(value: float | None, spec: str = ".3f", suffix: str = "") -> str:
    return "-" if value is None else f"{value:{spec}}{suffix}"


# What a speedup cell says when its two wall times may not be divided, or are divided unchecked.
OTHER_BOOT = "other session"
UNRECORDED = "\u2020"
SPEED_NOTES = {
    UNRECORDED: f"{UNRECORDED} The run or its target-only baseline {UNKNOWN_BOOT}: the two "
                "may have run on two machines or on two days, whose speeds differ by up to "
                "about 20% here; the ratio pairs the run with an unrecorded target-only run "
                "first, repeat k with repeat k (or, without one, the nearest in time).",
    OTHER_BOOT: f"*{OTHER_BOOT}*: no target-only run shares the run's machine boot, so no "
                "ratio is given (run target-only again beside it: `--strategies target_only "
                "--repeats R+1`); \"(k of n)\": only k of the n repeats had one, and the "
                "ratio is theirs.",
}
Pair = tuple[Done, Done | None, str]  # a run, the target-only run it divides by, its mark


def speed_baseline(entry: Done, bases: list[Done]) -> tuple[Done | None, str]:
    """The target-only run that ``entry``'s wall time may be divided by, and how sure that is:
    ``""`` (same boot of the same machine: the nearest such run in time), ``UNRECORDED`` (a
    boot was not recorded: an unrecorded baseline first, then the run of the same repeat
    index, as before boots were recorded, or else the nearest in time), or ``OTHER_BOOT``
    with no run (every candidate ran on another boot)."""
    same = [b for b in bases if same_boots(entry.boots, b.boots)]
    if same:
        return min(same, key=lambda b: abs(b.span[0] - entry.span[0])), ""
    unknown = [b for b in bases if same_boots(entry.boots, b.boots) is None]
    if unknown:
        # An unrecorded run pairs first with unrecorded baselines (made before boots were
        # recorded, like it), not with one recorded since, which ran in a later session.
        return min(unknown, key=lambda b: ((entry.boots is None) != (b.boots is None),
                                           b.repeat != entry.repeat,
                                           abs(b.span[0] - entry.span[0]))), UNRECORDED
    return None, OTHER_BOOT


def speed_text(ratio: float | None, pairs: list[Pair], marks: set[str]) -> str:
    """A speedup cell: the ratio of the paired runs with its marks, or why there is none;
    ``marks`` collects the notes the cell uses."""
    paired = [p for p in pairs if p[1] is not None]
    if len(paired) < len(pairs):
        marks.add(OTHER_BOOT)
    if ratio is None or not paired:
        return OTHER_BOOT if pairs else "-"
    unchecked = any(mark == UNRECORDED for _, _, mark in paired)
    marks |= {UNRECORDED} if unchecked else set()
    return (f"{ratio:.2f}x" + (UNRECORDED if unchecked else "")
            + (f" ({len(paired)} of {len(pairs)})" if len(paired) < len(pairs) else ""))


def _bound(run: dict[str, Any], base: dict[str, Any]) -> tuple[float, float] | None:
    """Overlapped and serial bounds of ``run`` over the target-only ``base`` it is paired
    with (``speed_baseline``)."""
    from atts.perf.roofline import TokenCosts, TokenTotals, token_bound

    costs = TokenCosts.from_summaries(run, base)
    if costs is None:
        return None
    mine, theirs = TokenTotals.from_summary(run), TokenTotals.from_summary(base)
    return (token_bound(costs, mine, theirs, overlap=True),
            token_bound(costs, mine, theirs, overlap=False))


def engine_use(entries: list[Done]) -> str:
    """Per repeat, each engine's busy share of the wall and its mean decode batch (draft /
    target), from the manifest's ``last_session.engine_calls`` ("-" before it was recorded)."""
    def part(calls: dict[str, dict[str, Any]], key: str, spec: str) -> str:
        if "shared" in calls:  # one engine played both roles
            value = calls["shared"][key]
            return "-" if value is None else f"{value:{spec}} (one engine)"
        return " / ".join(f"{calls[r][key]:{spec}}" if r in calls and calls[r][key] is not None
                          else "-" for r in ("draft", "target"))

    cells = [f"{part(e.calls, 'busy_share', '.2f')}; {part(e.calls, 'mean_decode_batch', '.1f')}"
             for e in entries if e.calls]
    return ", ".join(cells) or "-"


def _row(label: str, entries: list[Done], bases: list[Done], root: Path,
         marks: set[str]) -> str:
    """One table row; ``marks`` collects the speed notes its cells use."""
    walls = [e.summary["wall_seconds"] for e in entries]
    paired: list[Pair] = ([(e, *speed_baseline(e, bases)) for e in entries]
                          if bases and label != BASELINE else [])
    ratios = [b.summary["wall_seconds"] / e.summary["wall_seconds"]
              for e, b, _ in paired if b is not None and e.summary["wall_seconds"] > 0]
    speed = "1.00x" if label == BASELINE else speed_text(_median(ratios), paired, marks)
    base = [b.summary for b in bases]
    summaries = [e.summary for e in entries]
    first = summaries[0]
    n = first["n"]
    tok = first["tokens"]
    # Batched engines overlap their samples' calls, so summed call seconds are not per-token
    # costs: no bound from a run's own rates then (BENCHMARKS.md section 0 gives it from the
    # engine benchmark instead).
    bounds = [b for e, other, _ in paired if other is not None and not e.batched
              for b in [_bound(e.summary, other.summary)] if b is not None]
    bound_text, eff_text = "-", "-"
    if bounds:
        overlap = statistics.median(b[0] for b in bounds)
        serial = statistics.median(b[1] for b in bounds)
        bound_text = f"{overlap:.2f}x / {serial:.2f}x"
        if ratios:
            from atts.perf.roofline import efficiency

            eff_text = f"{efficiency(statistics.median(ratios), overlap):.0%}"
    per_token = " / ".join(
        " ".join(f"{1e3 * e.summary['engine_seconds'][k] / e.summary['tokens'][k]:.0f}"
                 for e in entries) if tok[k] else "-"
        for k in ("draft_decode", "target_score", "target_decode")) + " ms"
    def each(key: str) -> str:
        """One value when every repeat agrees (the same seed repeats the same work), else
        each repeat's."""
        values = [f"{e.summary[key]:.3f}" for e in entries]
        return values[0] if len(set(values)) == 1 else " / ".join(values)

    def accuracy(key: str) -> str:
        """Each repeat's value where they differ, then the repeats pooled with the interval."""
        pooled = pooled_accuracy(summaries, key)
        values = each(key)
        return pooled if len(entries) == 1 or " / " not in values else f"{values}; {pooled}"

    diff = (accuracy_difference(summaries, base, "pass@1")
            if base and label != BASELINE else "-")
    used = [e.cores_used for e in entries if e.cores_used is not None]
    return (f"| {label} | {len(entries)} | {accuracy('pass@1')} | {accuracy(f'maj@{n}')} "
            f"| {accuracy(f'pass@{n}')} "
            f"| {' / '.join(f'{w:.0f}' for w in walls)} | {_fmt(_median(walls), '.0f')} "
            f"| {speed} | {diff} "
            f"| {' / '.join(f'{u:.2f}' for u in used) or '-'} "
            f"| {pooled_rejection(summaries)} | {tok['draft_decode']:,} / "
            f"{tok['target_score']:,} / {tok['target_decode']:,} | {per_token} | {bound_text} "
            f"| {eff_text} | {engine_use(entries)} | {loads_of(root, entries)} "
            f"| {peak_rss(root, entries)} |")


def _merged_speed(groups: dict[Slice, dict[str, list[Done]]], parts: list[Slice], label: str,
                  marks: set[str]) -> str:
    """Summed slice medians of the target-only runs paired with ``label``'s runs (by boot, as
    in the per-slice rows) over the summed slice medians of those runs."""
    if label == BASELINE:
        return "1.00x"
    mine = theirs = 0.0
    pairs: list[Pair] = []
    for part in parts:
        here: list[Pair] = [(e, *speed_baseline(e, groups[part][BASELINE]))
                            for e in groups[part][label]]
        pairs += here
        paired = [(e, b) for e, b, _ in here if b is not None]
        if not paired:
            return speed_text(None, pairs, marks)
        mine += statistics.median(e.summary["wall_seconds"] for e, _ in paired)
        theirs += statistics.median(b.summary["wall_seconds"] for _, b in paired)
    return speed_text(theirs / mine if mine > 0 else None, pairs, marks)


def merged_slices(groups: dict[Slice, dict[str, list[Done]]], samples: int,
                  marks: set[str]) -> list[str]:
    """One table per dataset run in several slices: the settings run in every slice, their
    questions merged (each slice's target-only is the baseline of its own questions); wall
    time sums each slice's median, and the speedup pairs runs by boot (``speed_baseline``)."""
    lines: list[str] = []
    datasets = sorted({part.dataset for part in groups})
    for dataset in datasets:
        parts = sorted((p for p in groups if p.dataset == dataset), key=lambda p: p.offset)
        if len(parts) < 2 or any(BASELINE not in groups[p] for p in parts):
            continue
        labels = set.intersection(*(set(groups[p]) for p in parts))
        questions = sum(p.limit for p in parts)
        base = [e.summary for p in parts for e in groups[p][BASELINE]]
        lines += [f"### {dataset}, slices merged: {questions} problems "
                  f"({', '.join(p.group for p in parts)}) x N = {samples}", "",
                  "| run | runs | pass@1 [95% CI] | maj@N [95% CI] | pass@N [95% CI] "
                  "| wall s (sum of slice medians) | speedup vs target_only "
                  "| pass@1 minus target_only [95% CI] | pass@N minus target_only [95% CI] "
                  "| rejected (95% CI) vs alpha |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        order = sorted(labels, key=lambda x: (x != "atts" and not x.startswith("atts"),
                                              x == BASELINE, x))
        for label in order:
            summaries = [e.summary for p in parts for e in groups[p][label]]
            wall = sum(statistics.median(e.summary["wall_seconds"] for e in groups[p][label])
                       for p in parts)
            n = summaries[0]["n"]
            diff, any_diff = (
                (accuracy_difference(summaries, base, "pass@1"),
                 accuracy_difference(summaries, base, f"pass@{n}"))
                if label != BASELINE else ("-", "-"))
            lines.append(
                f"| {label} | {len(summaries)} | {pooled_accuracy(summaries, 'pass@1')} "
                f"| {pooled_accuracy(summaries, f'maj@{n}')} "
                f"| {pooled_accuracy(summaries, f'pass@{n}')} | {wall:.0f} "
                f"| {_merged_speed(groups, parts, label, marks)} | {diff} | {any_diff} "
                f"| {pooled_rejection(summaries)} |")
        lines.append("")
    return lines


def report(args: argparse.Namespace, todo: list[Job]) -> str:
    done = finished_runs(args)
    groups: dict[Slice, dict[str, list[Done]]] = defaultdict(lambda: defaultdict(list))
    for entry in done:
        groups[entry.slice][entry.label].append(entry)
    budgets = sorted({e.budget for e in done})
    lines = [f"Machine: {platform.machine()}, {os.cpu_count()} cores, Python "
             f"{platform.python_version()}; engine llama_cpp, draft qwen2.5-coder-0.5b, "
             f"target qwen2.5-coder-1.5b; N = {args.samples}; "
             f"written {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}.",
             f"Processors the runs recorded: {cpus_of(done)}.",
             f"Compute budgets the runs recorded: {'; '.join(budgets) or '-'}"
             + (" (NOT equal hardware: compare only rows of one budget)"
                if len(budgets) > 1 else " (every strategy on the same cores)") + ".",
             "pass@1 carries its 95% bootstrap interval over questions; the difference from "
             "target-only is paired by question (its interval resamples the questions once "
             "for both runs); repeats are pooled per question, the question stays the unit "
             "resampled; with few questions both intervals are rough.", ""]
    marks: set[str] = set()
    have = {(e.slice, e.label, e.repeat) for e in done}
    missing = [j for j in todo if (j.slice, j.label, j.repeat) not in have]
    for part, labels in groups.items():
        bases = labels.get(BASELINE, [])
        lines += [f"### {part.title} x N = {args.samples}", "",
                  "| run | reps | pass@1 [95% CI] | maj@N [95% CI] | pass@N [95% CI] "
                  "| wall s (each) "
                  "| wall s (median) | speedup vs target_only | pass@1 minus target_only [95% CI] "
                  "| cores used | rejected (95% CI) vs alpha | draft decode / "
                  "target score / target decode tokens (first rep) "
                  "| engine ms per token dd / ts / td "
                  "(each rep) | bound (overlap / serial) | efficiency "
                  "| engines busy d / t; mean decode batch d / t | mean load, host steal "
                  "| peak RSS GB |",
                  "|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|---|"]
        order = sorted(labels, key=lambda x: (x != "atts" and not x.startswith("atts"),
                                              x == BASELINE, x))
        lines += [_row(label, sorted(labels[label], key=lambda e: e.repeat), bases, args.root,
                       marks)
                  for label in order]
        lines.append("")
    lines += merged_slices(groups, args.samples, marks)
    lines += [SPEED_NOTES[mark] for mark in (UNRECORDED, OTHER_BOOT) if mark in marks]
    if marks:
        lines.append("")
    if missing:
        lines.append(f"Not run yet ({len(missing)} runs): " + ", ".join(
            f"{j.slice.group}/{j.label}/rep{j.repeat}" for j in missing) + ".")
    return "\n".join(lines) + "\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--datasets", nargs="+", default=["gsm8k:6"],
                        metavar="NAME[:LIMIT][@OFFSET]")
    parser.add_argument("--strategies", nargs="+", default=["atts", "target_only"],
                        choices=["atts", "target_only", "draft_only", "sync", "judge", "cascade",
                                 "atts_cascade"])
    parser.add_argument("--samples", type=int, default=4)
    parser.add_argument("--alphas", nargs="+", type=float, default=[RUN_DEFAULT.alpha])
    parser.add_argument("--escalate-alphas", nargs="+", type=float,
                        default=[RUN_DEFAULT.escalate_alpha],
                        help="cascade, atts_cascade: the escalate_alpha sweep")
    parser.add_argument("--calibrations", nargs="+", default=[RUN_DEFAULT.calibration],
                        choices=["question", "marginal", "adaptive"])
    parser.add_argument("--modes", nargs="+", default=[DEFAULT_MODE],
                        choices=["continue", "regenerate"])
    parser.add_argument("--strata", nargs="+", default=[RUN_DEFAULT.bank_strata],
                        choices=["none", "round"],
                        help="round: one bank per round index (with --calibrations marginal or "
                        "adaptive)")
    parser.add_argument("--scores", nargs="+", default=[RUN_DEFAULT.score], choices=list(SCORES),
                        help="atts: the nonconformity scores to sweep")
    parser.add_argument("--judge-thresholds", nargs="+", type=int, default=[7],
                        help="judge: the ratings at or above which a draft step is kept")
    parser.add_argument("--max-active", nargs="+", type=int,
                        default=[RUN_DEFAULT.max_active_samples], metavar="N",
                        help="samples in flight, swept for every strategy (each engine batches "
                        "at most this many; labels gain -mN off the default)")
    parser.add_argument("--repeats", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--cores", type=int, default=None,
                        help="compute budget of every run (default: every core)")
    parser.add_argument("--root", type=Path, default=Path("runs/bench"))
    parser.add_argument("--max-load", type=float, default=1.5)
    parser.add_argument("--wait-minutes", type=float, default=20)
    parser.add_argument("--report-only", action="store_true")
    parser.add_argument("--no-progress", action="store_true")
    parser.add_argument("--results", type=Path, default=Path("bench/results/strategies.md"))
    parser.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    parser.add_argument("--section", default="bench_strategies",
                        help="the BENCHMARKS.md section to write")
    args = parser.parse_args()
    todo = jobs(args)
    if not args.report_only:
        run_all(args, todo)
    text = report(args, todo)
    command = "python bench/bench_strategies.py " + " ".join(sys.argv[1:])
    args.results.parent.mkdir(parents=True, exist_ok=True)
    args.results.write_text(f"# Strategies benchmark\n\nCommand: `{command}`\n\n{text}")
    from atts.perf.report import replace_section

    replace_section(args.benchmarks, args.section, f"Command: `{command}`\n\n{text}")
    print(text)


if __name__ == "__main__":
    main()
