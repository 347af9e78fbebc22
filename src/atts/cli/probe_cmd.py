"""`atts probe`: measure what a token costs on the configured engines, and say whether ATTS (or
the cascade) can beat target-only on this hardware and pair, before a long run.

    atts probe                                   the embedded pair on this machine's cores
    atts probe --engine vllm --draft-url ... --target-url ...     remote servers
    atts probe --json                            the numbers, for scripts

The costs are medians of a few short rounds at the run's samples in flight
(``--max-active-samples``) and a context of ``--context`` tokens (on the embedded pair and 2
cores: under a minute at 8 and 64 tokens, 3 minutes at 16 and 512, more than 5 at 32 and
512); the bounds count the engines' work only (atts/perf/probe.py).
"""

from __future__ import annotations

import argparse
import json
import sys

from atts.cli.run_cmd import add_config_flags, config_from_args

PROBE_KEYS = ("engine", "draft", "target", "n_ctx", "draft_url", "target_url",
              "draft_tokenizer", "target_tokenizer", "remote_timeout", "cores",
              "draft_threads", "target_threads", "max_active_samples", "alpha",
              "alpha_discard", "max_retries")
ALPHAS = (0.05, 0.1, 0.25, 0.5)
RATES = (0.1, 0.25, 0.5, 0.75)


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "probe", help="measure per-token costs here and say whether ATTS can pay",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_config_flags(parser, keys=PROBE_KEYS)
    parser.add_argument("--context", type=int, default=64,
                        help="tokens of context each sample holds while measured (64)")
    parser.add_argument("--repeats", type=int, default=3, help="rounds per cost (median)")
    parser.add_argument("--json", action="store_true", help="print one JSON object")
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    import asyncio

    from atts.config import REMOTE_ENGINES
    from atts.perf.probe import probe
    from atts.runner.build import close_engines, open_engines

    if not 16 <= args.context <= 65_536 or not 1 <= args.repeats <= 20:
        raise ValueError(f"--context must lie in [16, 65536] and --repeats in [1, 20], got "
                         f"{args.context} and {args.repeats}")
    config = config_from_args(args)
    if args.context + 64 > config.n_ctx:
        raise ValueError(f"--context {args.context} does not fit n_ctx {config.n_ctx} with "
                         "room to decode and score; lower --context or raise --n-ctx")
    mode = "regenerate" if config.discard_level == config.alpha else "continue"
    overlap = config.engine in REMOTE_ENGINES  # servers on their own devices work in parallel

    async def measure() -> object:
        draft, target = await open_engines(config)
        try:
            return await probe(draft, target, batch=config.max_active_samples,
                               context=args.context, repeats=args.repeats)
        finally:
            await close_engines(draft, target)

    result = asyncio.run(measure())
    from atts.perf.probe import ProbeResult

    assert isinstance(result, ProbeResult)
    if args.json:
        print(json.dumps(result.to_json(ALPHAS, RATES, mode=mode, overlap=overlap)))
        return 0
    c = result.costs
    shared = "engines on their own devices" if overlap else "engines sharing the cores"
    lines = [
        f"atts probe · {config.engine} {config.draft} -> {config.target} · "
        f"{result.batch} samples in flight · context {result.context} tokens",
        f"per token (median of {args.repeats}): draft decode {c.draft_decode * 1e3:.1f} ms · "
        f"target decode {c.target_decode * 1e3:.1f} ms · target score "
        f"{c.target_score * 1e3:.1f} ms",
        f"ATTS bound over target-only ({mode}, {shared}), rejection rate = alpha:",
        "  " + "   ".join(f"alpha {a:g}: {b:.2f}x" for a, b in
                          result.atts_bounds(ALPHAS, mode=mode, overlap=overlap)),
        "cascade bound (the target takes a share e of the questions after the draft's N):",
        "  " + "   ".join(f"e {e:g}: {b:.2f}x" for e, b in result.cascade_bounds(RATES)),
    ]
    best_alpha, best = max(result.atts_bounds(ALPHAS, mode=mode, overlap=overlap),
                           key=lambda item: item[1])
    even = 1.0 - c.draft_decode / c.target_decode
    lines.append(
        ("verdict: ATTS can beat target-only here (up to " if best > 1 else
         "verdict: ATTS cannot beat target-only here (at best ") + f"{best:.2f}x at alpha "
        f"{best_alpha:g}); the cascade " + (f"can while it escalates under {even:.0%} of the "
                                            "questions" if even > 0 else "cannot either"))
    print("\n".join(lines), file=sys.stdout)
    return 0
