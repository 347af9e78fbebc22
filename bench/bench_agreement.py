"""What sees wrong reasoning, and the cascade it makes possible (issue 28; BENCHMARKS section 8).

Part 1, the signal.  On our recorded GSM8K runs (runs/bench/equal, N = 4):
- the target's step score: a sample's highest judged step score against the sample being
  wrong, across all samples and within questions (pairs of a wrong and a right sample of the
  same question), for every ATTS run; and a question's mean round-0 score against the
  question being one the draft fails (draft-only majority wrong) or one where the target beats
  the draft (target-only pass@1 above draft-only's);
- agreement: the disagreement and entropy of a question's draft-only answers
  (atts.grading.agreement) against the same two question labels.
AUROC = P(score of a positive > score of a negative), ties counted half (Mann-Whitney).

Part 2, the trade-off.  The cascade of each draft-only run escalating to the target-only run of
the same questions (atts.replay.escalation, exact), at escalate_alpha 0.05 ... 0.95, for both
question scores and both votes.  The smoothed p-value draws one uniform per question from the
run seed, so one seed is one possible run: every figure here is the mean over SEEDS run seeds
(the expected cascade), and the per-question pass@1 that the paired intervals resample is that
mean too.  Slices are replayed each on its own bank (as separate runs) and pooled: pass@1 over
their questions, cost = their summed wall time over the target runs' summed wall time.

The setting is chosen on the tuning questions (GSM8K 0-39) only: the cheapest (score, vote,
alpha) whose paired pass@1 interval against target-only covers 0; it is then confirmed on the
held-out questions (GSM8K 40-79), which chose nothing.

    .venv/bin/python bench/bench_agreement.py    # writes bench/results/agreement.md + PNGs
"""

from __future__ import annotations

import argparse
import statistics
import sys
from collections import defaultdict
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from atts.grading import Grader
from atts.grading.agreement import cluster_answers, question_score
from atts.replay.certify import certify
from atts.replay.escalation import cascade_replay, tier_samples
from atts.report.graded_run import GradedRun, load_run
from atts.report.intervals import bootstrap_mean, paired_difference
from atts.report.plots import plot_cascade

ROOT = Path(__file__).resolve().parents[1]
EQUAL = ROOT / "runs" / "bench" / "equal"
ALPHAS = tuple(round(0.05 * i, 2) for i in range(1, 20))
SEEDS = 20
# (slice folder, draft-only run, target-only run): the target run of the same day as the
# draft run, so their wall times compare one machine's speed.
TUNING = (("gsm8k-20q-n4", "draft_only/rep0", "target_only/rep0"),
          ("gsm8k-20q-from20-n4", "draft_only/rep0", "target_only/rep1"))
HELDOUT = (("gsm8k-40q-from40-n4", "draft_only/rep0", "target_only/rep0"),)
ATTS_RUNS = ("atts-a0.25-adaptive-round-tail_mean-regenerate/rep0",
             "atts-a0.5-adaptive-round-tail_mean-regenerate/rep0",
             "atts-a0.25-adaptive-round-regenerate/rep0")


def auroc(positives: Sequence[float], negatives: Sequence[float]) -> float | None:
    """P(a positive scores above a negative), ties half; None without both kinds."""
    if not positives or not negatives:
        return None
    wins = sum((p > n) + 0.5 * (p == n) for p in positives for n in negatives)
    return wins / (len(positives) * len(negatives))


def within_auroc(groups: dict[str, list[tuple[float, bool]]]) -> tuple[float | None, int]:
    """AUROC over the pairs (wrong, right) of the same question, and the number of pairs."""
    wins = pairs = 0.0
    for items in groups.values():
        wrong = [s for s, ok in items if not ok]
        right = [s for s, ok in items if ok]
        for w in wrong:
            for r in right:
                wins += (w > r) + 0.5 * (w == r)
                pairs += 1
    return (wins / pairs if pairs else None), int(pairs)


def complete(path: Path) -> bool:
    """Whether the run folder holds every sample its manifest asks for."""
    from atts.runner.run_folder import RunFolder

    folder = RunFolder(path)
    if not folder.manifest_path.is_file():
        return False
    manifest = folder.read_manifest()
    return len(folder.rows()) >= int(manifest["problems"]) * int(manifest["config"]["samples"])


def fmt(value: float | None) -> str:
    return "-" if value is None else f"{value:.2f}"


