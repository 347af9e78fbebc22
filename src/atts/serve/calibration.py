"""The server's calibration: one online, marginal bank shared by every request, kept on disk.

``ServeBank`` is a ``CalibrationBank`` (copy-on-write, so a decision always sees one consistent
snapshot while other requests add) plus persistence: saved atomically (``save_bank``: temporary
file, fsync, rename) every ``save_every`` new scores and at shutdown, and reloaded at start when
its fingerprint matches (the models, the step settings and a marker for "the client's own
conversation" as the prompt), so a restart keeps the calibration.

``RequestCalibrator`` is what the strategies call as ``env.calibrator`` for one request: a
``Decider`` (``atts.conformal.decider``, the one every run uses) with the request's own
thresholds (its alpha) against the shared bank.  The online conformal order holds
(docs/METHOD.md section 3): decide against the bank as it stands, then add the step's score.

Warm-up policy (the Decider's cold-bank rule): while the bank holds fewer than
``min_bank_size(alpha)`` scores no p-value can ever reach alpha, so there is no test to run.
Such a step gets ``p_value = None`` and the decision ``continue``: the draft step is kept and
the target writes the next step after it, exactly what a rejection does.  The server thus
starts as cautious as the target (quality first) and becomes fast as the bank fills; the score
still goes into the bank.  Warm-up steps show up as ``decision: continue, p_value: null`` in
traces and as ``warmup`` in /metrics.

Only scores drafted under the bank's fingerprinted step settings (draft tokens, temperature,
top_p) are added; a request that changes them is judged against the bank but does not grow it,
so the file stays true to its fingerprint.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Iterable, Mapping
from pathlib import Path

from atts.config import RunConfig
from atts.conformal import (
    BankSnapshot,
    CalibrationBank,
    Decider,
    Decision,
    DecisionKey,
    DecisionPolicy,
    Thresholds,
    load_bank,
    save_bank,
)
from atts.engines.base import EngineInfo

log = logging.getLogger("atts.serve")

# The prompt part of the fingerprint: the server scores steps of the client's conversation.
SERVE_PROMPT = "serve:client-chat-messages"


def bank_fingerprint(config: RunConfig, draft: EngineInfo, target: EngineInfo) -> dict[str, str]:
    """Like ``atts.runner.manifest.calibration_fingerprint``, with the serve prompt marker."""
    from atts.runner.manifest import calibration_fingerprint

    return {**calibration_fingerprint(config, draft, target), "prompt_sha256": SERVE_PROMPT}


def step_settings(config: RunConfig) -> tuple[int, float, float, str]:
    """The settings a score depends on besides models and prompt (see the fingerprint)."""
    return config.draft_tokens, config.temperature, config.top_p, config.step_stop


class ServeBank:
    def __init__(
        self,
        fingerprint: Mapping[str, str],
        *,
        scores: Iterable[float] = (),
        path: str | Path | None = None,
        save_every: int = 20,
        max_size: int = 100_000,
    ) -> None:
        self.fingerprint = dict(fingerprint)
        self.path = Path(path) if path is not None else None
        self._bank = CalibrationBank(list(scores))
        self._save_every = save_every
        self._max_size = max_size
        self._saved_n = len(self._bank)
        self._save_lock = threading.Lock()
        self._saving: asyncio.Task[None] | None = None
        self.loaded = len(self._bank)
        self.added = 0
        self.dropped = 0  # scores not added because the bank is full
        self.saves = 0
        self.save_errors = 0

    @classmethod
    def open(
        cls, path: str | Path | None, fingerprint: Mapping[str, str], *, force: bool = False,
        save_every: int = 20, max_size: int = 100_000,
    ) -> ServeBank:
        """The bank saved at ``path`` (checked against ``fingerprint``), or a new empty one."""
        scores: Iterable[float] = ()
        if path is not None and Path(path).exists():
            scores = load_bank(path, fingerprint, force=force).tolist()
        return cls(fingerprint, scores=scores, path=path, save_every=save_every,
                   max_size=max_size)

    def __len__(self) -> int:
        return len(self._bank)

    def snapshot(self) -> BankSnapshot:
        return self._bank.snapshot()

    def add(self, score: float) -> None:
        if len(self._bank) >= self._max_size:
            self.dropped += 1
            return
        n = self._bank.add(score)
        self.added += 1
        if self.path is not None and n - self._saved_n >= self._save_every:
            self._schedule_save()

    def save(self) -> Path | None:
        """Write the bank as it stands now (blocking; atomic).  None without a path."""
        if self.path is None:
            return None
        with self._save_lock:
            snapshot = self._bank.snapshot()
            if snapshot.n < self._saved_n:  # an older snapshot never overwrites a newer file
                return self.path
            written = save_bank(self.path, snapshot.scores, self.fingerprint)
            self._saved_n = snapshot.n
            self.saves += 1
            return written

    async def aclose(self) -> None:
        """Wait for a save in progress, then save what is left."""
        if self._saving is not None:
            await asyncio.gather(self._saving, return_exceptions=True)
        if self.path is not None and len(self._bank) != self._saved_n:
            self.save()

    def _schedule_save(self) -> None:
        if self._saving is not None and not self._saving.done():
            return  # the running save, or the next add after it, picks these scores up
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            self._save_logged()
            return
        self._saving = loop.create_task(asyncio.to_thread(self._save_logged))

    def _save_logged(self) -> None:
        try:
            self.save()
        except (OSError, ValueError) as err:
            self.save_errors += 1
            log.warning("could not save the calibration bank to %s: %s", self.path, err)


class _SharedBankStore:
    """The shared bank as a Decider's bank store: every key is judged against it, and a
    judged score joins it when the request drafts under the bank's step settings."""

    def __init__(self, bank: ServeBank, *, grows: bool) -> None:
        self._bank = bank
        self._grows = grows

    def judging(self, key: DecisionKey, *, own_in_bank: bool = False) -> BankSnapshot:
        return self._bank.snapshot()

    def after(self, key: DecisionKey, score: float) -> None:
        if self._grows:
            self._bank.add(score)

    def where(self, key: DecisionKey) -> str:
        return "the server's calibration bank"


class RequestCalibrator:
    """``env.calibrator`` for one request: its thresholds against the shared bank."""

    def __init__(self, bank: ServeBank, thresholds: Thresholds, *, grows: bool) -> None:
        self.decider = Decider(DecisionPolicy(thresholds, cold=Decision.CONTINUE),
                               _SharedBankStore(bank, grows=grows))

    @property
    def warmup_steps(self) -> int:
        """Steps of this request decided while the bank was cold (see the module docstring)."""
        return self.decider.cold_decisions

    async def first_step(self, question_id: str, sample_index: int) -> None:
        return None  # no pre-pass: every sample drafts its own first step

    async def ready(self, question_id: str) -> None:
        return None  # the shared bank is always readable
