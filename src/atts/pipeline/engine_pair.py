"""The pair of engines a run, a calibration and the server share:

- ``guarded_pair``: the pair behind the run's concurrency limits and its one retry policy
  (``GuardedEngine``);
- ``check_tokenizers``: ATTS scores the draft's exact ids with the target, so both must render
  a prompt to the same ids and read every id the draft can write as the same text (checked
  once, before any work).
"""

from __future__ import annotations

from collections.abc import Sequence

from atts.config import RunConfig
from atts.engines.base import Engine
from atts.errors import AttsError
from atts.pipeline.guarded import GuardedEngine
from atts.pipeline.prompt import question_messages

PROBE_QUESTION = "What is 1 + 1?"
VOCAB_BLOCK = 4096  # ids compared per detokenize call: a 152k vocabulary takes 38 calls


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
    pair = f"draft ({draft.info.model}) and target ({target.info.model})"
    fix = ("ATTS scores the draft's exact ids, so pick a pair that shares one tokenizer (e.g. "
           "qwen2.5-coder-0.5b with qwen2.5-coder-1.5b)")
    messages = question_messages(question)
    if draft.render_chat(messages) != target.render_chat(messages):
        raise TokenizerMismatchError(f"{pair} render the prompt to different token ids; {fix}")
    differing = _first_differing_id(draft, target)
    if differing is not None:
        raise TokenizerMismatchError(
            f"{pair} read token id {differing} as different text "
            f"({_text(draft, [differing])!r} against {_text(target, [differing])!r}); {fix}")


def _first_differing_id(draft: Engine, target: Engine) -> int | None:
    """The first id both vocabularies hold that they read as different text, or None.  Two
    tokenizers can agree on a prompt and differ elsewhere (added tokens, another merge table);
    only the ids both hold are compared, since a target's embedding may be padded beyond the
    draft's (Qwen2.5-7B's 152,064 rows against 0.5B's 151,936, one tokenizer).  An engine
    that does not report its vocabulary (vocab_size 0) is not compared."""
    size = min(draft.info.vocab_size, target.info.vocab_size)
    for start in range(0, size, VOCAB_BLOCK):
        ids = range(start, min(size, start + VOCAB_BLOCK))
        if _text(draft, ids) != _text(target, ids):
            return next((i for i in ids if _text(draft, [i]) != _text(target, [i])), start)
    return None


def _text(engine: Engine, ids: Sequence[int]) -> str:
    try:
        return engine.detokenize(ids)
    except Exception as err:  # an id the engine cannot read is a difference, not a crash
        return f"<{type(err).__name__}>"
