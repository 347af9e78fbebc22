"""``write_report``: everything `atts report` writes for a run and its baselines.

Into the run folder (or ``out``): ``summary.json`` (the run's ``summarize_run`` dict, plus
``baselines``: each one's accuracy, tokens, wall time and ``speedup`` = its wall / this run's
wall, and ``notes`` on what makes a comparison unfair), the PNG figures of
``atts.report.plots`` and ``report.md``.  Runs are read and graded, never generated again.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from atts.grading import Grader
from atts.report.graded_run import GradedRun, check_run_folder, load_run
from atts.report.intervals import paired_difference
from atts.report.markdown import render_markdown
from atts.report.metrics import speedup
from atts.report.summary import summarize_run
from atts.runner.machine import UNKNOWN_BOOT, boots, same_boot, same_boots

# Two runs whose shares of stolen CPU time differ by this much or more were slowed unequally by
# the host (on 2026-12-03 the share reached a third here): the notes say so beside a speedup.
STEAL_GAP_WORTH_SAYING = 0.05

REPORT = "report.md"
SUMMARY = "summary.json"
BASELINE_KEYS = ("run_dir", "label", "strategy", "dataset", "alpha", "questions", "samples",
                 "n", "errors", "no_answer", "pass@1", "rejection_rate", "tokens",
                 "engine_seconds", "timing", "wall_seconds", "wall_source", "host_steal")


@dataclass(frozen=True)
class ReportFiles:
    out_dir: Path
    markdown: Path
    summary_json: Path
    plots: dict[str, Path]  # name ("rejection", "accuracy", "latency", "tokens") -> PNG
    summary: dict[str, Any]  # the content of summary.json


def write_report(run_dir: str | Path, baselines: Sequence[str | Path] = (),
                 out: str | Path | None = None, *, regrade: bool = False,
                 grader: Grader | None = None, plots: bool = True,
                 annotate: Callable[[dict[str, Any]], dict[str, Any]] | None = None
                 ) -> ReportFiles:
    """Grade ``run_dir`` and each baseline, then write summary.json, the plots and report.md
    into ``out`` (default: ``run_dir``).  ``regrade`` ignores the grades.json caches;
    ``annotate``: keys a caller derives from the summary (``atts report --probe``: the run's
    bound from measured per-token costs, which lives in atts.perf, a layer above this one)."""
    for path in (run_dir, *baselines):
        check_run_folder(path)  # fail before any grading if one folder is wrong
    out_dir = Path(out) if out is not None else Path(run_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    own = grader is None
    active = grader if grader is not None else Grader()
    try:
        runs = [load_run(p, active, use_cache=not regrade) for p in (run_dir, *baselines)]
    finally:
        if own:
            active.close()
    summaries = [summarize_run(run) for run in runs]
    summary = dict(summaries[0])
    summary["baselines"] = [
        compare(summary, other, comparable=set(run.questions) == set(runs[0].questions)
                and other["n"] == summary["n"],
                same_boot=same_boot(runs[0].manifest, run.manifest))
        for run, other in zip(runs[1:], summaries[1:], strict=True)
    ]
    summary["notes"] = comparison_notes(list(zip(runs, summaries, strict=True)))
    if annotate is not None:
        summary.update(annotate(summary))
    written: dict[str, Path] = {}
    if plots:
        from atts.report.plots import write_plots

        written = write_plots(list(zip(runs, summaries, strict=True)), out_dir)
    summary["plots"] = {name: path.name for name, path in written.items()}
    summary_path = out_dir / SUMMARY
    summary_path.write_text(json.dumps(summary, indent=2, allow_nan=False) + "\n")
    markdown_path = out_dir / REPORT
    markdown_path.write_text(render_markdown(summary, summary["plots"]))
    return ReportFiles(out_dir, markdown_path, summary_path, written, summary)


def compare(run: Mapping[str, Any], baseline: Mapping[str, Any], *,
            comparable: bool = True, same_boot: bool | None = None) -> dict[str, Any]:
    """A baseline's entry in summary.json: its accuracy, cost and wall time; the run's
    ``speedup`` over it (baseline wall / run wall; None when a wall time is zero, when the
    baseline answered other questions or another N: then ``comparable`` is false and the notes
    say why, or when it ran on another boot: ``same_boot`` false, atts.runner.machine; None
    there means a boot was not recorded, and the notes say so); ``pass@1_difference`` (run -
    baseline, paired by question, with its 95% bootstrap interval); and ``token_ratio``
    (baseline tokens / run tokens)."""
    n = baseline["n"]
    entry = {key: baseline[key] for key in BASELINE_KEYS}
    entry[f"maj@{n}"] = baseline[f"maj@{n}"]
    entry[f"pass@{n}"] = baseline[f"pass@{n}"]
    entry["comparable"] = comparable
    entry["same_boot"] = same_boot
    entry["speedup"] = (speedup(run["wall_seconds"], baseline["wall_seconds"])
                        if comparable and same_boot is not False and run["wall_seconds"] > 0
                        and baseline["wall_seconds"] > 0 else None)
    diff = paired_difference(
        {q: v["pass@1"] for q, v in run.get("per_question", {}).items()},
        {q: v["pass@1"] for q, v in baseline.get("per_question", {}).items()},
    ) if comparable else None
    entry["pass@1_difference"] = (None if diff is None else
                                  {"estimate": diff.estimate, "ci95": [diff.low, diff.high],
                                   "questions": diff.questions})
    run_tokens, base_tokens = run["tokens"]["total"], baseline["tokens"]["total"]
    entry["token_ratio"] = base_tokens / run_tokens if run_tokens > 0 else None
    return entry


def _boot_notes(label: str, mine: frozenset[str] | None,
                theirs: frozenset[str] | None) -> list[str]:
    """Why a baseline's wall time may not be divided by this run's (atts.runner.machine)."""
    verdict = same_boots(mine, theirs)
    if verdict is None:
        return [f"{label} or this run {UNKNOWN_BOOT}: the speedup may divide two machines' "
                "wall times."]
    if verdict:
        return []
    spread = [name for name, found in (("this run", mine), (label, theirs))
              if found is not None and len(found) > 1]
    if spread:
        return [f"{' and '.join(spread)} wrote samples on more than one boot (resumed after a "
                "restart or on another machine): its wall time mixes hardware, so no speedup "
                "is given; run it again in one session."]
    return [f"{label} ran on another boot than this run (another machine, or this one "
            "restarted): its wall time belongs to other hardware, so no speedup is given; run "
            "the two in one session."]


def comparison_notes(runs: Sequence[tuple[GradedRun, Mapping[str, Any]]]) -> list[str]:
    """What makes a baseline comparison unfair: another dataset, other questions, another N.
    ``runs``: (run, its summary) pairs, the reported run first."""
    notes = []
    (first, run), others = runs[0], runs[1:]
    questions = set(first.questions)
    for graded, other in others:
        label = other["label"]
        if other["dataset"] != run["dataset"]:
            notes.append(f"{label} ran on {other['dataset']}, this run on {run['dataset']}.")
        theirs = set(graded.questions)
        if theirs != questions:
            notes.append(f"{label} answered other questions ({len(theirs & questions)} in "
                         f"common, of {len(questions)} here and {len(theirs)} there): its "
                         "accuracy and wall time are not comparable one to one.")
        if other["n"] != run["n"]:
            notes.append(f"{label} drew N = {other['n']} samples per question, this run "
                         f"N = {run['n']}.")
        notes += _boot_notes(label, boots(first.manifest), boots(graded.manifest))
        notes += _steal_notes(label, run.get("host_steal"), other.get("host_steal"))
    return notes


def _steal_notes(label: str, mine: float | None, theirs: float | None) -> list[str]:
    """A ratio of wall times also measures the host when it took unequal shares of the CPU."""
    if mine is None or theirs is None or abs(mine - theirs) < STEAL_GAP_WORTH_SAYING:
        return []
    return [f"The host took {mine:.0%} of the machine's CPU time during this run and "
            f"{theirs:.0%} during {label} (steal, /proc/stat): the speedup measures the host's "
            "other guests as well as the method; run the two side by side again."]
