"""``logger``: logs each dispatched message at INFO and drops it.

Each record, on the ``pashq.drivers.logger`` logger, names the queue, the message id, the
type and the body. No delivery guarantee at all: nothing is stored and nothing can be
consumed. Options: ``level`` (a ``logging`` level name, default ``"INFO"``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pashq.capabilities import Capabilities
from pashq.config import parse_options
from pashq.connection import Connection
from pashq.delivery import OutgoingMessage
from pashq.errors import ConfigError
from pashq.hookspecs import hookimpl

__all__ = ["LoggerDriver"]

log = logging.getLogger(__name__)


@attrs.frozen
class LoggerOptions:
    """Options of the logger driver."""

    level: str = "INFO"


class LoggerDriver:
    """Logs and drops messages."""

    name = "logger"
    capabilities = Capabilities(consume=False, delay=True, batch_size=1000)

    @hookimpl
    def pashq_connect(self, connection: Connection) -> None:
        """Validate ``level``."""
        options = parse_options(LoggerOptions, connection.options, connection.where)
        level = logging.getLevelName(options.level.upper())
        if not isinstance(level, int):
            raise ConfigError(
                f"{connection.where}: 'level' must be a logging level name "
                f"(DEBUG, INFO, WARNING, ERROR), got {options.level!r}"
            )
        self.level = level
        self.hook = connection.hook

    @hookimpl
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """Log queue, id, type and body of each message."""
        for m in messages:
            body = self.hook.pashq_deserialize(data=m.body).body
            log.log(
                self.level,
                "queue=%s id=%s type=%s delay=%g body=%s",
                queue,
                m.id,
                m.type_name,
                m.delay,
                json.dumps(body, ensure_ascii=False, separators=(",", ":")),
            )
        return [m.id for m in messages]
