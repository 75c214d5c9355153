"""Making text from handlers and messages safe to store anywhere.

Dead-letter reasons and tracebacks come from exception messages, which come from message
data: they may hold NUL (which PostgreSQL text refuses), lone surrogates (which no UTF-8
codec encodes) or megabytes of repr. :func:`safe_text` turns any ``str`` into one that
every backend stores: NUL and unencodable code points written as escapes, and the length
capped with a marker saying how much was cut.
"""

from __future__ import annotations

__all__ = ["REASON_LIMIT", "TRACEBACK_LIMIT", "safe_reason", "safe_text", "safe_traceback"]

#: The most characters of a dead-letter reason the core hands to a driver.
REASON_LIMIT = 1000
#: The most characters of a traceback the core hands to a driver (the end is kept).
TRACEBACK_LIMIT = 32_000


def safe_text(text: str, limit: int | None = None, *, keep: str = "head") -> str:
    """Return ``text`` as valid UTF-8 without NUL, at most ``limit`` characters long.

    :param text: any string (lone surrogates and control characters allowed).
    :param limit: the most characters to return (the marker included); ``None``: no limit.
    :param keep: ``"head"`` keeps the start (a reason), ``"tail"`` the end (a traceback,
        whose last lines name the error).
    """
    if not text.isascii() or "\x00" in text:
        text = text.encode("utf-8", "backslashreplace").decode("utf-8").replace("\x00", "\\x00")
    if limit is None or len(text) <= limit:
        return text
    room = max(0, limit - 40)  # the marker is shorter than 40 characters
    marker = f"[... {len(text) - room} characters cut]"
    return f"{text[:room]} {marker}" if keep == "head" else f"{marker} {text[-room:]}"


def safe_reason(text: str) -> str:
    """A dead-letter reason as the core hands it to a driver (:data:`REASON_LIMIT`)."""
    return safe_text(text, REASON_LIMIT)


def safe_traceback(text: str | None) -> str | None:
    """A traceback as the core hands it to a driver (:data:`TRACEBACK_LIMIT`, the end kept)."""
    return None if text is None else safe_text(text, TRACEBACK_LIMIT, keep="tail")
