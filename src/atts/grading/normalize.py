"""Answer normalisation: one canonical string per answer, for voting and the fast path.

``normalize_answer`` strips presentation (``$``, ``\\left``, spacing commands, ``\\text{}``,
units of GSM8K-style answers, thousands separators, degree and percent signs) and writes plain
rational numbers exactly (``084`` -> ``84``, ``27.0`` -> ``27``, ``\\frac12`` / ``0.5`` ->
``1/2``).  Two answers with the same normal form are equal; different normal forms may still be
equivalent (``\\sqrt{18}`` and ``3\\sqrt{2}``), which is what math-verify decides.

Rules depend on the answer family of the dataset (``answer_family``): ``gsm8k`` (a number,
possibly with words and units around it), ``aime`` (an integer 0-999, leading zeros allowed),
``amc`` (a number, stored as a float) and ``math`` (any LaTeX expression).
"""

from __future__ import annotations

import re
from fractions import Fraction
from typing import Literal

from atts.grading.boxed import extract_boxed

Family = Literal["gsm8k", "aime", "amc", "math"]


def answer_family(dataset: str) -> Family:
    """The grading rules for a dataset name: by prefix gsm8k*, aime*, amc*, else math."""
    name = dataset.lower().rsplit("/", 1)[-1]
    for family in ("gsm8k", "aime", "amc"):
        if name.startswith(family):
            return family
    return "math"


_WRAPPERS = (("$$", "$$"), ("$", "$"), ("\\(", "\\)"), ("\\[", "\\]"))
_TEXT_CMD = re.compile(r"\\(?:text|textbf|textrm|mathrm|mathbf|mbox)\s*\{([^{}]*)\}")
_SIZING = re.compile(r"\\(?:left|right|big|Big|bigg|Bigg)(?![a-zA-Z])")
_SPACING = re.compile(r"\\[!,;:> ]|\\q?quad(?![a-zA-Z])|~")
_DEGREES = re.compile(r"\^\s*\{?\s*\\circ\s*\}?|°")
_LEADING_VAR = re.compile(r"^[a-zA-Z]\s*=\s*(?=\S)")
_THOUSANDS = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?")
_SPACES = re.compile(r"\s+")
_CMD_SPACE = re.compile(r"(\\[a-zA-Z]+)\s+(?=[a-zA-Z])")

_DECIMAL = re.compile(r"[-+]?(?:\d+\.?\d*|\.\d+)")
_SLASH = re.compile(r"([-+]?\d+)/([-+]?\d+)")
_FRAC = re.compile(r"([-+]?)\\frac\{([-+]?\d+)\}\{([-+]?\d+)\}")
_FRAC_SHORT = re.compile(r"([-+]?)\\frac(\d)(\d)")
_ANY_NUMBER = re.compile(r"[-+]?\d{1,3}(?:,\d{3})+(?:\.\d+)?|[-+]?\d+(?:\.\d+)?")
_OPERATORS = re.compile(r"[\^/*+=<>]|\\(?:frac|sqrt|cdot|times|pi)")


def _unwrap(s: str) -> str:
    s = s.strip()
    for left, right in _WRAPPERS:
        if len(s) > len(left) + len(right) and s.startswith(left) and s.endswith(right):
            return s[len(left):-len(right)].strip()
    return s


def clean_latex(s: str) -> str:
    """Remove LaTeX presentation that never changes the value of an answer."""
    s = _unwrap(s)
    s = s.replace("\\dfrac", "\\frac").replace("\\tfrac", "\\frac").replace("{,}", ",")
    s = s.replace("\\displaystyle", "")
    s = _TEXT_CMD.sub(r"\1", s)
    s = _SIZING.sub("", s)
    s = _SPACING.sub(" ", s)
    s = _DEGREES.sub("", s)
    s = s.replace("\\%", "").replace("%", "").replace("\\$", "").replace("$", "")
    s = s.strip().rstrip(".").strip()
    s = _LEADING_VAR.sub("", s)
    # Drop whitespace but keep one space where it ends a command before a letter (\pi r).
    s = _SPACES.sub("", _CMD_SPACE.sub("\\1\0", s)).replace("\0", " ")
    if _THOUSANDS.fullmatch(s):
        s = s.replace(",", "")
    return s


def parse_number(s: str) -> Fraction | None:
    """The exact value of a plain rational literal (``-3``, ``0.25``, ``3/4``, ``\\frac{3}{4}``).

    Anything else (expressions, intervals, text) gives None.
    """
    try:
        if _DECIMAL.fullmatch(s):
            return Fraction(s)
        match = _SLASH.fullmatch(s)
        if match:
            return Fraction(int(match.group(1)), int(match.group(2)))
        match = _FRAC.fullmatch(s) or _FRAC_SHORT.fullmatch(s)
        if match:
            value = Fraction(int(match.group(2)), int(match.group(3)))
            return -value if match.group(1) == "-" else value
    except (ValueError, ZeroDivisionError):
        return None
    return None


def format_number(value: Fraction) -> str:
    """The canonical text of a rational: ``"84"``, ``"-1/2"``."""
    if value.denominator == 1:
        return str(value.numerator)
    return f"{value.numerator}/{value.denominator}"


def normalize_answer(answer: str | None, dataset: str = "math") -> str | None:
    """The canonical form of an answer under the rules of ``dataset``'s family.

    Accepts the bare answer or a text holding it (the last ``\\boxed{}`` is taken; for GSM8K
    also the part after ``####``).  None stays None (no answer).
    """
    if answer is None:
        return None
    family = answer_family(dataset)
    s = answer
    if family == "gsm8k" and "####" in s:
        s = s.rsplit("####", 1)[1]
    boxed = extract_boxed(s)
    if boxed is not None:
        s = boxed
    s = clean_latex(s)
    value = parse_number(s)
    if value is not None:
        return format_number(value)
    if family != "math" and not _OPERATORS.search(s):
        # Integer-answer benchmarks: a single number among words or units is the answer
        # ("18 dollars", "\text{x = 084}"), two numbers are ambiguous and left alone.
        numbers = _ANY_NUMBER.findall(s)
        if len(numbers) == 1:
            value = parse_number(numbers[0].replace(",", ""))
            if value is not None:
                return format_number(value)
    return s
