"""How a run's in-process engines spent their calls, and where every target row went.

Read from the manifest's ``last_session.engine_calls`` (``atts.engines.call_stats``): per
engine, decode rows and their mean batch (sequences a call: a decode call reads every weight
once, so small batches pay more per row), the milliseconds a row cost, the share of the wall
the engine computed, and its prefill rows split into what they were:

- ``prompt_rows``: a sample's context read for the first time (its prompt, read once);
- ``reread_rows``: context read again because the sample's cached sequence had gone to
  another sample (an eviction: the context pool, ``atts.engines._context_pool``);
- the rest: scored step tokens (the target) or the other model's text new since the sample's
  last call, a cue, and one row per call for the logits of its first position.

``rows_per_drafted_token`` (issue 30): the target's prefill rows beyond the prompts per token
the draft wrote.  Scoring needs one row per drafted token, so 1.0 is the floor plus a row per
scored step; more means contexts read again.

The calls cover the manifest's last session only, so the figures are given only for a run
written in one session (``wall_source`` ``"last_session"``), where they and the run's token
counts describe the same samples.  Engines that keep no call counts (servers, transformers)
leave nothing here, nor does one that made no call (target-only's draft).
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = ["ROLES", "engine_use"]

ROLES = ("draft", "target", "shared")  # "shared": one engine played both parts


def engine_use(manifest: Mapping[str, Any], tokens: Mapping[str, int],
               wall_source: str) -> dict[str, Any] | None:
    """Each engine's figures (``ROLES`` order) and ``rows_per_drafted_token``; None when the
    run took more than one session or recorded no calls."""
    calls = (manifest.get("last_session") or {}).get("engine_calls") or {}
    if wall_source != "last_session" or not calls:
        return None
    engines = {role: _one(calls[role]) for role in ROLES if isinstance(calls.get(role), Mapping)
               and (calls[role].get("decode_rows") or calls[role].get("prefill_rows"))}
    if not engines:
        return None
    target, drafted = engines.get("target"), int(tokens.get("draft_decode") or 0)
    ratio = None
    if target is not None and drafted > 0 and target["prompt_rows"] is not None:
        ratio = (target["prefill_rows"] - target["prompt_rows"]) / drafted
    return {"engines": engines, "rows_per_drafted_token": ratio}


def _one(stats: Mapping[str, Any]) -> dict[str, Any]:
    def number(key: str) -> float:
        value = stats.get(key)
        return float(value) if isinstance(value, int | float) else 0.0

    def per_row(seconds: str, rows: str) -> float | None:
        return 1000 * number(seconds) / number(rows) if number(rows) > 0 else None

    def optional(key: str) -> int | None:  # absent in manifests written before the split
        value = stats.get(key)
        return int(value) if isinstance(value, int | float) else None

    return {
        "decode_rows": int(number("decode_rows")),
        "mean_decode_batch": (number("decode_rows") / number("decode_calls")
                              if number("decode_calls") > 0 else None),
        "decode_ms_per_row": per_row("decode_seconds", "decode_rows"),
        "prefill_rows": int(number("prefill_rows")),
        "prompt_rows": optional("first_rows"),
        "reread_rows": optional("evicted_rows"),
        "prefill_ms_per_row": per_row("prefill_seconds", "prefill_rows"),
        "busy_share": stats.get("busy_share") if isinstance(stats.get("busy_share"),
                                                            int | float) else None,
    }
