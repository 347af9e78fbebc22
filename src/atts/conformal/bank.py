"""Calibration banks: sorted, growing sets of scores that many tasks read while others add.

What a decision sees (the concurrency contract)
------------------------------------------------
A `CalibrationBank` holds one reference to an immutable `BankSnapshot` (a sorted, read-only
float64 array). `add` is copy-on-write: under a `threading.Lock` it merges the new scores into
a *new* sorted array (slices copied around `np.searchsorted` positions, O(n + k log k)) and then
swaps the reference in one assignment. `snapshot()` takes no lock: it reads that reference. Hence

- a decision works on one snapshot: the bank as it stood after some complete sequence of `add`
  calls, never a half-merged array; later adds do not change a snapshot already taken;
- adds are linearisable: concurrent adds from threads never lose scores (the lock serialises the
  read-merge-swap), and the sizes of successive snapshots seen by any one reader never shrink;
- `add` never awaits, so from asyncio it is one atomic step; it may block the event loop for the
  O(n) copy (about a millisecond at 10^6 scores): batch scores where you can.

Which bank judges which step (strata) is ``atts.conformal.strata``; what a score against a
snapshot decides is ``atts.conformal.decider``.
"""

from __future__ import annotations

import threading
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, overload

import numpy as np
import numpy.typing as npt

from atts.conformal.pvalue import FloatArray, check_finite, p_value_of, p_value_sorted

__all__ = ["BankSnapshot", "CalibrationBank"]

def _frozen(array: FloatArray) -> FloatArray:
    array.setflags(write=False)
    return array


@dataclass(frozen=True, eq=False, repr=False, init=False)
class BankSnapshot:
    """An immutable, sorted bank of n scores, and the p-values of scores against it.

    `BankSnapshot(scores)` copies, checks (finite, 1-D) and sorts; banks build snapshots
    through a trusted path that skips both.
    """

    scores: FloatArray

    def __init__(self, scores: npt.ArrayLike) -> None:
        arr = np.array(scores, dtype=np.float64, copy=True)
        if arr.ndim > 1:
            raise ValueError(f"bank scores must be one-dimensional, got shape {arr.shape}")
        arr = arr.reshape(-1)
        check_finite(arr, "calibration scores")
        arr.sort()
        object.__setattr__(self, "scores", _frozen(arr))

    @classmethod
    def _trusted(cls, sorted_scores: FloatArray) -> BankSnapshot:
        """Wrap an array the caller guarantees sorted, finite and float64 (no copy)."""
        snap = object.__new__(cls)
        object.__setattr__(snap, "scores", _frozen(sorted_scores))
        return snap

    def __reduce__(self) -> tuple[type[BankSnapshot], tuple[FloatArray]]:
        # Rebuild through __init__ so an unpickled or copied snapshot is read-only again.
        return (BankSnapshot, (np.array(self.scores),))

    @property
    def n(self) -> int:
        return int(self.scores.shape[0])

    def __len__(self) -> int:
        return self.n

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, BankSnapshot):
            return NotImplemented
        return bool(np.array_equal(self.scores, other.scores))

    def __hash__(self) -> int:
        return hash(self.scores.tobytes())

    def __repr__(self) -> str:
        if self.n == 0:
            return "BankSnapshot(n=0)"
        return f"BankSnapshot(n={self.n}, min={self.scores[0]:.6g}, max={self.scores[-1]:.6g})"

    @overload
    def p_value(
        self, scores: float, randomized: bool = ..., rng: np.random.Generator | None = ...
    ) -> float: ...
    @overload
    def p_value(
        self,
        scores: npt.NDArray[Any],
        randomized: bool = ...,
        rng: np.random.Generator | None = ...,
    ) -> FloatArray: ...
    @overload
    def p_value(
        self,
        scores: npt.ArrayLike,
        randomized: bool = ...,
        rng: np.random.Generator | None = ...,
    ) -> float | FloatArray: ...
    def p_value(
        self,
        scores: npt.ArrayLike,
        randomized: bool = False,
        rng: np.random.Generator | None = None,
    ) -> float | FloatArray:
        """Conformal p-value(s) of `scores` against this bank (see `atts.conformal.p_value`)."""
        return p_value_sorted(self.scores, scores, randomized=randomized, rng=rng)

    def p_value_of(self, score: float, *, leave_one_out: bool = False,
                   rng: np.random.Generator | None = None) -> float:
        """One step's p-value (``atts.conformal.pvalue.p_value_of``)."""
        return p_value_of(self.scores, score, leave_one_out=leave_one_out, rng=rng)


def _merge_sorted(current: FloatArray, new: FloatArray) -> FloatArray:
    """A new sorted array holding both sorted inputs (ties: old scores first)."""
    k = new.size
    if k >= current.size:
        merged = np.concatenate([current, new])
        merged.sort(kind="stable")
        return merged
    at = np.searchsorted(current, new, side="right")
    merged = np.empty(current.size + k, dtype=np.float64)
    if k <= 16:  # a few slice copies beat any index arithmetic
        prev = 0
        for j, i in enumerate(at.tolist()):
            merged[prev + j : i + j] = current[prev:i]
            merged[i + j] = new[j]
            prev = i
        merged[prev + k :] = current[prev:]
        return merged
    slots = at + np.arange(k)
    merged[slots] = new
    keep = np.ones(merged.size, dtype=bool)
    keep[slots] = False
    merged[keep] = current
    return merged


def _as_scores(scores: float | Iterable[float] | npt.ArrayLike) -> FloatArray:
    if isinstance(scores, (int, float, np.integer, np.floating)) and not isinstance(scores, bool):
        arr = np.array([scores], dtype=np.float64)
    elif isinstance(scores, np.ndarray):
        arr = np.array(scores, dtype=np.float64).reshape(-1)
    elif isinstance(scores, Iterable):
        arr = np.array(list(scores), dtype=np.float64).reshape(-1)
    else:
        raise ValueError(f"scores must be a number or an iterable of numbers, got {scores!r}")
    check_finite(arr, "calibration scores")
    return arr


class CalibrationBank:
    """One sorted, growing bank; thread- and task-safe (see the module docstring)."""

    def __init__(self, scores: Iterable[float] | npt.ArrayLike = ()) -> None:
        self._lock = threading.Lock()
        initial = _as_scores(scores)
        initial.sort()
        self._snapshot = BankSnapshot._trusted(initial)

    def add(self, scores: float | Iterable[float] | npt.ArrayLike) -> int:
        """Add one score or many; returns the bank size after this add."""
        new = _as_scores(scores)
        new.sort()
        with self._lock:
            current = self._snapshot.scores
            if new.size:
                self._snapshot = BankSnapshot._trusted(_merge_sorted(current, new))
            return self._snapshot.n

    def snapshot(self) -> BankSnapshot:
        """The bank as it stands now, immutable; lock-free."""
        return self._snapshot

    def __len__(self) -> int:
        return self._snapshot.n

    def __repr__(self) -> str:
        return f"CalibrationBank(n={len(self)})"
