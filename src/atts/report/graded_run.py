"""A run folder read for reporting: its manifest, its rows graded, and its wall time.

Reports are computed from ``manifest.json`` and ``samples.jsonl`` alone; nothing is generated
again.  Grading verdicts are cached in the run folder as ``grades.json``, keyed by
(answer, gold, dataset) and tied to the atts version that graded them, so reporting twice does
not call math-verify twice.  A folder that cannot be written keeps working without the cache.

Wall time (the denominator of every speedup):
- ``"last_session"``: the manifest's ``last_session.wall_seconds``, when that session ran every
  sample of the run (nothing skipped): the time the runner spent, engines already loaded;
- ``"rows"`` otherwise (a resumed run): the time at least one sample was in flight, the union of
  the rows' ``[started_at, finished_at]``.  Without a pause between sessions this equals the last
  ``finished_at`` minus the first ``started_at``; pauses between sessions are left out.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import atts
from atts.grading import Grader
from atts.runner.run_folder import MANIFEST, SAMPLES, RunFolder

GRADES = "grades.json"
GradeKey = tuple[str, str, str]  # (answer, gold, dataset); unanswered rows are never cached


@dataclass(frozen=True)
class GradedRun:
    """One run folder, its rows (each with ``correct: bool``) and its identity."""

    path: Path
    manifest: dict[str, Any]
    rows: list[dict[str, Any]]
    wall_seconds: float
    wall_source: str  # "last_session" | "rows" (see the module docstring)
    cached_grades: int = 0  # rows whose verdict came from grades.json
    grading_failures: list[str] = field(default_factory=list)  # timeouts / math-verify errors
    # A cascade's question-level decisions (questions.jsonl), empty for other strategies.
    escalations: list[dict[str, Any]] = field(default_factory=list)

    @property
    def config(self) -> dict[str, Any]:
        return dict(self.manifest.get("config") or {})

    @property
    def strategy(self) -> str:
        return str(self.config.get("strategy") or _first(self.rows, "strategy") or "?")

    @property
    def dataset(self) -> str:
        return str(self.config.get("dataset") or _first(self.rows, "dataset") or "?")

    @property
    def alpha(self) -> float | None:
        alpha = self.config.get("alpha")
        return float(alpha) if alpha is not None else None

    @property
    def label(self) -> str:
        """The name plots and tables give this run: its folder and its strategy."""
        return f"{self.path.name} ({self.strategy})"

    @property
    def questions(self) -> list[str]:
        return list(dict.fromkeys(str(r["question_id"]) for r in self.rows))


def check_run_folder(path: str | Path) -> RunFolder:
    """The run folder at ``path``, or a ValueError that says how to make one."""
    folder = RunFolder(path)
    if not folder.path.is_dir():
        raise ValueError(f"{folder.path} does not exist; pass the --out folder of an `atts run` "
                         f"(e.g. `atts run --engine fake --out {folder.path}`)")
    if not folder.manifest_path.is_file() or not folder.samples_path.is_file():
        missing = MANIFEST if not folder.manifest_path.is_file() else SAMPLES
        raise ValueError(f"{folder.path} is not a run folder (no {missing}); pass the --out "
                         "folder of an `atts run`, or run `atts run --out` there first")
    return folder


def load_run(path: str | Path, grader: Grader | None = None, *,
             use_cache: bool = True) -> GradedRun:
    """Read and grade the run at ``path``.  ``grader``: reused if given, else one is made and
    closed here.  ``use_cache=False`` grades every answer again (and rewrites grades.json)."""
    folder = check_run_folder(path)
    manifest = folder.read_manifest()
    rows = folder.rows()
    if not rows:
        raise ValueError(f"{folder.path} holds no finished sample yet; run `atts run --out "
                         f"{folder.path}` (the same command resumes) before reporting")
    cache = _read_cache(folder.path / GRADES) if use_cache else {}
    keys = [_key(r) for r in rows]
    todo = sorted({k for k in keys if k is not None and k not in cache})
    failures: list[str] = []
    verdicts: dict[GradeKey, bool] = {}
    if todo:
        own = grader is None
        active = grader if grader is not None else Grader()
        try:
            before = len(active.failures)
            verdicts = dict(zip(todo, active.grade_many(todo), strict=True))
            failed = {(f.pred, f.gold) for f in active.failures[before:]}
            failures = [f"{f.pred!r} vs {f.gold!r}: {f.reason}" for f in active.failures[before:]]
        finally:
            if own:
                active.close()
        # A timeout is graded wrong now but not cached: a later report tries it again.
        cache.update((k, v) for k, v in verdicts.items() if (k[0], k[1]) not in failed)
        _write_cache(folder.path / GRADES, cache)
    verdicts = {**cache, **verdicts}
    graded = [dict(r, correct=k is not None and verdicts[k])
              for r, k in zip(rows, keys, strict=True)]
    wall, source = wall_time(manifest, rows)
    fresh = set(todo)
    cached = sum(k is not None and k not in fresh for k in keys)
    return GradedRun(folder.path, manifest, graded, wall, source, cached, failures,
                     folder.question_rows())


def wall_time(manifest: Mapping[str, Any],
              rows: Sequence[Mapping[str, Any]]) -> tuple[float, str]:
    """The run's wall seconds and where they come from (see the module docstring)."""
    session = manifest.get("last_session") or {}
    if (session.get("wall_seconds") and session.get("skipped") == 0
            and session.get("written") == len(rows)):
        return float(session["wall_seconds"]), "last_session"
    spans = sorted((float(r["started_at"]), float(r["finished_at"])) for r in rows)
    busy, end = 0.0, float("-inf")
    for start, finish in spans:
        if finish > end:
            busy += finish - max(start, end)
            end = finish
    return busy, "rows"


