"""The cascade's trade-off, offline and exact: escalation replayed over two recorded runs.

A cascade only chooses, per question, between outputs that a first-tier run (draft-only, ATTS,
or a cascade's own first samples) and a target-only run of the same questions and N already
recorded: a kept question answers with the first run's samples, an escalated one with the
target run's (the live cascade seeds its target samples as target-only's, so they are the same
samples).  So its accuracy at every escalate_alpha follows exactly from the two folders: the
questions are decided by the run's own ``Escalation`` (the Decider, smoothed p-values seeded
as in a run), in the order the first run finished them (its last sample's ``finished_at``).

Cost, relative to the target-only run (the speedup's reciprocal):

    cost = (W_first + W_target x share) / W_target

where W is a run's wall time (``atts report``'s) and ``share`` the escalated questions' part
of the target run's sample-seconds (the sum over its samples of finished_at - started_at):
what the target run spent on those questions, on the same batching.  ``cost_cpu`` is the same
with each run's CPU seconds (the process's, all threads), which a loaded machine stretches
less than wall time; it needs each run written in one session.  Both compare two runs only as
far as they ran on the same hardware: ``same_boot`` says whether they ran on one boot.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

from atts.config import RunConfig
from atts.pipeline.escalation import Escalation
from atts.report.graded_run import GradedRun
from atts.report.intervals import Interval, bootstrap_mean, paired_difference
from atts.report.metrics import final_samples, majority_vote
from atts.runner.machine import same_boot

__all__ = ["CascadePoint", "CascadeReplay", "cascade_replay", "tier_samples"]

Row = Mapping[str, Any]


@dataclass(frozen=True)
class CascadePoint:
    """The cascade at one escalate_alpha."""

    alpha: float
    questions: int
    escalated: int
    pass_at_1: Interval
    maj_at_n: float
    pass_at_n: float
    delta_pass_at_1: Interval  # paired, against the target run
    cost: float | None
    cost_cpu: float | None
    escalated_ids: tuple[str, ...] = ()
    per_question: dict[str, float] = field(default_factory=dict)  # pass@1 per question

    def to_json(self, target: CascadeReplay) -> dict[str, Any]:
        n = target.n
        return {
            "alpha": self.alpha, "questions": self.questions, "escalated": self.escalated,
            "escalation_rate": self.escalated / self.questions,
            "pass@1": self.pass_at_1.estimate,
            "pass@1_ci95": [self.pass_at_1.low, self.pass_at_1.high],
            f"maj@{n}": self.maj_at_n, f"pass@{n}": self.pass_at_n,
            "delta_pass@1": self.delta_pass_at_1.estimate,
            "delta_pass@1_ci95": [self.delta_pass_at_1.low, self.delta_pass_at_1.high],
            "target_pass@1": target.target_pass_at_1.estimate,
            "first_pass@1": target.first_pass_at_1.estimate,
            "cost": self.cost, "cost_cpu": self.cost_cpu, "same_boot": target.same_boot,
        }


@dataclass(frozen=True)
class CascadeReplay:
    """Both runs read for the replay, and the cascade at each alpha."""

    n: int
    questions: tuple[str, ...]  # in the order the first run finished them
    first_pass_at_1: Interval
    target_pass_at_1: Interval
    first_cost: float | None  # the first run's wall time over the target run's
    points: tuple[CascadePoint, ...]
    same_boot: bool | None


def tier_samples(run: GradedRun, name: str) -> dict[str, list[Row]]:
    """A run's first samples per question (a cascade's escalated samples left out), each
    question's sorted by sample index; a run with no finished sample is refused."""
    groups: dict[str, list[Row]] = {}
    for row in run.rows:
        if not row.get("escalated"):
            groups.setdefault(str(row["question_id"]), []).append(row)
    if not any(r.get("status") == "ok" for g in groups.values() for r in g):
        raise ValueError(f"{name} {run.path} holds no finished sample (every row is an error); "
                         "replay runs that finished")
    return {q: sorted(g, key=lambda r: int(r["sample_index"])) for q, g in groups.items()}


