"""Finding the final answer in a solution text: the last balanced ``\\boxed{...}``.

This is the definition of ``answer`` in samples.jsonl (docs/TEAM.md): a sample's answer is the
content of its last balanced ``\\boxed{...}`` (or ``\\fbox{...}``), or of its last brace-less
``\\boxed 5`` (LaTeX boxes the next token; read as the text up to a space, ``$`` or the end of
the line, as the MATH benchmark's own answer extraction does), ``None`` when it has none.
"""

from __future__ import annotations

import re

_BOX_OPEN = re.compile(r"\\(?:boxed|fbox)\s*\{")
_BOX_BARE = re.compile(r"\\boxed[ \t]+([^\s${}]+)")


def _closing_brace(text: str, start: int) -> int | None:
    """Index of the brace closing the group whose content begins at ``start``, or None.

    Escaped braces (``\\{``, ``\\}``: literal set braces in LaTeX) do not count.
    """
    depth = 1
    i = start
    n = len(text)
    while i < n:
        ch = text[i]
        if ch == "\\":
            i += 2
            continue
        if ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    return None


def extract_boxed(text: str | None) -> str | None:
    """The content of the last balanced ``\\boxed{...}`` / ``\\fbox{...}`` in ``text``.

    Nested braces are matched (``\\boxed{\\frac{1}{2}}`` -> ``\\frac{1}{2}``); a box inside a box
    belongs to the outer one.  A box that never closes (a truncated generation) is skipped, so
    ``"\\boxed{1} then \\boxed{2"`` gives ``"1"``, and a text whose only box is unbalanced gives
    None.  Surrounding whitespace of the content is stripped.
    """
    if not text:
        return None
    found: str | None = None
    found_at = -1
    for bare in _BOX_BARE.finditer(text):  # the last brace-less box, if any
        found, found_at = bare.group(1).rstrip(".,;"), bare.start()
    pos = 0
    while True:
        match = _BOX_OPEN.search(text, pos)
        if match is None:
            return found
        end = _closing_brace(text, match.end())
        if end is None:
            # Unbalanced: a later box may still close inside it, so keep looking after "{".
            pos = match.end()
            continue
        if match.start() > found_at:  # a later braced box wins over an earlier bare one
            found, found_at = text[match.end():end].strip(), match.start()
        pos = end + 1