def _key(row: Mapping[str, Any]) -> GradeKey | None:
    answer = row.get("answer")
    if answer is None or not str(answer).strip():
        return None
    return str(answer), str(row.get("gold", "")), str(row.get("dataset", ""))


def _read_cache(path: Path) -> dict[GradeKey, bool]:
    """The cached verdicts, or none: a cache of another version (its rules may differ) or one
    that is not exactly what ``_write_cache`` writes (an entry of three strings and a bool) is
    graded again, never half trusted: ``"yes"`` must not be read as a verdict."""
    try:
        data = json.loads(path.read_bytes().decode("utf-8"))
    except FileNotFoundError:
        return {}
    except (UnicodeDecodeError, json.JSONDecodeError):
        return _unreadable_cache(path)
    if not isinstance(data, dict) or data.get("atts") != atts.__version__:
        return {}
    entries = data.get("grades")
    if not isinstance(entries, list) or not all(
            isinstance(e, list) and len(e) == 4 and all(isinstance(v, str) for v in e[:3])
            and isinstance(e[3], bool) for e in entries):
        return _unreadable_cache(path)
    return {(a, g, d): c for a, g, d, c in entries}


def _unreadable_cache(path: Path) -> dict[GradeKey, bool]:
    print(f"atts: {path} is not a grade cache this atts wrote; grading every answer again",
          file=sys.stderr)
    return {}


def _write_cache(path: Path, cache: Mapping[GradeKey, bool]) -> None:
    # One verdict per line: [answer, gold, dataset, correct], easy to read and to diff.
    entries = ",\n  ".join(json.dumps([a, g, d, c], ensure_ascii=False)
                           for (a, g, d), c in sorted(cache.items()))
    text = f'{{"atts": {json.dumps(atts.__version__)}, "grades": [\n  {entries}\n]}}\n'
    temp = path.with_suffix(f".tmp{os.getpid()}")
    try:
        temp.write_text(text)
        os.replace(temp, path)
    except OSError:  # a read-only run folder: report without the cache
        with contextlib.suppress(OSError):
            temp.unlink(missing_ok=True)


def _first(rows: Sequence[Mapping[str, Any]], key: str) -> Any:
    return rows[0].get(key) if rows else None
