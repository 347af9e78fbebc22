"""`atts calibrate`: build a calibration bank on a pool disjoint from the test sets.

The bank holds the scores of draft first steps under the target (`--score`, by default the step
perplexity), saved with a fingerprint of the score, both models, the prompt and the step
settings; `atts run --calibration file --calibration-file F` refuses a bank whose fingerprint
does not match (unless --force-bank; a bank of another score is refused even then).
"""

from __future__ import annotations

import argparse
import sys

from atts.cli.run_cmd import add_config_flags, config_from_args

# The keys a bank depends on or is built with: the score, the engines and their compute, and
# how a first step is drafted (the bank's fingerprint).  A run's other keys (alpha, strategy,
# rounds, calibration mode...) do not change a first step's score, so they are no flags here;
# a shared --recipe may still hold them.
CALIBRATE_KEYS = (
    "score", "score_k", "engine", "draft", "target", "n_ctx", "draft_url", "target_url",
    "draft_tokenizer", "target_tokenizer", "remote_timeout", "cores", "draft_threads",
    "target_threads", "draft_concurrency", "target_concurrency", "max_active_samples",
    "draft_tokens", "temperature", "top_p", "step_stop", "seed", "max_retries",
    "retry_backoff",
)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "calibrate", help="build a calibration bank on a disjoint pool",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("--pool", default="gsm8k_train",
                        help="gsm8k_train or math_train (MATH test problems outside MATH-500)")
    parser.add_argument("--pool-limit", type=int, default=32, help="problems drawn from the pool")
    parser.add_argument("--pool-offset", type=int, default=0)
    parser.add_argument("--per-problem", type=int, default=1, help="first steps per problem")
    parser.add_argument("--out", required=True, help="bank file to write (JSON)")
    parser.add_argument("--no-progress", action="store_true")
    add_config_flags(parser, CALIBRATE_KEYS)
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from atts.runner.calibrate import calibrate

    if args.pool in ("gsm8k", "math500", "math100", "aime24", "aime25", "amc23"):
        raise ValueError(
            f"--pool {args.pool} is a test set; calibrate on a disjoint pool "
            "(gsm8k_train or math_train) so the run's questions stay unseen"
        )
    for flag, value in (("--pool-limit", args.pool_limit), ("--per-problem", args.per_problem)):
        if value < 1:
            raise ValueError(f"{flag} must be >= 1, got {value}: a bank needs scores")
    config = config_from_args(args)
    path, count = calibrate(
        config, args.pool, args.out, limit=args.pool_limit, offset=args.pool_offset,
        samples=args.per_problem, show_progress=not args.no_progress,
    )
    print(f"atts calibrate: {count} scores saved to {path}", file=sys.stderr)
    return 0
