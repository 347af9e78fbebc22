"""The roofline: what one engine iteration costs, and the speedup ATTS can reach at best.

Iteration cost (``iteration_seconds``): a batch of sequences each decoding one token, plus
prefill chunks, takes ``overhead + max(bytes / bandwidth, flops / peak)``: the weights and every
sequence's KV cache are read once per iteration; FLOPs are 2 per parameter per token, a
vocabulary head per logits row, and attention over the context.  Decode is memory-bound, long
prefills compute-bound.  An engine on ``MeasuredRates`` (the CPU) costs tokens x rate instead.

The bound (docs/METHOD.md section 6).  Per drafted token with rejection rate r and target steps
lambda times as long as draft steps, ATTS pays

    c_dd + c_ts + r * lambda * c_td          (serial: one engine at a time)
    max(c_dd, c_ts + r * lambda * c_td)      (overlap: draft and target engines in parallel)

and keeps ``1 + r * lambda`` tokens ("continue": the draft step stays and the target adds its
own) or ``1 - r + r * lambda`` ("regenerate": the draft step is dropped).  Target-only pays
c_td per kept token, so the per-token speedup is ``c_td * kept / cost``.  ``token_bound`` does
the same with the token totals two runs actually spent, which counts early stopping and
different answer lengths too.  A measured speedup over its bound is the orchestration
efficiency.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from atts.perf.devices import EngineSpec

MODES = ("continue", "regenerate")


@dataclass(frozen=True)
class TokenCosts:
    """Seconds per token: draft decode, target decode, target scoring (one prefill row)."""

    draft_decode: float
    target_decode: float
    target_score: float

    def __post_init__(self) -> None:
        if min(self.draft_decode, self.target_decode, self.target_score) < 0:
            raise ValueError(f"per-token costs must be >= 0, got {self}")
        if self.target_decode <= 0:
            raise ValueError("target_decode must be > 0: it is the baseline's cost per token")

    @classmethod
    def from_summaries(cls, run: Mapping[str, Any],
                       baseline: Mapping[str, Any]) -> TokenCosts | None:
        """Costs measured by the runs themselves (``summarize_run`` dicts): engine seconds per
        token of each kind, draft and scoring from ``run``, target decode from ``baseline``
        (a target-only run).  None when a kind the bound needs was never measured."""
        def rate(summary: Mapping[str, Any], kind: str) -> float | None:
            tokens = summary["tokens"][kind]
            return summary["engine_seconds"][kind] / tokens if tokens else None

        target = rate(baseline, "target_decode") or rate(run, "target_decode")
        if target is None:
            return None
        return cls(rate(run, "draft_decode") or 0.0, target, rate(run, "target_score") or 0.0)


@dataclass(frozen=True)
class TokenTotals:
    draft_decode: int = 0
    target_score: int = 0
    target_decode: int = 0

    @classmethod
    def from_summary(cls, summary: Mapping[str, Any]) -> TokenTotals:
        tokens = summary["tokens"]
        return cls(int(tokens["draft_decode"]), int(tokens["target_score"]),
                   int(tokens["target_decode"]))


def _check_rate(r: float, step_ratio: float, mode: str) -> None:
    if not 0 <= r <= 1:
        raise ValueError(f"rejection rate must lie in [0, 1], got {r}")
    if step_ratio <= 0:
        raise ValueError(f"step_ratio (target step / draft step tokens) must be > 0, got "
                         f"{step_ratio}")
    if mode not in MODES:
        raise ValueError(f"mode must be one of {', '.join(MODES)}, got {mode!r}")


def kept_tokens(r: float, mode: str = "continue", step_ratio: float = 1.0) -> float:
    """Tokens kept in the answer per drafted token."""
    _check_rate(r, step_ratio, mode)
    return (1.0 if mode == "continue" else 1.0 - r) + r * step_ratio


def atts_seconds_per_drafted_token(costs: TokenCosts, r: float, *, overlap: bool = False,
                                   step_ratio: float = 1.0) -> float:
    target = costs.target_score + r * step_ratio * costs.target_decode
    return max(costs.draft_decode, target) if overlap else costs.draft_decode + target


def per_token_speedup(costs: TokenCosts, r: float, *, mode: str = "continue",
                      step_ratio: float = 1.0, overlap: bool = False) -> float:
    """The most ATTS can gain over target-only per kept token at rejection rate ``r``."""
    kept = kept_tokens(r, mode, step_ratio)
    cost = atts_seconds_per_drafted_token(costs, r, overlap=overlap, step_ratio=step_ratio)
    if cost <= 0:
        return float("inf")
    return costs.target_decode * kept / cost


def break_even_rejection(costs: TokenCosts, *, mode: str = "continue", step_ratio: float = 1.0,
                         overlap: bool = False) -> float | None:
    """The rejection rate above which ATTS is slower than target-only per token (bisection:
    the speedup falls with r); None when it wins at every r, 0.0 when it never does."""
    def gain(r: float) -> float:
        return per_token_speedup(costs, r, mode=mode, step_ratio=step_ratio,
                                 overlap=overlap) - 1.0

    if gain(0.0) <= 0:
        return 0.0
    if gain(1.0) > 0:
        return None
    lo, hi = 0.0, 1.0
    for _ in range(60):
        mid = (lo + hi) / 2
        lo, hi = (mid, hi) if gain(mid) > 0 else (lo, mid)
    return (lo + hi) / 2


def engine_seconds(costs: TokenCosts, tokens: TokenTotals, *, overlap: bool) -> float:
    """Time the engines need for these tokens with nothing else in the way: the sum of both
    engines' work, or the busier engine's when they run side by side."""
    draft = tokens.draft_decode * costs.draft_decode
    target = tokens.target_score * costs.target_score + tokens.target_decode * costs.target_decode
    return max(draft, target) if overlap else draft + target


def token_bound(costs: TokenCosts, run: TokenTotals, baseline: TokenTotals, *,
                overlap: bool = True) -> float:
    """Speedup of ``run`` over ``baseline`` if each ran at exactly its engines' per-token
    costs: baseline engine time / run engine time."""
    run_time = engine_seconds(costs, run, overlap=overlap)
    base_time = engine_seconds(costs, baseline, overlap=overlap)
    if run_time <= 0:
        raise ValueError("the run spent no tokens: there is no bound to compute")
    return base_time / run_time


def efficiency(measured_speedup: float, bound: float) -> float:
    """Orchestration efficiency: the share of the bound a measured speedup reached."""
    if bound <= 0:
        raise ValueError(f"bound must be > 0, got {bound}")
    return measured_speedup / bound


# -- iteration cost on a device ----------------------------------------------------------------
@dataclass(frozen=True)
class Chunk:
    """Prefill work of one sequence in one iteration: ``tokens`` new tokens after ``context``
    cached ones, of which ``rows`` need vocabulary logits (scoring: all of them)."""

    tokens: int
    context: int
    rows: int = 1


def iteration_seconds(engine: EngineSpec, decode_contexts: Sequence[int],
                      chunks: Sequence[Chunk] = ()) -> float:
    """One engine iteration: every sequence in ``decode_contexts`` (its context length)
    decodes one token, and every chunk is prefilled."""
    model = engine.model
    if engine.rates is not None:
        rates = engine.rates
        return (len(decode_contexts) * rates.decode
                + sum((c.tokens - c.rows) * rates.prefill + c.rows * rates.score
                      for c in chunks))
    if not decode_contexts and not chunks:
        return 0.0
    kv = model.kv_bytes_per_token
    decode = len(decode_contexts)
    context_sum = float(sum(decode_contexts))
    flops = decode * (model.body_flops + model.head_flops) + model.attention_flops * context_sum
    read = model.weight_bytes + kv * (context_sum + decode)
    for c in chunks:
        # Token i of the chunk attends to context + i earlier positions.
        positions = c.tokens * c.context + c.tokens * (c.tokens - 1) / 2
        flops += (c.tokens * model.body_flops + c.rows * model.head_flops
                  + model.attention_flops * positions)
        read += kv * (c.context + c.tokens)
    return engine.iteration_overhead + max(read / engine.bandwidth, flops / engine.flops)


def request_seconds(engine: EngineSpec, *, prefill: int, decode: int = 0, context: int = 0,
                    rows: int | None = None) -> float:
    """One request alone on the engine: prefill (chunked), then ``decode - 1`` decode steps
    (the last prefill row gives the first token).  ``rows``: logits rows of the prefill (scoring:
    every token; default 1, the row the first decoded token comes from)."""
    if prefill < 1:
        raise ValueError(f"a request evaluates at least one token, got prefill={prefill}")
    rows = 1 if rows is None else rows
    if engine.rates is not None:
        # Measured rates: a generated token costs the decode rate (the first included), an
        # evaluated prompt token the prefill rate, a scored token the score rate.
        scored = rows if decode == 0 else 0
        rates = engine.rates
        return (prefill - scored) * rates.prefill + scored * rates.score + decode * rates.decode
    total, done = 0.0, 0
    while done < prefill:
        take = min(engine.chunk_tokens, prefill - done)
        # Logit rows sit at the end of the prefill (the scored step, or the last prompt token).
        chunk_rows = max(0, min(take, rows - (prefill - done - take)))
        total += iteration_seconds(engine, (), (Chunk(take, context + done, chunk_rows),))
        done += take
    for i in range(max(0, decode - 1)):
        total += iteration_seconds(engine, (context + prefill + i,))
    return total


def per_token_costs(draft: EngineSpec, target: EngineSpec, *, batch: int, context: int,
                    step: int) -> TokenCosts:
    """Per-token costs at GPU scale: decode shares an iteration among ``batch`` sequences of
    ``context`` tokens; scoring prefills a ``step``-token chunk with every row's logits."""
    def decode(engine: EngineSpec) -> float:
        return iteration_seconds(engine, [context] * batch) / batch

    score = iteration_seconds(target, (), (Chunk(step, context, step),)) / step
    return TokenCosts(decode(draft), decode(target), score)


def decode_run_seconds(engine: EngineSpec, batch: int, context_sum: float,
                       iterations: int) -> np.ndarray:
    """Times of ``iterations`` successive decode-only iterations of a fixed batch whose
    contexts add up to ``context_sum`` at the first (each grows by one token per iteration):
    the closed form of ``iteration_seconds`` that lets the simulator skip ahead."""
    if engine.rates is not None:
        return np.full(iterations, batch * engine.rates.decode)
    model = engine.model
    contexts = context_sum + batch * np.arange(iterations, dtype=np.float64)
    flops = batch * (model.body_flops + model.head_flops) + model.attention_flops * contexts
    read = model.weight_bytes + model.kv_bytes_per_token * (contexts + batch)
    return engine.iteration_overhead + np.maximum(read / engine.bandwidth, flops / engine.flops)
