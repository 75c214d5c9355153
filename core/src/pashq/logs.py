"""Structured logs of ``pashq work --log-format json``: one JSON object per line.

:class:`JsonFormatter` writes every record as an object with ``time``, ``level``,
``logger``, ``event`` and ``message``, plus the message fields a record carries (through
``extra=``): ``queue``, ``type``, ``message_id``, ``attempts``, ``outcome``, ``duration``
and ``error``. :class:`MessageLog` is a ``pashq_process`` wrapper that logs one such record
per delivery a worker handles (events ``message.acked``, ``message.retried``,
``message.dead_lettered``), so log pipelines need no regular expression.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Generator
from datetime import UTC, datetime
from typing import TYPE_CHECKING

from pashq.delivery import Delivery
from pashq.envelope import Envelope
from pashq.hookspecs import hookimpl
from pashq.processing import Outcome, Result

if TYPE_CHECKING:
    from pashq.message import Message

__all__ = ["FIELDS", "JsonFormatter", "MessageLog"]

#: The message fields a record may carry, in the order they are written.
FIELDS = ("queue", "type", "message_id", "attempts", "outcome", "duration", "error")

_EVENTS = {
    Outcome.ACK: ("message.acked", "ack", logging.INFO),
    Outcome.RETRY: ("message.retried", "retry", logging.INFO),
    Outcome.DEAD: ("message.dead_lettered", "dead_letter", logging.WARNING),
}


def _timestamp(created: float) -> str:
    moment = datetime.fromtimestamp(created, UTC).replace(tzinfo=None)
    return moment.isoformat(timespec="milliseconds") + "Z"


class JsonFormatter(logging.Formatter):
    """Formats a record as one line of JSON (see the module docstring for the fields).

    ``event`` is the record's ``extra={"event": ...}``, else ``"log"``.
    """

    def format(self, record: logging.LogRecord) -> str:
        """Return the record as a JSON object on one line."""
        data: dict[str, object] = {
            "time": _timestamp(record.created),
            "level": record.levelname,
            "logger": record.name,
            "event": getattr(record, "event", None) or "log",
            "message": record.getMessage(),
        }
        for name in FIELDS:
            value = getattr(record, name, None)
            if value is not None:
                data[name] = value
        if record.exc_info:
            data["exc"] = self.formatException(record.exc_info)
        return json.dumps(data, ensure_ascii=False, default=str)


class MessageLog:
    """Logs one record per delivery a worker handles, on the ``pashq.messages`` logger:
    INFO for acks and retries, WARNING for dead letters."""

    def __init__(self, logger: logging.Logger | None = None) -> None:
        """:param logger: where to log (default: ``pashq.messages``)."""
        self.log = logger or logging.getLogger("pashq.messages")

    @hookimpl(wrapper=True)
    def pashq_process(
        self, delivery: Delivery, envelope: Envelope | None, message: Message | None
    ) -> Generator[None, Result, Result]:
        """Time the delivery and log its outcome."""
        started = time.perf_counter()
        result = yield
        duration = time.perf_counter() - started
        found = _EVENTS.get(result.outcome)
        if found is None:
            return result
        event, outcome, level = found
        if not self.log.isEnabledFor(level):
            return result
        kind = envelope.type if envelope is not None else None
        error = result.reason or None
        text = f"message {delivery.id} on {delivery.queue!r}: {outcome}"
        if error:
            text += f": {error}"
        self.log.log(
            level,
            "%s",
            text,
            extra={
                "event": event,
                "queue": delivery.queue,
                "type": kind,
                "message_id": delivery.id,
                "attempts": delivery.attempts,
                "outcome": outcome,
                "duration": round(duration, 6),
                "error": error,
            },
        )
        return result
