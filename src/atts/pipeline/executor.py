"""Running samples on a pair of engines, the part the runner, calibration and the server share:

- ``guarded_pair``: the pair behind the run's concurrency limits and its one retry policy
  (``GuardedEngine``);
- ``check_tokenizers``: ATTS scores the draft's exact ids with the target, so both must render
  a prompt to the same ids (checked once, before any work);
- ``execute_sample``: one sample to its end, whose failure for good becomes its error row
  (recorded, not swallowed; a cancellation is not a failure and propagates).
"""

from __future__ import annotations

import time

from atts.config import RunConfig
from atts.engines.base import Engine
from atts.errors import AttsError
from atts.pipeline.guarded import GuardedEngine
from atts.pipeline.prompt import question_messages
from atts.pipeline.sample import (
    RoundBody,
    SampleEnv,
    SampleSpec,
    TextSink,
    failed_trace,
    run_sample,
)
from atts.pipeline.trace import SampleTrace

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


async def execute_sample(spec: SampleSpec, env: SampleEnv, body: RoundBody,
                         on_text: TextSink | None = None) -> SampleTrace:
    """The sample's trace, or its error row when its engine calls failed for good."""
    started = time.time()
    try:
        return await run_sample(spec, env, body, on_text)
    except Exception as err:  # not CancelledError: a cancelled sample writes nothing
        return failed_trace(spec, env.config, err, started)
