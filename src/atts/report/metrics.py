"""Metrics of a run, computed from samples.jsonl rows alone (docs/TEAM.md, "Run format").

Accuracy needs one extra field per row, ``correct: bool``, written by grading
(``atts.grading.grade_rows``).  Everything else reads the rows as the runner wrote them:
rejection rates from the step traces, tokens, latencies and throughput from the counters and
timestamps.  Results are frozen dataclasses with ``to_dict()`` (JSON-ready, string keys);
``summarize`` gathers them into the flat dict stored as ``summary.json``.

Conventions: a question is a ``question_id``; its samples are ordered by ``sample_index``.
Samples with ``status: "error"`` stay in every count (a failed sample is a wrong sample).
A cascade's escalated question is answered by its target samples (``escalated: true``): they
are the question's samples for pass@1 and pass@N, and its maj@N vote is theirs (``vote =
"target"``) or that of all its samples, ties going to the target's answer (``vote = "all"``).
"""

from __future__ import annotations

import math
from collections import Counter, defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

from atts.grading.normalize import normalize_answer
from atts.pipeline.trace import Step, steps_of
from atts.report.intervals import bootstrap_mean

Row = Mapping[str, Any]


def by_question(rows: Sequence[Row]) -> dict[str, list[Row]]:
    """Rows grouped by ``question_id`` (first-seen order), each group by ``sample_index``."""
    groups: dict[str, list[Row]] = defaultdict(list)
    for row in rows:
        groups[str(row["question_id"])].append(row)
    return {q: sorted(g, key=lambda r: int(r.get("sample_index", 0))) for q, g in groups.items()}


# -- accuracy ---------------------------------------------------------------------------------
def pass_at_k(n: int, c: int, k: int) -> float:
    """Unbiased pass@k of Chen et al. (2021): ``1 - C(n-c, k) / C(n, k)``.

    Computed as ``1 - prod_{i=n-c+1}^{n} (1 - k/i)``, which never forms the huge binomials.
    """
    if not 0 <= c <= n or not 1 <= k <= n:
        raise ValueError(f"need 0 <= c <= n and 1 <= k <= n, got n={n}, c={c}, k={k}")
    if n - c < k:
        return 1.0
    return 1.0 - math.prod(1.0 - k / i for i in range(n - c + 1, n + 1))


def majority_vote(answers: Sequence[str | None], dataset: str = "math") -> int | None:
    """Index of the sample whose normalised answer wins the vote, None if none answered.

    Samples without an answer do not vote.  Ties go to the answer that appeared first.
    """
    keys = [normalize_answer(a, dataset) if a is not None else None for a in answers]
    counts = Counter(k for k in keys if k)
    if not counts:
        return None
    best = max(counts.values())
    return next(i for i, k in enumerate(keys) if k and counts[k] == best)


@dataclass(frozen=True)
class QuestionAccuracy:
    """One question's rates over its samples, from which paired differences between runs of the
    same questions are computed (report/build.py, bench/bench_strategies.py)."""

    pass_at_1: float  # the fraction of its samples that are correct
    maj_at_n: float  # 1.0 if the majority answer is correct
    pass_at_n: float  # 1.0 if any sample is correct


@dataclass(frozen=True)
class Accuracy:
    """Accuracy over questions; every per-question rate is averaged with equal weight."""

    questions: int
    samples: int
    n: int  # samples per question (the largest count when they differ)
    min_n: int  # the smallest count; pass@k is given for k = 1..min_n
    pass_at_1: float  # mean over questions of the fraction of correct samples
    maj_at_n: float  # the majority answer is correct (no answer at all: wrong)
    pass_at_n: float  # at least one of the question's samples is correct (the paper's metric)
    pass_at_k: dict[int, float]
    errors: int  # samples with status "error"
    no_answer: int  # samples without an answer (errors included)
    # 95% percentile-bootstrap intervals over questions (report/intervals.py).
    pass_at_1_ci: tuple[float, float] = (0.0, 0.0)
    maj_at_n_ci: tuple[float, float] = (0.0, 0.0)
    per_question: dict[str, QuestionAccuracy] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        out = {k: v for k, v in asdict(self).items()
               if k not in ("maj_at_n", "pass_at_n", "maj_at_n_ci", "per_question")}
        out["pass@1"] = out.pop("pass_at_1")
        out["pass@1_ci95"] = list(out.pop("pass_at_1_ci"))
        out[f"maj@{self.n}_ci95"] = list(self.maj_at_n_ci)
        out["per_question"] = {q: {"pass@1": v.pass_at_1, f"maj@{self.n}": v.maj_at_n,
                                   f"pass@{self.n}": v.pass_at_n}
                               for q, v in self.per_question.items()}
        out[f"maj@{self.n}"] = self.maj_at_n
        out[f"pass@{self.n}"] = self.pass_at_n
        out["pass@k"] = {str(k): v for k, v in self.pass_at_k.items()}
        out.pop("pass_at_k")
        return out