def _check_pair(first: dict[str, list[Row]], target: dict[str, list[Row]],
                first_run: GradedRun, target_run: GradedRun) -> int:
    only_first = sorted(set(first) - set(target))
    only_target = sorted(set(target) - set(first))
    if only_first or only_target:
        example = (only_first or only_target)[0]
        raise ValueError(
            f"{first_run.path} and {target_run.path} hold different questions: "
            f"{len(only_first)} only in the first, {len(only_target)} only in the target run "
            f"(e.g. {example}); escalation replays runs of the same questions")
    sizes = {len(g) for g in first.values()}
    target_sizes = {len(g) for g in target.values()}
    if len(sizes) > 1 or sizes != target_sizes:
        raise ValueError(
            f"{first_run.path} has {sorted(sizes)} samples per question, {target_run.path} "
            f"has {sorted(target_sizes)}; escalation replays runs of one N (a question "
            "escalates to N target samples)")
    return sizes.pop()


def cascade_replay(first_run: GradedRun, target_run: GradedRun, alphas: Sequence[float],
                   overrides: Mapping[str, Any] | None = None) -> CascadeReplay:
    """The cascade of ``first_run`` escalating to ``target_run`` at each of ``alphas``;
    ``overrides``: escalation settings (escalate_score, escalate_pvalue, escalate_levels,
    escalate_vote, seed) over the first run's."""
    first = tier_samples(first_run, "the first run")
    target = tier_samples(target_run, "the target run")
    n = _check_pair(first, target, first_run, target_run)
    order = tuple(sorted(first, key=lambda q: max(float(r["finished_at"]) for r in first[q])))
    p1_first = {q: _pass1(first[q]) for q in order}
    p1_target = {q: _pass1(target[q]) for q in order}
    share = _sample_seconds(target)
    settings = {k: v for k, v in first_run.config.items() if k.startswith("escalate_")
                or k == "seed"}
    points = []
    for alpha in alphas:
        config = RunConfig.from_mapping({**settings, **(overrides or {}),
                                         "escalate_alpha": alpha})
        escalation = Escalation(config)
        decisions = [d for q in order for d in escalation.add(
            q, [r.get("answer") if r.get("status") == "ok" else None for r in first[q]],
            str(first[q][0].get("dataset", "")))] + escalation.flush()
        escalated = tuple(d.question_id for d in decisions if d.escalated)
        chosen = set(escalated)
        # Each question as the live cascade's run folder would hold it: its first samples,
        # and the target's marked escalated where it escalated (metrics.final_samples).
        final = {q: final_samples([*({**r, "escalated": True} for r in target[q]), *first[q]]
                                  if q in chosen else first[q], config.escalate_vote)
                 for q in order}
        per_q = {q: _pass1(final[q][0]) for q in order}
        maj = [_maj(final[q][1]) for q in order]
        any_right = [float(any(r["correct"] for r in final[q][0])) for q in order]
        delta = paired_difference(per_q, p1_target)
        assert delta is not None  # the same questions on both sides
        total = sum(share.values())
        # A target run that took no time at all (a virtual clock): the escalated questions'
        # share of the questions stands in.
        part = (sum(share[q] for q in chosen) / total if total > 0
                else len(chosen) / len(order))
        points.append(CascadePoint(
            alpha, len(order), len(escalated), bootstrap_mean(list(per_q.values())),
            sum(maj) / len(maj), sum(any_right) / len(any_right), delta,
            _cost(first_run.wall_seconds, target_run.wall_seconds, part),
            _cost(_cpu(first_run), _cpu(target_run), part), escalated, per_q))
    return CascadeReplay(
        n, order, bootstrap_mean(list(p1_first.values())),
        bootstrap_mean(list(p1_target.values())),
        _cost(first_run.wall_seconds, target_run.wall_seconds, 0.0), tuple(points),
        same_boot(first_run.manifest, target_run.manifest))


def _pass1(group: Sequence[Row]) -> float:
    return sum(bool(r["correct"]) for r in group) / len(group)


def _maj(group: Sequence[Row]) -> float:
    """1.0 when the majority answer of ``group`` (ties: first seen) is right."""
    winner = majority_vote([r.get("answer") for r in group], str(group[0].get("dataset", "")))
    return float(winner is not None and bool(group[winner]["correct"]))


def _sample_seconds(groups: Mapping[str, Sequence[Row]]) -> dict[str, float]:
    return {q: sum(max(0.0, float(r["finished_at"]) - float(r["started_at"])) for r in g)
            for q, g in groups.items()}


def _cpu(run: GradedRun) -> float | None:
    """The run's CPU seconds when one session wrote all of it, else None."""
    session = run.manifest.get("last_session") or {}
    if session.get("skipped") == 0 and session.get("written") == len(run.rows):
        return float(session.get("cpu_seconds") or 0.0) or None
    return None


def _cost(first: float | None, target: float | None, share: float) -> float | None:
    if not first or not target:
        return None
    return (first + target * share) / target
