"""The summary of one run: its ``summary.json`` content and the short block `atts run` prints.

``summarize_run`` adds the run's identity (strategy, dataset, alpha, models, wall time) to
``atts.report.metrics.summarize``; ``format_summary`` turns that dict into an aligned block of
about eight lines; ``print_summary(run_dir)`` grades a run folder and prints the block.
"""

from __future__ import annotations

import sys
from collections import Counter
from pathlib import Path
from typing import IO, Any

from atts.grading import Grader
from atts.report.engine_use import engine_use
from atts.report.graded_run import GradedRun, load_run
from atts.report.metrics import clopper_pearson, summarize
from atts.runner.machine import host_steal

WALL_SOURCES = {"last_session": "one session", "rows": "from samples, pauses left out"}
# From this share of stolen CPU time on, the wall line says the host slowed the run.
STEAL_WORTH_SAYING = 0.05
LABEL = 12  # width of the label column


def summarize_run(run: GradedRun) -> dict[str, Any]:
    """``metrics.summarize`` of the graded rows, plus the run's identity.

    ``alpha`` is the configured one for ATTS runs and None for the other strategies (their
    decisions do not use it).  With an alpha and scored draft steps, ``control_accuracy`` uses
    the paper's budget form with m = N samples and B = alpha x N (so ``alpha = B / m``).
    """
    config = run.config
    n = int(config.get("samples") or 0)
    alpha = run.alpha if run.strategy in ("atts", "atts_cascade") else None
    budget = alpha * n if alpha and n else None
    out: dict[str, Any] = {
        "run_dir": str(run.path),
        "label": run.label,
        "strategy": run.strategy,
        "dataset": run.dataset,
        "alpha": alpha,
        "draft": config.get("draft"),
        "target": config.get("target"),
        "engine": config.get("engine"),
        "wall_seconds": run.wall_seconds,
        "wall_source": run.wall_source,
        # The share of the CPU time the hypervisor took while the samples were written
        # (atts.runner.machine); None when not recorded.
        "host_steal": host_steal(run.manifest),
    }
    out.update(summarize(run.rows, alpha=alpha, budget=budget, m=n if budget else None,
                         vote=str(config.get("escalate_vote") or "target")))
    if run.strategy in ("cascade", "atts_cascade"):
        out["escalation"] = escalation_summary(run.escalations, config.get("escalate_alpha"))
    if out.get("control_accuracy") and out["control_accuracy"]["mean"] is None:
        del out["control_accuracy"]  # no scored draft step: nothing was controlled
    out["engine_seconds"] = engine_seconds(run.rows)
    out["engine_use"] = engine_use(run.manifest, out["tokens"], run.wall_source)
    out["error_messages"] = dict(Counter(_short(r.get("error")) for r in run.rows
                                         if r.get("status") == "error").most_common(5))
    out["grading"] = {"cached": run.cached_grades, "failures": run.grading_failures}
    return out


def escalation_summary(decisions: list[dict[str, Any]], alpha: Any) -> dict[str, Any]:
    """A cascade's question-level rate: escalated questions against escalate_alpha, with its
    Clopper-Pearson interval over the questions decided with a p-value (the first ones, on a
    cold bank, escalate without a test and are counted apart)."""
    tested = [d for d in decisions if d.get("p_value") is not None]
    escalated = sum(bool(d.get("escalated")) for d in tested)
    low, high = clopper_pearson(escalated, len(tested)) if tested else (0.0, 1.0)
    return {"alpha": alpha, "decided": len(decisions), "tested": len(tested),
            "escalated": sum(bool(d.get("escalated")) for d in decisions),
            "rate": escalated / len(tested) if tested else None, "ci95": [low, high]}


def engine_seconds(rows: list[dict[str, Any]]) -> dict[str, float]:
    """Seconds each engine worked, summed over samples (in-flight samples overlap in time)."""
    totals = {"draft_decode": 0.0, "target_score": 0.0, "target_decode": 0.0}
    for row in rows:
        seconds = row.get("seconds") or {}
        totals["draft_decode"] += float(seconds.get("draft", 0.0))
        totals["target_score"] += float(seconds.get("score", 0.0))
        totals["target_decode"] += float(seconds.get("target", 0.0))
    return totals


def format_summary(summary: dict[str, Any]) -> str:
    """The aligned text block: identity, accuracy, rejection, answers, time split, wall."""
    n = summary["n"]
    alpha = summary.get("alpha")
    lines = [
        " · ".join([
            "atts", str(summary["dataset"]),
            f"{summary['questions']} questions x {n} samples",
            f"strategy {summary['strategy']}",
            *([f"alpha {alpha:g}"] if alpha is not None else []),
        ]),
        _row("accuracy", f"pass@1 {summary['pass@1']:.3f}{_ci_text(summary, 'pass@1')}   "
                         f"maj@{n} {summary[f'maj@{n}']:.3f}{_ci_text(summary, f'maj@{n}')}   "
                         f"pass@{n} {summary[f'pass@{n}']:.3f}"),
        _row("rejection", _rejection_text(summary)),
        *([_row("escalated", _escalation_text(summary["escalation"]))]
          if "escalation" in summary else []),
        _row("answers", _answers_text(summary)),
    ]
    tokens, seconds = summary["tokens"], summary["engine_seconds"]
    kinds = ("draft_decode", "target_score", "target_decode")
    lines.append(_row("time split", "".join(f"{k.replace('_', ' '):>15}" for k in kinds)
                      + "   (summed over samples)"))
    lines.append(_row("  tokens", "".join(f"{tokens[k]:>15,}" for k in kinds)
                      + f"   total {tokens['total']:,}"))
    lines.append(_row("  seconds", "".join(f"{seconds_text(seconds[k]):>15}" for k in kinds)))
    timing = summary["timing"]
    lines.append(_row("wall", f"{seconds_text(summary['wall_seconds'])} s "
                              f"({WALL_SOURCES.get(summary['wall_source'], '?')})"
                              f" · question latency p50 {seconds_text(timing['latency_p50'])} s"
                              f"  p90 {seconds_text(timing['latency_p90'])} s"))
    lines += engine_use_lines(summary.get("engine_use"))
    steal = summary.get("host_steal")
    if steal is not None and steal >= STEAL_WORTH_SAYING:
        lines.append(_row("", f"the host took {steal:.0%} of the machine's CPU time meanwhile "
                              "(steal): these times are slower than the hardware"))
    return "\n".join(lines)


