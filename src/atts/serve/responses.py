"""A ``Solution`` in the OpenAI response shapes: ``chat.completion`` and its stream chunks.

Choices: one per sample that finished (a failed sample has no text to offer, so it appears only
in ``atts.samples``), ordered with the majority-vote winner first: ``choices[0]`` is the answer
of the model, the others are the remaining samples in sample order.  ``usage`` counts the
prompt once and the tokens of every returned text (as the OpenAI API counts n choices).

The ``atts`` object says how the answer was reached: the chosen sample, the vote, the settings
used, the bank, and per sample its answer, rounds, token and time counters and (with
``"atts": {"trace": true}``) its steps: author, text, score, p-value and decision.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from typing import Any

from atts.conformal import min_bank_size
from atts.pipeline.trace import SampleTrace
from atts.serve.service import Solution


def choice_order(solution: Solution) -> list[int]:
    """Sample indices in choice order: the vote's winner first, then the other good ones."""
    rest = [t.sample_index for t in solution.traces
            if t.status == "ok" and t.sample_index != solution.chosen]
    return [solution.chosen, *rest]


def finish_reason(trace: SampleTrace) -> str:
    """OpenAI's finish_reason: "stop" when the model answered or ended its message by itself,
    "length" when the rounds or the context window ran out (the answer, if any, was forced)."""
    return "stop" if trace.stop in ("answer", "eos") else "length"


def usage(solution: Solution) -> dict[str, int]:
    prompt = len(solution.prepared.prompt_ids)
    completion = sum(solution.completion_tokens[i] for i in choice_order(solution))
    return {"prompt_tokens": prompt, "completion_tokens": completion,
            "total_tokens": prompt + completion}


def atts_object(solution: Solution) -> dict[str, Any]:
    prepared = solution.prepared
    config = prepared.config
    order = choice_order(solution)
    samples = []
    for trace in solution.traces:
        sample: dict[str, Any] = {
            "sample_index": trace.sample_index,
            "choice_index": order.index(trace.sample_index) if trace.sample_index in order
            else None,
            "status": trace.status,
            "error": trace.error,
            "answer": trace.answer,
            "rounds": trace.rounds,
            "stop": trace.stop,
            "completion_tokens": solution.completion_tokens[trace.sample_index],
            "tokens": asdict(trace.tokens),
            "seconds": asdict(trace.seconds),
        }
        if prepared.options.trace:
            sample["steps"] = [asdict(step) for step in trace.steps]
        samples.append(sample)
    return {
        "chosen_sample": solution.chosen,
        "answer": solution.answer,
        "votes": solution.votes,
        "settings": {
            "alpha": config.alpha, "alpha_discard": config.alpha_discard,
            "rounds": config.rounds, "min_rounds": config.min_rounds,
            "draft_tokens": config.draft_tokens, "target_tokens": config.target_tokens,
            "temperature": config.temperature, "top_p": config.top_p,
            # The author it resolves to (auto is the default), as the request could name it.
            "force_answer": config.forced_answer_author or "none", "seed": prepared.seed,
        },
        "bank": {
            "size": solution.bank_size,
            "min_size": min_bank_size(config.alpha),
            "warmup_steps": solution.warmup_steps,
            "grows": prepared.grows_bank,
        },
        "samples": samples,
    }


def completion_body(solution: Solution, model: str, created: int) -> dict[str, Any]:
    choices = [
        {
            "index": index,
            "message": {"role": "assistant", "content": solution.traces[i].text},
            "logprobs": None,
            "finish_reason": finish_reason(solution.traces[i]),
        }
        for index, i in enumerate(choice_order(solution))
    ]
    return {
        "id": solution.prepared.request_id,
        "object": "chat.completion",
        "created": created,
        "model": model,
        "system_fingerprint": None,
        "choices": choices,
        "usage": usage(solution),
        "atts": atts_object(solution),
    }


def chunk(request_id: str, model: str, created: int, choices: list[dict[str, Any]],
          **extra: Any) -> bytes:
    body = {"id": request_id, "object": "chat.completion.chunk", "created": created,
            "model": model, "system_fingerprint": None, "choices": choices, **extra}
    return sse(body)


def delta(index: int, content: str | None = None, *, role: bool = False,
          finish: str | None = None) -> dict[str, Any]:
    message: dict[str, Any] = {}
    if role:
        message["role"] = "assistant"
    if content is not None:
        message["content"] = content
    return {"index": index, "delta": message, "logprobs": None, "finish_reason": finish}


def step_texts(trace: SampleTrace) -> list[str]:
    """The sample's text cut at its kept steps (what a stream sends, one chunk per step)."""
    pieces = [step.text for step in trace.steps if step.kept and step.text]
    return pieces if "".join(pieces) == trace.text else [trace.text]


def sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keepalive\n\n"
