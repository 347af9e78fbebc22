"""Nonconformity scores of a draft step, all from the target's one scoring pass.

A draft step of n tokens x_1..x_n arrives with the target's log-probabilities
``t_i = log p_target(x_i | context, x_<i)`` (``Engine.score``) and, when the draft was asked for
them, its own ``d_i = log p_draft(x_i | context, x_<i)`` from the generation that wrote it.
Every score is "higher = less like what the target would write", the orientation the conformal
p-value expects (docs/METHOD.md section 3):

    ppl            exp(-(1/n) sum_i t_i)                       the paper's step perplexity (eq. 1)
    max_surprisal  max_i (-t_i)                                the least likely token
    tail_mean      (1/k) sum of the k largest -t_i             k = score_k (all n when n < k)
    llr            (1/n) sum_i (d_i - t_i)                     draft-vs-target log-likelihood ratio

Why more than ``ppl``: a step's mean surprisal barely moves when one of its 60 tokens is an
arithmetic slip; the maximum and the tail mean see that one token.  ``llr`` asks a different
question, how much more the draft liked the step than the target does, which discounts tokens
both models find hard.  The draft's log-probabilities are those of its own distribution
(temperature 1, before top-p), the same distribution the target's are taken from.

A bank holds one score; ``score_label`` names it (with k for ``tail_mean``) in bank
fingerprints, so a bank of one score is never used to judge another (``conformal.persistence``).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass

import numpy as np

__all__ = ["SCORES", "ScoreRule", "score_label", "score_rule", "step_score"]

DEFAULT_TAIL_K = 4


@dataclass(frozen=True)
class ScoreRule:
    """One registered score: how to compute it and what a genuine value can be."""

    name: str
    needs_draft_logprobs: bool
    # The least value the formula can produce (None: any real number); a bank below it was
    # edited or holds another score.
    minimum: float | None
    compute: Callable[[np.ndarray, np.ndarray | None, int], float]


def _ppl(target: np.ndarray, draft: np.ndarray | None, k: int) -> float:
    return math.exp(-float(target.mean()))


def _max_surprisal(target: np.ndarray, draft: np.ndarray | None, k: int) -> float:
    return float(-target.min())


def _tail_mean(target: np.ndarray, draft: np.ndarray | None, k: int) -> float:
    surprisal = -target
    if surprisal.size <= k:
        return float(surprisal.mean())
    return float(np.partition(surprisal, surprisal.size - k)[-k:].mean())


def _llr(target: np.ndarray, draft: np.ndarray | None, k: int) -> float:
    if draft is None:
        raise ValueError("the llr score needs the draft's log-probabilities of the step; "
                         "generate the step with SamplingParams(logprobs=True)")
    if draft.shape != target.shape:
        raise ValueError(f"llr: {draft.size} draft log-probabilities for a step the target "
                         f"scored at {target.size} tokens; both must cover the same tokens")
    return float((draft - target).mean())


_RULES: dict[str, ScoreRule] = {
    rule.name: rule
    for rule in (
        ScoreRule("ppl", False, 1.0, _ppl),
        ScoreRule("max_surprisal", False, 0.0, _max_surprisal),
        ScoreRule("tail_mean", False, 0.0, _tail_mean),
        ScoreRule("llr", True, None, _llr),
    )
}
SCORES: tuple[str, ...] = tuple(_RULES)


def score_rule(name: str) -> ScoreRule:
    """The registered score ``name``; an unknown name raises ValueError listing the valid ones."""
    rule = _RULES.get(name)
    if rule is None:
        raise ValueError(f"unknown score {name!r}; choose one of {', '.join(SCORES)}")
    return rule


def score_label(name: str, k: int = DEFAULT_TAIL_K) -> str:
    """What a bank's fingerprint records about its score: the name, and k where it matters."""
    score_rule(name)
    return f"tail_mean:k={k}" if name == "tail_mean" else name


def step_score(
    name: str,
    target_logprobs: Sequence[float],
    draft_logprobs: Sequence[float] | None = None,
    *,
    k: int = DEFAULT_TAIL_K,
) -> float:
    """The score ``name`` of one step (see the module docstring for each formula)."""
    rule = score_rule(name)
    if k < 1:
        raise ValueError(f"score_k must be >= 1, got {k}")
    target = np.asarray(target_logprobs, dtype=np.float64)
    if target.ndim != 1 or target.size == 0:
        raise ValueError("a step score needs the log-probabilities of at least one token")
    draft = None if draft_logprobs is None else np.asarray(draft_logprobs, dtype=np.float64)
    return rule.compute(target, draft, k)
