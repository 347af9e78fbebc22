"""The reasoning prompt, the step boundary, and the cues appended during sequential scaling.

Wording follows the paper's code (docs/METHOD.md section 2): a system line, a user message
asking for steps separated by blank lines and a final answer in ``\\boxed{}``, then the
question.  The prompt is rendered once with the model's own chat template; steps are
appended as token ids.
"""

from __future__ import annotations

from atts.engines.base import ChatMessage

SYSTEM = "You are a math expert."
INSTRUCTION = (
    "Solve the following problem step by step. Separate the steps with a blank line (two "
    "newlines). Put the final answer in \\boxed{}."
)
# Budget forcing (docs/METHOD.md section 1): too early an answer gets this appended, and the sample
# thinks on; running out of rounds gets the answer cue, and the chosen model completes it.
WAIT_CUE = "\n\nWait, let me double-check this.\n\n"
ANSWER_CUE = "\n\nFinal answer: \\boxed{"
FORCED_ANSWER_TOKENS = 24


def question_messages(question: str) -> list[ChatMessage]:
    return [
        ChatMessage("system", SYSTEM),
        ChatMessage("user", f"{INSTRUCTION}\n\n{question}"),
    ]


def close_forced_answer(completion: str) -> str:
    """Text of a forced answer: the cue's open ``\\boxed{`` closed at its matching brace
    (or at the end of the completion when the model never closed it)."""
    depth = 0
    for i, char in enumerate(completion):
        if char == "{":
            depth += 1
        elif char == "}":
            if depth == 0:
                return completion[: i + 1]
            depth -= 1
    return completion.rstrip() + "}"