def engine_use_lines(use: dict[str, Any] | None) -> list[str]:
    """The engines' calls (atts.report.engine_use), one line per engine, when recorded."""
    if not use:
        return []
    head = (f"{'decode rows':>13}{'a call':>8}{'ms/row':>8}{'prefill rows':>14}{'prompts':>9}"
            f"{'re-read':>9}{'ms/row':>8}{'busy':>6}")
    lines = [_row("engine calls", head)]
    for role, e in use["engines"].items():
        lines.append(_row(f"  {role}", "".join([
            f"{e['decode_rows']:>13,}", figure_text(e["mean_decode_batch"], ".1f", 8),
            figure_text(e["decode_ms_per_row"], ".0f", 8), f"{e['prefill_rows']:>14,}",
            figure_text(e["prompt_rows"], ",", 9), figure_text(e["reread_rows"], ",", 9),
            figure_text(e["prefill_ms_per_row"], ".0f", 8),
            figure_text(e["busy_share"], ".2f", 6)])))
    if use.get("rows_per_drafted_token") is not None:
        lines.append(_row("", f"the target read {use['rows_per_drafted_token']:.2f} rows per "
                              "drafted token beyond the prompts (scoring needs 1)"))
    return lines


def figure_text(value: float | None, spec: str, width: int = 0) -> str:
    """``value`` formatted by ``spec``, or ``-`` when there is none, right-aligned in
    ``width`` characters."""
    return f"{'-' if value is None else format(value, spec):>{width}}"


def print_summary(run_dir: str | Path, *, file: IO[str] | None = None,
                  grader: Grader | None = None) -> None:
    """Grade the run in ``run_dir`` (a fresh ``Grader``, closed here, unless one is given) and
    print its summary block to ``file`` (stdout by default)."""
    run = load_run(run_dir, grader)
    print(format_summary(summarize_run(run)), file=file if file is not None else sys.stdout)


def seconds_text(seconds: float) -> str:
    """Seconds with three significant digits at most, never in exponent form."""
    if seconds == 0 or seconds >= 100:
        return f"{seconds:.0f}"
    return f"{seconds:.1f}" if seconds >= 1 else f"{seconds:.3f}"


def _ci_text(summary: dict[str, Any], key: str) -> str:
    """`` [low, high]``: the 95% bootstrap interval over questions (absent in old summaries)."""
    interval = summary.get(f"{key}_ci95")
    return "" if not interval else f" [{interval[0]:.2f}, {interval[1]:.2f}]"


def _rejection_text(summary: dict[str, Any]) -> str:
    overall = summary["rejection"]["overall"]
    alpha = summary.get("alpha")
    if overall is None:
        return f"none: no draft step was scored (strategy {summary['strategy']})"
    confidence = round(100 * summary["rejection"]["confidence"])
    text = (f"{overall['rate']:.3f} of {overall['steps']} draft steps ({confidence}% CI "
            f"{overall['low']:.3f}-{overall['high']:.3f})")
    if alpha is None:
        return text
    inside = summary["rejection"]["alpha_in_interval"]
    return f"{text} vs alpha {alpha:g}: {'inside' if inside else 'outside'}"


def _escalation_text(escalation: dict[str, Any]) -> str:
    text = f"{escalation['escalated']} of {escalation['decided']} questions to the target"
    if escalation["rate"] is None:
        return text
    low, high = escalation["ci95"]
    return (f"{text} · tested {escalation['tested']}: rate {escalation['rate']:.3f} (95% CI "
            f"{low:.3f}-{high:.3f}) vs escalate_alpha {escalation['alpha']:g}")


def _answers_text(summary: dict[str, Any]) -> str:
    samples = summary["samples"]
    text = (f"{samples - summary['no_answer']} of {samples} samples boxed an answer"
            f" · {summary['errors']} error{'s' if summary['errors'] != 1 else ''}")
    if summary["error_messages"]:
        text += f" (most: {next(iter(summary['error_messages']))})"
    if summary["grading"]["failures"]:
        text += f" · {len(summary['grading']['failures'])} graded wrong after a grader failure"
    return text


def _row(label: str, text: str) -> str:
    return f"{label:<{LABEL}}{text}"


def _short(message: Any, width: int = 60) -> str:
    text = " ".join(str(message or "unknown error").split())
    return text if len(text) <= width else text[: width - 1] + "…"
