"""The `atts` command: one argparse parser, one module per command group.

Each command module exposes ``register(subparsers)``; its handler returns the exit code.  A
``ValueError`` (bad input: configuration, data, run folder, bank) is printed as one clear line
and exit code 2; an engine that cannot serve (``EngineError``: a server that does not answer,
a model that fails to load) and an operating-system error (``OSError``: a full disk, a
read-only path) as one line and exit code 1; ``atts --debug COMMAND`` shows the traceback
instead.

Ctrl-C: the first raises ``KeyboardInterrupt``, so the run cancels its samples, closes its
engines (joining their decode threads before freeing them) and exits 130 with finished rows on
disk.  Any further Ctrl-C while it does exits 130 at once without freeing anything
(``os._exit``): the interpreter's own finalisation would free models under threads still
decoding, and each row is already written whole and fsynced, so nothing finished is lost.
Once the engines are closed, further Ctrl-Cs are ignored while the process ends.  The handler
is the first thing ``main`` does (this module imports nothing heavy at its top), so only a
Ctrl-C during the interpreter's own start-up, before any atts code runs, ends in Python's
traceback.
"""

from __future__ import annotations

import argparse
import importlib
import os
import signal
import sys
import threading
from collections.abc import Sequence
from types import FrameType

import atts

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


class Interrupts:
    """The SIGINT handler of a command (see the module docstring)."""

    def __init__(self) -> None:
        self.count = 0

    def __call__(self, signum: int, frame: FrameType | None) -> None:
        self.count += 1
        if self.count == 1:
            raise KeyboardInterrupt
        sys.stderr.write("\natts: interrupted again: exiting now; finished samples are saved, "
                         "run the same command to resume\n")
        sys.stderr.flush()
        os._exit(130)


def main(argv: Sequence[str] | None = None, *, exiting: bool = False) -> int:
    """Run one command; its exit code.  ``exiting``: the process ends after this (the ``atts``
    command), so Ctrl-C stays ignored afterwards instead of going back to Python's default,
    which would kill the ending process by SIGINT (exit -2)."""
    interrupts = Interrupts()
    own = threading.current_thread() is threading.main_thread()
    previous = signal.signal(signal.SIGINT, interrupts) if own else None
    try:
        return _dispatch(argv)
    except KeyboardInterrupt:  # anywhere: loading the commands, printing an error line
        return _interrupted()
    finally:
        if own and (exiting or interrupts.count):
            signal.signal(signal.SIGINT, signal.SIG_IGN)
        elif own:
            signal.signal(signal.SIGINT, previous)


def run() -> None:
    """The ``atts`` command and ``python -m atts``."""
    sys.exit(main(exiting=True))


def _dispatch(argv: Sequence[str] | None) -> int:
    """Parse, run the command, and turn what it raised into one line and an exit code."""
    from atts.engines.base import EngineError
    from atts.errors import AttsError

    try:
        args = build_parser().parse_args(argv)
    except KeyboardInterrupt:  # while the command modules load
        return _interrupted()
    try:
        return int(args.func(args))
    except KeyboardInterrupt:
        return _interrupted()
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


def _interrupted() -> int:
    # The engines are closed by now.  Ignored, not handled: the interpreter's finalisation
    # resets a Python handler to the default, and a Ctrl-C then would kill the process by
    # SIGINT (exit -2) instead of the promised 130.
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    print("\natts: interrupted; finished samples are saved, run the same command to resume",
          file=sys.stderr)
    return 130


if __name__ == "__main__":
    run()
