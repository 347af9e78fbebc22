"""What a sample leaves behind: its steps and its outcome, as frozen values.

``SampleTrace.to_row`` is the one place that defines a ``samples.jsonl`` row (docs/TEAM.md),
``SAMPLE_ROW`` its shape as every reader checks it (``atts.schema``), ``SampleTrace.from_row``
the one that reads it back, and ``Step.judged`` / ``Step.rejected`` the one definition of the
rejection rate that progress, reports and the server count.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import asdict, dataclass, field, fields, replace
from typing import Any, Literal, get_args

from atts.schema import Choice, Flag, Integer, ListOf, Nullable, Number, Record, Text

Author = Literal["draft", "target"]
StepKind = Literal["step", "wait", "forced_answer"]
# Why a sample stopped writing: it boxed an answer, ended its message (EOS), used its T rounds,
# or the next round would not fit the context window.  A forced answer may follow any but the
# first (its step says so).
StopReason = Literal["answer", "eos", "rounds", "context"]
# The decisions that hand a draft step to the target (docs/METHOD.md: p <= alpha).
REJECTED = ("continue", "regenerate")


@dataclass(frozen=True)
class Step:
    round: int
    author: Author
    text: str
    tokens: int
    kept: bool = True  # False: a draft step discarded by a "regenerate" decision
    kind: StepKind = "step"
    # A judged draft step's nonconformity score (RunConfig.score, the manifest says which);
    # the judge strategy: the target's 0-9 rating.
    score: float | None = None
    p_value: float | None = None
    decision: str | None = None  # accept | continue | regenerate (draft steps that were judged)
    calibration: bool = False  # its score went into the calibration bank
    seconds: float = 0.0  # the call that wrote the step (plus its scoring for draft steps)
    # A judged draft step: the tokens the target read to judge it (the step; the judge: the
    # step and its rating cue), the seconds of that pass (part of ``seconds``), and the
    # judge's rating tokens the target wrote.
    score_tokens: int = 0
    score_seconds: float = 0.0
    rating_tokens: int = 0
    # Context tokens the engines evaluated for this step's calls rather than reading them from
    # their caches (generation and, for a draft step, scoring): about one per call when a
    # sample keeps its cache, the whole history when its cache was lost.
    prefill_tokens: int = 0
    # Seconds from the sample's start to the step's decision (a judged draft step) or to its
    # end (any other step): ``started_at + t`` orders the steps of a run as it met them
    # (``atts replay``).  Rows written before this field have none: readers use the summed
    # ``seconds`` of the steps up to and including this one (``atts.replay.stream``).
    t: float | None = None
    # A judged draft step: its place in the run's sequence of decisions in this session (the
    # Decider's count), which orders decisions that share a timestamp (``atts replay``).
    order: int | None = None

    @property
    def judged(self) -> bool:
        """A draft step that got a decision: the denominator of the rejection rate."""
        return self.author == "draft" and self.decision is not None

    @property
    def rejected(self) -> bool:
        """A judged step handed to the target: the numerator of the rejection rate."""
        return self.judged and self.decision in REJECTED


def steps_of(row: Mapping[str, Any]) -> tuple[Step, ...]:
    """The steps of a ``samples.jsonl`` row as values (keys a Step lacks are ignored)."""
    names = {f.name for f in fields(Step)}
    return tuple(Step(**{k: v for k, v in s.items() if k in names})
                 for s in row.get("steps") or ())


def rejection_counts(steps: Iterable[Step]) -> tuple[int, int]:
    """(rejected, judged) draft steps among ``steps``."""
    judged = [s for s in steps if s.judged]
    return sum(s.rejected for s in judged), len(judged)


@dataclass(frozen=True)
class TokenCounts:
    draft_decode: int = 0
    target_decode: int = 0
    target_score: int = 0


@dataclass(frozen=True)
class Timings:
    draft: float = 0.0
    score: float = 0.0
    target: float = 0.0
    wall: float = 0.0


def step_counters(steps: Iterable[Step], wall: float) -> tuple[TokenCounts, Timings]:
    """A sample's token and time counters, which follow from its steps: decoded tokens and
    call seconds by author (a "Wait" cue is appended, not decoded), and the target's judging
    passes (scoring, or the judge's rating) apart."""
    draft_decode = target_decode = target_score = 0
    draft = score = target = 0.0
    for step in steps:
        target_score += step.score_tokens
        target_decode += step.rating_tokens
        score += step.score_seconds
        if step.author == "draft":
            draft_decode += step.tokens
            draft += step.seconds - step.score_seconds
        elif step.kind != "wait":
            target_decode += step.tokens
            target += step.seconds
    return (TokenCounts(draft_decode, target_decode, target_score),
            Timings(draft, score, target, wall))


@dataclass(frozen=True)
class SampleTrace:
    question_id: str
    dataset: str
    sample_index: int
    seed: int
    strategy: str
    question: str  # the problem as the model read it (rows before 2026-12 lack it)
    gold: str
    status: Literal["ok", "error"]
    answer: str | None
    text: str
    rounds: int
    steps: tuple[Step, ...]
    tokens: TokenCounts = field(default_factory=TokenCounts)
    seconds: Timings = field(default_factory=Timings)
    started_at: float = 0.0
    finished_at: float = 0.0
    error: str | None = None
    stop: StopReason | None = None  # None: the sample failed (status "error")
    # Written by the target after its question was escalated (cascade strategies): the
    # question's answer comes from these samples, not from its first N.
    escalated: bool = False

    def to_row(self) -> dict[str, Any]:
        row = asdict(replace(self, steps=()))  # the steps once, as a list
        row["steps"] = [asdict(step) for step in self.steps]
        return row

    @classmethod
    def from_row(cls, row: Mapping[str, Any]) -> SampleTrace:
        """A ``samples.jsonl`` row read back (rows of older versions lack ``question``,
        ``stop``, a step's ``t`` or ``prefill_tokens``: their defaults stand in)."""
        steps = steps_of(row)
        known = {f.name for f in fields(cls)} - {"steps", "tokens", "seconds"}
        values = {k: v for k, v in row.items() if k in known}
        values.setdefault("question", "")
        return cls(**values, steps=steps, tokens=TokenCounts(**(row.get("tokens") or {})),
                   seconds=Timings(**(row.get("seconds") or {})))


# The shape of a samples.jsonl row as it is read back: every field SampleTrace.to_row writes,
# typed.  Required: what a reader cannot do without or would silently misread (a missing
# answer would be graded wrong); rows of older versions lack ``question``, ``stop``,
# ``escalated`` and a step's ``t``, ``order`` and token counts, so those may be absent.
STEP = Record({
    "round": Integer(), "author": Choice(get_args(Author)), "text": Text(), "tokens": Integer(),
    "kept": Flag(), "kind": Choice(get_args(StepKind)), "score": Nullable(Number()),
    "p_value": Nullable(Number(0.0, 1.0)), "decision": Nullable(Choice(("accept", *REJECTED))),
    "calibration": Flag(), "seconds": Number(), "score_tokens": Integer(),
    "score_seconds": Number(), "rating_tokens": Integer(), "prefill_tokens": Integer(),
    "t": Nullable(Number()), "order": Nullable(Integer()),
}, required=("round", "author", "text", "tokens"), noun="step")
SAMPLE_ROW = Record({
    "question_id": Text(), "dataset": Text(), "sample_index": Integer(), "seed": Integer(None),
    "strategy": Text(), "question": Text(), "gold": Text(), "status": Choice(("ok", "error")),
    "answer": Nullable(Text()), "text": Text(), "rounds": Integer(),
    "steps": ListOf(STEP, item="step"),
    "tokens": Record({f.name: Integer() for f in fields(TokenCounts)}),
    "seconds": Record({f.name: Number() for f in fields(Timings)}),
    "started_at": Number(), "finished_at": Number(), "error": Nullable(Text()),
    "stop": Nullable(Choice(get_args(StopReason))), "escalated": Flag(),
}, required=("question_id", "dataset", "sample_index", "gold", "status", "answer", "steps",
             "started_at", "finished_at"), noun="row")
