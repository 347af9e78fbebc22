"""``Grader``: is a predicted answer equivalent to the gold one?

Three stages, cheapest first:
1. no answer (``None`` or empty) is wrong, without calling math-verify;
2. the fast path: equal normal forms (``normalize_answer``) or equal plain numbers are right,
   and on integer-answer datasets (GSM8K, AIME, AMC) unequal numbers are wrong;
3. math-verify (``parse`` + ``verify``) in a pool of spawned worker processes, each comparison
   bounded by ``timeout`` seconds.  A comparison that overruns counts as wrong, is recorded in
   ``Grader.failures``, and its worker pool is killed and recreated (a hung sympy call cannot be
   interrupted any other way).  Verdicts are cached per distinct (pred, gold, family).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Mapping, Sequence
from concurrent.futures import FIRST_COMPLETED, Future, ProcessPoolExecutor, wait
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from types import TracebackType
from typing import Any

from atts.grading.boxed import extract_boxed
from atts.grading.normalize import Family, answer_family, normalize_answer, parse_number
from atts.grading.worker import init_worker, ping, verify_pair, verify_pair_with_alarm

log = logging.getLogger(__name__)

Key = tuple[str, str]  # (math-verify gold text, math-verify pred text)


@dataclass(frozen=True)
class GradeStats:
    """Counters of a ``Grader``: how each comparison was decided."""

    comparisons: int = 0
    no_answer: int = 0
    fast_path: int = 0
    cache_hits: int = 0
    verified: int = 0  # sent to math-verify
    timeouts: int = 0
    errors: int = 0


@dataclass(frozen=True)
class GradeFailure:
    """A comparison math-verify could not finish; it was graded wrong."""

    pred: str
    gold: str
    reason: str  # "timeout after 10.0s", "worker crashed", or the exception


def _mv_text(answer: str, normal: str, family: Family) -> str:
    """The text math-verify parses: the normal form for numeric families, else the LaTeX."""
    if family != "math":
        return f"\\boxed{{{normal}}}"
    content = extract_boxed(answer)
    content = (content if content is not None else answer).strip()
    if len(content) > 2 and content.startswith("$") and content.endswith("$"):
        content = content.strip("$").strip()
    return f"\\boxed{{{content}}}"


class Grader:
    """Grades predicted answers against gold answers; use as a context manager.

    ``workers``: math-verify processes (spawned lazily, on the first comparison the fast path
    cannot decide).  ``workers=0`` verifies in the calling process instead, bounded by
    math-verify's own ``signal.alarm`` timeout: main thread only, for one-off checks.
    ``timeout``: seconds one comparison may take, counted from its submission to an idle worker.
    ``startup_timeout``: seconds the workers may take to start and import math-verify.
    ``fast_path=False`` sends every answered pair to math-verify (to audit the fast path).
    ``verify``: the comparison the workers run, ``verify(gold_latex, pred_latex) -> bool``; it
    must be a module-level function (spawned workers import it by name).
    Not thread-safe: share one grader per thread.
    """

    def __init__(
        self,
        workers: int = 2,
        timeout: float = 10.0,
        startup_timeout: float = 120.0,
        *,
        fast_path: bool = True,
        verify: Callable[[str, str], bool] = verify_pair,
    ):
        if workers < 0:
            raise ValueError(f"workers must be >= 0 (0: verify in this process), got {workers}")
        if timeout <= 0:
            raise ValueError(f"timeout must be > 0 seconds, got {timeout}")
        self.workers = workers
        self.timeout = timeout
        self.startup_timeout = startup_timeout
        self.fast_path = fast_path
        self.verify = verify
        self.failures: list[GradeFailure] = []
        self._cache: dict[Key, bool] = {}
        self._counts = {name: 0 for name in GradeStats.__dataclass_fields__}
        self._pool: ProcessPoolExecutor | None = None

    # -- lifecycle -----------------------------------------------------------------------
    def __enter__(self) -> Grader:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Stop the worker processes (the grader can still be used: they restart on demand)."""
        pool, self._pool = self._pool, None
        if pool is not None:
            pool.shutdown(wait=True, cancel_futures=True)

    @property
    def stats(self) -> GradeStats:
        return GradeStats(**self._counts)

    # -- grading -------------------------------------------------------------------------
    def grade(self, pred: str | None, gold: str, dataset: str = "math") -> bool:
        """True iff ``pred`` is equivalent to ``gold`` under ``dataset``'s rules."""
        return self.grade_many([(pred, gold, dataset)])[0]

    def grade_many(self, pairs: Iterable[tuple[str | None, str, str]]) -> list[bool]:
        """Grade ``(pred, gold, dataset)`` triples; math-verify work runs in parallel."""
        pairs = list(pairs)
        results: list[bool | None] = [None] * len(pairs)
        pending: dict[Key, list[int]] = {}
        originals: dict[Key, tuple[str, str]] = {}
        for i, (pred, gold, dataset) in enumerate(pairs):
            self._counts["comparisons"] += 1
            verdict, key = self._prepare(pred, gold, dataset)
            if verdict is not None:
                results[i] = verdict
            elif key in self._cache:
                self._counts["cache_hits"] += 1
                results[i] = self._cache[key]
            elif key in pending:
                self._counts["cache_hits"] += 1  # a repeat within this batch: verified once
                pending[key].append(i)
            else:
                pending.setdefault(key, []).append(i)
                originals.setdefault(key, (pred or "", gold))
        if pending:
            verdicts = self._verify(list(pending), originals)
            for key, indices in pending.items():
                self._cache[key] = verdicts[key]
                for i in indices:
                    results[i] = verdicts[key]
        return [bool(r) for r in results]

    def _prepare(self, pred: str | None, gold: str, dataset: str) -> tuple[bool | None, Key]:
        """A verdict if the cheap stages decide, else the key math-verify must decide."""
        family = answer_family(dataset)
        norm_pred = normalize_answer(pred, family)
        if pred is None or not norm_pred:
            self._counts["no_answer"] += 1
            return False, ("", "")
        norm_gold = normalize_answer(gold, family) or ""
        key = (_mv_text(gold, norm_gold, family), _mv_text(pred, norm_pred, family))
        if not self.fast_path:
            return None, key
        if norm_pred == norm_gold:
            self._counts["fast_path"] += 1
            return True, ("", "")
        a, b = parse_number(norm_pred), parse_number(norm_gold)
        if a is not None and b is not None:
            if a == b:
                self._counts["fast_path"] += 1
                return True, ("", "")
            # Unequal exact numbers differ, except that math-verify rounds decimals (0.333333
            # vs 1/3) on MATH; integers never round, and the other families' answers are integers.
            if family != "math" or (a.denominator == 1 and b.denominator == 1):
                self._counts["fast_path"] += 1
                return False, ("", "")
        return None, key

    def _verify(self, keys: list[Key], originals: dict[Key, tuple[str, str]]) -> dict[Key, bool]:
        self._counts["verified"] += len(keys)
        if self.workers == 0:
            return self._verify_here(keys)
        out: dict[Key, bool] = {}
        queue: deque[Key] = deque(keys)
        inflight: dict[Future[bool], tuple[Key, float]] = {}
        while queue or inflight:
            pool = self._ensure_pool()
            broken = False
            try:
                while queue and len(inflight) < self.workers:
                    fut = pool.submit(self.verify, *queue[0])
                    inflight[fut] = (queue.popleft(), time.monotonic() + self.timeout)
            except BrokenProcessPool:
                broken = True  # a worker died since the last round: its futures fail below
            next_deadline = min((d for _, d in inflight.values()), default=time.monotonic())
            done, _ = wait(inflight, timeout=max(0.0, next_deadline - time.monotonic()),
                           return_when=FIRST_COMPLETED)
            for fut in done:
                key, _ = inflight.pop(fut)
                try:
                    out[key] = bool(fut.result())
                except BrokenProcessPool:
                    broken = True
                    out[key] = self._fail(key, originals, "worker crashed", "errors")
                except Exception as err:  # math-verify raised: graded wrong, reported
                    out[key] = self._fail(key, originals, repr(err), "errors")
            now = time.monotonic()
            expired = [f for f, (_, deadline) in inflight.items() if deadline <= now]
            for fut in expired:
                key, _ = inflight.pop(fut)
                out[key] = self._fail(key, originals, f"timeout after {self.timeout}s", "timeouts")
            if expired or broken:
                # The stuck worker cannot be interrupted: kill the pool, redo what was in flight.
                queue.extendleft(key for key, _ in inflight.values())
                inflight.clear()
                self._kill_pool()
        return out

    def _verify_here(self, keys: list[Key]) -> dict[Key, bool]:
        if threading.current_thread() is not threading.main_thread():
            raise ValueError("Grader(workers=0) relies on signal.alarm: use it on the main "
                             "thread only, or use workers >= 1")
        if self.verify is not verify_pair:
            return {key: bool(self.verify(*key)) for key in keys}
        seconds = max(1, round(self.timeout))
        return {key: verify_pair_with_alarm(*key, timeout_seconds=seconds) for key in keys}

    def _fail(self, key: Key, originals: dict[Key, tuple[str, str]], reason: str,
              counter: str) -> bool:
        pred, gold = originals[key]
        self._counts[counter] += 1
        self.failures.append(GradeFailure(pred=pred, gold=gold, reason=reason))
        log.warning("grading %r against %r: %s; graded wrong", pred, gold, reason)
        return False

    # -- the worker pool -----------------------------------------------------------------
    def _ensure_pool(self) -> ProcessPoolExecutor:
        if self._pool is None:
            import multiprocessing

            pool = ProcessPoolExecutor(
                max_workers=self.workers,
                mp_context=multiprocessing.get_context("spawn"),
                initializer=init_worker,
            )
            # Start every worker (spawn + math-verify import take seconds) before any
            # comparison's deadline starts to run.
            warmups = [pool.submit(ping, 0.05) for _ in range(self.workers)]
            _, not_done = wait(warmups, timeout=self.startup_timeout)
            if not_done:
                _terminate(pool)
                raise RuntimeError(f"grading workers did not start within "
                                   f"{self.startup_timeout}s; raise startup_timeout")
            try:
                for fut in warmups:
                    fut.result()
            except BrokenProcessPool as err:
                _terminate(pool)
                raise RuntimeError(
                    "grading workers died at start; spawned processes re-import the main "
                    "module, so run from a file (not stdin) guarded by "
                    "`if __name__ == '__main__':`, or use Grader(workers=0)") from err
            self._pool = pool
        return self._pool

    def _kill_pool(self) -> None:
        pool, self._pool = self._pool, None
        if pool is not None:
            _terminate(pool)


def _terminate(pool: ProcessPoolExecutor) -> None:
    # ProcessPoolExecutor has no public kill before Python 3.14 (terminate_workers).
    processes: dict[int, Any] = dict(getattr(pool, "_processes", None) or {})
    for process in processes.values():
        process.kill()
    pool.shutdown(wait=False, cancel_futures=True)
    for process in processes.values():
        process.join(timeout=5)


def is_equivalent(pred: str | None, gold: str, dataset: str = "math") -> bool:
    """One-off check: is ``pred`` equivalent to ``gold``?  For many pairs use ``Grader``."""
    in_main = threading.current_thread() is threading.main_thread()
    with Grader(workers=0 if in_main else 1) as grader:
        return grader.grade(pred, gold, dataset)


def grade_rows(rows: Sequence[Mapping[str, Any]], grader: Grader) -> list[bool]:
    """``correct`` for each samples.jsonl row (its ``answer`` against its ``gold``)."""
    return grader.grade_many((row.get("answer"), str(row["gold"]), str(row["dataset"]))
                             for row in rows)
