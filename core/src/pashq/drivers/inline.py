"""``sync``: runs each message inside ``dispatch``, in the caller's thread.

Useful in tests and scripts. ``dispatch`` returns after ``process_message`` has returned;
an exception from the handler reaches the caller unchanged (no retries), and a message
whose ``validate_message()`` returns ``False`` raises
:class:`~pashq.errors.MessageRejectedError`. Nothing is stored; there is nothing for a
worker to consume. No options.

Each message runs as one delivery (attempt 1) inside the connection's ``pashq_process``
wrappers, with :func:`pashq.current` set, as in a worker: a wrapper sees the result a
worker would decide on a first attempt (``ACK``; ``RETRY`` with the exception; ``DEAD`` for
``validate_message() is False``) and its decision is what ``dispatch`` does: ``ACK``
returns, a decision with an exception raises that exception, any other decision raises
:class:`~pashq.errors.MessageRejectedError` with the result's reason. Undecodable bytes
and unknown types raise at once (before the wrappers); no time limit applies.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import attrs

from pashq.capabilities import Capabilities
from pashq.config import parse_options
from pashq.connection import Connection
from pashq.delivery import Delivery, OutgoingMessage
from pashq.errors import MessageRejectedError
from pashq.hookspecs import hookimpl
from pashq.processing import Outcome, Prepared, Processor

__all__ = ["SyncDriver"]


@attrs.frozen
class _NoOptions:
    pass


class SyncDriver:
    """Processes messages at dispatch time, inline."""

    name = "sync"
    capabilities = Capabilities(consume=False, batch_size=1000)

    @hookimpl
    def pashq_connect(self, connection: Connection) -> None:
        """Check there are no options and keep the connection's decoder."""
        parse_options(_NoOptions, connection.options, connection.where)
        self._connection = connection
        self._plugins: tuple[Any, ...] = ()
        self.processor = self._processor()

    def _processor(self) -> Processor:
        """The processor, built again when plugins were registered or removed since (a
        Processor takes the ``pashq_process`` wrappers and the deserializer once)."""
        hook = self._connection.hook
        plugins = (
            *(i.function for i in hook.pashq_process.get_hookimpls()),
            *(i.function for i in hook.pashq_deserialize.get_hookimpls()),
        )
        if plugins != self._plugins or not hasattr(self, "processor"):
            conn = self._connection
            self.processor = Processor(conn.hook, conn.config.retry, conn.name)
            self._plugins = plugins
        return self.processor

    @hookimpl
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """Decode each message as a worker would, validate it and process it now."""
        if options:
            raise TypeError(f"sync driver takes no dispatch options, got {sorted(options)}")
        processor = self._processor()
        for outgoing in messages:
            envelope, message = processor.decode(outgoing.body)  # poison raises here
            delivery = Delivery(queue, outgoing.id, outgoing.body)
            policy = processor.policy_of(type(message))
            result = processor.execute(Prepared(delivery, message, policy, False, envelope))
            if result.outcome is Outcome.ACK:
                continue
            if result.exception is not None:
                raise result.exception
            raise MessageRejectedError(
                f"message {outgoing.id} ({outgoing.type_name}) for queue {queue!r} was "
                f"rejected: {result.reason or result.outcome.name}"
            )
        return [m.id for m in messages]
