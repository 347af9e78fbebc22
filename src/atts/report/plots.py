"""The PNG figures of a report, drawn with matplotlib (Agg, no pyplot, imported lazily).

Each figure compares the reported run (first, in the first colour) with its baselines:
- ``rejection.png``: realised rejection rate per round and overall, with Clopper-Pearson error
  bars, against the nominal alpha line (runs with scored draft steps only);
- ``accuracy.png``: pass@1, maj@N and pass@N against tokens processed and against wall time;
- ``latency.png``: per-question latency (first sample started to last sample finished);
- ``tokens.png``: tokens and engine seconds by kind (draft decode, target score, target decode).

A run is given as ``(run, summary)``: a ``GradedRun`` and its ``summarize_run`` dict.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from atts.report.graded_run import GradedRun
from atts.report.metrics import by_question
from atts.report.summary import seconds_text

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure

PlotRun = tuple[GradedRun, dict[str, Any]]
COLORS = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2",
          "#7f7f7f", "#bcbd22", "#17becf")
KINDS = (("draft_decode", "draft decode", "#4c72b0"),
         ("target_score", "target score (prefill)", "#dd8452"),
         ("target_decode", "target decode", "#c44e52"))
DPI = 120


def write_plots(runs: Sequence[PlotRun], out_dir: str | Path) -> dict[str, Path]:
    """Write every figure that has data into ``out_dir``; name -> path of those written."""
    out = Path(out_dir)
    written: dict[str, Path] = {}
    for name, draw in (("rejection", plot_rejection), ("accuracy", plot_accuracy),
                       ("latency", plot_latency), ("tokens", plot_tokens)):
        figure = draw(runs)
        if figure is not None:
            path = out / f"{name}.png"
            figure.savefig(path, dpi=DPI)
            written[name] = path
    return written


def plot_rejection(runs: Sequence[PlotRun]) -> Figure | None:
    """Realised rejection rate per round (and overall) with its interval; None if no run has a
    scored draft step."""
    scored = [(i, run, s) for i, (run, s) in enumerate(runs) if s["rejection"]["overall"]]
    if not scored:
        return None
    rounds = sorted({int(r) for _, _, s in scored for r in s["rejection"]["per_round"]})
    slots = [*map(str, rounds), "all"]
    figure, ax = _figure(max(7.0, 1.2 + 0.55 * len(slots)), 4.4 + 0.25 * len(scored))
    width = 0.7 / len(scored)
    top = 0.0
    for j, (i, run, s) in enumerate(scored):
        rejection = s["rejection"]
        cells = {str(r): v for r, v in rejection["per_round"].items()}
        cells["all"] = rejection["overall"]
        xs, rates, lows, highs, ns = [], [], [], [], []
        for x, slot in enumerate(slots):
            if slot in cells:
                xs.append(x + (j - (len(scored) - 1) / 2) * width)
                rates.append(cells[slot]["rate"])
                lows.append(cells[slot]["rate"] - cells[slot]["low"])
                highs.append(cells[slot]["high"] - cells[slot]["rate"])
                ns.append(cells[slot]["steps"])
        ax.errorbar(xs, rates, yerr=[lows, highs], fmt="o", color=_color(i), capsize=3,
                    label=f"{run.label}: realised, 95% CI")
        for xpos, rate, high, n in zip(xs, rates, highs, ns, strict=True):
            ax.annotate(f"n={n}", (xpos, rate + high), xytext=(0, 3), textcoords="offset points",
                        ha="center", fontsize=7, color=_color(i))
        top = max(top, *(r + h for r, h in zip(rates, highs, strict=True)))
        if s.get("alpha") is not None:
            ax.axhline(s["alpha"], color=_color(i), linestyle="--", linewidth=1,
                       label=f"{run.label}: nominal alpha = {s['alpha']:g}")
            top = max(top, s["alpha"])
    ax.axvline(len(slots) - 1.5, color="0.6", linestyle=":", linewidth=1)
    ax.set_xticks(range(len(slots)), slots)
    ax.set_xlim(-0.6, len(slots) - 0.4)
    ax.set_ylim(-0.02, min(1.08, top + 0.15))
    ax.set_xlabel("round (all: every scored draft step)")
    ax.set_ylabel("rejected fraction of scored draft steps")
    ax.set_title("Rejection rate: realised (Clopper-Pearson 95%) vs nominal alpha")
    figure.legend(*ax.get_legend_handles_labels(), loc="outside lower center", fontsize=8,
                  ncols=2 if len(scored) > 1 else 1, frameon=False)
    ax.grid(axis="y", alpha=0.3)
    return figure


def plot_accuracy(runs: Sequence[PlotRun]) -> Figure:
    """pass@1 (with its 95% bootstrap interval) / maj@N / pass@N of each run at its engine
    seconds (left: the measured time of its draft decode, target score and target decode
    calls, summed over samples; not raw tokens, since a scored token costs a fraction of a
    decoded one) and its wall time (right)."""
    from matplotlib.lines import Line2D

    figure, axes = _figure(10.0, 4.4, ncols=2)
    metrics: tuple[tuple[str, str, int, Literal["full", "none"]], ...] = (
        ("pass@1", "o", 6, "full"), ("maj@{n}", "s", 9, "none"), ("pass@{n}", "^", 12, "none"))
    for ax, key, xlabel in ((axes[0], "engine", "engine seconds (draft decode + target score "
                             "+ target decode calls, summed over samples)"),
                            (axes[1], "wall", "wall time (s)")):
        xs = []
        for i, (_, s) in enumerate(runs):
            x = sum(s["engine_seconds"].values()) if key == "engine" else s["wall_seconds"]
            xs.append(x)
            ys = [s[m.format(n=s["n"])] for m, *_ in metrics]
            ax.plot([x, x], [min(ys), max(ys)], color=_color(i), linewidth=1, alpha=0.6)
            interval = s.get("pass@1_ci95")
            if interval:  # pass@1's 95% interval over questions, as a thick bar
                ax.plot([x, x], interval, color=_color(i), linewidth=4, alpha=0.35)
            for (_, marker, size, fill), y in zip(metrics, ys, strict=True):
                ax.plot([x], [y], marker=marker, markersize=size, fillstyle=fill,
                        color=_color(i), linestyle="none")
        positive = [x for x in xs if x > 0]
        if positive and max(positive) / min(positive) > 20:
            ax.set_xscale("log")
        else:
            ax.set_xlim(0, max(xs, default=1) * 1.15 or 1)
        ax.set_ylim(-0.04, 1.06)
        ax.set_xlabel(xlabel, fontsize=9)
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("accuracy (fraction of questions)")
    axes[0].set_title("Accuracy against engine time (bar: pass@1's 95% interval)", fontsize=10)
    axes[1].set_title("Accuracy against time", fontsize=10)
    run_handles = [Line2D([], [], color=_color(i), linewidth=3, label=run.label)
                   for i, (run, _) in enumerate(runs)]
    metric_handles = [Line2D([], [], color="0.3", marker=marker, markersize=size,
                             fillstyle=fill, linestyle="none", label=m.format(n="N"))
                      for m, marker, size, fill in metrics]
    axes[1].legend(handles=run_handles + metric_handles, fontsize=8, loc="best")
    return figure


def plot_latency(runs: Sequence[PlotRun]) -> Figure:
    """Per-question latency of each run: a box (quartiles, median) over the questions' dots."""
    figure, ax = _figure(8.0, 1.6 + 0.7 * len(runs))
    data = [question_latencies(run) for run, _ in runs]
    positions = list(range(len(runs), 0, -1))  # the reported run on top
    ax.boxplot(data, positions=positions, orientation="horizontal", widths=0.5,
               showfliers=False, medianprops={"color": "black"})
    for i, (values, y) in enumerate(zip(data, positions, strict=True)):
        spread = [y + 0.18 * ((k * 0.618) % 1 - 0.5) for k in range(len(values))]
        ax.scatter(values, spread, color=_color(i), s=18, zorder=3, alpha=0.8)
    ax.set_yticks(positions, [run.label for run, _ in runs])
    ax.set_xlim(0, max((v for values in data for v in values), default=1.0) * 1.06 or 1.0)
    ax.set_xlabel("seconds from a question's first sample start to its last sample end")
    ax.set_title("Per-question latency (one dot per question)")
    ax.grid(axis="x", alpha=0.3)
    return figure


