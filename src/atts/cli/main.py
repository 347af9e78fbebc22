"""The `atts` command: one argparse parser, one module per command group.

Each command module exposes ``register(subparsers)``; its handler returns the exit code.  A
``ValueError`` (bad input: configuration, data, run folder, bank) is printed as one clear line
and exit code 2; an engine that cannot serve (``EngineError``: a server that does not answer,
a model that fails to load) and an operating-system error (``OSError``: a full disk, a
read-only path) as one line and exit code 1; ``atts --debug COMMAND`` shows the traceback
instead.
"""

from __future__ import annotations

import argparse
import importlib
import signal
import sys
from collections.abc import Sequence

import atts
from atts.engines.base import EngineError
from atts.errors import AttsError

COMMAND_MODULES = (
    "atts.cli.run_cmd",
    "atts.cli.calibrate_cmd",
    "atts.cli.datasets_cmd",
    "atts.cli.models_cmd",
    "atts.cli.report_cmd",
    "atts.cli.replay_cmd",
    "atts.cli.simulate_cmd",
    "atts.cli.probe_cmd",
    "atts.cli.serve_cmd",
)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="atts",
        description="Asynchronous, conformally calibrated test-time scaling of LLM reasoning.",
    )
    parser.add_argument("--version", action="version", version=f"atts {atts.__version__}")
    parser.add_argument("--debug", action="store_true",
                        help="show the traceback of an error instead of its one line")
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for name in COMMAND_MODULES:
        importlib.import_module(name).register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        # The run is already shutting down; a further Ctrl-C landing while this line prints or
        # while the interpreter joins the engines' threads would kill the process by SIGINT
        # (exit -2) instead of the promised 130.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        print("\natts: interrupted; finished samples are saved, run the same command to resume",
              file=sys.stderr)
        return 130
    except (AttsError, ValueError, FileNotFoundError) as err:
        if args.debug:
            raise
        print(f"atts {args.command}: error: {err}", file=sys.stderr)
        return 2
    except EngineError as err:  # a server that is down, a model that cannot run
        if args.debug:
            raise
        print(f"atts {args.command}: error: {err}", file=sys.stderr)
        return 1
    except OSError as err:  # a full disk, a read-only or non-directory path, a busy port
        if args.debug:
            raise
        where = f": {err.filename}" if err.filename else ""
        print(f"atts {args.command}: error: {err.strerror or err}{where} (an operating-system "
              "error; finished samples are saved, fix it and run the same command to resume)",
              file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
