"""Agreement among a question's samples: their final answers clustered by the grader's
equivalence, the vote shares, and the question-level nonconformity scores built on them.

Why (docs/METHOD.md section 8): the target's step score does not see wrong reasoning, but the
siblings do.  When a question's samples disagree, the model that wrote them is probably wrong
on it; one minus the largest vote share flagged the questions the draft fails with AUROC 0.94
on our runs.  A question with disagreeing samples is the one to hand to the target.

Clusters: answers with the same normal form (``normalize_answer``) are one answer; on MATH-
style datasets two normal forms may still be equal (``\\sqrt{18}`` and ``3\\sqrt{2}``), which an
optional ``equivalent`` check (math-verify through a ``Grader``) decides between the clusters'
first answers.  On integer-answer datasets (GSM8K, AIME, AMC) different normal forms are
different numbers, as the grader's own fast path says, so no check is needed.  A sample
without an answer joins no cluster: it agrees with nothing.

Scores (higher = less agreement = more reason to escalate), defined for any number k >= 1 of
finished samples, so a question can be judged on the samples it has:

    disagreement   1 - (largest cluster) / k
    entropy        -sum_c (|c| / k) log(|c| / k), every unanswered sample its own cluster
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from atts.grading.normalize import answer_family, normalize_answer

__all__ = ["QUESTION_SCORES", "Vote", "cluster_answers", "question_score"]

Equivalent = Callable[[str, str], bool]  # (answer, answer) -> the same value?


@dataclass(frozen=True)
class Vote:
    """A question's finished samples, clustered: ``clusters`` holds sample positions per
    answer, largest first (ties: first seen first); ``keys`` the normal form of each."""

    samples: int  # k: finished samples, answered or not
    clusters: tuple[tuple[int, ...], ...]
    keys: tuple[str, ...]

    @property
    def shares(self) -> tuple[float, ...]:
        return tuple(len(c) / self.samples for c in self.clusters)

    @property
    def top_share(self) -> float:
        """The largest vote share (0 when no sample answered)."""
        return self.shares[0] if self.clusters else 0.0

    @property
    def winner(self) -> int | None:
        """The first sample of the largest cluster, None when no sample answered."""
        return self.clusters[0][0] if self.clusters else None

    @property
    def unanswered(self) -> int:
        return self.samples - sum(len(c) for c in self.clusters)

    def counts(self) -> dict[str, int]:
        """Normal form -> samples that gave it, largest first."""
        return {key: len(c) for key, c in zip(self.keys, self.clusters, strict=True)}


def cluster_answers(answers: Sequence[str | None], dataset: str, *,
                    equivalent: Equivalent | None = None) -> Vote:
    """Cluster ``answers`` (one per finished sample, None for no answer) by equivalence."""
    if not answers:
        raise ValueError("a vote needs at least one finished sample")
    groups: dict[str, list[int]] = {}
    firsts: dict[str, str] = {}
    for i, answer in enumerate(answers):
        key = normalize_answer(answer, dataset) if answer is not None else None
        if not key:
            continue
        groups.setdefault(key, []).append(i)
        firsts.setdefault(key, answer or key)
    keys = list(groups)
    if equivalent is not None and answer_family(dataset) == "math":
        merged: list[str] = []
        for key in keys:
            same = next((m for m in merged if equivalent(firsts[m], firsts[key])), None)
            if same is None:
                merged.append(key)
            else:
                groups[same].extend(groups.pop(key))
        keys = merged
    ordered = sorted(keys, key=lambda k: (-len(groups[k]), min(groups[k])))
    return Vote(len(answers), tuple(tuple(sorted(groups[k])) for k in ordered), tuple(ordered))


def _disagreement(vote: Vote) -> float:
    return 1.0 - vote.top_share


def _entropy(vote: Vote) -> float:
    shares = list(vote.shares) + [1.0 / vote.samples] * vote.unanswered
    return float(-sum(p * math.log(p) for p in shares if p > 0))


QUESTION_SCORES: dict[str, Callable[[Vote], float]] = {
    "disagreement": _disagreement,
    "entropy": _entropy,
}


def question_score(name: str, vote: Vote) -> float:
    """The question-level nonconformity score ``name`` of ``vote`` (the module docstring)."""
    rule = QUESTION_SCORES.get(name)
    if rule is None:
        raise ValueError(f"unknown question score {name!r}; choose one of "
                         f"{', '.join(QUESTION_SCORES)}")
    return rule(vote)
