"""`atts datasets list`: the built-in benchmark sets, their sizes, and how to bring your own."""

from __future__ import annotations

import argparse

USER_FILES = """Your own file: --dataset jsonl:PATH, one JSON object per line.  Fields are read
from "question" (or "problem") and "answer"; map others with a query string:
  jsonl:data.jsonl?question=prompt&answer=target&id=uid&name=mybench
  jsonl:train.jsonl?answer=solution&format=boxed   (gold = the last \\boxed{} of the field)
  jsonl:gsm.jsonl?format=gsm8k                      (gold = the number after '####')"""


def register(subparsers: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    datasets = subparsers.add_parser("datasets", help="list the built-in benchmark sets")
    verbs = datasets.add_subparsers(dest="datasets_command", required=True)
    list_p = verbs.add_parser("list", help="each built-in set with its size, and user files",
                              description=USER_FILES,
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    list_p.set_defaults(func=list_handler)


def list_handler(args: argparse.Namespace) -> int:
    from atts.data import list_datasets, load_dataset

    infos = list_datasets()
    width = max(len(info.name) for info in infos)
    for info in infos:
        size = len(load_dataset(info.name))
        print(f"{info.name:<{width}}  {size:>5} problems  {info.description}")
    print()
    print(USER_FILES)
    return 0
