"""The realised rejection rate of replayed decisions: overall, per round, per question.

- rate and its exact 95% Clopper-Pearson interval (``atts.report.metrics.clopper_pearson``);
- the band ``[alpha - 1/(n+1), alpha]`` of a fixed bank of n scores under exchangeability
  (docs/METHOD.md section 3; with smoothed p-values the rate is alpha exactly), shown where a mode
  judges against a fixed bank;
- the spread of per-question rates, and the paper's per-question control accuracy
  ``1 - |actual - B| / B`` with B = alpha * judged steps of the question (the expected
  rejections) and actual the realised ones; it is 1 at alpha and falls below 0 past 2 alpha.
"""

from __future__ import annotations

import statistics
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from atts.config import RunConfig
from atts.conformal.strata import ROUND_BUCKETS
from atts.replay.replay import Replayed
from atts.report.metrics import clopper_pearson


@dataclass(frozen=True)
class Rate:
    judged: int
    rejected: int

    @property
    def rate(self) -> float:
        return self.rejected / self.judged

    @property
    def ci95(self) -> tuple[float, float]:
        return clopper_pearson(self.rejected, self.judged)

    def to_dict(self) -> dict[str, Any]:
        low, high = self.ci95
        return {"judged": self.judged, "rejected": self.rejected, "rate": self.rate,
                "ci95": [low, high]}


@dataclass(frozen=True)
class ReplaySummary:
    alpha: float
    calibration: str
    overall: Rate
    rounds: dict[int, Rate]  # every round index present
    question_rates: dict[str, float]
    control_accuracy: float  # mean over questions of 1 - |actual - B| / B
    band: tuple[float, float] | None  # None: no fixed bank (online or adaptive modes)
    runs: int = 1
    notes: tuple[str, ...] = ()  # what the reader must know (a run replayed without its settings)

    def buckets(self) -> dict[str, Rate]:
        """Rounds 0, 1, 2 and 3+."""
        grouped: dict[str, list[Rate]] = defaultdict(list)
        for index, rate in self.rounds.items():
            label = str(index) if index < ROUND_BUCKETS else f"{ROUND_BUCKETS}+"
            grouped[label].append(rate)
        return {label: Rate(sum(r.judged for r in rates), sum(r.rejected for r in rates))
                for label, rates in sorted(grouped.items())}

    def to_json(self) -> dict[str, Any]:
        """The ``--json`` object: alpha, calibration, judged, rejected, rate, ci95, rounds."""
        return {"alpha": self.alpha, "calibration": self.calibration,
                **self.overall.to_dict(),
                "rounds": {str(i): r.to_dict() for i, r in sorted(self.rounds.items())}}


def fixed_band(config: RunConfig, file_size: int) -> tuple[float, float] | None:
    """The band of a mode that judges every step against one fixed bank of n scores."""
    online = (config.grow_bank or config.bank_strata != "none"
              or config.calibration == "adaptive")
    if online:
        return None
    if config.pvalue == "smoothed":
        return (config.alpha, config.alpha)
    n = {"question": config.calibration_m, "marginal": config.warmup_size}.get(config.calibration,
                                                                          file_size)
    return (max(0.0, config.alpha - 1.0 / (n + 1)), config.alpha)


def summarize(
    replayed: Sequence[Replayed], config: RunConfig, *, band: tuple[float, float] | None,
    runs: int = 1,
) -> ReplaySummary:
    rounds: dict[int, list[bool]] = defaultdict(list)
    questions: dict[str, list[bool]] = defaultdict(list)
    for r in replayed:
        rounds[r.step.round].append(r.rejected)
        questions[r.step.question_id].append(r.rejected)
    alpha = config.alpha
    accuracy = [1.0 - abs(sum(v) - alpha * len(v)) / (alpha * len(v)) for v in questions.values()]
    return ReplaySummary(
        alpha=alpha, calibration=config.calibration,
        overall=Rate(len(replayed), sum(r.rejected for r in replayed)),
        rounds={i: Rate(len(v), sum(v)) for i, v in sorted(rounds.items())},
        question_rates={q: sum(v) / len(v) for q, v in questions.items()},
        control_accuracy=statistics.fmean(accuracy), band=band, runs=runs,
    )


def format_text(summary: ReplaySummary, label: str = "") -> str:
    head = (f"atts replay{' · ' + label if label else ''} · {summary.runs} run(s) · "
            f"calibration {summary.calibration} · alpha {summary.alpha:g}")
    lines = [head, f"{'':<10}{'judged':>8}{'rejected':>10}{'rate':>8}   95% CI"]

    def line(name: str, rate: Rate) -> str:
        low, high = rate.ci95
        return (f"{name:<10}{rate.judged:>8}{rate.rejected:>10}{rate.rate:>8.3f}   "
                f"{low:.3f}-{high:.3f}")

    overall = line("overall", summary.overall)
    if summary.band is not None:
        low, high = summary.band
        inside = "inside" if low <= summary.overall.rate <= high else "outside"
        overall += f"   band [{low:.3f}, {high:.3f}]: {inside}"
    lines.append(overall)
    lines.extend(line(f"round {name}", rate) for name, rate in summary.buckets().items())
    rates = sorted(summary.question_rates.values())
    spread = statistics.pstdev(rates) if len(rates) > 1 else 0.0
    lines.append(
        f"questions {len(rates)} · rate min {rates[0]:.3f} median {statistics.median(rates):.3f}"
        f" max {rates[-1]:.3f} (sd {spread:.3f}) · control accuracy "
        f"{summary.control_accuracy:.3f}"
    )
    return "\n".join(lines)
