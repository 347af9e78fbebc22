"""``report.md``: the summary.json content as Markdown, with the plots embedded.

``render_markdown(summary, plots)`` is a pure function of the dict ``build.write_report``
writes as ``summary.json`` (the run's ``summarize_run`` dict plus ``baselines`` and ``notes``)
and the plot file names relative to the report; it reads no file.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from atts.report.summary import WALL_SOURCES, figure_text, seconds_text

PLOT_TITLES = {
    "rejection": "Realised vs nominal rejection rate",
    "accuracy": "Accuracy against compute and time",
    "latency": "Per-question latency",
    "tokens": "Token and time attribution",
}


def render_markdown(summary: Mapping[str, Any], plots: Mapping[str, str]) -> str:
    runs = [summary, *summary.get("baselines", ())]
    out = [f"# atts report: {summary['label']}", "", _identity(summary), ""]
    out += ["## Accuracy", "", *_accuracy_table(runs), ""]
    out += [f"pass@k (unbiased estimator, {summary['questions']} questions): "
            + ", ".join(f"k={k}: {v:.3f}" for k, v in summary["pass@k"].items()), ""]
    out += _speedups(summary)
    out += ["## Rejection rate", "", *_rejection(summary), ""]
    out += _plot("rejection", plots)
    out += ["## Cost", "", *_cost_table(runs), "",
            "Engine seconds are summed over samples: samples in flight at once overlap, so "
            "their sum can exceed the wall time.", ""]
    out += _engine_table(summary.get("engine_use"))
    out += _bound(summary.get("bound"))
    out += _plot("tokens", plots) + _plot("accuracy", plots)
    out += ["## Latency", "", *_latency_table(runs), ""]
    out += _plot("latency", plots)
    out += ["## Notes", "", *(f"- {note}" for note in _notes(summary)), ""]
    return "\n".join(out)


def _identity(s: Mapping[str, Any]) -> str:
    parts = [f"`{s['run_dir']}`", str(s["dataset"]), f"{s['questions']} questions x {s['n']} "
             f"samples", f"strategy {s['strategy']}"]
    if s.get("alpha") is not None:
        parts.append(f"alpha {s['alpha']:g}")
    if s.get("draft") or s.get("target"):
        parts.append(f"draft {s.get('draft')} / target {s.get('target')}")
    if s.get("engine"):
        parts.append(f"engine {s['engine']}")
    return " · ".join(parts)


def _accuracy_table(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [_table_row(["run", "strategy", "questions x N", "pass@1", "maj@N", "pass@N",
                        "answered", "errors"]), _table_row(["---"] * 8)]
    for s in runs:
        n = s["n"]
        rows.append(_table_row([
            s["label"], s["strategy"], f"{s['questions']} x {n}", f"{s['pass@1']:.3f}",
            f"{s[f'maj@{n}']:.3f}", f"{s[f'pass@{n}']:.3f}",
            f"{s['samples'] - s['no_answer']} / {s['samples']}", str(s["errors"]),
        ]))
    return rows


def _speedups(summary: Mapping[str, Any]) -> list[str]:
    lines = []
    for b in summary.get("baselines", ()):
        if not b.get("comparable", True):
            lines.append(f"- Speedup over {b['label']}: **not given**: it answered other "
                         "questions or drew another N (see the notes), so its wall time is "
                         "not this work's.")
            continue
        if b.get("same_boot") is False:
            lines.append(f"- Speedup over {b['label']}: **not given**: it ran on another boot "
                         "of a machine (see the notes), so its wall time is not this "
                         "hardware's.")
            continue
        if b.get("speedup") is None:
            lines.append(f"- Speedup over {b['label']}: not defined (a wall time is zero).")
            continue
        unchecked = " (boots not recorded: see the notes)" if b.get("same_boot") is None else ""
        line = (f"- Speedup over {b['label']}: **{b['speedup']:.3g}x**{unchecked} (its wall "
                f"{seconds_text(b['wall_seconds'])} s / this run's "
                f"{seconds_text(summary['wall_seconds'])} s)")
        diff = b.get("pass@1_difference")
        if diff is not None:
            low, high = diff["ci95"]
            line += (f", at a pass@1 difference of {diff['estimate']:+.3f} [{low:+.2f}, "
                     f"{high:+.2f}] (95%, paired over {diff['questions']} questions"
                     + ("; too few to decide" if diff["questions"] < 30 else "") + ")")
        if b.get("token_ratio") is not None:
            line += f"; it processed {b['token_ratio']:.3g}x this run's tokens"
        lines.append(line + ".")
    return [*lines, ""] if lines else []


def _rejection(s: Mapping[str, Any]) -> list[str]:
    rejection = s["rejection"]
    overall = rejection["overall"]
    if overall is None:
        return [f"No draft step was scored (strategy {s['strategy']}): nothing to reject."]
    confidence = round(100 * rejection["confidence"])
    text = (f"Overall: **{overall['rate']:.3f}** ({overall['rejections']} of {overall['steps']} "
            f"scored draft steps went to the target), {confidence}% Clopper-Pearson interval "
            f"[{overall['low']:.3f}, {overall['high']:.3f}]")
    if s.get("alpha") is not None:
        where = "inside" if rejection["alpha_in_interval"] else "outside"
        text += f"; nominal alpha {s['alpha']:g} is {where} the interval."
    else:
        text += "."
    lines = [text, ""]
    control = s.get("control_accuracy")
    if control:
        lines += [f"Control accuracy (the paper's 1 - |actual - B| / B with m = {control['m']}, "
                  f"B = alpha x m = {control['budget']:g}), mean over questions: "
                  f"{control['mean']:.3f}.", ""]
    lines += [_table_row(["round", "scored steps", "rejected", "rate", f"{confidence}% CI"]),
              _table_row(["---"] * 5)]
    for r, v in rejection["per_round"].items():
        lines.append(_table_row([r, str(v["steps"]), str(v["rejections"]), f"{v['rate']:.3f}",
                                 f"{v['low']:.3f} - {v['high']:.3f}"]))
    return lines


def _cost_table(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [_table_row(["run", "draft decode tok", "target score tok", "target decode tok",
                        "total tok", "draft s", "score s", "target s", "wall s"]),
            _table_row(["---"] * 9)]
    for s in runs:
        t, e = s["tokens"], s["engine_seconds"]
        rows.append(_table_row([
            s["label"], f"{t['draft_decode']:,}", f"{t['target_score']:,}",
            f"{t['target_decode']:,}", f"{t['total']:,}", seconds_text(e["draft_decode"]),
            seconds_text(e["target_score"]), seconds_text(e["target_decode"]),
            seconds_text(s["wall_seconds"]),
        ]))
    return rows


def _engine_table(use: Mapping[str, Any] | None) -> list[str]:
    """The engines' calls in the run's one session (atts.report.engine_use), if recorded."""
    if not use:
        return []
    rows = [_table_row(["engine", "decode rows", "sequences a call", "ms per decode row",
                        "prefill rows", "of them prompts", "re-read", "ms per prefill row",
                        "busy share of the wall"]), _table_row(["---"] * 9)]

    for role, e in use["engines"].items():
        rows.append(_table_row([
            role, f"{e['decode_rows']:,}", figure_text(e["mean_decode_batch"], ".2f"),
            figure_text(e["decode_ms_per_row"], ".1f"), f"{e['prefill_rows']:,}",
            figure_text(e["prompt_rows"], ","), figure_text(e["reread_rows"], ","),
            figure_text(e["prefill_ms_per_row"], ".1f"), figure_text(e["busy_share"], ".2f")]))
    out = ["Engine calls (the manifest's `last_session.engine_calls`): a decode call reads "
           "every weight once, so few sequences a call cost more per row; re-read rows are "
           "context read again after its cached sequence went to another sample.", "", *rows,
           ""]
    ratio = use.get("rows_per_drafted_token")
    if ratio is not None:
        out += [f"The target read {ratio:.2f} prefill rows per drafted token beyond the "
                "prompts (scoring needs one, plus one per scored step).", ""]
    return out


def _latency_table(runs: Sequence[Mapping[str, Any]]) -> list[str]:
    rows = [_table_row(["run", "question latency p50 s", "p90 s", "samples / s"]),
            _table_row(["---"] * 4)]
    for s in runs:
        timing = s["timing"]
        rate = timing.get("samples_per_second")
        rows.append(_table_row([s["label"], seconds_text(timing["latency_p50"]),
                                seconds_text(timing["latency_p90"]),
                                _rate(rate)]))
    return rows


def _rate(rate: float | None) -> str:
    if not rate:
        return "-"
    return f"{rate:,.0f}" if rate >= 100 else f"{rate:.3g}"


def _notes(summary: Mapping[str, Any]) -> list[str]:
    notes = []
    for s in [summary, *summary.get("baselines", ())]:
        notes.append(f"Wall time of {s['label']}: {seconds_text(s['wall_seconds'])} s, "
                     f"{_wall_source(s['wall_source'])}.")
    grading = summary.get("grading") or {}
    notes.append("Grading: deterministic checker (normal forms, then math-verify); verdicts "
                 f"cached in grades.json ({grading.get('cached', 0)} rows of this run from "
                 "the cache).")
    for failure in grading.get("failures", ()):
        notes.append(f"Grader failure, graded wrong: {failure}")
    for message, count in (summary.get("error_messages") or {}).items():
        notes.append(f"{count} sample(s) failed with: {message}")
    notes += list(summary.get("notes", ()))
    return notes


def _wall_source(source: str) -> str:
    if source == "last_session":
        return "the manifest's last_session.wall_seconds (the whole run in one session)"
    return f"{WALL_SOURCES.get(source, source)} (time with at least one sample in flight)"


def _plot(name: str, plots: Mapping[str, str]) -> list[str]:
    if name not in plots:
        return []
    return [f"![{PLOT_TITLES[name]}]({plots[name]})", ""]


def _table_row(cells: Sequence[str]) -> str:
    return "| " + " | ".join(c.replace("|", "\\|") for c in cells) + " |"


def _bound(bound: Mapping[str, Any] | None) -> list[str]:
    """The run's bound at a probe's per-token costs (``atts report --probe``), if given."""
    if bound is None:
        return []
    costs = bound["seconds_per_token"]
    ratio = bound["measured_over_bound"]
    lines = [f"Bound at the per-token costs of `{bound['probe']}` (ms per token: draft decode "
             f"{costs['draft_decode'] * 1e3:.3g}, target decode {costs['target_decode'] * 1e3:.3g}"
             f", target scoring {costs['target_score'] * 1e3:.3g}; batch {bound['batch']}, "
             f"{'engines on their own devices' if bound['overlap'] else 'engines sharing cores'}"
             f"): this run's tokens need {bound['bound_seconds']:.4g} s of engine work with "
             "nothing in the way (no waits, no re-reads, full batches, prompts not counted); "
             "measured wall / bound = " + ("n/a" if ratio is None else f"{ratio:.2f}") + ".", ""]
    for entry in bound["baselines"]:
        if entry["speedup_bound"] is not None:
            measured = ("not measured" if entry["speedup"] is None
                        else f"measured {entry['speedup']:.3g}x, {entry['share_of_bound']:.2f} "
                             "of the bound")
            lines += [f"- over {entry['label']}: bound {entry['speedup_bound']:.3g}x "
                      f"({measured})"]
    return [*lines, ""]
