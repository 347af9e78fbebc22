"""The pair of engines a run, a calibration and the server share:

- ``guarded_pair``: the pair behind the run's concurrency limits and its one retry policy
  (``GuardedEngine``);
- ``check_tokenizers``: ATTS scores the draft's exact ids with the target, so both must render
  a prompt to the same ids (checked once, before any work).
"""

from __future__ import annotations

from atts.config import RunConfig
from atts.engines.base import Engine
from atts.errors import AttsError
from atts.pipeline.guarded import GuardedEngine
from atts.pipeline.prompt import question_messages

PROBE_QUESTION = "What is 1 + 1?"


class TokenizerMismatchError(AttsError, ValueError):
    """The draft and target render prompts to different token ids."""


def guarded_pair(config: RunConfig, draft: Engine, target: Engine
                 ) -> tuple[GuardedEngine, GuardedEngine]:
    return tuple(  # type: ignore[return-value]
        GuardedEngine(engine, concurrency=config.concurrency(role),
                      max_retries=config.max_retries, backoff=config.retry_backoff)
        for role, engine in (("draft", draft), ("target", target))
    )


def check_tokenizers(draft: Engine, target: Engine, question: str = PROBE_QUESTION) -> None:
    if draft is target:
        return
    messages = question_messages(question)
    if draft.render_chat(messages) != target.render_chat(messages):
        raise TokenizerMismatchError(
            f"draft ({draft.info.model}) and target ({target.info.model}) render the prompt to "
            "different token ids; ATTS scores the draft's exact ids, so pick a pair that shares "
            "one tokenizer (e.g. qwen2.5-coder-0.5b with qwen2.5-coder-1.5b)"
        )
