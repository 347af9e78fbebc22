"""`atts run`: run (or resume) a strategy on a dataset into a run folder.

Every ``RunConfig`` key is a flag (``--draft-tokens 160``); a YAML recipe (``--recipe``) and
``--set key=value`` pairs give the same keys.  Precedence: defaults < recipe < --set < flags.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Collection
from dataclasses import fields
from typing import Any

from atts.config import CHOICES, ConfigError, RunConfig
from atts.recipes import check_replaced, load_recipe, parse_overrides

HELP = {
    "dataset": "gsm8k, math500, math100, aime24, aime25, amc23, or jsonl:PATH",
    "limit": "number of problems; a larger --limit on the same --out adds questions",
    "offset": "skip this many problems first",
    "ids": "comma-separated problem ids",
    "samples": "N parallel samples per question",
    "strategy": "what solves the questions (cascade: the draft, then the target for the "
                "questions whose samples disagree; atts_cascade: ATTS, then the same)",
    "alpha": "reject a draft step (hand it to the target) iff its p-value <= alpha",
    "alpha_discard": "regenerate instead of continue iff p <= alpha_discard (0: never; null, "
                     "via --set alpha_discard=null: equal to alpha, every rejection regenerated)",
    "calibration": "where the bank comes from: question (m first steps per question), "
                   "marginal (pooled), file (atts calibrate), adaptive (a tracked level)",
    "calibration_m": "question calibration: first steps per question",
    "calibration_file": "bank made by `atts calibrate` (with --calibration file)",
    "engine": "llama_cpp is the embedded default; vllm / sglang / openai are servers",
    "draft": "draft model: a name from `atts models list` or a GGUF path",
    "target": "target model: a name from `atts models list` or a GGUF path",
    "draft_tokens": "K_d: most tokens per draft step",
    "target_tokens": "K_t: most tokens per target step",
    "rounds": "T: most rounds per sample",
    "min_rounds": "an answer before this many rounds gets 'Wait' appended",
    "cores": "compute budget: cores the engines keep busy, shared by both models, the same "
             "for every strategy; unset: every core of the machine",
    "draft_threads": "override: every draft call on this many threads, outside the shared "
                     "pool; unset: the pool's free cores",
    "target_threads": "override: every target call on this many threads, outside the shared "
                      "pool; unset: the pool's free cores",
    "draft_concurrency": "draft calls in flight (unset: max_active_samples in-process, "
                         "2 remote)",
    "target_concurrency": "target calls in flight (unset: max_active_samples in-process, "
                          "2 remote)",
    "sync_budget": "sync: the B worst-scored steps of each round go to the target",
    "score": "nonconformity score of a draft step: ppl (step perplexity), max_surprisal "
             "(least likely token), tail_mean (mean of the score_k least likely), llr "
             "(draft minus target log-probability)",
    "score_k": "tail_mean: how many of the step's least likely tokens it averages",
    "judge_threshold": "judge: the target's 0-9 rating at or above which a draft step is kept",
    "warmup": "marginal / adaptive: scores pooled before the first decision",
    "grow_bank": "add every judged draft step's score to the bank after its decision",
    "strata": "Mondrian strata: one online bank per round (marginal or adaptive); auto: "
              "round with adaptive calibration, else none",
    "pvalue": "deterministic (1 + #{s_i >= s}) / (n + 1), or smoothed (exact under ties)",
    "adaptive_gamma": "adaptive: step of the working level, alpha_t += gamma (alpha - err)",
    "adaptive_strata": "adaptive: one level per round bucket, per question too, or one",
    "escalate_alpha": "cascade, atts_cascade: the share of questions the target may take; a "
                      "question escalates iff its disagreement's p-value <= this",
    "escalate_score": "cascade: how a question's first answers disagree (1 - top vote share, "
                      "or the entropy of the shares)",
    "escalate_pvalue": "cascade: the question p-value (smoothed: exact under ties)",
    "escalate_levels": "cascade: a fixed level, or one adaptive level for drifting questions",
    "escalate_vote": "cascade: maj@N of an escalated question from the target's samples or "
                     "from all of its samples",
    "escalate_warmup": "cascade: the first questions wait until this many are in, then are "
                       "decided leave-one-out (raised to what escalate_alpha needs)",
    "n_ctx": "tokens per sequence of the in-process engines (prompt + steps must fit)",
    "draft_url": "remote engines: the draft server's base URL(s), comma-separated",
    "target_url": "remote engines: the target server's base URL(s), comma-separated",
    "draft_tokenizer": "remote engines: where the draft's tokenizer comes from",
    "target_tokenizer": "remote engines: where the target's tokenizer comes from",
    "remote_timeout": "remote engines: seconds per call",
    "max_active_samples": "samples in flight at once (bounds KV memory and lost work)",
    "admission": "sample: each sample takes a free slot; question: a question's samples "
                 "together, as in the authors' code",
    "force_answer": "who completes a forced final answer when T runs out (auto: the draft "
                    "for draft_only, else the target)",
    "temperature": "sampling temperature of both models",
    "top_p": "nucleus sampling top_p of both models",
    "step_stop": "text that ends a step (a blank line)",
    "seed": "run seed: every sample's seed derives from it",
    "max_retries": "retries of a failed engine call before its sample fails",
    "retry_backoff": "seconds before the first retry; doubles per retry, with jitter",
}


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "run", help="run or resume a strategy on a dataset",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_flags(parser)
    parser.add_argument("--out", help="run folder (the same folder resumes)")
    parser.add_argument("--resume", metavar="DIR",
                        help="resume the run in DIR with the settings of its manifest (flags "
                             "given too override them, as on a new run)")
    parser.add_argument("--overwrite", action="store_true",
                        help="discard the results already in --out")
    parser.add_argument("--retry-failed", action="store_true",
                        help="run again the samples recorded as errors")
    parser.add_argument("--force-bank", action="store_true",
                        help="use a calibration file even if its fingerprint does not match")
    parser.add_argument("--no-progress", action="store_true", help="no progress bar")
    parser.add_argument("--no-report", action="store_true",
                        help="skip the summary at the end (summary.json, report.md, printed block)")
    parser.set_defaults(func=handle)


def add_config_flags(parser: argparse.ArgumentParser,
                     keys: Collection[str] | None = None) -> None:
    """A flag per RunConfig key (``keys``: only these, for a command that reads no others)."""
    parser.add_argument("--recipe", help="YAML file of configuration keys")
    parser.add_argument("--set", dest="overrides", action="append", default=[],
                        metavar="KEY=VALUE", help="override one configuration key")
    group = parser.add_argument_group("configuration (RunConfig keys)")
    for field in fields(RunConfig):
        if keys is not None and field.name not in keys:
            continue
        flag = "--" + field.name.replace("_", "-")
        kind = str(field.type)
        default = "unset" if field.default in (None, ()) else field.default
        choices = CHOICES.get(field.name)
        text = HELP[field.name] + (f" {{{', '.join(choices)}}}" if choices else "")
        text = f"{text} (default: {default})".replace("%", "%%")
        if kind.startswith("bool"):
            group.add_argument(flag, dest=field.name, default=argparse.SUPPRESS,
                               action=argparse.BooleanOptionalAction, help=text)
        else:
            group.add_argument(flag, dest=field.name, default=argparse.SUPPRESS,
                               metavar=field.name.upper(), help=text)


def config_values(args: argparse.Namespace) -> dict[str, Any]:
    """RunConfig keys given on the command line, by precedence: recipe < --set < flags."""
    recipe, given = _layers(args)
    return {**recipe, **given}


def _layers(args: argparse.Namespace) -> tuple[dict[str, Any], dict[str, Any]]:
    """The recipe's keys, and those given on the command line (--set under flags), each layer
    checked where a later one replaces it."""
    recipe = load_recipe(args.recipe) if args.recipe else {}
    sets = parse_overrides(args.overrides)
    flags = {f.name: getattr(args, f.name) for f in fields(RunConfig) if hasattr(args, f.name)}
    check_replaced(recipe, {**sets, **flags}, f"recipe {args.recipe}")
    check_replaced(sets, flags, "--set")
    return recipe, {**sets, **flags}


def _layered(lower: dict[str, Any], upper: dict[str, Any], source: str,
             why: str = "") -> RunConfig:
    """The configuration of ``upper`` over ``lower``; a problem whose every key came from
    ``lower`` and none from ``upper`` names ``source``, where the user fixes it."""
    try:
        return RunConfig.from_mapping({**lower, **upper})
    except ConfigError as err:
        if err.problems and all(k in lower and k not in upper for k, _ in err.problems):
            raise ConfigError(f"{source}: {err}{why}", problems=err.problems) from None
        raise


def resume_settings(folder: str) -> dict[str, Any]:
    """The configuration recorded in a run folder's manifest (typed as ``MANIFEST_RECORD``
    says); a key this version does not know is refused, naming the manifest."""
    from atts.runner.run_folder import RunFolder

    run = RunFolder(folder)
    recorded: dict[str, Any] = run.read_manifest()["config"]
    unknown = sorted(set(recorded) - {f.name for f in fields(RunConfig)})
    if unknown:
        raise ConfigError(f"{run.manifest_path}: config holds {', '.join(unknown)}, which this "
                          "atts does not know (a run of another version?); resume it with the "
                          "version that wrote it, or start a new --out folder")
    return recorded


def resumed_config(folder: str, given: dict[str, Any]) -> RunConfig:
    """The run's recorded configuration with ``given`` over it; a problem of a recorded value
    that no flag replaced names the manifest."""
    from atts.runner.run_folder import RunFolder

    return _layered(resume_settings(folder), given, str(RunFolder(folder).manifest_path),
                    " (recorded by the run; a flag given to --resume replaces a recorded value)")


def config_from_args(args: argparse.Namespace) -> RunConfig:
    """The run's configuration; a problem whose every key came from the recipe names it."""
    recipe, given = _layers(args)
    return _layered(recipe, given, f"recipe {args.recipe}")


