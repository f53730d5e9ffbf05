"""File names shown to a person: undecodable bytes escaped instead of crashing the print.

Linux allows any bytes in a file name; Python keeps the ones that are not UTF-8 as lone
surrogates (``Jos\\udce9``), which a UTF-8 stream refuses to write. A report that lists
such a file after hours of work must not fail on it.
"""

from __future__ import annotations


def printable(text: str) -> str:
    """``text`` with the undecodable bytes of a file name shown as ``\\xNN`` (any other lone
    surrogate as ``\\udNNN``); a valid string is returned unchanged."""
    try:
        return text.encode("utf-8", "surrogateescape").decode("utf-8", "backslashreplace")
    except UnicodeEncodeError:  # a lone surrogate that no byte gave
        return text.encode("utf-8", "backslashreplace").decode("utf-8")