# -- part 1 -----------------------------------------------------------------------------------
def question_labels(draft: GradedRun, target: GradedRun) -> dict[str, tuple[bool, bool]]:
    """question -> (the draft fails it: majority wrong, the target beats the draft)."""
    from atts.report.metrics import accuracy

    d, t = accuracy(draft.rows).per_question, accuracy(target.rows).per_question
    return {q: (d[q].maj_at_n == 0.0, t[q].pass_at_1 > d[q].pass_at_1) for q in d}


def step_score_rows(grader: Grader, slices: Sequence[tuple[str, str, str]]) -> list[str]:
    lines = ["| run | samples | AUROC, sample max score vs wrong (all) | within questions "
             "(pairs) | question mean round-0 score vs draft fails | vs target beats draft |",
             "|---|---:|---:|---:|---:|---:|"]
    for atts in ATTS_RUNS:
        samples: list[tuple[float, bool]] = []
        groups: dict[str, list[tuple[float, bool]]] = defaultdict(list)
        firsts: dict[str, list[float]] = defaultdict(list)
        labels: dict[str, tuple[bool, bool]] = {}
        found = False
        for folder, draft, target in slices:
            path = EQUAL / folder / atts
            if not (path / "samples.jsonl").is_file():
                continue
            found = True
            run = load_run(path, grader)
            labels.update(question_labels(load_run(EQUAL / folder / draft, grader),
                                          load_run(EQUAL / folder / target, grader)))
            for row in run.rows:
                scores = [s["score"] for s in row["steps"] if s["author"] == "draft"
                          and s.get("decision") is not None and s["score"] is not None]
                round0 = [s["score"] for s in row["steps"] if s["author"] == "draft"
                          and s["round"] == 0 and s["score"] is not None]
                if scores:
                    item = (max(scores), bool(row["correct"]))
                    samples.append(item)
                    groups[str(row["question_id"])].append(item)
                firsts[str(row["question_id"])].extend(round0)
        if not found:
            continue
        wrong = [s for s, ok in samples if not ok]
        right = [s for s, ok in samples if ok]
        within, pairs = within_auroc(groups)
        means = {q: statistics.fmean(v) for q, v in firsts.items() if v}
        fails = auroc([means[q] for q in means if labels[q][0]],
                      [means[q] for q in means if not labels[q][0]])
        beats = auroc([means[q] for q in means if labels[q][1]],
                      [means[q] for q in means if not labels[q][1]])
        lines.append(f"| {atts.split('/')[0]} | {len(samples)} | {fmt(auroc(wrong, right))} | "
                     f"{fmt(within)} ({pairs}) | {fmt(fails)} | {fmt(beats)} |")
    return lines


def agreement_rows(grader: Grader, slices: Sequence[tuple[str, str, str]],
                   name: str) -> list[str]:
    lines = []
    for score in ("disagreement", "entropy"):
        values: dict[str, float] = {}
        labels: dict[str, tuple[bool, bool]] = {}
        for folder, draft, target in slices:
            d = load_run(EQUAL / folder / draft, grader)
            labels.update(question_labels(d, load_run(EQUAL / folder / target, grader)))
            for q, group in tier_samples(d, "draft").items():
                vote = cluster_answers([r.get("answer") for r in group], "gsm8k")
                values[q] = question_score(score, vote)
        fails = auroc([values[q] for q in values if labels[q][0]],
                      [values[q] for q in values if not labels[q][0]])
        beats = auroc([values[q] for q in values if labels[q][1]],
                      [values[q] for q in values if not labels[q][1]])
        lines.append(f"| {name} | draft-only answers, {score} | {len(values)} | "
                     f"{fmt(fails)} | {fmt(beats)} |")
    return lines


# -- part 2 -----------------------------------------------------------------------------------
@dataclass(frozen=True)
class Pooled:
    """One setting over the pooled slices, averaged over seeds."""

    score: str
    vote: str
    alpha: float
    questions: int
    escalated: float  # mean escalated questions
    pass_at_1: float
    delta: tuple[float, float, float]  # paired against target-only: estimate, low, high
    maj: float
    cost: float
    cost_cpu: float | None
    per_question: dict[str, float]


