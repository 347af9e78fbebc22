"""`atts simulate`: the performance model (atts.perf) from the command line.

    atts simulate validate runs/bench          predicted vs measured wall time of real runs
    atts simulate paper --device a100-80gb     the paper's setting (7B draft, 32B target, N=16)
    atts simulate sweep --plot sync.png        synchronous waiting against N and rounds
    atts simulate run --device h200 ...        one parametric workload, every strategy
    atts simulate bound --rejection 0.25       the per-token roofline bound of ATTS

``--markdown FILE`` writes the table to FILE; ``--section NAME --benchmarks BENCHMARKS.md``
puts it between that section's markers in the benchmarks file.
"""

from __future__ import annotations

import argparse
import math
import sys
from pathlib import Path
from typing import Any

from atts.perf.devices import DEVICES  # dataclasses only: cheap to import

DEVICE_HELP = f"a device preset: {', '.join(DEVICES)}"
# The largest size (questions, samples, rounds, batch, tokens) the simulator takes: it runs
# every sample as an event on a virtual clock, so sizes beyond this would run on for hours.
SIZE_LIMIT = 100_000


def count(text: str) -> int:
    """A size: an integer in [1, SIZE_LIMIT]."""
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a whole number, got {text!r}") from None
    if not 1 <= value <= SIZE_LIMIT:
        raise argparse.ArgumentTypeError(f"must lie in [1, {SIZE_LIMIT:,}], got {value}")
    return value


def _number(text: str, *, low: float, high: float | None, what: str) -> float:
    try:
        value = float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"must be a number, got {text!r}") from None
    if not math.isfinite(value) or value < low or (high is not None and value > high):
        raise argparse.ArgumentTypeError(f"must be {what}, got {text}")
    return value


def fraction(text: str) -> float:
    """A probability or rate: a finite number in [0, 1]."""
    return _number(text, low=0.0, high=1.0, what="a number in [0, 1]")


def seconds(text: str) -> float:
    """A cost per token: a finite number > 0."""
    value = _number(text, low=0.0, high=None, what="a finite number of seconds > 0")
    if value == 0:
        raise argparse.ArgumentTypeError(f"must be > 0 seconds, got {text}")
    return value


def amount(text: str) -> float:
    """A finite number >= 0 (a spread, a token count)."""
    return _number(text, low=0.0, high=float(SIZE_LIMIT), what=f"a number in [0, {SIZE_LIMIT:,}]")


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    parser = subparsers.add_parser(
        "simulate", help="simulate atts, sync and target-only on modelled devices",
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    commands = parser.add_subparsers(dest="simulation", required=True, metavar="WHAT")

    validate = commands.add_parser("validate", help="predict real runs' wall times")
    validate.add_argument("runs", nargs="+", metavar="RUN",
                          help="run folders, or folders holding run folders")
    validate.add_argument("--loads", type=Path,
                          help="load-average log (`<unix time> <load1>` lines) to adjust for")
    validate.add_argument("--cores", type=count, default=2)

    paper = commands.add_parser("paper", help="the paper's setting on GPUs")
    paper.add_argument("--device", default="a100-80gb", choices=DEVICES, metavar="DEVICE",
                       help=DEVICE_HELP + " (default a100-80gb)")
    paper.add_argument("--samples", type=count, default=16)

    sweep = commands.add_parser("sweep", help="synchronous waiting against N and rounds")
    sweep.add_argument("--device", default="a100-80gb", choices=DEVICES, metavar="DEVICE",
                       help=DEVICE_HELP + " (default a100-80gb)")
    sweep.add_argument("--samples", nargs="+", type=count, default=[4, 8, 16, 32, 64])
    sweep.add_argument("--rounds", nargs="+", type=count, default=[1, 5, 10, 15])
    sweep.add_argument("--step-cv", type=amount, default=0.5)
    sweep.add_argument("--plot", type=Path, help="write the figure (PNG) here")

    run = commands.add_parser("run", help="one parametric workload under every strategy")
    run.add_argument("--device", default="a100-80gb", choices=DEVICES, metavar="DEVICE",
                     help=DEVICE_HELP + " (default a100-80gb)")
    run.add_argument("--draft-device", choices=DEVICES, metavar="DEVICE",
                     help=DEVICE_HELP + " (default: --device)")
    run.add_argument("--draft-model", default="qwen2.5-7b")
    run.add_argument("--target-model", default="qwq-32b")
    run.add_argument("--draft-devices", type=count, default=1)
    run.add_argument("--target-devices", type=count, default=2)
    run.add_argument("--questions", type=count, default=15)
    run.add_argument("--samples", type=count, default=16)
    run.add_argument("--rounds", type=count, default=15)
    run.add_argument("--step-tokens", type=count, default=500)
    run.add_argument("--step-cv", type=amount, default=0.0)
    run.add_argument("--stop", type=fraction, default=0.25,
                     help="probability a sample answers after each round")
    run.add_argument("--target-only-stop", type=fraction,
                     help="the same for the target alone (0: it runs all rounds)")
    run.add_argument("--rejection", type=fraction, default=0.25)
    run.add_argument("--mode", choices=["continue", "regenerate"], default="continue")
    run.add_argument("--max-active", type=count, help="samples in flight (default: N)")
    run.add_argument("--strategies", nargs="+", default=["atts", "sync", "target_only"])
    run.add_argument("--from-run", help="take step lengths, rounds and rejection from a run")

    bound = commands.add_parser("bound", help="the per-token roofline bound")
    bound.add_argument("--device", choices=DEVICES, metavar="DEVICE",
                       help="derive the costs on this device (7B / 32B pair); " + DEVICE_HELP)
    bound.add_argument("--draft-decode", type=seconds, help="seconds per token")
    bound.add_argument("--target-decode", type=seconds, help="seconds per token")
    bound.add_argument("--target-score", type=seconds, help="seconds per token")
    bound.add_argument("--batch", type=count, default=16)
    bound.add_argument("--rejection", nargs="+", type=fraction,
                       default=[0.0, 0.1, 0.25, 0.4, 1.0])

    for sub in (validate, paper, sweep, run, bound):
        sub.add_argument("--markdown", type=Path, help="write the table to this file")
        sub.add_argument("--section", help="also write it into this section of --benchmarks")
        sub.add_argument("--benchmarks", type=Path, default=Path("BENCHMARKS.md"))
    parser.set_defaults(func=handle)


def handle(args: argparse.Namespace) -> int:
    from atts.perf import tables

    makers: dict[str, Any] = {
        "validate": lambda: tables.validation_table(args.runs, args.loads, args.cores),
        "paper": lambda: tables.paper_table(args.device, args.samples),
        "sweep": lambda: tables.sweep_table(args.samples, args.rounds, args.device,
                                            args.step_cv, args.plot),
        "run": lambda: tables.run_table(args),
        "bound": lambda: tables.bound_table(args),
    }
    text = makers[args.simulation]()
    print(text)
    if "simulate" in sys.argv:  # the files say which command wrote them
        text = f"Command: `atts {' '.join(sys.argv[sys.argv.index('simulate'):])}`\n\n{text}"
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(text)
    if args.section:
        from atts.perf.report import replace_section

        replace_section(args.benchmarks, args.section, text)
    return 0
