"""The cascade strategies in a run: each question's first answers, its decision, and the
target samples an escalated question gets.

A question waits only for its own N first samples (``sample_index`` 0..N-1): when the last of
them is written, its answers are judged (``atts.pipeline.escalation``), the decision is written
to ``questions.jsonl``, and an escalated question's target samples (``sample_index`` N..2N-1,
seeded as samples 0..N-1 of a target-only run, so they are the samples target-only would have
written) go ahead of all waiting work.  Other questions go on meanwhile.

A resumed run rebuilds all of it from the folder: the recorded decisions refill the question
bank in the order they were taken, an escalated question's missing target samples are queued,
and a question whose first samples were all written before its decision was (a kill in
between) is decided at the start.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from atts.config import RunConfig
from atts.data import Problem
from atts.pipeline.escalation import Escalation, QuestionDecision
from atts.pipeline.sample import SampleSpec
from atts.pipeline.trace import SampleTrace
from atts.seeds import derive_seed

__all__ = ["EscalatingRun"]


class EscalatingRun:
    def __init__(self, config: RunConfig, problems: Sequence[Problem],
                 rows: Sequence[Mapping[str, Any]], question_rows: Sequence[Mapping[str, Any]],
                 clock: Callable[[], float] = time.time) -> None:
        self._config = config
        self._n = config.samples
        self._problems = {p.id: p for p in problems}
        recorded = sorted((QuestionDecision.from_row(r) for r in question_rows),
                          key=lambda d: d.at)
        self._decided = {d.question_id: d for d in recorded}
        self.escalation = Escalation(config, recorded, clock=clock)
        self._added: set[str] = set()  # questions handed to the escalation (decided or not)
        self._answers: dict[str, dict[int, str | None]] = {}
        self._finished_at: dict[str, float] = {}
        for row in rows:
            index = int(row["sample_index"])
            if index < self._n:
                question = str(row["question_id"])
                self._answers.setdefault(question, {})[index] = row.get("answer")
                self._finished_at[question] = max(self._finished_at.get(question, 0.0),
                                                  float(row.get("finished_at") or 0.0))

    @property
    def decided(self) -> tuple[QuestionDecision, ...]:
        """Every decision taken so far (recorded ones included)."""
        return tuple(self._decided.values())

    def is_escalated(self, spec: SampleSpec) -> bool:
        """An escalated question's target sample (not one of its first N)."""
        return spec.sample_index >= self._n

    def pending(self, done: set[tuple[str, int]]) -> list[SampleSpec]:
        """Target samples of questions escalated in earlier sessions, not yet written."""
        return [spec for d in self._decided.values() if d.escalated
                for spec in self.target_specs(d.question_id)
                if (spec.question_id, spec.sample_index) not in done]

    def undecided(self) -> list[QuestionDecision]:
        """Take up the questions whose first samples were all written in earlier sessions but
        whose decision was not (in the order their last first sample finished): the
        decisions that makes possible."""
        ready = [q for q, answers in self._answers.items()
                 if len(answers) >= self._n and q not in self._decided and q in self._problems]
        made = [d for q in sorted(ready, key=lambda q: self._finished_at[q])
                for d in self._add(q)]
        return made + self._flush_if_done()

    def on_first_sample(self, trace: SampleTrace) -> list[QuestionDecision]:
        """Record a first sample's answer; the decisions its question's N answers make
        possible (none while the escalation warm-up fills)."""
        question = trace.question_id
        answers = self._answers.setdefault(question, {})
        answers[trace.sample_index] = trace.answer if trace.status == "ok" else None
        if len(answers) < self._n or question in self._decided or question in self._added:
            return []
        return self._add(question) + self._flush_if_done()

    def target_specs(self, question_id: str) -> list[SampleSpec]:
        """The N target samples of an escalated question, seeded as target-only's 0..N-1."""
        p = self._problems[question_id]
        return [SampleSpec.of(p, self._n + j, derive_seed(self._config.seed, p.id, j))
                for j in range(self._n)]

    def _add(self, question_id: str) -> list[QuestionDecision]:
        answers = self._answers[question_id]
        self._added.add(question_id)
        made = self.escalation.add(question_id, [answers[i] for i in sorted(answers)],
                                   self._problems[question_id].dataset)
        return self._record(made)

    def _flush_if_done(self) -> list[QuestionDecision]:
        """Once every question of the run is in, a warm-up still waiting is decided."""
        complete = all(len(self._answers.get(q, ())) >= self._n for q in self._problems)
        return self._record(self.escalation.flush()) if complete else []

    def _record(self, made: list[QuestionDecision]) -> list[QuestionDecision]:
        self._decided.update((d.question_id, d) for d in made)
        return made