def plot_tokens(runs: Sequence[PlotRun]) -> Figure:
    """Stacked bars per run: tokens by kind (left) and engine seconds by kind (right)."""
    figure, axes = _figure(11.0, 1.9 + 0.6 * len(runs), ncols=2)
    positions = list(range(len(runs), 0, -1))
    for ax, field, title in ((axes[0], "tokens", "Tokens by kind"),
                             (axes[1], "engine_seconds", "Engine seconds by kind (summed over "
                              "samples)")):
        left = [0.0] * len(runs)
        for kind, name, color in KINDS:
            values = [float(s[field][kind]) for _, s in runs]
            ax.barh(positions, values, left=left, color=color, label=name, height=0.55)
            left = [a + b for a, b in zip(left, values, strict=True)]
        for y, total in zip(positions, left, strict=True):
            text = f"{total:,.0f}" if field == "tokens" else f"{seconds_text(total)} s"
            ax.annotate(text, (total, y), xytext=(3, 0), textcoords="offset points",
                        va="center", fontsize=8)
        ax.set_xlim(0, max(left, default=1) * 1.2 or 1)
        ax.set_xlabel("tokens" if field == "tokens" else "seconds", fontsize=9)
        ax.set_yticks(positions, [run.label for run, _ in runs])
        ax.set_title(title, fontsize=10)
        ax.grid(axis="x", alpha=0.3)
    axes[1].tick_params(labelleft=False)
    handles, labels = axes[0].get_legend_handles_labels()
    figure.legend(handles, labels, loc="outside lower center", ncols=3, fontsize=8,
                  frameon=False)
    return figure


