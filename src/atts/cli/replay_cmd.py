"""`atts replay`: re-run the decision layer over recorded runs, offline.

Steps (the default): reads each run's samples.jsonl (question_id, sample_index, started_at and,
per step, round, author, kind, score and t) and its manifest's decision settings; judges every
scored draft step in the order the run met it (started_at + t) with the same code a run uses;
prints the realised rejection rate overall and per round (95% Clopper-Pearson intervals), the
band of a fixed bank, the spread across questions and the per-question control accuracy.

Questions (``--escalate-to TARGET_RUN``): the cascade of the first run (draft-only, ATTS, or a
cascade's first samples) escalating to a target-only run of the same questions and N, at every
``--alpha`` (default 0.05 to 0.95): which questions escalate, its pass@1 (with its paired
difference from the target run), maj@N, pass@N and its cost relative to the target run
(replay/escalation.py says how).  ``--json`` prints one object per alpha; ``--plot`` draws
accuracy against cost with ``--points`` runs beside the curve; ``--certify EPSILON`` picks the
cheapest alpha whose pass@1 loss is at most EPSILON with probability 1 - ``--delta``.

What a replay cannot know: the trajectories are fixed.  Where a step replay decides otherwise
than the run did, the sample would have gone on differently, so it measures how a setting
judges these recorded steps, not the run it would have made.  The question replay is exact: a
cascade only chooses between outputs both runs recorded.
"""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any