def pooled_curve(grader: Grader, slices: Sequence[tuple[str, str, str]], score: str,
                 vote: str) -> list[Pooled]:
    """Every alpha's pooled cascade."""
    runs = [(load_run(EQUAL / f / d, grader), load_run(EQUAL / f / t, grader))
            for f, d, t in slices]
    target_q = target_q_all(grader, slices)
    target_wall = sum(t.wall_seconds for _, t in runs)
    cpu_t = [t.manifest.get("last_session", {}).get("cpu_seconds") for _, t in runs]
    out = []
    for alpha in ALPHAS:
        per_q: dict[str, list[float]] = defaultdict(list)
        escalated, maj, cost, cost_cpu = [], [], [], []
        for seed in range(SEEDS):
            esc = majs = 0.0
            spent = spent_cpu = 0.0
            cpu_ok = True
            for (first, target), cpu_target in zip(runs, cpu_t, strict=True):
                replay = cascade_replay(first, target, [alpha], {
                    "escalate_score": score, "escalate_vote": vote, "seed": seed})
                (point,) = replay.points
                for q, v in point.per_question.items():
                    per_q[q].append(v)
                esc += point.escalated
                majs += point.maj_at_n * point.questions
                spent += (point.cost or 0.0) * target.wall_seconds
                if point.cost_cpu is None or not cpu_target:
                    cpu_ok = False
                else:
                    spent_cpu += point.cost_cpu * cpu_target
            escalated.append(esc)
            maj.append(majs / len(target_q))
            cost.append(spent / target_wall)
            if cpu_ok:
                cost_cpu.append(spent_cpu / sum(float(c) for c in cpu_t if c))
        means = {q: statistics.fmean(v) for q, v in per_q.items()}
        delta = paired_difference(means, target_q)
        assert delta is not None
        out.append(Pooled(score, vote, alpha, len(means), statistics.fmean(escalated),
                          statistics.fmean(means.values()), (delta.estimate, delta.low,
                                                             delta.high),
                          statistics.fmean(maj), statistics.fmean(cost),
                          statistics.fmean(cost_cpu) if cost_cpu else None, means))
    return out


def choose(curves: list[Pooled]) -> Pooled | None:
    """The cheapest setting whose paired pass@1 interval against target-only covers 0."""
    ok = [p for p in curves if p.delta[1] <= 0.0 <= p.delta[2]]
    return min(ok, key=lambda p: (p.cost, -p.pass_at_1)) if ok else None