# A point of the cost-accuracy plane: (label, cost relative to target-only, pass@1, its 95%
# interval's low and high ends).
CostPoint = tuple[str, float, float, float, float]


def plot_cascade(curve: Sequence[CostPoint], runs: Sequence[CostPoint],
                 path: str | Path, title: str) -> Path:
    """pass@1 against cost relative to target-only: the cascade's curve over escalate_alpha
    (``curve``, labels are the alphas), and measured runs (``runs``: the two single-model
    runs, ATTS) as labelled points, every point with its pass@1 interval."""
    figure, ax = _figure(7.5, 4.8)
    ordered = sorted(curve, key=lambda p: p[1])
    ax.plot([p[1] for p in ordered], [p[2] for p in ordered], color=_color(0), marker="o",
            markersize=4, label="cascade (escalate_alpha)")
    ax.fill_between([p[1] for p in ordered], [p[3] for p in ordered], [p[4] for p in ordered],
                    color=_color(0), alpha=0.12, linewidth=0)
    for label, x, y, _, _ in ordered[:: max(1, len(ordered) // 6)]:
        ax.annotate(label, (x, y), textcoords="offset points", xytext=(4, -10), fontsize=7,
                    color=_color(0))
    for i, (label, x, y, low, high) in enumerate(runs, start=1):
        ax.errorbar([x], [y], yerr=[[y - low], [high - y]], color=_color(i), marker="s",
                    markersize=7, capsize=3, linestyle="none", label=label)
    ax.axvline(1.0, color="0.5", linestyle=":", linewidth=1)
    ax.set_xlabel("cost relative to target-only (wall time; 1 = target-only)", fontsize=9)
    ax.set_ylabel("pass@1 (95% interval over questions)", fontsize=9)
    ax.set_title(title, fontsize=10)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8, loc="lower right")
    out = Path(path)
    figure.savefig(out, dpi=DPI)
    return out


def question_latencies(run: GradedRun) -> list[float]:
    """Seconds from each question's first ``started_at`` to its last ``finished_at``."""
    return [max(r["finished_at"] for r in group) - min(r["started_at"] for r in group)
            for group in by_question(run.rows).values()]


def _figure(width: float, height: float, ncols: int = 1) -> tuple[Figure, Any]:
    from matplotlib.figure import Figure

    figure = Figure(figsize=(width, height), layout="constrained")
    axes: Axes | Any = figure.subplots(ncols=ncols)
    return figure, axes


def _color(index: int) -> str:
    return COLORS[index % len(COLORS)]
