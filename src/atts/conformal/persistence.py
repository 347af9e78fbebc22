"""Calibration banks on disk: a JSON file of sorted scores tied to a fingerprint.

A bank is only exchangeable with new scores when they come from the same draft and target
models, prompt template and step settings. The fingerprint records those (as strings, e.g.
model sha256s); loading against a different fingerprint raises `BankMismatchError` unless
forced. File layout (format version 1):

    {"format": "atts-calibration-bank", "version": 1, "fingerprint": {...}, "digest": "...",
     "count": n, "created": unix_time, "scores": [sorted floats]}

Floats are written with `repr` precision, so a round trip is exact. Writes are atomic: a
temporary file in the same directory, fsync, then `os.replace`.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
import time
import warnings
from collections.abc import Mapping
from pathlib import Path

import numpy as np
import numpy.typing as npt

from atts.conformal.pvalue import FloatArray, check_finite
from atts.errors import AttsError
from atts.schema import Integer, ListOf, MapOf, Number, Record, Text, problem
from atts.textfile import read_text

__all__ = [
    "BANK_FORMAT",
    "BANK_FORMAT_VERSION",
    "BankMismatchError",
    "ScoreMismatchError",
    "fingerprint_digest",
    "load_bank",
    "make_fingerprint",
    "save_bank",
]

BANK_FORMAT = "atts-calibration-bank"
BANK_FORMAT_VERSION = 1
# The shape of a bank file as load_bank checks it (atts.schema), after its format and version.
BANK_RECORD = Record({
    "format": Text(), "version": Integer(None), "fingerprint": MapOf(Text()), "digest": Text(),
    "count": Integer(), "created": Number(), "scores": ListOf(Number()),
}, required=("fingerprint", "scores", "count"), noun="bank")


class BankMismatchError(AttsError, ValueError):
    """A saved bank was calibrated under other models, prompt or step settings."""

    def __init__(self, message: str, differing: tuple[str, ...]) -> None:
        super().__init__(message)
        self.differing = differing


def _canonical(value: object) -> str:
    if isinstance(value, str):
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"), default=str)


def make_fingerprint(**parts: object) -> dict[str, str]:
    """A fingerprint from named parts, e.g. `draft_sha256=..., target_sha256=...,
    prompt_sha256=..., step={"max_tokens": 500, "boundary": "\\n\\n"}`.

    Strings are kept as they are; anything else becomes canonical JSON (sorted keys), so equal
    settings always give equal fingerprints.
    """
    if not parts:
        raise ValueError(
            "make_fingerprint needs at least one part, e.g. draft_sha256=..., target_sha256=..."
        )
    return {key: _canonical(parts[key]) for key in sorted(parts)}


def fingerprint_digest(fingerprint: Mapping[str, str]) -> str:
    """A short (12 hex) digest of a fingerprint, for file names and logs."""
    blob = json.dumps(dict(fingerprint), sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()[:12]


def _check_fingerprint(fingerprint: Mapping[str, str]) -> dict[str, str]:
    if not isinstance(fingerprint, Mapping):
        raise ValueError(
            f"fingerprint must be a mapping of str to str (see make_fingerprint), got "
            f"{type(fingerprint).__name__}"
        )
    bad = [k for k, v in fingerprint.items() if not isinstance(k, str) or not isinstance(v, str)]
    if bad:
        raise ValueError(
            f"fingerprint keys and values must be str, not for {bad!r}; build it with "
            "make_fingerprint(**parts), which turns values into strings"
        )
    return dict(fingerprint)


def check_bank_path(path: str | os.PathLike[str]) -> Path:
    """Refuse, before any score is computed, a bank path that cannot be written: a directory,
    a file that cannot be written, or a place whose nearest existing directory is a file or is
    not writable (missing directories are made when the bank is saved)."""
    target = Path(path)
    if target.is_dir():
        raise ValueError(f"{target} is a directory; give the bank a file name, e.g. "
                         f"{target / 'bank.json'}")
    if target.exists() and not os.access(target, os.W_OK):
        raise ValueError(f"the bank {target} cannot be written (permissions); give a writable "
                         "path")
    existing = target.parent
    while not existing.exists() and existing != existing.parent:
        existing = existing.parent
    if not existing.is_dir():
        raise ValueError(f"the bank {target} cannot be written: {existing} is a file, not a "
                         "directory")
    if not os.access(existing, os.W_OK):
        raise ValueError(f"the bank {target} cannot be written: {existing} is not writable")
    return target


def save_bank(
    path: str | os.PathLike[str], scores: npt.ArrayLike, fingerprint: Mapping[str, str]
) -> Path:
    """Write `scores` (sorted on the way) and `fingerprint` to `path` atomically."""
    fp = _check_fingerprint(fingerprint)
    arr = np.asarray(scores, dtype=np.float64)
    if arr.ndim > 1:
        raise ValueError(f"bank scores must be one-dimensional, got shape {arr.shape}")
    arr = np.sort(arr.reshape(-1))
    check_finite(arr, "calibration scores")
    doc = {
        "format": BANK_FORMAT,
        "version": BANK_FORMAT_VERSION,
        "fingerprint": fp,
        "digest": fingerprint_digest(fp),
        "count": int(arr.size),
        "created": time.time(),
        "scores": arr.tolist(),
    }
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".tmp", dir=target.parent)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as handle:
            json.dump(doc, handle, allow_nan=False)
            handle.write("\n")
            handle.flush()
            os.fsync(handle.fileno())
        os.replace(tmp, target)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return target


def _unreadable(path: Path, why: str) -> ValueError:
    return ValueError(
        f"{path} is not a readable calibration bank ({why}); delete it and recalibrate "
        "(`atts calibrate`)"
    )


class ScoreMismatchError(BankMismatchError):
    """A saved bank holds another nonconformity score than the one asked for; forcing cannot
    help, since p-values of one score against a bank of another mean nothing."""


# Banks written before fingerprints named their score held step perplexities.
_SCORE_BEFORE_NAMING = "ppl"


def _check_score(source: Path, saved: dict[str, str], expected: Mapping[str, str]
                 ) -> dict[str, str]:
    """Refuse a bank of another score (never forceable); the saved fingerprint with its score
    named, for the comparison of the other keys."""
    if "score" not in expected:
        return saved
    held = saved.get("score", _SCORE_BEFORE_NAMING)
    if held != expected["score"]:
        raise ScoreMismatchError(
            f"calibration bank {source} holds {held} scores, but this run judges steps by "
            f"{expected['score']}; build a bank of that score (`atts calibrate "
            f"{_flags(expected['score'])}`) or run with {_flags(held)}",
            ("score",),
        )
    return {**saved, "score": held}


def _flags(label: str) -> str:
    """The command-line flags that select a score label such as ``tail_mean:k=8``."""
    name, _, k = label.partition(":k=")
    return f"--score {name}" + (f" --set score_k={k}" if k else "")


def load_bank(
    path: str | os.PathLike[str],
    fingerprint: Mapping[str, str] | None = None,
    *,
    force: bool = False,
) -> FloatArray:
    """Read a bank saved by `save_bank`: its sorted scores as a float64 array.

    With `fingerprint` given, every key must match the saved one, else `BankMismatchError`
    (a ValueError) names the differing keys; `force=True` loads anyway with a warning, except
    for a bank of another score (`ScoreMismatchError`, never forced).
    """
    source = Path(path)
    try:
        text = read_text(source)
    except FileNotFoundError as err:
        raise FileNotFoundError(
            f"no calibration bank at {source}: run `atts calibrate` to create one"
        ) from err
    except IsADirectoryError as err:
        raise _unreadable(source, "it is a directory; give the bank's file") from err
    try:
        doc = json.loads(text)
    except json.JSONDecodeError as err:
        raise _unreadable(source, f"invalid JSON: {err}") from err
    if not isinstance(doc, dict) or doc.get("format") != BANK_FORMAT:
        raise _unreadable(source, f"missing format marker {BANK_FORMAT!r}")
    if doc.get("version") != BANK_FORMAT_VERSION:
        raise _unreadable(
            source, f"format version {doc.get('version')!r}, this atts reads {BANK_FORMAT_VERSION}"
        )
    missing = [key for key in ("fingerprint", "scores", "count") if key not in doc]
    if missing:
        raise _unreadable(source, f"it has no {' or '.join(repr(k) for k in missing)} field; "
                                  "save_bank writes fingerprint, digest, scores and count")
    found = problem(BANK_RECORD, doc)
    if found is not None:
        raise _unreadable(source, found)
    saved = dict(doc["fingerprint"])
    scores = np.asarray(doc["scores"], dtype=np.float64)
    count = doc["count"]
    if "digest" in doc and doc["digest"] != fingerprint_digest(saved):
        # The digest names the setup in file names and logs; one that disagrees with the
        # fingerprint beside it means the file was edited, and which of the two is true is
        # unknown.
        raise _unreadable(source, f"its digest {doc['digest']!r} does not match its "
                                  f"fingerprint (which digests to {fingerprint_digest(saved)!r}); "
                                  "the file was edited")
    if scores.size != count:
        raise _unreadable(source, f"count says {count} but {scores.size} scores are stored")

    if fingerprint is not None:
        expected = _check_fingerprint(fingerprint)
        saved = _check_score(source, saved, expected)
        differing = tuple(
            sorted(k for k in saved.keys() | expected.keys() if saved.get(k) != expected.get(k))
        )
        if differing:
            details = "; ".join(
                f"{k}: saved {saved.get(k, '<missing>')!r} vs now {expected.get(k, '<missing>')!r}"
                for k in differing
            )
            message = (
                f"calibration bank {source} was built under a different setup "
                f"(differing: {', '.join(differing)}; {details}); recalibrate with "
                "`atts calibrate`, or pass --force-bank (force=True) to use it anyway"
            )
            if not force:
                raise BankMismatchError(message, differing)
            warnings.warn(f"using a mismatched bank (forced): {message}", stacklevel=2)
    return np.sort(scores)
