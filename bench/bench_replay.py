"""Rate control by replay: every calibration mode over recorded and synthetic step streams.

Replays (``atts.replay``) the decision layer of each mode, at alpha 0.1, 0.25 and 0.4, over

- ``runs/bench/gsm8k-6q-n4/atts-*``: our recorded runs of the embedded pair (each run on its
  own banks, decisions pooled; 6 questions x 4 samples, about 125 judged steps a run);
- synthetic streams of 100 questions x 16 samples x 4-12 rounds (about 12,000 steps), log
  perplexity ~ N(mu, 0.3) with a depth drift (round 1 +0.6, rounds 2+ -0.4), question
  effects (sd 0.3), a dataset shift (the last 50 questions +0.5), and ties (scores rounded
  to 0.1), admitted 16 samples at a time in question order, as the runner does.

Writes ``bench/results/replay.md``: per mode the realised rate overall and per round bucket,
and the worst bucket's distance from alpha.  Usage: ``python bench/bench_replay.py``.
"""

from __future__ import annotations

import argparse
import random
from collections.abc import Callable
from pathlib import Path
from typing import Any

from atts.conformal.pvalue import CalibrationError
from atts.replay import RecordedRun, StreamStep, replay_config, replay_run, summarize
from atts.replay.table import ReplaySummary

ROOT = Path(__file__).resolve().parents[1]
ALPHAS = (0.1, 0.25, 0.4)
MODES: dict[str, dict[str, Any]] = {
    "question m=4": {"calibration": "question", "calibration_m": 4},
    "question m=16": {"calibration": "question", "calibration_m": 16},
    "marginal warm-up 64": {"calibration": "marginal", "warmup": 64},
    "marginal + round strata": {"calibration": "marginal", "warmup": 64, "strata": "round"},
    "adaptive g=0.01": {"calibration": "adaptive", "warmup": 64, "adaptive_gamma": 0.01},
    "adaptive g=0.02": {"calibration": "adaptive", "warmup": 64, "adaptive_gamma": 0.02},
    "adaptive g=0.05": {"calibration": "adaptive", "warmup": 64, "adaptive_gamma": 0.05},
    "adaptive g=0.02 + round strata": {"calibration": "adaptive", "warmup": 64,
                                       "adaptive_gamma": 0.02, "strata": "round"},
    "adaptive g=0.05 + round strata": {"calibration": "adaptive", "warmup": 64,
                                       "adaptive_gamma": 0.05, "strata": "round"},
    "adaptive g=0.02 + smoothed": {"calibration": "adaptive", "warmup": 64,
                                   "adaptive_gamma": 0.02, "pvalue": "smoothed"},
}
SMALL_RUN = {"warmup": 12}  # 24 samples a run: a warm-up of 64 would not fit