ALPHA_GRID = tuple(round(0.05 * i, 2) for i in range(1, 20))


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "replay", help="replay recorded runs' decisions (steps, or question escalation)",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="run folder or samples.jsonl (several: pooled, each on its banks)")
    parser.add_argument("--alpha", type=float, nargs="+",
                        help="rejection level (steps: one; default the run's), or the "
                             "escalate_alpha grid (questions; default 0.05 ... 0.95)")
    parser.add_argument("--calibration", metavar="MODE",
                        help="question, marginal, adaptive or file (default: the run's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="any decision setting, e.g. strata=round")
    parser.add_argument("--json", action="store_true", help="print JSON")
    group = parser.add_argument_group("question escalation")
    group.add_argument("--escalate-to", metavar="TARGET_RUN",
                       help="a target-only run of the same questions and N")
    group.add_argument("--plot", metavar="PNG", help="draw accuracy against cost")
    group.add_argument("--points", nargs="+", default=[], metavar="RUN",
                       help="measured runs of the same questions to draw beside the curve")
    group.add_argument("--certify", type=float, metavar="EPSILON",
                       help="pick the cheapest alpha losing at most EPSILON pass@1 (LTT)")
    group.add_argument("--delta", type=float, default=0.1,
                       help="--certify: the probability the guarantee may fail (default 0.1)")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from atts.recipes import parse_overrides

    overrides = parse_overrides(args.overrides)
    if args.escalate_to is not None:
        return _escalate(args, overrides)
    from atts.replay import format_text, replay_paths

    for flag, given in (("--plot", args.plot), ("--points", args.points),
                        ("--certify", args.certify)):
        if given:
            raise ValueError(f"{flag} needs --escalate-to TARGET_RUN (a question replay)")
    if args.alpha is not None:
        if len(args.alpha) != 1:
            raise ValueError("a step replay takes one --alpha; several are for --escalate-to")
        overrides["alpha"] = args.alpha[0]
    if args.calibration is not None:
        overrides["calibration"] = args.calibration
    summary, _ = replay_paths(args.paths, overrides)
    for note in summary.notes:
        print(f"atts replay: warning: {note}", file=sys.stderr)
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        print(format_text(summary))
    return 0


def _escalate(args: argparse.Namespace, overrides: dict[str, Any]) -> int:
    from atts.grading import Grader
    from atts.replay.certify import certify
    from atts.replay.escalation import cascade_replay
    from atts.report.graded_run import load_run

    if len(args.paths) != 1:
        raise ValueError(f"--escalate-to replays one first run, got {len(args.paths)} paths")
    if args.calibration is not None:
        raise ValueError("--calibration is a step setting; a question replay takes "
                         "--set escalate_score=... / escalate_pvalue=... / escalate_levels=...")
    alphas = sorted(set(args.alpha)) if args.alpha else list(ALPHA_GRID)
    with Grader() as grader:
        first = load_run(args.paths[0], grader)
        target = load_run(args.escalate_to, grader)
        points = [load_run(path, grader) for path in args.points]
    replay = cascade_replay(first, target, alphas, overrides)
    certificate = None
    if args.certify is not None:
        target_per_q = {q: p for q, p in _per_question(target).items() if q in replay.questions}
        certificate = certify(target_per_q, {p.alpha: p.per_question for p in replay.points},
                              {p.alpha: p.cost for p in replay.points},
                              epsilon=args.certify, delta=args.delta)
    if args.json:
        for point in replay.points:
            print(json.dumps(point.to_json(replay)))
        if certificate is not None:
            print(json.dumps({"certify": {"epsilon": certificate.epsilon,
                                          "delta": certificate.delta,
                                          "questions": certificate.questions,
                                          "chosen": certificate.chosen,
                                          "certified": list(certificate.certified),
                                          "reason": certificate.reason}}))
    else:
        print(_table(replay, first.path, target.path))
        if certificate is not None:
            print(f"certify: {certificate.reason}")
    if args.plot:
        _plot(replay, first, target, points, args.plot)
    return 0


def _plot(replay: Any, first: Any, target: Any, points: list[Any], path: str) -> None:
    """The cascade's curve, and the first, target and ``--points`` runs at their own wall
    time over the target run's (the same questions are checked for each)."""
    from atts.replay.escalation import tier_samples
    from atts.report.intervals import bootstrap_mean
    from atts.report.metrics import accuracy
    from atts.report.plots import plot_cascade

    curve = [(f"{p.alpha:g}", p.cost if p.cost is not None else float("nan"),
              p.pass_at_1.estimate, p.pass_at_1.low, p.pass_at_1.high) for p in replay.points]
    runs = []
    for run in (first, target, *points):
        groups = tier_samples(run, "a --points run") if run is not target else None
        if groups is not None and set(groups) != set(replay.questions):
            raise ValueError(f"--points {run.path} holds other questions than the replay")
        per_q = accuracy(run.rows).per_question
        interval = bootstrap_mean([per_q[q].pass_at_1 for q in replay.questions])
        runs.append((f"{run.label}", run.wall_seconds / target.wall_seconds,
                     interval.estimate, interval.low, interval.high))
    written = plot_cascade(curve, runs, path, f"{len(replay.questions)} questions x N = "
                           f"{replay.n}: the cascade against measured runs")
    print(f"atts replay: wrote {written}", file=sys.stderr)


def _per_question(run: Any) -> dict[str, float]:
    from atts.replay.escalation import tier_samples

    return {q: sum(bool(r["correct"]) for r in g) / len(g)
            for q, g in tier_samples(run, "the target run").items()}


def _table(replay: Any, first: Any, target: Any) -> str:
    n = replay.n
    boot = {True: "one boot", False: "two boots: the costs compare other machines",
            None: "boots not recorded"}[replay.same_boot]
    lines = [f"atts replay · cascade of {first} escalating to {target}",
             f"{len(replay.questions)} questions x N = {n} · first run pass@1 "
             f"{replay.first_pass_at_1.text()} · target {replay.target_pass_at_1.text()} · "
             f"{boot}",
             f"{'alpha':>6}{'escalated':>11}{'pass@1':>24}{'vs target':>26}"
             f"{f'maj@{n}':>8}{'cost':>7}{'cpu':>6}"]
    for p in replay.points:
        cost = "-" if p.cost is None else f"{p.cost:.2f}"
        cpu = "-" if p.cost_cpu is None else f"{p.cost_cpu:.2f}"
        lines.append(f"{p.alpha:>6g}{p.escalated:>5} of {p.questions:<3}"
                     f"{p.pass_at_1.text():>24}{p.delta_pass_at_1.text('+.3f'):>26}"
                     f"{p.maj_at_n:>8.3f}{cost:>7}{cpu:>6}")
    return "\n".join(lines)
