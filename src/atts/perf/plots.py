"""The figure of ``atts simulate sweep``: synchronous waiting against N and rounds (matplotlib
Agg, imported only here and only when a figure is asked for)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

from atts.perf.scenarios import SweepPoint


def plot_sync_sweep(points: Sequence[SweepPoint], out: str | Path) -> Path:
    """Left: seconds a sample waits at each round's barrier against N, one line per T (atts:
    none).
    Right: question latency sync / atts against T, one line per N."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    rounds = sorted({p.rounds for p in points})
    samples = sorted({p.samples for p in points})
    figure = Figure(figsize=(10, 4), dpi=120)
    FigureCanvasAgg(figure)
    left, right = figure.subplots(1, 2)
    for t in rounds:
        line = sorted((p.samples, p.wait_per_round) for p in points if p.rounds == t)
        left.plot([n for n, _ in line], [w for _, w in line], marker="o", label=f"sync, T = {t}")
    left.plot(samples, [0] * len(samples), color="black", linestyle="--",
              label="atts (any T): no barrier")
    left.set_xscale("log", base=2)
    left.set_xlabel("samples per question N")
    left.set_ylabel("seconds a sample waits per round")
    left.set_title("Synchronous waiting grows with N")
    left.legend(fontsize=8)
    for n in samples:
        line = sorted((p.rounds, p.latency_ratio) for p in points if p.samples == n)
        right.plot([t for t, _ in line], [r for _, r in line], marker="o", label=f"N = {n}")
    right.axhline(1.0, color="black", linestyle="--", label="atts")
    right.set_xlabel("rounds T")
    right.set_ylabel("question latency, sync / atts")
    right.set_title("... and what it costs grows with rounds")
    right.legend(fontsize=8)
    figure.tight_layout()
    path = Path(out)
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path)
    return path
