"""Integer ranges the stub accepts: every integer from a client is checked before it reaches SQLite or a file.

SQLite stores signed 64-bit integers, and so does Go's ``int`` that Fleet decodes these fields into: a larger
Python int made the SQLite binding raise (a 500). Ids in paths and query-name suffixes are ASCII digits only:
``str.isdigit`` also accepts ``"²"`` (which ``int`` then refuses) and ``"٣"`` (which ``int`` reads as 3), where
Fleet's routes (``{id:[0-9]+}``) and ``strconv`` take ``0-9`` only.
"""

from __future__ import annotations

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
_INT64_MAX_DIGITS = len(str(INT64_MAX))


class IdOutOfRange(ValueError):
    pass


def fits_int64(value: int) -> bool:
    return INT64_MIN <= value <= INT64_MAX


def is_ascii_digits(text: str) -> bool:
    return text.isascii() and text.isdigit()


def parse_id(text: str) -> int | None:
    """A non-negative id written in ASCII digits (leading zeros allowed, as Go's ParseUint allows them).

    None when ``text`` is not such a number; ``IdOutOfRange`` when it is one beyond int64 (checked on the digits,
    so a 10,000-digit id costs nothing and never reaches ``int``'s digit limit).
    """
    if not is_ascii_digits(text):
        return None
    digits = text.lstrip("0") or "0"
    if len(digits) > _INT64_MAX_DIGITS or int(digits) > INT64_MAX:
        raise IdOutOfRange(f"{text[:32]}{'…' if len(text) > 32 else ''} is out of range (0..{INT64_MAX})")
    return int(digits)


def parse_id_or_none(text: str) -> int | None:
    """``parse_id`` for names that are only ours when they parse (query names): out of range is simply not ours."""
    try:
        return parse_id(text)
    except IdOutOfRange:
        return None