def handle(args: argparse.Namespace) -> int:
    from atts.data import load_dataset
    from atts.data.loader import select_problems
    from atts.runner.session import run_job

    if args.resume:
        if args.out and args.out != args.resume:
            raise ValueError(f"--resume {args.resume} writes that folder; drop --out "
                             f"{args.out} or make them the same")
        args.out = args.resume
        config = resumed_config(args.resume, config_values(args))
    elif not args.out:
        raise ValueError("give --out DIR (a new run folder, or an existing one to resume), "
                         "or --resume DIR")
    else:
        config = config_from_args(args)
    everything = load_dataset(config.dataset)  # read once: the selection and its total
    problems = select_problems(everything, config.dataset, limit=config.limit,
                               offset=config.offset, ids=list(config.ids) or None)
    available = len(everything)
    more = (f" (--limit {config.limit}; a larger --limit on the same --out adds questions)"
            if config.limit is not None and len(problems) < available else "")
    print(f"atts run: {config.dataset}, {len(problems)} of {available} problems{more} x "
          f"{config.samples} samples, strategy {config.strategy} -> {args.out}",
          file=sys.stderr)
    outcome = run_job(
        config, args.out, overwrite=args.overwrite, retry_failed=args.retry_failed,
        force_bank=args.force_bank, show_progress=not args.no_progress, problems=problems,
    )
    print(
        f"atts run: {outcome.written} samples finished now, {outcome.skipped} already in "
        f"{args.out}, {outcome.errors} errors, {outcome.wall_seconds:.1f} s",
        file=sys.stderr,
    )
    if not args.no_report:
        from atts.report.build import write_report
        from atts.report.summary import format_summary

        # summary.json and report.md in the run folder, as `atts report` writes them (the
        # plots are left to `atts report`: matplotlib is an optional dependency).
        files = write_report(args.out, plots=False)
        print(format_summary(files.summary))
    return 1 if outcome.errors else 0
