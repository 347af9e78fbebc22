"""`atts run`: run (or resume) a strategy on a dataset into a run folder.

Every ``RunConfig`` key is a flag (``--draft-tokens 160``); a YAML recipe (``--recipe``) and
``--set key=value`` pairs give the same keys.  Precedence: defaults < recipe < --set < flags.
"""

from __future__ import annotations

import argparse
import sys
from dataclasses import fields
from typing import Any

from atts.config import RunConfig, load_recipe, parse_overrides

HELP = {
    "dataset": "gsm8k, math500, math100, aime24, aime25, amc23, or jsonl:PATH",
    "limit": "number of problems (default 5)",
    "offset": "skip this many problems first",
    "ids": "comma-separated problem ids",
    "samples": "N parallel samples per question",
    "strategy": "atts | sync | target_only | draft_only",
    "alpha": "reject a draft step (hand it to the target) iff its p-value <= alpha",
    "alpha_discard": "regenerate instead of continue iff p <= alpha_discard (0: never)",
    "calibration": "question (per question, m first steps) | marginal (pooled) | file",
    "calibration_m": "question calibration: first steps per question",
    "calibration_file": "bank made by `atts calibrate` (with --calibration file)",
    "engine": "llama_cpp (embedded default) | transformers | fake",
    "draft": "draft model: a name from `atts models list` or a GGUF path",
    "target": "target model: a name from `atts models list` or a GGUF path",
    "draft_tokens": "K_d: most tokens per draft step",
    "target_tokens": "K_t: most tokens per target step",
    "rounds": "T: most rounds per sample",
    "min_rounds": "an answer before this many rounds gets 'Wait' appended",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run", help="run or resume a strategy on a dataset",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_flags(parser)
    parser.add_argument("--out", required=True, help="run folder (the same folder resumes)")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard the results already in --out")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run again the samples recorded as errors")
    parser.add_argument("--force-bank", action="store_true",
                        help="use a calibration file even if its fingerprint does not match")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-report", action="store_true", help="skip the report at the end")
    parser.set_defaults(func=handle)


def add_config_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--recipe", help="YAML file of configuration keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one configuration key")
    group = parser.add_argument_group("configuration (RunConfig keys)")
    for field in fields(RunConfig):
        flag = "--" + field.name.replace("_", "-")
        kind = str(field.type)
        if kind.startswith("bool"):
            group.add_argument(flag, dest=field.name, default=argparse.SUPPRESS,
                               action=argparse.BooleanOptionalAction,
                               help=HELP.get(field.name, f"default {field.default!r}"))
        else:
            group.add_argument(flag, dest=field.name, default=argparse.SUPPRESS,
                               help=HELP.get(field.name, f"default {field.default!r}"))


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """RunConfig keys given on the command line, by precedence: recipe < --set < flags."""
    values: dict[str, Any] = {}
    if args.recipe:
        values.update(load_recipe(args.recipe))
    values.update(parse_overrides(args.overrides))
    for field in fields(RunConfig):
        if hasattr(args, field.name):
            values[field.name] = getattr(args, field.name)
    return values


def config_from_args(args: argparse.Namespace) -> RunConfig:
    return RunConfig.from_mapping(config_values(args))


def handle(args: argparse.Namespace) -> int:
    from atts.runner.session import run_job

    config = config_from_args(args)
    outcome = run_job(
        config, args.out, overwrite=args.overwrite, retry_failed=args.retry_failed,
        force_bank=args.force_bank, show_progress=not args.no_progress,
    )
    print(
        f"atts run: {outcome.written} samples finished now, {outcome.skipped} already in "
        f"{args.out}, {outcome.errors} errors, {outcome.wall_seconds:.1f} s",
        file=sys.stderr,
    )
    if not args.no_report:
        from atts.report.summary import print_summary

        print_summary(args.out)
    return 1 if outcome.errors else 0
