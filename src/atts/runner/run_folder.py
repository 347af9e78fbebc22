"""The run folder: ``manifest.json``, the append-only ``samples.jsonl`` and, for the cascade
strategies, the append-only ``questions.jsonl`` of question-level escalation decisions.  The one
place that writes results.

- A row is appended (one ``write`` of one line, flushed and fsynced) only when its sample has
  finished, so ``kill -9`` loses at most the samples in flight.  A torn last line (a kill in the
  middle of a write) is cut off when the folder is opened again.
- Resume: the same configuration on the same folder skips the samples already written.  A
  different configuration is an error that offers a new folder or ``--overwrite``; only keys
  that cannot change a sample's content (concurrency, retries) may differ.
- Readers take the last row per (question, sample): a failed sample retried later supersedes
  its error row.
- Every file is checked as it is read (``atts.schema``): the manifest against ``MANIFEST_RECORD``,
  each row against ``SAMPLE_ROW`` or ``QUESTION_ROW``.  A malformed one is an error naming the
  file, the line and the field, for every command that reads the folder; none is skipped.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
from collections.abc import Iterator
from pathlib import Path
from typing import TYPE_CHECKING, Any

from atts.config import RunConfig, resolve_force_answer
from atts.errors import AttsError
from atts.pipeline.escalation import QUESTION_ROW
from atts.pipeline.trace import SAMPLE_ROW
from atts.runner.manifest import MANIFEST_RECORD
from atts.schema import Record, check, read_jsonl, torn
from atts.textfile import read_text

if TYPE_CHECKING:
    from atts.pipeline.trace import SampleTrace

MANIFEST = "manifest.json"
SAMPLES = "samples.jsonl"
QUESTIONS = "questions.jsonl"
LOCK = ".lock"
# Keys that change how fast a run goes, never what a sample contains.
OPERATIONAL_KEYS = frozenset(
    {"draft_concurrency", "target_concurrency", "max_active_samples", "admission",
     "max_retries", "retry_backoff", "cores", "draft_threads", "target_threads"}
)


class RunFolderError(AttsError, ValueError):
    """The folder cannot hold this run as asked; the message offers the way out."""


class RunFolder:
    def __init__(self, path: str | Path) -> None:
        self.path = Path(path)

    @property
    def manifest_path(self) -> Path:
        return self.path / MANIFEST

    @property
    def samples_path(self) -> Path:
        return self.path / SAMPLES

    @property
    def questions_path(self) -> Path:
        return self.path / QUESTIONS

    def prepare(self, manifest: dict[str, Any], *, overwrite: bool = False) -> None:
        """Create the folder for this run, or check that it holds the same run."""
        if overwrite and self.path.exists():
            for name in (MANIFEST, SAMPLES, QUESTIONS, "report.md", "summary.json"):
                (self.path / name).unlink(missing_ok=True)
            for extra in self.path.glob("*.png"):
                extra.unlink()
        self.path.mkdir(parents=True, exist_ok=True)
        for path in (self.samples_path, self.questions_path):
            _repair_tail(path)
        if self.manifest_path.exists() and not self._holds_rows():
            # A session that ended before its first row (refused at the tokenizer check, a
            # model that would not load) left only its manifest: nothing to resume, so the
            # corrected command takes the folder instead of being refused by it.
            self.manifest_path.unlink()
        if self.manifest_path.exists():
            old = self.read_manifest()
            differences = _config_differences(old.get("config", {}), manifest["config"])
            if differences:
                raise RunFolderError(
                    f"{self.path} holds a run with a different configuration "
                    f"({'; '.join(differences)}). Use a new --out folder, run the same "
                    "configuration to resume, or pass --overwrite to discard the old results."
                )
            old_questions = old.get("questions") or {}
            new_questions = manifest.get("questions") or {}
            changed = sorted(q for q in old_questions.keys() & new_questions.keys()
                             if old_questions[q] != new_questions[q])
            if changed:
                raise RunFolderError(
                    f"{self.path} was written for other questions: {len(changed)} problem(s) "
                    f"changed since (e.g. {changed[0]}; the dataset file was edited). Use a new "
                    "--out folder, or pass --overwrite to run them again."
                )
            if old.get("config", {}).get("limit") != manifest["config"].get("limit"):
                # A larger --limit extends the run: the old samples stay, the new questions
                # are added (_config_differences allows only growth).
                self.update_manifest(config=manifest["config"],
                                     questions={**old_questions, **new_questions},
                                     problems=manifest.get("problems"))
        else:
            self._write_json(self.manifest_path, manifest)

    def _holds_rows(self) -> bool:
        return any(path.is_file() and path.stat().st_size > 0
                   for path in (self.samples_path, self.questions_path))

    @contextlib.contextmanager
    def locked(self) -> Iterator[None]:
        """Hold the folder's write lock (``.lock``, an flock) while a run writes it: a second
        writer is refused with the holder's pid instead of computing everything again and
        appending duplicate rows.  The lock dies with its process (kill -9 included)."""
        self.path.mkdir(parents=True, exist_ok=True)
        with (self.path / LOCK).open("a+") as file:
            try:
                fcntl.flock(file, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError as err:
                file.seek(0)
                holder = file.read().strip() or "unknown"
                raise RunFolderError(
                    f"{self.path} is being written by another run (pid {holder}); wait for it "
                    "to finish, or use another --out folder"
                ) from err
            file.seek(0)
            file.truncate()
            file.write(str(os.getpid()))
            file.flush()
            try:
                yield
            finally:
                fcntl.flock(file, fcntl.LOCK_UN)

    def read_manifest(self) -> dict[str, Any]:
        """The manifest, checked against ``MANIFEST_RECORD``."""
        try:
            data = json.loads(read_text(self.manifest_path))
        except FileNotFoundError as err:
            raise RunFolderError(f"{self.path} is not a run folder (no {MANIFEST})") from err
        except json.JSONDecodeError as err:
            raise RunFolderError(f"{self.manifest_path}: not valid JSON ({err.msg} at line "
                                 f"{err.lineno} column {err.colno})") from err
        return check(MANIFEST_RECORD, data, str(self.manifest_path))

    def update_manifest(self, **fields: Any) -> None:
        manifest = self.read_manifest()
        manifest.update(fields)
        self._write_json(self.manifest_path, manifest)

    def append_trace(self, trace: SampleTrace) -> None:
        """Append a finished sample's row (``SampleTrace.to_row``)."""
        self.append(trace.to_row())

    def append(self, row: dict[str, Any]) -> None:
        """Append one sample's row (``_append``)."""
        _append(self.samples_path, row)

    def append_question(self, row: dict[str, Any]) -> None:
        """Append one question's escalation decision (``QuestionDecision.to_row``)."""
        _append(self.questions_path, row)

    def question_rows(self) -> list[dict[str, Any]]:
        """The latest decision row of every question, in first-written order."""
        latest: dict[str, dict[str, Any]] = {}
        for row in _read_rows(self.questions_path, QUESTION_ROW):
            latest[str(row["question_id"])] = row
        return list(latest.values())

    def rows(self) -> list[dict[str, Any]]:
        """The latest row of every (question, sample), in first-written order."""
        latest: dict[tuple[str, int], dict[str, Any]] = {}
        for row in _read_rows(self.samples_path, SAMPLE_ROW):
            latest[(row["question_id"], row["sample_index"])] = row
        return list(latest.values())

    def finished(self, *, include_errors: bool = True) -> set[tuple[str, int]]:
        return {
            (row["question_id"], row["sample_index"])
            for row in self.rows()
            if include_errors or row.get("status") == "ok"
        }

    @staticmethod
    def _write_json(path: Path, data: dict[str, Any]) -> None:
        temp = path.with_suffix(f".tmp{os.getpid()}")
        temp.write_text(json.dumps(data, indent=2, sort_keys=True) + "\n")
        os.replace(temp, path)


