"""What runs inside a grading worker process: one math-verify comparison.

Kept in its own small module so that spawned workers import only this (and math-verify),
never the caller's modules.  math-verify's own timeouts use ``signal.alarm``, which fails off
the main thread, so they are switched off here; the ``Grader`` bounds time from outside.
"""

from __future__ import annotations

import logging
import os
import time


def init_worker() -> None:
    """Import math-verify once per worker, and quiet its warning that timeouts are off."""
    logging.getLogger("math_verify").setLevel(logging.ERROR)
    import math_verify  # noqa: F401


def ping(delay: float = 0.0) -> int:
    """Return the worker's pid (after ``delay`` seconds, so a warm-up spreads over workers)."""
    time.sleep(delay)
    return os.getpid()


def verify_pair(gold: str, pred: str) -> bool:
    """math-verify's verdict on ``pred`` against ``gold`` (both LaTeX, e.g. ``\\boxed{...}``)."""
    from math_verify import parse, verify

    gold_parsed = parse(gold, parsing_timeout=None)
    pred_parsed = parse(pred, parsing_timeout=None)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=None))


def verify_pair_with_alarm(gold: str, pred: str, timeout_seconds: int) -> bool:
    """The same verdict in the calling process, bounded by math-verify's ``signal.alarm``.

    Only valid on the main thread; a timeout counts as not equivalent.
    """
    from math_verify import parse, verify

    gold_parsed = parse(gold, parsing_timeout=timeout_seconds)
    pred_parsed = parse(pred, parsing_timeout=timeout_seconds)
    if not gold_parsed or not pred_parsed:
        return False
    return bool(verify(gold_parsed, pred_parsed, timeout_seconds=timeout_seconds))
