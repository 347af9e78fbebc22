"""Render a chat template stored in a GGUF file (``tokenizer.chat_template``) to text.

GGUF files carry the Hugging Face jinja2 template of their model; rendering it the way
``transformers``' ``apply_chat_template`` does gives the same prompt text in every engine.
"""

from __future__ import annotations

import time
from collections.abc import Sequence

from atts.engines.base import ChatMessage


def render_chat_template(
    template: str,
    messages: Sequence[ChatMessage],
    *,
    add_generation_prompt: bool,
    bos_token: str,
    eos_token: str,
) -> str:
    """Render a GGUF ``tokenizer.chat_template`` the way Hugging Face's ``apply_chat_template``
    does (sandboxed jinja2, trim_blocks and lstrip_blocks, ``raise_exception``)."""
    from jinja2 import TemplateError  # light, but only engines need it
    from jinja2.sandbox import ImmutableSandboxedEnvironment

    def raise_exception(message: str) -> None:
        raise TemplateError(message)

    env = ImmutableSandboxedEnvironment(trim_blocks=True, lstrip_blocks=True)
    env.globals["raise_exception"] = raise_exception
    env.globals["strftime_now"] = lambda fmt: time.strftime(fmt)
    return env.from_string(template).render(
        messages=[{"role": m.role, "content": m.content} for m in messages],
        add_generation_prompt=add_generation_prompt,
        bos_token=bos_token,
        eos_token=eos_token,
    )
