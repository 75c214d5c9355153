"""How a pashq message is laid out on SQS: body text, message attributes, size.

The body is the serialized envelope. SQS bodies are text restricted to the XML character
set (no NUL, no lone surrogates), so bytes that are not such text (a compressing or
encrypting serializer plugin, or garbage) travel base64-encoded, flagged by the
``pashq-encoding`` attribute. Everything else pashq needs rides in ``pashq-*`` message
attributes, never in the envelope.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from pashq.envelope import MESSAGE_ID
from pashq.text import safe_text

__all__ = [
    "ATTEMPTS",
    "DELIVER_AT",
    "ENCODING",
    "FAILED_AT",
    "ID",
    "MAX_BATCH_BYTES",
    "MAX_MESSAGE_BYTES",
    "REASON",
    "SOURCE",
    "TRACEBACK",
    "attribute_value",
    "decode_body",
    "encode_body",
    "fifo_token",
    "iso_time",
    "message_size",
    "number",
    "parse_count",
    "parse_time",
    "safe_attribute",
    "text",
    "usable_id",
]

#: The message id pashq gave the message (the envelope's ``id``).
ID = "pashq-id"
#: ``base64`` when the body bytes are not valid SQS text.
ENCODING = "pashq-encoding"
#: When the message may be delivered (delays over 900 s): ISO 8601 UTC; a Unix time
#: (``Number``, written by pashq-sqs 0.1.0) is read too.
DELIVER_AT = "pashq-deliver-at"
#: On dead letters: why, the traceback, how many deliveries, when, and from which queue.
REASON = "pashq-reason"
TRACEBACK = "pashq-traceback"
ATTEMPTS = "pashq-attempts"
FAILED_AT = "pashq-failed-at"
SOURCE = "pashq-queue"

#: SQS's largest message (body and attributes), 1 MiB since August 2025.
MAX_MESSAGE_BYTES = 1_048_576
#: SQS's largest batch request (the sum of its messages).
MAX_BATCH_BYTES = 1_048_576

# Characters SQS rejects in a body: #x9 | #xA | #xD | #x20-#xD7FF | #xE000-#xFFFD |
# #x10000-#x10FFFF are allowed.
_NOT_SQS_TEXT = re.compile("[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]")
_FIFO_TOKEN = re.compile(r"^[!-~]{1,128}$")
# The latest time a timestamp attribute may name: the end of year 9999 (datetime's range).
_LATEST = 253_402_300_799.0


def text(value: str) -> dict[str, str]:
    """Return a ``String`` message attribute."""
    return {"DataType": "String", "StringValue": value}


def number(value: float | int) -> dict[str, str]:
    """Return a ``Number`` message attribute."""
    return {"DataType": "Number", "StringValue": repr(value)}


def usable_id(value: str | None) -> str | None:
    """Return ``value`` if it can be used as a message id as it stands, else ``None``."""
    # What an envelope id may be; anything else (empty, huge, control characters) is
    # ignored and the envelope's id is decoded instead.
    if value is not None and MESSAGE_ID.fullmatch(value):
        return value
    return None


def iso_time(unix: float) -> str:
    """Return a Unix time as ISO 8601 UTC with milliseconds (``2026-12-01T18:00:00.000Z``)."""
    return datetime.fromtimestamp(unix, UTC).isoformat(timespec="milliseconds")[:-6] + "Z"


def parse_time(value: str) -> float:
    """Return the Unix time of a timestamp attribute: ISO 8601 (no zone = UTC) or a number.

    :raises ValueError: for anything else, or a time that is not finite or after year 9999.
    """
    stripped = value.strip()
    try:
        unix = float(stripped)
    except ValueError:
        try:
            stamp = datetime.fromisoformat(stripped)
        except ValueError:
            raise ValueError(f"{safe_text(value, 60)!r} is not a time") from None
        if stamp.tzinfo is None:
            stamp = stamp.replace(tzinfo=UTC)
        unix = stamp.timestamp()
    if not math.isfinite(unix) or abs(unix) > _LATEST:
        raise ValueError(f"{safe_text(value, 60)!r} is not a time before year 10000")
    return unix


def parse_count(value: str | None, default: int, most: float = 1e9) -> int:
    """Return a count attribute (``ApproximateReceiveCount``, ``pashq-attempts``) as an int,
    or ``default`` when it is missing or not a finite number from 0 to ``most``."""
    if not value:
        return default
    try:
        number = float(value)
    except ValueError:
        return default
    if not math.isfinite(number) or not 0 <= number <= most:
        return default
    return int(number)


def safe_attribute(value: str, limit: int | None = None, keep: str = "head") -> str:
    """Return ``value`` as text SQS accepts in a ``String`` attribute, at most ``limit``
    characters: NUL, lone surrogates and other characters outside the XML set escaped."""
    cleaned = _NOT_SQS_TEXT.sub(lambda m: f"\\x{ord(m.group()):02x}", safe_text(value))
    return safe_text(cleaned, limit, keep=keep)


def attribute_value(attributes: Mapping[str, Any], name: str) -> str | None:
    """Return the string value of a received message attribute, or ``None``."""
    found = attributes.get(name)
    if not found:
        return None
    value = found.get("StringValue")
    return value if isinstance(value, str) else None


def encode_body(data: bytes) -> tuple[str, bool]:
    """Return the SQS body for ``data`` and whether it is base64-encoded."""
    try:
        decoded = data.decode("utf-8")
    except UnicodeDecodeError:
        return base64.b64encode(data).decode("ascii"), True
    if _NOT_SQS_TEXT.search(decoded):
        return base64.b64encode(data).decode("ascii"), True
    return decoded, False


def decode_body(body: str, attributes: Mapping[str, Any]) -> bytes:
    """Return the bytes pushed, from an SQS body and its message attributes.

    A body flagged base64 that does not decode is returned as its UTF-8 text, so the
    worker dead-letters it as undecodable instead of the pull failing.
    """
    if attribute_value(attributes, ENCODING) == "base64":
        try:
            return base64.b64decode(body, validate=True)
        except (binascii.Error, ValueError):
            return body.encode("utf-8")
    return body.encode("utf-8")


def message_size(body: str, attributes: Mapping[str, Mapping[str, Any]]) -> int:
    """Return a message's size as SQS counts it: body plus attribute names, types, values."""
    size = len(body.encode("utf-8"))
    for name, value in attributes.items():
        size += len(name.encode("utf-8")) + len(value["DataType"].encode("utf-8"))
        string = value.get("StringValue")
        if isinstance(string, str):
            size += len(string.encode("utf-8"))
        binary = value.get("BinaryValue")
        if isinstance(binary, bytes | bytearray):
            size += len(binary)
    return size


def fifo_token(value: str) -> str:
    """Return ``value`` as a valid MessageGroupId / MessageDeduplicationId.

    Those take 1-128 printable ASCII characters; anything else is replaced by its
    SHA-256 hex digest, which keeps equal values equal (same group, same dedup key).
    """
    if _FIFO_TOKEN.match(value):
        return value
    return hashlib.sha256(value.encode("utf-8")).hexdigest()
