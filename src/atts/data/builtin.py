"""The benchmark datasets shipped inside the package, by name.

Each name maps to a builder over the JSON Lines files in this folder (see PROVENANCE.md for
where each file comes from).  Files are read through ``importlib.resources`` so the package
works from a wheel as well as from a checkout.
"""

from __future__ import annotations

import random
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from importlib.resources import files
from typing import Any

from atts.data.problem import (
    DatasetError,
    Problem,
    gold_boxed,
    gold_gsm8k,
    gold_scalar,
    read_jsonl,
    require_field,
)


@dataclass(frozen=True)
class DatasetInfo:
    name: str
    description: str


def _records(filename: str) -> list[tuple[str, int, dict[str, Any]]]:
    resource = files("atts.data") / filename
    source = str(resource)
    lines = resource.read_text(encoding="utf-8").splitlines()
    return [(source, lineno, record) for lineno, record in read_jsonl(lines, source)]


@contextmanager
def _at(source: str, lineno: int) -> Iterator[None]:
    """Re-raise a conversion error as a ``DatasetError`` naming the file and the line."""
    try:
        yield
    except DatasetError:
        raise
    except ValueError as err:
        raise DatasetError(f"{source}, line {lineno}: {err}") from err


def _gsm8k(name: str, filename: str) -> list[Problem]:
    out = []
    for i, (src, ln, rec) in enumerate(_records(filename)):
        with _at(src, ln):
            gold = gold_gsm8k(require_field(rec, "answer", src, ln))
        question = require_field(rec, "question", src, ln)
        out.append(Problem(id=f"{name}/{i}", dataset=name, question=question, gold=gold))
    return out


def _math500(name: str = "math500") -> list[Problem]:
    return [
        Problem(
            id=f"{name}/{require_field(rec, 'unique_id', src, ln)}",
            dataset=name,
            question=require_field(rec, "problem", src, ln),
            gold=gold_scalar(require_field(rec, "answer", src, ln)),
        )
        for src, ln, rec in _records("math500.jsonl")
    ]


def _math100() -> list[Problem]:
    # The ATTS paper's subset: `random.seed(42); random.sample(range(500), 100)`, in sampled
    # order.  A private Random(42) draws the same indices without touching the global RNG.
    pool = _math500("math100")
    return [pool[i] for i in random.Random(42).sample(range(500), 100)]


def _math_train() -> list[Problem]:
    # MATH test problems outside MATH-500, matched on problem text (math_test5000 holds all 500).
    held_out = {rec["problem"] for _, _, rec in _records("math500.jsonl")}
    out = []
    for src, ln, rec in _records("math_test5000.jsonl"):
        question = require_field(rec, "problem", src, ln)
        if question in held_out:
            continue
        with _at(src, ln):
            gold = gold_boxed(require_field(rec, "solution", src, ln))
        key = require_field(rec, "idx", src, ln)
        out.append(Problem(id=f"math_train/{key}", dataset="math_train", question=question,
                           gold=gold))
    return out


def _by_line(name: str, question_field: str) -> list[Problem]:
    return [
        Problem(
            id=f"{name}/{i}",
            dataset=name,
            question=require_field(rec, question_field, src, ln),
            gold=gold_scalar(require_field(rec, "answer", src, ln)),
        )
        for i, (src, ln, rec) in enumerate(_records(f"{name}.jsonl"))
    ]


_BUILTIN: dict[str, tuple[str, Callable[[], list[Problem]]]] = {
    "gsm8k": ("GSM8K test, 1319 grade-school word problems (gold: the number after ####)",
              lambda: _gsm8k("gsm8k", "gsm8k.jsonl")),
    "math500": ("MATH-500, 500 competition problems (OpenAI PRM800K test split)", _math500),
    "math100": ("MATH100, the ATTS paper's 100-problem subset of MATH-500 (seed 42)", _math100),
    "aime24": ("AIME 2024 I and II, 30 problems (integer answers 0-999)",
               lambda: _by_line("aime24", "problem")),
    "aime25": ("AIME 2025 I and II, 30 problems (integer answers 0-999)",
               lambda: _by_line("aime25", "problem")),
    "amc23": ("AMC 2023, 40 problems (answers stored as floats, 27.0 -> '27')",
              lambda: _by_line("amc23", "problem")),
    "gsm8k_train": ("GSM8K train, 7473 problems: a calibration pool disjoint from gsm8k",
                    lambda: _gsm8k("gsm8k_train", "gsm8k_train.jsonl")),
    "math_train": ("MATH test problems outside MATH-500, 4500: a calibration pool",
                   _math_train),
}


def list_datasets() -> list[DatasetInfo]:
    """Every built-in dataset with a one-line description (user files: ``jsonl:PATH``)."""
    return [DatasetInfo(name, desc) for name, (desc, _) in _BUILTIN.items()]


def load_builtin(name: str) -> list[Problem]:
    if name not in _BUILTIN:
        valid = ", ".join(_BUILTIN)
        raise DatasetError(
            f"unknown dataset {name!r}; valid names: {valid}, or jsonl:PATH for your own file"
        )
    return _BUILTIN[name][1]()
