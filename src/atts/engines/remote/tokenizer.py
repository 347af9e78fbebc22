"""The client-side tokenizer of the remote engines: exact token ids without asking the server.

The pipeline works in token ids end to end (``atts.engines.base``), so a remote engine must
render chat prompts, tokenise and detokenise exactly as the served model does, offline, and
send ids rather than text.  ``ClientTokenizer.load`` reads a Hugging Face fast tokenizer from:

- a model folder (``tokenizer.json`` + ``tokenizer_config.json``, with its chat template),
  e.g. the folder the server loaded: the surest way to get the same ids;
- a GGUF file, or a named model of ``atts models list`` (resolved by ``resolve_model``): the
  tokenizer and template stored in the GGUF, read by transformers (``gguf_file=``; needs the
  ``gguf`` package and torch, 7-20 s for a 50k-150k vocabulary).  A folder needs neither.

Text follows the other engines: ``tokenize`` adds no special tokens, ``detokenize`` renders
special tokens as nothing (so an end-of-turn id ends a step with empty text), and
``render_chat`` is transformers' ``apply_chat_template`` (the in-process engines agree with it
on the installed models; tests/test_engine_agreement.py).
"""

from __future__ import annotations

import os
import threading
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from atts.engines.base import ChatMessage

# End-of-generation tokens llama.cpp also stops at, found in the vocabulary when present.
_EOG_TEXTS = ("<|im_end|>", "<|endoftext|>", "<|eot_id|>", "<|end_of_text|>", "<end_of_turn>",
              "<|eom_id|>")


class ClientTokenizer:
    """A fast tokenizer and chat template held by the client (thread-safe)."""

    def __init__(self, tokenizer: Any, *, name: str,
                 eos_token_ids: Sequence[int] | None = None) -> None:
        self._tok = tokenizer
        self.name = name
        self._lock = threading.Lock()  # fast tokenizers refuse concurrent mutable borrows
        if eos_token_ids is None:
            found: set[int] = set()
            eos = getattr(tokenizer, "eos_token_id", None)
            if isinstance(eos, int):
                found.add(eos)
            vocab = tokenizer.get_vocab()
            found.update(vocab[text] for text in _EOG_TEXTS if text in vocab)
            eos_token_ids = sorted(found)
        self.eos_token_ids = frozenset(int(t) for t in eos_token_ids)
        eos = getattr(tokenizer, "eos_token_id", None)
        self.eos_token_id: int | None = (
            eos if isinstance(eos, int) else min(self.eos_token_ids, default=None)
        )
        self.vocab_size = len(tokenizer)

    @classmethod
    def load(cls, source: str | os.PathLike[str]) -> ClientTokenizer:
        """From a model folder, a GGUF file, or a named model (see the module docstring)."""
        from transformers import AutoTokenizer

        from atts.models import lookup, resolve_model

        text = os.fspath(source)
        path = Path(text).expanduser()
        kwargs: dict[str, Any] = {"local_files_only": True}
        if path.is_dir() and lookup(text) is None:
            if not (path / "tokenizer.json").is_file() and not (
                path / "tokenizer_config.json"
            ).is_file():
                raise ValueError(f"{path} holds no tokenizer.json or tokenizer_config.json; "
                                 "pass the folder the server loaded, or a GGUF file")
            folder = path
        else:
            file = resolve_model(source)  # ModelNotFoundError names `atts models pull NAME`
            if file.suffix != ".gguf":
                raise ValueError(f"{file}: a tokenizer comes from a model folder or a .gguf file")
            folder, kwargs["gguf_file"] = file.parent, file.name
        spec = lookup(text)
        try:
            tokenizer = AutoTokenizer.from_pretrained(str(folder), **kwargs)
        except ImportError as err:
            if "gguf_file" not in kwargs:
                raise
            # transformers reads GGUF metadata through torch and gguf.
            raise ImportError(
                f"reading the tokenizer of {text} from its GGUF needs torch and gguf "
                f"(pip install 'atts[hf]'); or pass a tokenizer folder instead ({err})"
            ) from err
        return cls(tokenizer, name=spec.name if spec is not None else text)

    def tokenize(self, text: str) -> list[int]:
        if not text:
            return []
        with self._lock:
            return [int(t) for t in self._tok.encode(text, add_special_tokens=False)]

    def detokenize(self, token_ids: Sequence[int]) -> str:
        with self._lock:
            return str(self._tok.decode(list(token_ids), skip_special_tokens=True,
                                        clean_up_tokenization_spaces=False))

    def decode_with_specials(self, token_ids: Sequence[int]) -> str:
        """The exact text of ``token_ids``, special tokens included (a prompt sent as text)."""
        with self._lock:
            return str(self._tok.decode(list(token_ids), skip_special_tokens=False,
                                        clean_up_tokenization_spaces=False))

    def render_chat(
        self, messages: Sequence[ChatMessage], *, add_generation_prompt: bool = True
    ) -> list[int]:
        if getattr(self._tok, "chat_template", None) is None:
            raise ValueError(f"tokenizer {self.name} has no chat template; pass a tokenizer "
                             "folder or GGUF whose tokenizer_config holds one")
        convo = [{"role": m.role, "content": m.content} for m in messages]
        with self._lock:
            out: Any = self._tok.apply_chat_template(
                convo, tokenize=True, add_generation_prompt=add_generation_prompt
            )
        # transformers 5 returns a BatchEncoding here; 4.x returned the list itself.
        ids = out["input_ids"] if hasattr(out, "keys") else out
        return [int(t) for t in ids]

    def is_eos(self, token_id: int) -> bool:
        return token_id in self.eos_token_ids
