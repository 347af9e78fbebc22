"""Grading: extract a sample's final answer, normalise it, and check it against the gold one.

``extract_boxed`` finds the answer, ``normalize_answer`` gives its canonical form (for voting
and the fast path), ``Grader`` decides equivalence (math-verify in a process pool with a
per-comparison timeout), ``is_equivalent`` does one check.  math-verify is imported only by
the grading workers, so importing this package stays light.
"""

from atts.grading.boxed import extract_boxed
from atts.grading.grader import GradeFailure, Grader, GradeStats, grade_rows, is_equivalent
from atts.grading.normalize import answer_family, normalize_answer

__all__ = [
    "GradeFailure",
    "GradeStats",
    "Grader",
    "answer_family",
    "extract_boxed",
    "grade_rows",
    "is_equivalent",
    "normalize_answer",
]
