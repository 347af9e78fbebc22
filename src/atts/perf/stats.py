"""Step statistics of real runs, read from run folders, for the simulator and the benchmarks.

``load_run_stats(path)`` reads ``manifest.json`` and ``samples.jsonl`` (docs/TEAM.md) and gives
- the run's own ``Workload``: one ``SamplePlan`` per sample, round by round, exactly as the
  runner recorded it (draft tokens and decision, target tokens, cues, forced answer, which first
  steps came from the calibration pre-pass), in the runner's admission order;
- the measured wall time (``atts.report.graded_run.wall_time``) and engine seconds by kind;
- summary statistics (step lengths, rounds, rejection rate) to draw parametric workloads.

Prompts are not in the rows; their length is estimated from the question text: the Qwen chat
template with our system line and instruction takes 49 tokens, and questions run at about 3.9
characters per token (GSM8K) or 2.8 (LaTeX-heavy MATH), both measured with the Qwen tokenizer.
"""

from __future__ import annotations

import re
import statistics
from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atts.perf.workload import RoundPlan, SamplePlan, Workload

PROMPT_OVERHEAD = 49


def estimate_prompt_tokens(question: str) -> int:
    per_token = 2.8 if ("\\" in question or "$" in question) else 3.9
    return PROMPT_OVERHEAD + max(1, round(len(question) / per_token))


@dataclass(frozen=True)
class RunStats:
    path: Path
    strategy: str
    config: dict[str, Any]
    workload: Workload
    wall_seconds: float
    wall_source: str
    engine_seconds: dict[str, float]  # draft (generate), score, target (generate)
    tokens: dict[str, int]  # draft_decode, target_score, target_decode
    span: tuple[float, float] = (0.0, 0.0)  # unix time: first sample started, last finished
    # Context tokens the engines evaluated rather than read from their caches (the steps'
    # prefill_tokens); None for runs written before steps recorded it.
    prefill_tokens: int | None = None

    @property
    def label(self) -> str:
        return f"{self.path.parent.name}/{self.path.name}" if self.path.name.startswith("rep") \
            else self.path.name

    def step_summary(self) -> dict[str, float]:
        """Means and spreads of what the plans hold: the inputs of a parametric workload."""
        drafts = [r.draft_tokens for p in self.workload.plans for r in p.rounds if r.draft_tokens]
        targets = [r.target_tokens for p in self.workload.plans for r in p.rounds
                   if r.target_tokens]
        rounds = [len(p.rounds) for p in self.workload.plans]
        judged = [r.decision for p in self.workload.plans for r in p.rounds if r.decision]
        out: dict[str, float] = {"samples": len(rounds), "rounds_mean": _mean(rounds),
                                 "rounds_max": max(rounds, default=0)}
        for name, values in (("draft_step", drafts), ("target_step", targets)):
            out[f"{name}_mean"] = _mean(values)
            out[f"{name}_cv"] = (statistics.pstdev(values) / _mean(values)
                                 if len(values) > 1 and _mean(values) else 0.0)
        out["rejection"] = (sum(d != "accept" for d in judged) / len(judged)) if judged else 0.0
        return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values) if values else 0.0


def plan_from_row(row: Mapping[str, Any], prompt_tokens: int, strategy: str) -> SamplePlan:
    """One sample's rounds from its step trace."""
    rounds: dict[int, dict[str, Any]] = defaultdict(
        lambda: {"draft": 0, "decision": None, "target": 0, "cue": 0})
    forced, forced_author, calibration_first = 0, "target", False
    for step in row.get("steps") or ():
        index, tokens = int(step.get("round", 0)), int(step.get("tokens", 0))
        kind, author = step.get("kind", "step"), step.get("author")
        if kind == "forced_answer":
            forced, forced_author = max(1, tokens), str(author)
        elif kind == "wait":
            rounds[index]["cue"] += tokens
        elif author == "draft":
            rounds[index]["draft"] += tokens
            rounds[index]["decision"] = step.get("decision")
            calibration_first |= bool(step.get("calibration")) and index == 0
        else:
            rounds[index]["target"] += tokens
    plans = []
    for index in range(max(int(row.get("rounds") or 0), max(rounds, default=-1) + 1)):
        r = rounds[index]
        decision = r["decision"] if strategy in ("atts", "sync") else None
        if strategy in ("atts", "sync") and decision is None:
            decision = "accept"  # an empty draft step (the draft ended at once): not scored
        plans.append(RoundPlan(r["draft"], decision, r["target"], r["cue"]))
    return SamplePlan(str(row["question_id"]), int(row["sample_index"]), prompt_tokens,
                      tuple(plans), forced, forced_author, calibration_first)


