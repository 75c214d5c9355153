"""The AMQP properties and headers pashq writes on a message, and how it reads them back.

A message dispatched by pashq carries:

- the body: the serialized envelope, unchanged (JSON by default);
- ``delivery_mode = 2`` (persistent), ``message_id`` = the envelope id, ``type`` = the
  message type name, ``content_type = "application/json"`` when the body is a JSON object;
- on a retry copy: the header ``x-pashq-attempts`` = deliveries made so far;
- on a dead letter: ``x-pashq-attempts``, ``x-pashq-reason`` (at most 4,000 characters),
  ``x-pashq-traceback`` (the last 32,000 characters) and ``x-pashq-failed-at`` (ISO 8601
  UTC, ``2026-12-01T18:00:00.000000Z``).

A message published by another client needs only the envelope as its body; without a
``message_id`` property, pashq reads the id from the envelope. The envelope id is the
message's id; ``message_id`` is a copy, left out when it would not fit AMQP (over 255
bytes of UTF-8, or not encodable).

Everything pashq writes is encodable: reasons and tracebacks go through
:func:`pashq.text.safe_text`; headers copied into a retry or dead letter are made safe too
(lone surrogates and NUL escaped, header names over 255 bytes cut with a marker, values
AMQP tables cannot carry, such as floats, written as text).
"""

from __future__ import annotations

import decimal
import json
import logging
from datetime import UTC, datetime
from typing import Any

import pika
from pika import data

from pashq.envelope import MESSAGE_ID, new_message_id
from pashq.text import safe_text

__all__ = [
    "ATTEMPTS_HEADER",
    "FAILED_AT_HEADER",
    "REASON_HEADER",
    "TRACEBACK_HEADER",
    "attempts_of",
    "copy_properties",
    "envelope_id_of",
    "failed_at_of",
    "failure_headers",
    "message_id_of",
    "new_properties",
    "safe_short_string",
    "text_header",
    "utc_text",
]

log = logging.getLogger(__name__)

#: Deliveries made before this copy was published (absent = 0).
ATTEMPTS_HEADER = "x-pashq-attempts"
REASON_HEADER = "x-pashq-reason"
TRACEBACK_HEADER = "x-pashq-traceback"
FAILED_AT_HEADER = "x-pashq-failed-at"
_PERSISTENT = 2
_JSON = "application/json"
_TIME_FORMAT = "%Y-%m-%dT%H:%M:%S.%fZ"
_REASON_LIMIT = 4_000
_TRACEBACK_LIMIT = 32_000
#: AMQP short strings (message_id, type, header names) carry at most 255 bytes.
_SHORT_STRING_BYTES = 255
_CUT_MARKER = "[...]"
#: Headers the broker adds (dead-lettering, quorum redelivery): never copied.
_BROKER_HEADERS = frozenset(
    {
        "x-death",
        "x-first-death-exchange",
        "x-first-death-queue",
        "x-first-death-reason",
        "x-last-death-exchange",
        "x-last-death-queue",
        "x-last-death-reason",
        "x-delivery-count",
    }
)
_PASHQ_HEADERS = frozenset({ATTEMPTS_HEADER, REASON_HEADER, TRACEBACK_HEADER, FAILED_AT_HEADER})


def safe_short_string(value: str | None) -> str | None:
    """Return ``value`` if AMQP can carry it as a short string, else ``None``.

    A short string is at most 255 bytes of UTF-8; a lone surrogate cannot be encoded.
    """
    if value is None:
        return None
    if value.isascii():
        return value if len(value) <= _SHORT_STRING_BYTES else None
    try:
        encoded = value.encode("utf-8")
    except UnicodeEncodeError:
        return None
    return value if len(encoded) <= _SHORT_STRING_BYTES else None


def new_properties(message_id: str, type_name: str, body: bytes, priority: int = 0) -> Any:
    """Return the properties of a freshly dispatched message (AMQP ``priority`` set only
    when above 0, so a queue without priorities sees the same properties as before)."""
    return pika.BasicProperties(
        delivery_mode=_PERSISTENT,
        message_id=safe_short_string(message_id),
        type=safe_short_string(type_name),
        content_type=_JSON if body[:1] == b"{" else None,
        priority=priority or None,
    )


def _safe_key(key: Any) -> str:
    if isinstance(key, bytes):
        key = key.decode("utf-8", "backslashreplace")
    text = safe_text(str(key))
    encoded = text.encode("utf-8")
    if len(encoded) <= _SHORT_STRING_BYTES:
        return text
    room = _SHORT_STRING_BYTES - len(_CUT_MARKER)
    return encoded[:room].decode("utf-8", "ignore") + _CUT_MARKER


def _safe_value(value: Any) -> Any:
    if isinstance(value, str):
        return safe_text(value)
    if value is None or isinstance(value, bytes | bool | datetime):
        return value
    if isinstance(value, dict):
        return _safe_table(value)
    if isinstance(value, list):
        return [_safe_value(v) for v in value]
    if isinstance(value, int | decimal.Decimal):
        try:
            data.encode_value([], value)
        except Exception:
            return str(value)  # beyond 64 bits, or a decimal AMQP cannot carry
        return value
    return safe_text(repr(value))  # float (pika 1.x cannot encode it) and anything else


def _safe_table(table: dict[Any, Any]) -> dict[str, Any]:
    return {_safe_key(k): _safe_value(v) for k, v in table.items()}