def final_samples(group: Sequence[Row], vote: str = "target") -> tuple[list[Row], list[Row]]:
    """A question's samples that answer it and those that vote on its answer, in vote order:
    its target samples once it escalated (voting alone, or first among all its samples),
    else all of them."""
    escalated = [r for r in group if r.get("escalated")]
    if not escalated:
        return list(group), list(group)
    if vote not in ("target", "all"):
        raise ValueError(f"unknown vote {vote!r}; choose target or all")
    rest = [r for r in group if not r.get("escalated")]
    return escalated, escalated + (rest if vote == "all" else [])


def accuracy(rows: Sequence[Row], vote: str = "target") -> Accuracy:
    """pass@1, maj@N, pass@N and unbiased pass@k from graded rows (``correct`` per row); a
    cascade's escalated questions by their target samples (``final_samples``)."""
    groups = by_question(rows)
    if not groups:
        raise ValueError("no samples: accuracy needs at least one graded row")
    missing = [r.get("question_id") for r in rows if "correct" not in r]
    if missing:
        raise ValueError(f"{len(missing)} row(s) lack 'correct' (e.g. question {missing[0]!r}); "
                         "grade them first (atts.grading.grade_rows)")
    sizes = [len(final_samples(g)[0]) for g in groups.values()]
    n, min_n = max(sizes), min(sizes)
    p1, maj, pn = [], [], []
    pk: dict[int, list[float]] = {k: [] for k in range(1, min_n + 1)}
    for question, group in groups.items():
        group, voters = final_samples(group, vote)
        groups[question] = group
        flags = [bool(r["correct"]) for r in group]
        c = sum(flags)
        p1.append(c / len(flags))
        pn.append(float(c > 0))
        winner = majority_vote([r.get("answer") for r in voters],
                               str(group[0].get("dataset", "")))
        maj.append(float(winner is not None and bool(voters[winner]["correct"])))
        for k in pk:
            pk[k].append(pass_at_k(len(flags), c, k))
    return Accuracy(
        questions=len(groups),
        samples=sum(len(g) for g in groups.values()),
        n=n,
        min_n=min_n,
        pass_at_1=_mean(p1),
        maj_at_n=_mean(maj),
        pass_at_n=_mean(pn),
        pass_at_k={k: _mean(v) for k, v in pk.items()},
        errors=sum(r.get("status") == "error" for g in groups.values() for r in g),
        no_answer=sum(r.get("answer") is None for g in groups.values() for r in g),
        pass_at_1_ci=_ci(p1),
        maj_at_n_ci=_ci(maj),
        per_question={str(q): QuestionAccuracy(a, b, c)
                      for q, a, b, c in zip(groups, p1, maj, pn, strict=True)},
    )


def _ci(values: Sequence[float]) -> tuple[float, float]:
    interval = bootstrap_mean(values)
    return (interval.low, interval.high)


# -- rejection rate and its Clopper-Pearson interval ------------------------------------------
def _betainc(a: float, b: float, x: float) -> float:
    """Regularised incomplete beta I_x(a, b), by its continued fraction (modified Lentz)."""
    if x <= 0.0:
        return 0.0
    if x >= 1.0:
        return 1.0
    if x > (a + 1.0) / (a + b + 2.0):
        return 1.0 - _betainc(b, a, 1.0 - x)  # the fraction converges fast only below the mean
    log_front = (math.lgamma(a + b) - math.lgamma(a) - math.lgamma(b)
                 + a * math.log(x) + b * math.log1p(-x))
    tiny = 1e-300
    c, d = 1.0, 1.0 - (a + b) * x / (a + 1.0)
    d = 1.0 / (d if abs(d) > tiny else tiny)
    h = d
    for m in range(1, 500):
        for num in (m * (b - m) * x / ((a + 2 * m - 1) * (a + 2 * m)),
                    -(a + m) * (a + b + m) * x / ((a + 2 * m) * (a + 2 * m + 1))):
            d = 1.0 + num * d
            d = 1.0 / (d if abs(d) > tiny else tiny)
            c = 1.0 + num / c
            c = c if abs(c) > tiny else tiny
            h *= d * c
        if abs(d * c - 1.0) < 1e-15:
            break
    return math.exp(log_front) * h / a