def curve_table(curves: list[Pooled], n: int) -> list[str]:
    lines = ["| score | vote | alpha | escalated | pass@1 | vs target-only (paired) | "
             f"maj@{n} | cost (wall) | cost (CPU) |",
             "|---|---|---:|---:|---:|---:|---:|---:|---:|"]
    for p in curves:
        lines.append(f"| {p.score} | {p.vote} | {p.alpha:g} | {p.escalated:.1f} of "
                     f"{p.questions} | {p.pass_at_1:.3f} | {p.delta[0]:+.3f} "
                     f"[{p.delta[1]:+.3f}, {p.delta[2]:+.3f}] | {p.maj:.3f} | {p.cost:.2f} | "
                     f"{fmt(p.cost_cpu)} |")
    return lines


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--results", type=Path, default=ROOT / "bench/results/agreement.md")
    parser.add_argument("--benchmarks", type=Path, default=ROOT / "BENCHMARKS.md")
    parser.add_argument("--section", default="agreement")
    args = parser.parse_args()
    text: list[str] = []
    with Grader() as grader:
        text += ["### The step score against wrong reasoning (ATTS runs, GSM8K 0-39)", "",
                 *step_score_rows(grader, TUNING), "",
                 "### Agreement against failing questions", "",
                 "| questions | signal | n | AUROC vs draft fails | vs target beats draft |",
                 "|---|---|---:|---:|---:|",
                 *agreement_rows(grader, TUNING, "0-39 (tuning)")]
        heldout = all(complete(EQUAL / f / run) for f, d, t in HELDOUT for run in (d, t))
        if heldout:
            text += agreement_rows(grader, HELDOUT, "40-79 (held out)")
        tuning: list[Pooled] = []
        for score in ("disagreement", "entropy"):
            for vote in ("target", "all"):
                tuning += pooled_curve(grader, TUNING, score, vote)
        chosen = choose(tuning)
        text += ["", f"### The cascade on the tuning questions (GSM8K 0-39, mean of {SEEDS} "
                 "seeds)", "", *curve_table(tuning, 4), ""]
        text.append("Chosen on these questions: " + (
            f"escalate_score {chosen.score}, escalate_vote {chosen.vote}, escalate_alpha "
            f"{chosen.alpha:g} (cost {chosen.cost:.2f}, pass@1 {chosen.delta[0]:+.3f} "
            f"[{chosen.delta[1]:+.3f}, {chosen.delta[2]:+.3f}])" if chosen else "nothing"))
        if chosen is not None:
            same = [p for p in tuning if (p.score, p.vote) == (chosen.score, chosen.vote)]
            cert = certify(target_q_all(grader, TUNING), {p.alpha: p.per_question for p in same},
                           {p.alpha: p.cost for p in same}, epsilon=0.05, delta=0.1)
            text += ["", f"Learn-then-test on the tuning questions (epsilon 0.05, delta 0.1): "
                     f"{cert.reason}."]
            plot(same, grader, TUNING, ROOT / "bench/results/cascade_tuning.png",
                 "GSM8K 0-39 (tuning)")
            if heldout:
                confirm = pooled_curve(grader, HELDOUT, chosen.score, chosen.vote)
                text += ["", "### Confirmed on held-out questions (GSM8K 40-79, chose nothing)",
                         "", *curve_table(confirm, 4)]
                at = next(p for p in confirm if p.alpha == chosen.alpha)
                text += ["", f"At the chosen escalate_alpha {chosen.alpha:g}: pass@1 "
                         f"{at.pass_at_1:.3f}, {at.delta[0]:+.3f} [{at.delta[1]:+.3f}, "
                         f"{at.delta[2]:+.3f}] against target-only, cost {at.cost:.2f} "
                         f"(CPU {fmt(at.cost_cpu)})."]
                plot(confirm, grader, HELDOUT, ROOT / "bench/results/cascade_heldout.png",
                     "GSM8K 40-79 (held out)")
    command = "python bench/bench_agreement.py " + " ".join(sys.argv[1:])
    body = f"Command: `{command}`\n\n" + "\n".join(text) + "\n"
    args.results.write_text(f"# Agreement and the cascade\n\n{body}")
    from atts.perf.report import replace_section

    replace_section(args.benchmarks, args.section, body)
    print(body)


def target_q_all(grader: Grader, slices: Sequence[tuple[str, str, str]]) -> dict[str, float]:
    out: dict[str, float] = {}
    for folder, _, target in slices:
        for q, g in tier_samples(load_run(EQUAL / folder / target, grader), "target").items():
            out[q] = sum(bool(r["correct"]) for r in g) / len(g)
    return out


def plot(curve: list[Pooled], grader: Grader, slices: Sequence[tuple[str, str, str]],
         path: Path, title: str) -> None:
    """The curve and the measured runs of the slices (pooled wall time over target-only's)."""
    target_wall = sum(load_run(EQUAL / f / t, grader).wall_seconds for f, _, t in slices)
    points = [(f"{p.alpha:g}", p.cost, p.pass_at_1, p.pass_at_1 + p.delta[1] - p.delta[0],
               p.pass_at_1 + p.delta[2] - p.delta[0]) for p in curve]
    runs = []
    for label, kind in (("draft-only", 1), ("target-only", 2)):
        values: list[float] = []
        wall = 0.0
        for folder, draft, target in slices:
            run = load_run(EQUAL / folder / (draft, target)[kind - 1], grader)
            wall += run.wall_seconds
            values += [sum(bool(r["correct"]) for r in g) / len(g)
                       for g in tier_samples(run, label).values()]
        interval = bootstrap_mean(values)
        runs.append((label, wall / target_wall, interval.estimate, interval.low, interval.high))
    for atts in ATTS_RUNS[:2]:
        paths = [EQUAL / f / atts for f, _, _ in slices]
        if all((p / "samples.jsonl").is_file() for p in paths):
            values, wall = [], 0.0
            for p in paths:
                run = load_run(p, grader)
                wall += run.wall_seconds
                values += [sum(bool(r["correct"]) for r in g) / len(g)
                           for g in tier_samples(run, "atts").values()]
            interval = bootstrap_mean(values)
            runs.append((atts.split("-adaptive")[0], wall / target_wall, interval.estimate,
                         interval.low, interval.high))
    plot_cascade(points, runs, path, f"{title}: cascade (paired interval band) and runs")


if __name__ == "__main__":
    main()