def copy_properties(old: Any, message_id: str, headers: dict[str, Any]) -> Any:
    """Return the properties of a copy (retry, dead letter, failed retry) of a message.

    Keeps the sender's properties and headers except the broker's and pashq's own, then
    adds ``headers``; every header is made encodable (see the module docstring), so the
    copy can always be published. ``user_id`` and ``expiration`` are dropped: the broker
    rejects a ``user_id`` other than the publisher's, and a per-message TTL would let a
    retry expire. ``message_id`` is left out when it does not fit AMQP: the envelope
    still carries the id.
    """
    kept = {
        k: v
        for k, v in (old.headers or {}).items()
        if k not in _BROKER_HEADERS and k not in _PASHQ_HEADERS
    }
    kept = _safe_table(kept)
    kept.update(_safe_table(headers))
    fields = {
        "content_type": old.content_type,
        "content_encoding": old.content_encoding,
        "delivery_mode": _PERSISTENT,
        "priority": old.priority,
        "correlation_id": old.correlation_id,
        "reply_to": old.reply_to,
        "timestamp": old.timestamp,
        "message_id": safe_short_string(message_id or new_message_id()),
        "type": old.type,
        "app_id": old.app_id,
    }
    properties = pika.BasicProperties(headers=kept or None, **fields)
    try:
        properties.encode()
    except Exception as exc:
        # Left-over oddities of another client's properties: keep only pashq's headers.
        log.warning(
            "copy of message %r: its properties cannot be re-encoded (%s); copying only "
            "pashq's headers",
            message_id,
            type(exc).__name__,
        )
        for key in ("content_type", "content_encoding", "correlation_id", "reply_to", "type"):
            fields[key] = safe_short_string(fields[key]) if isinstance(fields[key], str) else None
        fields["app_id"] = None
        properties = pika.BasicProperties(headers=_safe_table(headers) or None, **fields)
    return properties


def failure_headers(attempts: int, reason: str, traceback: str | None) -> dict[str, Any]:
    """Return the headers of a dead letter (texts made safe and capped)."""
    headers: dict[str, Any] = {
        ATTEMPTS_HEADER: attempts,
        REASON_HEADER: safe_text(reason, _REASON_LIMIT),
        FAILED_AT_HEADER: utc_text(datetime.now(UTC)),
    }
    if traceback:
        headers[TRACEBACK_HEADER] = safe_text(traceback, _TRACEBACK_LIMIT, keep="tail")
    return headers


def attempts_of(headers: Any, redelivered: bool) -> int:
    """Return the attempt number of a delivery (1 for the first).

    ``x-pashq-attempts`` counts the deliveries before this copy was published; a quorum
    queue's ``x-delivery-count`` counts this copy's earlier deliveries exactly, and without
    it the ``redelivered`` flag counts one (a classic queue cannot tell more).
    """
    attempts = 1
    if headers:
        # pika decodes 64-bit integers as ``pika.compat.long``, a subclass of int.
        previous = headers.get(ATTEMPTS_HEADER)
        if isinstance(previous, int) and not isinstance(previous, bool):
            attempts += int(previous)
        count = headers.get("x-delivery-count")
        if isinstance(count, int) and not isinstance(count, bool):
            return attempts + int(count)
    if redelivered:
        attempts += 1
    return attempts


def _json_id(body: bytes) -> str | None:
    try:
        found = json.loads(body).get("id")
    except Exception:
        return None
    return found if isinstance(found, str) and found else None


def envelope_id_of(body: bytes) -> str | None:
    """Return the ``id`` of the envelope in ``body`` if it is a valid envelope id."""
    found = _json_id(body)
    return found if found is not None and MESSAGE_ID.fullmatch(found) else None


def message_id_of(properties: Any, body: bytes) -> str:
    """The message's id, by the id rule (docs/envelope.md, "Which id wins").

    A valid envelope ``id`` wins: ``message_id`` is only a copy pashq writes, and another
    publisher may have set it to something else. A body with no valid envelope id is
    named by its ``message_id`` if it has one, else by whatever ``id`` its JSON holds,
    else ``""``.
    """
    body_id = _json_id(body)
    if body_id is not None and MESSAGE_ID.fullmatch(body_id):
        return body_id
    if properties.message_id:
        return str(properties.message_id)
    return body_id or ""


def text_header(headers: Any, name: str) -> str | None:
    """Return a string header (pika may hand back bytes), or ``None``."""
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def utc_text(when: datetime) -> str:
    """Return ``when`` as the ISO 8601 UTC text pashq writes (``...T18:00:00.000000Z``)."""
    return when.astimezone(UTC).strftime(_TIME_FORMAT)


def failed_at_of(headers: Any) -> datetime | None:
    """Return when a dead letter failed (timezone-aware UTC), from ``x-pashq-failed-at``.

    Reads pashq's format and any other ISO 8601 text (one without an offset is UTC), and
    an AMQP timestamp value.
    """
    value = (headers or {}).get(FAILED_AT_HEADER)
    if isinstance(value, datetime):
        return value.replace(tzinfo=UTC) if value.tzinfo is None else value.astimezone(UTC)
    text = text_header(headers, FAILED_AT_HEADER)
    if text is None:
        return None
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        pass
    try:
        found = datetime.fromisoformat(text.strip())
    except ValueError:
        return None
    return found.replace(tzinfo=UTC) if found.tzinfo is None else found.astimezone(UTC)
