"""A ``Solution`` in the OpenAI response shapes: ``chat.completion`` and the legacy
``text_completion``, and the stream chunks of each (``ChatChunks``, ``TextChunks``: the one
stream generator of the app speaks either through the ``ChunkShape`` protocol).

Choices: one per sample that finished (a failed sample has no text to offer, so it appears only
in ``atts.samples``), ordered with the majority-vote winner first: ``choices[0]`` is the answer
of the model, the others are the remaining samples in sample order.  ``usage`` counts the
prompt once and the tokens of every returned text (as the OpenAI API counts n choices); with
stop strings (legacy completions) it counts the text the samples wrote, before the cut.

The ``atts`` object says how the answer was reached: the chosen sample, the vote, the settings
used, the bank, and per sample its answer, rounds, token and time counters and (with
``"atts": {"trace": true}``) its steps: author, text, score, p-value and decision.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from typing import Any, Protocol

from atts.conformal import min_bank_size
from atts.pipeline.trace import SampleTrace
from atts.serve.service import Solution
from atts.serve.stops import StopStrings


def choice_order(solution: Solution) -> list[int]:
    """Sample indices in choice order: the vote's winner first, then the other good ones."""
    rest = [t.sample_index for t in solution.traces
            if t.status == "ok" and t.sample_index != solution.chosen]
    return [solution.chosen, *rest]


def finish_reason(trace: SampleTrace) -> str:
    """OpenAI's finish_reason: "stop" when the model answered or ended its message by itself,
    "length" when the rounds or the context window ran out (the answer, if any, was forced)."""
    return "stop" if trace.stop in ("answer", "eos") else "length"


def returned(trace: SampleTrace, stops: StopStrings) -> tuple[str, str]:
    """A choice's text and finish_reason: cut before its first stop string ("stop"), else
    the whole text of the sample."""
    text, stopped = stops.final(trace.text)
    return text, "stop" if stopped else finish_reason(trace)


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
            "alpha": config.alpha, "alpha_discard": config.discard_level,
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


def completion_body(solution: Solution, model: str, created: int,
                    stops: StopStrings) -> dict[str, Any]:
    choices = []
    for index, i in enumerate(choice_order(solution)):
        text, finish = returned(solution.traces[i], stops)
        choices.append({"index": index, "message": {"role": "assistant", "content": text},
                        "logprobs": None, "finish_reason": finish})
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


def text_completion_body(solution: Solution, model: str, created: int,
                         stops: StopStrings) -> dict[str, Any]:
    choices = []
    for index, i in enumerate(choice_order(solution)):
        text, finish = returned(solution.traces[i], stops)
        choices.append(text_choice(index, text, finish))
    return {
        "id": solution.prepared.request_id,
        "object": "text_completion",
        "created": created,
        "model": model,
        "choices": choices,
        "usage": usage(solution),
        "atts": atts_object(solution),
    }


class ChunkShape(Protocol):
    """How one stream speaks: the choice objects of its chunks, and the chunk event."""

    def opening(self, index: int) -> dict[str, Any] | None: ...

    def text(self, index: int, piece: str) -> dict[str, Any]: ...

    def end(self, index: int, finish: str) -> dict[str, Any]: ...

    def event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes: ...


@dataclass(frozen=True)
class ChatChunks:
    """``chat.completion.chunk`` events: a role delta opens each choice, deltas carry text."""

    request_id: str
    model: str
    created: int

    def opening(self, index: int) -> dict[str, Any] | None:
        return delta(index, "", role=True)

    def text(self, index: int, piece: str) -> dict[str, Any]:
        return delta(index, piece)

    def end(self, index: int, finish: str) -> dict[str, Any]:
        return delta(index, finish=finish)

    def event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse({"id": self.request_id, "object": "chat.completion.chunk",
                    "created": self.created, "model": self.model, "system_fingerprint": None,
                    "choices": choices, **extra})


@dataclass(frozen=True)
class TextChunks:
    """``text_completion`` events of a legacy completion: no role, choices carry text."""

    request_id: str
    model: str
    created: int

    def opening(self, index: int) -> dict[str, Any] | None:
        return None

    def text(self, index: int, piece: str) -> dict[str, Any]:
        return text_choice(index, piece, None)

    def end(self, index: int, finish: str) -> dict[str, Any]:
        return text_choice(index, "", finish)

    def event(self, choices: list[dict[str, Any]], **extra: Any) -> bytes:
        return sse({"id": self.request_id, "object": "text_completion",
                    "created": self.created, "model": self.model, "choices": choices,
                    **extra})


def text_choice(index: int, text: str, finish: str | None) -> dict[str, Any]:
    return {"text": text, "index": index, "logprobs": None, "finish_reason": finish}


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


def stream_pieces(trace: SampleTrace, stops: StopStrings) -> tuple[list[str], str]:
    """A finished choice as a stream sends it: its returned text in pieces at its steps
    (the pieces past a stop string shortened or dropped), and its finish_reason."""
    text, finish = returned(trace, stops)
    pieces, sent = [], 0
    for piece in step_texts(trace):
        piece = piece[:len(text) - sent]
        if piece:
            pieces.append(piece)
            sent += len(piece)
    return pieces, finish


def sse(body: dict[str, Any]) -> bytes:
    return b"data: " + json.dumps(body, separators=(",", ":")).encode() + b"\n\n"


DONE = b"data: [DONE]\n\n"
KEEPALIVE = b": keepalive\n\n"