def _questions(config: Mapping[str, Any], rows: Sequence[Mapping[str, Any]]) -> dict[str, str]:
    """Question id -> text, in the run's problem order (the runner's admission order)."""
    try:
        from atts.data import load_dataset

        problems = load_dataset(str(config["dataset"]), limit=config.get("limit"),
                                offset=int(config.get("offset") or 0),
                                ids=list(config.get("ids") or ()) or None)
        return {p.id: p.question for p in problems}
    except (KeyError, ValueError, OSError):
        # Not loadable here (a scripted test set): ids in natural order ("q2" before "q10").
        ids = {str(r["question_id"]) for r in rows}
        return dict.fromkeys(sorted(ids, key=_natural), "")


def _natural(text: str) -> list[tuple[int, int | str]]:
    return [(0, int(part)) if part.isdigit() else (1, part)
            for part in re.split(r"(\d+)", text) if part]


def load_run_stats(path: str | Path) -> RunStats:
    from atts.report.graded_run import check_run_folder, wall_time

    folder = check_run_folder(path)
    manifest = folder.read_manifest()
    rows = folder.rows()
    if not rows:
        raise ValueError(f"{folder.path} holds no finished sample yet")
    config = dict(manifest.get("config") or {})
    strategy = str(config.get("strategy") or rows[0].get("strategy"))
    questions = _questions(config, rows)
    order = {q: i for i, q in enumerate(questions)}
    # Dataset order; questions the dataset does not name (user files) after, by id.
    rows = sorted(rows, key=lambda r: (order.get(str(r["question_id"]), len(order)),
                                       str(r["question_id"]), int(r["sample_index"])))
    plans = tuple(
        plan_from_row(r, estimate_prompt_tokens(questions.get(str(r["question_id"]), "")),
                      strategy)
        for r in rows)
    workload = Workload(
        strategy, plans, max_active=int(config.get("max_active_samples") or 8),
        calibration=str(config.get("calibration") or "file"),
        calibration_m=int(config.get("calibration_m") or 4),
        warmup=int(config.get("warmup") or 8),
        min_rounds=int(config.get("min_rounds") or 0),
        draft_concurrency=int(config.get("draft_concurrency") or 2),
        target_concurrency=int(config.get("target_concurrency") or 2),
        # The embedded engine keeps one context per sample in flight (runner/build.py).
        contexts=int(config.get("max_active_samples") or 8)
        if config.get("engine") == "llama_cpp" else None,
    )
    wall, source = wall_time(manifest, rows)
    seconds = {k: sum(float((r.get("seconds") or {}).get(k, 0.0)) for r in rows)
               for k in ("draft", "score", "target")}
    tokens = {k: sum(int((r.get("tokens") or {}).get(k, 0)) for r in rows)
              for k in ("draft_decode", "target_score", "target_decode")}
    span = (min(float(r["started_at"]) for r in rows), max(float(r["finished_at"]) for r in rows))
    steps = [step for r in rows for step in r.get("steps") or ()]
    prefill = (sum(int(step["prefill_tokens"]) for step in steps)
               if steps and all("prefill_tokens" in step for step in steps) else None)
    return RunStats(folder.path, strategy, config, workload, wall, source, seconds, tokens, span,
                    prefill)


def logged_between(log: str | Path, start: float, end: float) -> list[float]:
    """The first value of every ``<unix time> <value> ...`` line of ``log`` timed between
    ``start`` and ``end`` (unix seconds); malformed lines are skipped, a missing log gives
    none.  bench/bench_strategies.py writes such logs (load average, resident memory)."""
    path = Path(log)
    if not path.is_file():
        return []
    values = []
    for line in path.read_text().splitlines():
        parts = line.split()
        try:
            when, value = float(parts[0]), float(parts[1])
        except (IndexError, ValueError):
            continue
        if start <= when <= end:
            values.append(value)
    return values


def mean_load(log: str | Path, start: float, end: float) -> float | None:
    """Mean 1-minute load average between ``start`` and ``end`` from a load log
    (``<unix time> <load1> ...`` lines); None when no sample falls inside."""
    values = logged_between(log, start, end)
    return sum(values) / len(values) if values else None


def find_runs(root: str | Path) -> list[Path]:
    """Every run folder (a folder with manifest.json and samples.jsonl) under ``root``."""
    base = Path(root)
    return sorted(p.parent for p in base.rglob("samples.jsonl")
                  if (p.parent / "manifest.json").is_file())
