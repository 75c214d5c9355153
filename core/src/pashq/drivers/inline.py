"""``sync``: runs each message inside ``dispatch``, in the caller's thread.

Useful in tests and scripts. ``dispatch`` returns after ``process_message`` has returned;
an exception from the handler reaches the caller unchanged (no retries), and a message
whose ``validate_message()`` returns ``False`` raises
:class:`~pashq.errors.MessageRejectedError`. Nothing is stored; there is nothing for a
worker to consume. No options.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pashq.capabilities import Capabilities
from pashq.config import parse_options
from pashq.connection import Connection
from pashq.delivery import OutgoingMessage
from pashq.errors import MessageRejectedError
from pashq.hookspecs import hookimpl
from pashq.processing import Processor, run_awaitable

__all__ = ["SyncDriver"]


@attrs.frozen
class _NoOptions:
    pass


def _maybe_await(value: Any) -> Any:
    return run_awaitable(value) if hasattr(value, "__await__") else value


class SyncDriver:
    """Processes messages at dispatch time, inline."""

    name = "sync"
    capabilities = Capabilities(consume=False, batch_size=1000)

    @hookimpl
    def pashq_connect(self, connection: Connection) -> None:
        """Check there are no options and keep the connection's decoder."""
        parse_options(_NoOptions, connection.options, connection.where)
        self.processor = Processor(connection.hook, connection.config.retry)

    @hookimpl
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """Decode each message as a worker would, validate it and process it now."""
        if options:
            raise TypeError(f"sync driver takes no dispatch options, got {sorted(options)}")
        for outgoing in messages:
            _, message = self.processor.decode(outgoing.body)
            if _maybe_await(message.validate_message()) is False:
                raise MessageRejectedError(
                    f"message {outgoing.id} ({outgoing.type_name}) for queue {queue!r} was "
                    "rejected: validate_message() returned False"
                )
            _maybe_await(message.process_message())
        return [m.id for m in messages]
