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
what it reached is its orchestration efficiency (BENCHMARKS.md).  ``run_bound`` prices a
finished run's own token counts at a saved probe's costs (``atts report RUN --probe
probe.json``): the wall time its work needs at full batches, and measured / bound.
"""

from __future__ import annotations

import asyncio
import json
import math
import statistics
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from atts.engines.base import ChatMessage, Engine, SamplingParams
from atts.errors import AttsError
from atts.perf.roofline import TokenCosts, TokenTotals, engine_seconds, per_token_speedup
from atts.textfile import read_text

__all__ = ["ProbeResult", "SavedProbe", "cascade_bound", "load_probe", "probe", "run_bound"]

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


@dataclass(frozen=True)
class SavedProbe:
    """What a report needs of ``atts probe --json``: the costs and how the engines share."""

    path: str
    costs: TokenCosts
    overlap: bool  # engines on their own devices (else sharing the cores)
    batch: int


def load_probe(path: str | Path) -> SavedProbe:
    """Read the JSON that ``atts probe --json`` printed; one line naming the file and the field
    when it is not that."""
    source = Path(path)
    try:
        doc = json.loads(read_text(source))
    except FileNotFoundError as err:
        raise AttsError(f"no probe file at {source}: save one with `atts probe --json > "
                        f"{source}` on the run's engines") from err
    except json.JSONDecodeError as err:
        raise AttsError(f"{source}: not the JSON of `atts probe --json` ({err})") from err
    costs = doc.get("seconds_per_token") if isinstance(doc, dict) else None
    keys = ("draft_decode", "target_decode", "target_score")
    if not isinstance(costs, dict) or not all(
            isinstance(costs.get(k), int | float) and not isinstance(costs.get(k), bool)
            and math.isfinite(costs[k]) and costs[k] > 0 for k in keys):
        raise AttsError(f"{source}: seconds_per_token must hold {', '.join(keys)} as finite "
                        "numbers > 0 (the JSON of `atts probe --json`)")
    overlap, batch = doc.get("overlap"), doc.get("batch")
    if not isinstance(overlap, bool) or not isinstance(batch, int) or batch < 1:
        raise AttsError(f"{source}: overlap (true or false) and batch (>= 1) are missing; "
                        "save the probe again with `atts probe --json`")
    return SavedProbe(str(source), TokenCosts(*(float(costs[k]) for k in keys)), overlap,
                      batch)


def run_bound(saved: SavedProbe, summary: Mapping[str, Any]) -> dict[str, Any]:
    """A finished run's bound (``summary``: ``atts.report``'s) at the probe's costs: the
    engine seconds its own tokens need at full batches with nothing in the way (no waits, no
    re-reads, prompts not counted), measured wall / that, and for each comparable baseline the
    speedup its tokens allow beside the measured one (issue 30: the gap on every run)."""
    tokens = TokenTotals.from_summary(summary)
    seconds = engine_seconds(saved.costs, tokens, overlap=saved.overlap)
    wall = float(summary["wall_seconds"])
    out: dict[str, Any] = {
        "probe": saved.path, "overlap": saved.overlap, "batch": saved.batch,
        "seconds_per_token": {"draft_decode": saved.costs.draft_decode,
                              "target_decode": saved.costs.target_decode,
                              "target_score": saved.costs.target_score},
        "bound_seconds": seconds,
        "measured_over_bound": wall / seconds if seconds > 0 else None,
        "baselines": [],
    }
    for entry in summary.get("baselines", []):
        base = entry.get("tokens")
        base_seconds = (engine_seconds(saved.costs, TokenTotals.from_summary(entry),
                                       overlap=saved.overlap) if base else None)
        speedup_bound = (base_seconds / seconds if base_seconds and seconds > 0 else None)
        measured = entry.get("speedup")
        out["baselines"].append({
            "label": entry.get("label"), "speedup_bound": speedup_bound,
            "speedup": measured,
            "share_of_bound": (measured / speedup_bound
                               if measured is not None and speedup_bound else None)})
    return {"bound": out}


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
