"""The tokenizer check of a draft/target pair: the prompt's ids, then every id both hold."""

from __future__ import annotations

from collections.abc import Sequence

import pytest

from atts.engines.base import EngineInfo
from atts.pipeline.engine_pair import TokenizerMismatchError, check_tokenizers


class Vocabulary:
    """Stands in for an engine's tokenizer side: id i reads as ``pieces[i]``."""

    def __init__(self, name: str, pieces: Sequence[str], *, report_size: bool = True) -> None:
        self.pieces = list(pieces)
        self.info = EngineInfo(backend="stub", model=name, context_length=1024,
                               vocab_size=len(pieces) if report_size else 0)

    def render_chat(self, messages, *, add_generation_prompt: bool = True) -> list[int]:
        return [1, 2, 3]  # both render the prompt alike

    def detokenize(self, ids: Sequence[int]) -> str:
        return "".join(self.pieces[i] for i in ids)


BASE = [f"t{i}|" for i in range(10_000)]


def test_a_pair_that_agrees_on_the_prompt_but_not_on_one_id_is_refused():
    other = list(BASE)
    other[7_777] = "added|"
    with pytest.raises(TokenizerMismatchError, match=r"token id 7777 as different text "
                                                      r"\('t7777\|' against 'added\|'\)"):
        check_tokenizers(Vocabulary("d", BASE), Vocabulary("t", other))


def test_a_target_padded_beyond_the_drafts_vocabulary_passes():
    check_tokenizers(Vocabulary("d", BASE), Vocabulary("t", BASE + ["<pad>"] * 128))


def test_an_engine_that_reports_no_vocabulary_is_checked_on_the_prompt_only():
    other = list(BASE)
    other[5] = "x"
    check_tokenizers(Vocabulary("d", BASE), Vocabulary("t", other, report_size=False))


def test_an_id_one_engine_cannot_read_is_a_difference_not_a_crash():
    class Broken(Vocabulary):
        def detokenize(self, ids):
            if 42 in ids:
                raise IndexError("out of range")
            return super().detokenize(ids)

    with pytest.raises(TokenizerMismatchError, match=r"token id 42 .*<IndexError>"):
        check_tokenizers(Vocabulary("d", BASE), Broken("t", BASE))