def synthetic(kind: str, seed: int = 0) -> RecordedRun:
    """A step stream with the named effects (see the module docstring)."""
    rng = random.Random(seed)
    steps: list[StreamStep] = []
    samples: list[tuple[str, int]] = []
    questions, per_question, active = 100, 16, 16
    for q in range(questions):
        mu_q = rng.gauss(0.0, 0.3) if kind in ("questions", "all") else 0.0
        shift = 0.5 if kind in ("shift", "all") and q >= questions // 2 else 0.0
        for s in range(per_question):
            index = q * per_question + s
            start = (index // active) * 12.0 + rng.random()
            samples.append((f"q{q}", s))
            for r in range(rng.randint(4, 12)):
                drift = 0.6 if r == 1 else (-0.4 if r >= 2 else 0.0)
                log_ppl = 0.5 + mu_q + shift + drift + rng.gauss(0.0, 0.3)
                score = 2.718281828 ** log_ppl
                if kind in ("ties", "all"):
                    score = round(score, 1)
                at = start + r * 1.0 + rng.random() * 0.5
                steps.append(StreamStep(f"q{q}", s, r, score, at, r == 0))
    steps.sort(key=lambda step: step.at)
    return RecordedRun(Path(f"synthetic-{kind}"), {}, tuple(samples), tuple(steps))


def recorded_runs() -> list[Path]:
    base = ROOT / "runs" / "bench" / "gsm8k-6q-n4"
    return sorted(p for p in base.glob("atts-*/rep*") if (p / "samples.jsonl").is_file())


def chained(runs: list[RecordedRun]) -> RecordedRun:
    """The runs one after another as one long stream (a deployment that keeps its banks and
    levels across runs); question ids are prefixed with the run's index."""
    steps: list[StreamStep] = []
    samples: list[tuple[str, int]] = []
    for i, run in enumerate(runs):
        origin = run.steps[0].at - i * 1e6
        samples += [(f"{i}:{q}", s) for q, s in run.samples]
        steps += [StreamStep(f"{i}:{st.question_id}", st.sample_index, st.round, st.score,
                             st.at - origin, st.first) for st in run.steps]
    return RecordedRun(Path("chained"), {}, tuple(samples), tuple(steps))


def replay_mode(
    runs: list[RecordedRun], settings: dict[str, Any], alpha: float
) -> ReplaySummary | str:
    decided = []
    config = None
    for run in runs:
        try:  # a bank too small for alpha: the config or the judge refuses
            config = replay_config(run, {**settings, "alpha": alpha})
            decided.extend(replay_run(run, config))
        except (CalibrationError, ValueError):
            return "refused"
    assert config is not None
    return summarize(decided, config, band=None, runs=len(runs))


BASE = {"strata": "none", "alpha_discard": 0.0, "pvalue": "deterministic", "grow_bank": False}


def worst_bucket(summary: ReplaySummary) -> float:
    return max(abs(rate.rate - summary.alpha) for rate in summary.buckets().values())


def table(title: str, runs: list[RecordedRun], adjust: Callable[[dict[str, Any]], dict]) -> str:
    lines = [f"### {title}", "",
             "| mode | alpha | judged | overall | round 0 | round 1 | round 2 | round 3+ "
             "| worst round gap | control acc. |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for name, settings in MODES.items():
        for alpha in ALPHAS:
            summary = replay_mode(runs, {**BASE, **adjust(settings)}, alpha)
            if isinstance(summary, str):
                lines.append(f"| {name} | {alpha} | | {summary} | | | | | | |")
                continue
            buckets = summary.buckets()
            cells = [f"{buckets[b].rate:.3f}" if b in buckets else "" for b in
                     ("0", "1", "2", "3+")]
            lines.append(
                f"| {name} | {alpha} | {summary.overall.judged} | {summary.overall.rate:.3f} | "
                + " | ".join(cells)
                + f" | {worst_bucket(summary):.3f} | {summary.control_accuracy:.3f} |"
            )
    return "\n".join(lines)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", default=str(ROOT / "bench" / "results" / "replay.md"))
    args = parser.parse_args()
    from atts.replay import read_run

    recorded = [read_run(p) for p in recorded_runs()]
    sections = ["# Rate control by replay", "",
                "Generated by `python bench/bench_replay.py`; rates are realised rejection "
                "rates of the replayed decisions (the trajectories are the recorded ones).", "",
                "Worst round gap: the largest |rate - alpha| over round buckets 0, 1, 2, 3+.",
                ""]

    def small(settings: dict[str, Any]) -> dict[str, Any]:
        return {**settings, **(SMALL_RUN if "warmup" in settings else {})}

    sections.append(table(f"Recorded runs: runs/bench/gsm8k-6q-n4, {len(recorded)} atts runs "
                          "(warm-up 12), each on its own banks and levels", recorded, small))
    sections += ["", table("Recorded runs chained: the same steps as one stream (banks and "
                           "levels carried across runs, warm-up 12)", [chained(recorded)], small)]
    for kind in ("drift", "questions", "shift", "ties", "all"):
        sections += ["", table(f"Synthetic: {kind}", [synthetic(kind)], lambda s: s)]
    text = "\n".join(sections) + "\n"
    Path(args.out).write_text(text)
    print(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