def _append(path: Path, row: dict[str, Any]) -> None:
    """Append one row, durably, whole or not at all: a write that fails part-way (a full
    disk) is cut back to the file's previous end before the error goes on, so no torn
    line is left for the next session to skip."""
    data = (json.dumps(row, ensure_ascii=False, allow_nan=False) + "\n").encode("utf-8")
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        size = os.fstat(fd).st_size
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except OSError:
            os.ftruncate(fd, size)  # shrinking needs no free space
            raise
    finally:
        os.close(fd)


def _read_rows(path: Path, record: Record) -> Iterator[dict[str, Any]]:
    """The rows of an append-only file, each checked against ``record``; a torn last line (a
    kill mid-write) is skipped."""
    if not path.exists():
        return
    for _, row in read_jsonl(path, record):
        yield row


def _repair_tail(path: Path) -> None:
    """Cut a torn last line so the next append starts on a line of its own.  Bytes after the
    last newline that cannot be a torn row (a binary file, an edit) are left for the reader
    to name."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data) and torn(data[end:]):
        with path.open("r+b") as file:
            file.truncate(end)


# Settings added later, with the default that does what runs did before they existed: a
# manifest without them compares as if it recorded these values.
ADDED_DEFAULTS = {key: RunConfig.__dataclass_fields__[key].default
                  for key in ("pvalue", "adaptive_gamma", "adaptive_strata", "escalate_alpha",
                              "escalate_score", "escalate_pvalue", "escalate_levels",
                              "escalate_vote", "escalate_warmup")}


def _resolved(config: dict[str, Any]) -> dict[str, Any]:
    """Settings compared by what they do: ``force_answer: auto`` (the default since
    2026-11-29) resumes a folder written with the author it resolves to."""
    config = {**ADDED_DEFAULTS, **config}
    if "force_answer" not in config:
        return config
    return {**config, "force_answer": resolve_force_answer(config["force_answer"],
                                                           config.get("strategy", "atts"))}


def _limit_grows(old: Any, new: Any) -> bool:
    """Whether ``limit`` only extends the run: more questions (or all), the old ones kept."""
    return old == new or new is None or (old is not None and int(new) >= int(old))


def _config_differences(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    old, new = _resolved(old), _resolved(new)
    keys = (set(old) | set(new)) - OPERATIONAL_KEYS
    if _limit_grows(old.get("limit"), new.get("limit")):
        keys.discard("limit")
    return [
        f"{key}: {old.get(key)!r} -> {new.get(key)!r}"
        for key in sorted(keys)
        if old.get(key) != new.get(key)
    ]