def beta_ppf(q: float, a: float, b: float) -> float:
    """The q-quantile of Beta(a, b), by bisection on ``_betainc`` (monotone in x)."""
    if not 0.0 <= q <= 1.0 or a <= 0 or b <= 0:
        raise ValueError(f"need 0 <= q <= 1, a > 0, b > 0; got q={q}, a={a}, b={b}")
    lo, hi = 0.0, 1.0
    for _ in range(100):  # 2**-100: far below double precision
        mid = 0.5 * (lo + hi)
        if _betainc(a, b, mid) < q:
            lo = mid
        else:
            hi = mid
    return 0.5 * (lo + hi)


def clopper_pearson(x: int, n: int, confidence: float = 0.95) -> tuple[float, float]:
    """Exact two-sided binomial interval for x successes in n trials (Clopper-Pearson 1934)."""
    if not 0 <= x <= n or n < 1 or not 0 < confidence < 1:
        raise ValueError(f"need 0 <= x <= n, n >= 1, 0 < confidence < 1; got {x}, {n}, "
                         f"{confidence}")
    tail = (1.0 - confidence) / 2.0
    low = 0.0 if x == 0 else beta_ppf(tail, x, n - x + 1)
    high = 1.0 if x == n else beta_ppf(1.0 - tail, x + 1, n - x)
    return low, high


@dataclass(frozen=True)
class RateInterval:
    rejections: int
    steps: int  # scored draft steps
    rate: float
    low: float
    high: float


@dataclass(frozen=True)
class RejectionStats:
    """Realised rejection rate, overall and per round, against the nominal ``alpha``.

    A rejection is a scored draft step (``author == "draft"``, ``decision`` set) whose decision
    is "continue" or "regenerate"; the rate is over all scored draft steps.
    """

    alpha: float | None
    confidence: float
    overall: RateInterval | None  # None: no draft step was scored (e.g. target-only runs)
    per_round: dict[int, RateInterval]

    @property
    def alpha_in_interval(self) -> bool | None:
        if self.alpha is None or self.overall is None:
            return None
        return self.overall.low <= self.alpha <= self.overall.high

    def to_dict(self) -> dict[str, Any]:
        return {
            "alpha": self.alpha,
            "confidence": self.confidence,
            "overall": asdict(self.overall) if self.overall else None,
            "alpha_in_interval": self.alpha_in_interval,
            "per_round": {str(r): asdict(v) for r, v in sorted(self.per_round.items())},
        }


def _scored_draft_steps(row: Row) -> list[Step]:
    return [s for s in steps_of(row) if s.judged]


def _interval(rejections: int, steps: int, confidence: float) -> RateInterval:
    low, high = clopper_pearson(rejections, steps, confidence)
    return RateInterval(rejections, steps, rejections / steps, low, high)


def rejection_stats(rows: Sequence[Row], alpha: float | None = None,
                    confidence: float = 0.95) -> RejectionStats:
    """Rejection rate with Clopper-Pearson intervals, overall and per ``round``."""
    counts: dict[int, list[int]] = defaultdict(lambda: [0, 0])
    for row in rows:
        for step in _scored_draft_steps(row):
            tally = counts[step.round]
            tally[0] += step.rejected
            tally[1] += 1
    per_round = {r: _interval(x, n, confidence) for r, (x, n) in sorted(counts.items())}
    x_all, n_all = sum(x for x, _ in counts.values()), sum(n for _, n in counts.values())
    overall = _interval(x_all, n_all, confidence) if n_all else None
    return RejectionStats(alpha, confidence, overall, per_round)


