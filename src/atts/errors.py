"""The root of the errors a user can cause and fix.

Every such error subclasses ``AttsError`` (and, where callers already expect it, the builtin it
refines: ``ValueError`` for bad values, ``RuntimeError`` for a failed model install), and its
message names the problem and the fix in one line.  The CLI prints that line and exits 2
(``atts.cli.main``); anything else is a bug and keeps its traceback.
"""

from __future__ import annotations


class AttsError(Exception):
    """A problem with the user's input or setup; the message says what to change."""
