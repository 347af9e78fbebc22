"""Reading a text file the project wrote or a user gave: UTF-8, or one line naming the file.

Every file read back (rows, manifests, banks, recipes, datasets) is UTF-8.  A file that is not
(a copy through another editor, a binary file given by mistake) raises ``TextFileError`` that
names the file and where its first bad byte is, instead of the codec's bare message.
"""

from __future__ import annotations

from pathlib import Path

from atts.errors import AttsError

__all__ = ["TextFileError", "decode_text", "read_text"]


class TextFileError(AttsError, ValueError):
    """A file that is not UTF-8 text."""


def read_text(path: str | Path) -> str:
    """The file's text; ``TextFileError`` if it is not UTF-8 (OSErrors go on as they are)."""
    return decode_text(Path(path).read_bytes(), path)


def decode_text(data: bytes, source: str | Path) -> str:
    """``data`` (the start of the file ``source``, or all of it) as text, or
    ``TextFileError`` naming the file and the line of its first byte that is not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as err:
        line = data[: err.start].count(b"\n") + 1
        raise TextFileError(f"{source}:{line}: not UTF-8 text (byte {err.start} is "
                            f"0x{data[err.start]:02x}); save the file as UTF-8") from None
