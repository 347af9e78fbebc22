"""The live progress bar of a run: samples done, answers found, rejection rate so far, errors,
elapsed time and ETA (tqdm's own)."""

from __future__ import annotations

import sys
from typing import Any

from atts.pipeline.trace import SampleTrace, rejection_counts


class Progress:
    def __init__(self, *, total: int, initial: int = 0, enabled: bool = True) -> None:
        self.total = total
        self.answered = 0
        self.errors = 0
        self.judged = 0  # draft steps that got a decision
        self.rejected = 0  # ... of which went to the target
        self._bar: Any = None
        if enabled:
            from tqdm import tqdm

            self._bar = tqdm(
                total=total, initial=initial, unit="sample", dynamic_ncols=True,
                file=sys.stderr, desc="atts",
            )

    @property
    def rejection_rate(self) -> float | None:
        return self.rejected / self.judged if self.judged else None

    def update(self, trace: SampleTrace) -> None:
        self.answered += trace.answer is not None
        self.errors += trace.status == "error"
        rejected, judged = rejection_counts(trace.steps)
        self.rejected += rejected
        self.judged += judged
        if self._bar is not None:
            rate = self.rejection_rate
            self._bar.set_postfix(
                answered=self.answered,
                rejected="-" if rate is None else f"{rate:.0%}",
                errors=self.errors,
                refresh=False,
            )
            self._bar.update(1)

    def grow(self, samples: int) -> None:
        """More samples joined the run (an escalated question's target samples)."""
        self.total += samples
        if self._bar is not None:
            self._bar.total = self.total
            self._bar.refresh()

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
