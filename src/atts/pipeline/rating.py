"""The judge baseline (after SpecReason, Pan et al. 2025): the target rates each draft step.

Where ATTS reads the target's log-probabilities of a draft step and asks a conformal test,
this strategy asks the target itself: after the draft writes a step, the target reads the step
followed by ``RATING_CUE`` and greedily writes a digit 0-9; a rating at or above
``RunConfig.judge_threshold`` keeps the step, anything lower (or no digit at all) has the
target regenerate it.  Same engines, same cores, same round loop and traces as ``atts``, so
the two compare side by side.

Cost: the cue sits inside the sample's own assistant message, after the step, so the target's
cache of the sample's text is reused and one rating costs a prefill of the step and the cue
(what ATTS's scoring pass costs, plus the cue's ~25 tokens) and one or two decoded tokens.
A separate judging conversation would re-read the whole context at every step.  The rating is
the greedy digit; SpecReason's probability-weighted digit would need the target's top-k
log-probabilities at one position, which the engine protocol does not offer.
"""

from __future__ import annotations

import re

from atts.conformal import Decision
from atts.engines.base import SamplingParams
from atts.pipeline.sample import SampleEnv, SampleState, prefill_tokens, target_turn
from atts.pipeline.trace import Step
from atts.seeds import derive_seed

RATING_CUE = (
    "(Check of the step above. How likely is it to be correct, from 0 = surely wrong to "
    "9 = surely correct? One digit.) Rating: "
)
RATING_TOKENS = 3  # room for a space or bracket before the digit
_DIGIT = re.compile(r"[0-9]")


def read_rating(text: str) -> int | None:
    """The first digit of the target's answer to the cue, None when it wrote none."""
    found = _DIGIT.search(text)
    return None if found is None else int(found.group())


async def judge_round(state: SampleState, env: SampleEnv, round_index: int) -> None:
    config = env.config
    generation = await env.draft.generate(
        state.ids, state.step_params(config, "draft", round_index)
    )
    if not generation.token_ids:
        state.append(Step(round_index, "draft", "", 0, seconds=generation.seconds,
                          t=state.elapsed()), generation)
        return
    # The rating reads the step as the text would hold it: without an ending EOS id, which
    # would close the message before the cue.
    step_ids = list(generation.token_ids)
    if generation.finish_reason == "eos":
        step_ids.pop()
    cue_ids = env.target.tokenize(RATING_CUE)
    context = state.ids + step_ids + cue_ids
    rated = await env.target.generate(context, SamplingParams(
        max_tokens=RATING_TOKENS, temperature=0.0,
        seed=derive_seed(state.spec.seed, round_index, "rating"),
        cache_key=state.spec.cache_key,
    ))
    rating = read_rating(rated.text)
    keep = rating is not None and rating >= config.judge_threshold
    decision = Decision.ACCEPT if keep else Decision.REGENERATE
    step = Step(
        round_index, "draft", generation.text, len(generation.token_ids), kept=keep,
        score=None if rating is None else float(rating), decision=decision.value,
        seconds=generation.seconds + rated.seconds,
        score_tokens=len(step_ids) + len(cue_ids),  # read by the target's prefill
        score_seconds=rated.seconds, rating_tokens=len(rated.token_ids),
        prefill_tokens=prefill_tokens(generation.prompt_tokens, generation)
        + prefill_tokens(len(context), rated),
        t=state.elapsed(),
    )
    if keep:
        state.append(step, generation)
        return
    state.steps.append(step)  # recorded in the trace, not in the text
    await target_turn(state, env, round_index)
