"""`atts probe`: what a token costs on the configured engines, and whether ATTS can pay there.

Before a long run a user needs to know whether ATTS can beat target-only on their hardware and
pair; the per-token costs decide it (docs/METHOD.md section 6).  The probe measures them on
the engines themselves (embedded or remote) at the run's samples in flight B and a context of
C tokens (64 by default: each sample must first read its context, which on a CPU costs more
than the whole measurement), each the median of a few short rounds:

- decode: B samples, each in its own cached sequence, decode T tokens at once (the engine
  batches them); cost per token = wall / tokens decoded;
- scoring: B samples score a step of S tokens each after their cached prefix (one prefill
  over the step, as ATTS scores); cost per token = wall / tokens scored.

Bounds (``atts.perf.roofline``), per token of the final answer, over target-only:

    ATTS at rejection rate r:  c_td * kept / (c_dd + c_ts + r c_td)    engines share the cores
                               c_td * kept / max(c_dd, c_ts + r c_td)  engines on their own devices
    cascade at escalation e:   1 / (c_dd / c_td + e)    (the draft writes about as many tokens)

They count the engines' work only: no waits, no re-reads, full batches.  A run reaches less;
what it reached is its orchestration efficiency (BENCHMARKS.md).
"""

from __future__ import annotations

import asyncio
import statistics
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from atts.engines.base import ChatMessage, Engine, SamplingParams
from atts.perf.roofline import TokenCosts, per_token_speedup

__all__ = ["ProbeResult", "cascade_bound", "probe"]

FILLER = ("Natalia sold clips to 48 of her friends in April, and then she sold half as many "
          "clips in May. How many clips did Natalia sell altogether in April and May? ")


def cascade_bound(costs: TokenCosts, escalation: float) -> float:
    """The cascade's best speedup over target-only when a share ``escalation`` of questions
    goes to the target after the draft wrote its N samples (the draft writing about as many
    tokens as the target would)."""
    if not 0.0 <= escalation <= 1.0:
        raise ValueError(f"an escalation rate lies in [0, 1], got {escalation}")
    return 1.0 / (costs.draft_decode / costs.target_decode + escalation)


@dataclass(frozen=True)
class ProbeResult:
    batch: int
    context: int
    decode_tokens: int
    step_tokens: int
    costs: TokenCosts  # seconds per token: the medians
    rounds: dict[str, list[float]] = field(default_factory=dict)  # kind -> each round's cost

    def atts_bounds(self, alphas: Sequence[float], *, mode: str, overlap: bool
                    ) -> list[tuple[float, float]]:
        """(alpha, bound) with the rejection rate at alpha (what the conformal test gives)."""
        return [(a, per_token_speedup(self.costs, a, mode=mode, overlap=overlap))
                for a in alphas]

    def cascade_bounds(self, rates: Sequence[float]) -> list[tuple[float, float]]:
        return [(e, cascade_bound(self.costs, e)) for e in rates]

    def to_json(self, alphas: Sequence[float], rates: Sequence[float], *, mode: str,
                overlap: bool) -> dict[str, Any]:
        return {
            "batch": self.batch, "context": self.context, "decode_tokens": self.decode_tokens,
            "step_tokens": self.step_tokens,
            "seconds_per_token": {"draft_decode": self.costs.draft_decode,
                                  "target_decode": self.costs.target_decode,
                                  "target_score": self.costs.target_score},
            "rounds": self.rounds, "mode": mode, "overlap": overlap,
            "atts_bound": {f"{a:g}": b for a, b in self.atts_bounds(alphas, mode=mode,
                                                                      overlap=overlap)},
            "cascade_bound": {f"{e:g}": b for e, b in self.cascade_bounds(rates)},
        }


def _context(engine: Engine, tokens: int) -> list[int]:
    """A prompt of about ``tokens`` ids: the chat template over a question long enough."""
    filler = engine.tokenize(FILLER * (1 + tokens // max(1, len(engine.tokenize(FILLER)))))
    head = engine.render_chat([ChatMessage("user", "Solve step by step.")])
    return head + filler[: max(1, tokens - len(head))]


def _now() -> float:
    """The running loop's clock (a virtual one in the tests)."""
    return asyncio.get_running_loop().time()


async def _decode_round(engine: Engine, contexts: list[list[int]], tokens: int,
                        tag: str) -> tuple[float, list[list[int]]]:
    """Every sample decodes ``tokens`` more at once; (seconds per token, the new contexts)."""
    started = _now()
    outs = await asyncio.gather(*(
        engine.generate(ctx, SamplingParams(max_tokens=tokens, temperature=0.8, seed=i,
                                            cache_key=f"{tag}#{i}"))
        for i, ctx in enumerate(contexts)))
    seconds = _now() - started
    decoded = sum(len(g.token_ids) for g in outs)
    grown = [ctx + [t for t in g.token_ids if g.finish_reason != "eos" or t != g.token_ids[-1]]
             for ctx, g in zip(contexts, outs, strict=True)]
    return seconds / max(1, decoded), grown


async def _score_round(engine: Engine, contexts: list[list[int]], step: list[int],
                       tag: str) -> float:
    started = _now()
    await asyncio.gather(*(engine.score(ctx, step, cache_key=f"{tag}#{i}")
                           for i, ctx in enumerate(contexts)))
    return (_now() - started) / (len(step) * len(contexts))


async def probe(draft: Engine, target: Engine, *, batch: int, context: int = 64,
                decode_tokens: int = 16, step_tokens: int = 32, repeats: int = 3) -> ProbeResult:
    """Measure the three per-token costs on the engines (see the module docstring)."""
    rounds: dict[str, list[float]] = {"draft_decode": [], "target_decode": [],
                                      "target_score": []}
    for role, engine in (("draft", draft), ("target", target)):
        contexts = [_context(engine, context) for _ in range(batch)]
        # A first round prefills each sample's context into its own cached sequence.
        _, contexts = await _decode_round(engine, contexts, 2, f"probe-{role}")
        for _ in range(repeats):
            cost, contexts = await _decode_round(engine, contexts, decode_tokens,
                                                 f"probe-{role}")
            rounds[f"{role}_decode"].append(cost)
        if role == "target":
            step = engine.tokenize(FILLER * (1 + step_tokens // 8))[:step_tokens]
            for _ in range(repeats):
                rounds["target_score"].append(
                    await _score_round(engine, contexts, step, f"probe-{role}"))
    costs = TokenCosts(*(statistics.median(rounds[k]) for k in
                         ("draft_decode", "target_decode", "target_score")))
    return ProbeResult(batch, context, decode_tokens, step_tokens, costs, rounds)
