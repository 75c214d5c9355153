"""The AMQP properties and headers pashq writes on a message, and how it reads them back.

A message dispatched by pashq carries:

- the body: the serialized envelope, unchanged (JSON by default);
- ``delivery_mode = 2`` (persistent), ``message_id`` = the envelope id, ``type`` = the
  message type name, ``content_type = "application/json"`` when the body is a JSON object;
- on a retry copy: the header ``x-pashq-attempts`` = deliveries made so far;
- on a dead letter: ``x-pashq-attempts``, ``x-pashq-reason``, ``x-pashq-traceback``
  (the last 32,000 characters) and ``x-pashq-failed-at`` (ISO 8601 UTC).

A message published by another client needs only the envelope as its body; without a
``message_id`` property, pashq reads the id from the envelope.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from typing import Any

import pika

from pashq.envelope import new_message_id

__all__ = [
    "ATTEMPTS_HEADER",
    "FAILED_AT_HEADER",
    "REASON_HEADER",
    "TRACEBACK_HEADER",
    "attempts_of",
    "copy_properties",
    "failed_at_of",
    "failure_headers",
    "message_id_of",
    "new_properties",
    "text_header",
]

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


def new_properties(message_id: str, type_name: str, body: bytes) -> Any:
    """Return the properties of a freshly dispatched message."""
    return pika.BasicProperties(
        delivery_mode=_PERSISTENT,
        message_id=message_id,
        type=type_name,
        content_type=_JSON if body[:1] == b"{" else None,
    )


def copy_properties(old: Any, message_id: str, headers: dict[str, Any]) -> Any:
    """Return the properties of a copy (retry, dead letter, failed retry) of a message.

    Keeps the sender's properties and headers except the broker's and pashq's own, then
    adds ``headers``. ``user_id`` and ``expiration`` are dropped: the broker rejects a
    ``user_id`` other than the publisher's, and a per-message TTL would let a retry expire.
    """
    kept = {
        k: v
        for k, v in (old.headers or {}).items()
        if k not in _BROKER_HEADERS and k not in _PASHQ_HEADERS
    }
    kept.update(headers)
    return pika.BasicProperties(
        content_type=old.content_type,
        content_encoding=old.content_encoding,
        headers=kept or None,
        delivery_mode=_PERSISTENT,
        priority=old.priority,
        correlation_id=old.correlation_id,
        reply_to=old.reply_to,
        timestamp=old.timestamp,
        message_id=message_id or new_message_id(),
        type=old.type,
        app_id=old.app_id,
    )


def failure_headers(attempts: int, reason: str, traceback: str | None) -> dict[str, Any]:
    """Return the headers of a dead letter."""
    headers: dict[str, Any] = {
        ATTEMPTS_HEADER: attempts,
        REASON_HEADER: reason[:_REASON_LIMIT],
        FAILED_AT_HEADER: datetime.now(UTC).strftime(_TIME_FORMAT),
    }
    if traceback:
        headers[TRACEBACK_HEADER] = traceback[-_TRACEBACK_LIMIT:]
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


def message_id_of(properties: Any, body: bytes) -> str:
    """The ``message_id`` property, else the envelope's ``id`` (other publishers), else ``""``."""
    if properties.message_id:
        return str(properties.message_id)
    try:
        found = json.loads(body).get("id")
    except Exception:
        return ""
    return found if isinstance(found, str) else ""


def text_header(headers: Any, name: str) -> str | None:
    """Return a string header (pika may hand back bytes), or ``None``."""
    value = (headers or {}).get(name)
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return value if isinstance(value, str) else None


def failed_at_of(headers: Any) -> datetime | None:
    """Return when a dead letter failed, from ``x-pashq-failed-at``."""
    text = text_header(headers, FAILED_AT_HEADER)
    if text is None:
        return None
    try:
        return datetime.strptime(text, _TIME_FORMAT).replace(tzinfo=UTC)
    except ValueError:
        return None
