"""`atts replay`: re-run the decision layer over recorded runs under any calibration settings.

Reads each run's samples.jsonl (question_id, sample_index, started_at and, per step, round,
author, kind, score and t) and its manifest's decision settings; judges every scored draft
step in the order the run met it (started_at + t) with the same code a run uses; prints the
realised rejection rate overall and per round (95% Clopper-Pearson intervals), the band of a
fixed bank, the spread across questions and the per-question control accuracy.

What a replay cannot know: the trajectories are fixed.  Where the replay decides otherwise
than the run did, the sample would have gone on differently (a rejected step is continued or
rewritten by the target), so a replay measures how a setting judges these recorded steps, not
the run it would have made.  Calibration-only first steps (calibration_m > samples) were never
recorded, and the engines' timing is not replayed: only the order of decisions is.
"""

from __future__ import annotations

import argparse
import json


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "replay", help="replay recorded runs' decisions under any calibration settings",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("paths", nargs="+", metavar="PATH",
                        help="run folder or samples.jsonl (several: pooled, each on its banks)")
    parser.add_argument("--alpha", type=float, help="rejection level (default: the run's)")
    parser.add_argument("--calibration", metavar="MODE",
                        help="question, marginal, adaptive or file (default: the run's)")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="any decision setting, e.g. strata=round")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from atts.config import parse_overrides
    from atts.replay import format_text, replay_paths

    overrides = parse_overrides(args.overrides)
    if args.alpha is not None:
        overrides["alpha"] = args.alpha
    if args.calibration is not None:
        overrides["calibration"] = args.calibration
    summary, _ = replay_paths(args.paths, overrides)
    if args.json:
        print(json.dumps(summary.to_json()))
    else:
        print(format_text(summary))
    return 0