def control_accuracy(rows: Sequence[Row], budget: float, m: int) -> dict[str, float]:
    """The paper's per-question control accuracy ``1 - |actual - B| / B``.

    ``actual`` for a question = ``m`` x (its rejected scored draft steps / its scored draft
    steps): the rejections per ``m`` steps that the budget ``B`` (with ``alpha = B / m``)
    aims at.  Not clipped: it falls below 0 when actual > 2B.  Questions without a scored draft
    step are left out.
    """
    if budget <= 0 or m < 1:
        raise ValueError(f"need budget > 0 and m >= 1, got budget={budget}, m={m}")
    out = {}
    for qid, group in by_question(rows).items():
        steps = [s for row in group for s in _scored_draft_steps(row)]
        if steps:
            actual = m * sum(s.rejected for s in steps) / len(steps)
            out[qid] = 1.0 - abs(actual - budget) / budget
    return out


# -- cost: tokens, time, throughput -----------------------------------------------------------
TOKEN_KINDS = ("draft_decode", "target_score", "target_decode")


def token_totals(rows: Sequence[Row]) -> dict[str, int]:
    """Tokens by kind summed over samples, plus ``decode`` (draft + target) and ``total``."""
    totals = dict.fromkeys(TOKEN_KINDS, 0)
    for row in rows:
        for kind in TOKEN_KINDS:
            totals[kind] += int((row.get("tokens") or {}).get(kind, 0))
    totals["decode"] = totals["draft_decode"] + totals["target_decode"]
    totals["total"] = totals["decode"] + totals["target_score"]
    return totals


def percentile(values: Sequence[float], q: float) -> float:
    """The q-th percentile (0-100), linear interpolation between order statistics."""
    if not values:
        raise ValueError("percentile of no values")
    ordered = sorted(values)
    pos = (len(ordered) - 1) * q / 100.0
    lo = math.floor(pos)
    hi = min(lo + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (pos - lo)


@dataclass(frozen=True)
class Timing:
    """Wall time = last ``finished_at`` - first ``started_at`` over all samples; a question's
    latency = last ``finished_at`` - first ``started_at`` over its samples."""

    wall_seconds: float
    latency_p50: float
    latency_p90: float
    samples_per_second: float | None  # None when the wall time is zero
    decode_tokens_per_second: float | None  # draft + target decode tokens (scoring is prefill)

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def timing(rows: Sequence[Row]) -> Timing:
    if not rows:
        raise ValueError("no samples: timing needs at least one row")
    wall = max(r["finished_at"] for r in rows) - min(r["started_at"] for r in rows)
    latencies = [max(r["finished_at"] for r in g) - min(r["started_at"] for r in g)
                 for g in by_question(rows).values()]
    return Timing(
        wall_seconds=wall,
        latency_p50=percentile(latencies, 50),
        latency_p90=percentile(latencies, 90),
        samples_per_second=len(rows) / wall if wall > 0 else None,
        decode_tokens_per_second=token_totals(rows)["decode"] / wall if wall > 0 else None,
    )


def speedup(run_wall: float, baseline_wall: float) -> float:
    """How many times faster the run is than the baseline: baseline wall / run wall."""
    if run_wall <= 0 or baseline_wall <= 0:
        raise ValueError(f"wall times must be > 0, got run={run_wall}, baseline={baseline_wall}")
    return baseline_wall / run_wall


def summarize(rows: Sequence[Row], *, alpha: float | None = None, budget: float | None = None,
              m: int | None = None, confidence: float = 0.95,
              vote: str = "target") -> dict[str, Any]:
    """The content of ``summary.json``: accuracy, rejection, control, tokens and timing.

    Holds at least ``pass@1``, ``maj@N`` (N substituted) and ``rejection_rate`` (None when no
    draft step was scored).  ``budget`` and ``m`` together add ``control_accuracy``.
    """
    acc = accuracy(rows, vote)
    rej = rejection_stats(rows, alpha, confidence)
    out: dict[str, Any] = acc.to_dict()
    out["rejection_rate"] = rej.overall.rate if rej.overall else None
    out["rejection"] = rej.to_dict()
    if budget is not None and m is not None:
        per_q = control_accuracy(rows, budget, m)
        out["control_accuracy"] = {"budget": budget, "m": m,
                                   "mean": _mean(list(per_q.values())) if per_q else None,
                                   "per_question": per_q}
    out["tokens"] = token_totals(rows)
    out["timing"] = timing(rows).to_dict()
    return out


def _mean(values: Sequence[float]) -> float:
    return sum(values) / len(values)
