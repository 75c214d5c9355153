"""A connection: one configured backend, its plugin manager and the dispatch API.

Get one with :func:`pashq.queue` (``pashq.queue("events")``); it is opened on first use
and shared by the whole process.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import Any

import attrs
import pluggy

from pashq import hookspecs
from pashq.capabilities import Capabilities
from pashq.config import ConnectionConfig
from pashq.converter import unstructure_hook
from pashq.delivery import DeadLetter, OutgoingMessage, QueueStats
from pashq.discovery import DRIVER_GROUP, PLUGIN_GROUP, find
from pashq.envelope import (
    Envelope,
    encode_envelope,
    encode_fields,
    new_message_ids,
    utc_timestamp,
)
from pashq.errors import (
    ConfigError,
    PartialPushError,
    PashqError,
    QueueNameError,
    UnsupportedError,
)
from pashq.hookspecs import hookimpl
from pashq.lifecycle import DispatchItem, check_user_headers
from pashq.message import Message, body_of, check_priority, uses_default_get_message
from pashq.serializer import JsonSerializer, default_only
from pashq.unique import UNIQUE_HEADER, push_unique, unique_key_of

__all__ = ["Connection", "build_plugin_manager"]

log = logging.getLogger(__name__)


def build_plugin_manager(driver: object, config: ConnectionConfig) -> pluggy.PluginManager:
    """Build the plugin manager of one connection: the driver, the default serializer and
    the plugins its configuration names, checked with ``check_pending()``."""
    pm = pluggy.PluginManager("pashq")
    pm.add_hookspecs(hookspecs)
    pm.register(JsonSerializer(), name="pashq.serializer.json")
    for plugin_name in config.plugins:
        factory = find(PLUGIN_GROUP, plugin_name, f"{config.where} plugins").load_checked(
            config.where
        )
        plugin = factory() if isinstance(factory, type) else factory
        pm.register(plugin, name=f"pashq.plugin.{plugin_name}")
    pm.register(driver, name=f"pashq.driver.{config.type}")
    pm.check_pending()
    return pm


@attrs.frozen(slots=True)
class _SendFacts:
    """What dispatching needs to know of one message class, worked out once."""

    type_name: str
    #: The class's cattrs hook when it keeps the default ``get_message``, else ``None``.
    unstructure: Callable[[Any], Any] | None
    #: ``get_group_id`` or ``get_deduplication_id`` can answer something but ``None``.
    has_ids: bool
    priority: int
    unique_for: float | None


_send_facts: dict[type, _SendFacts] = {}


def _facts_of(cls: type) -> _SendFacts:
    found = _send_facts.get(cls)
    if found is None:
        if not isinstance(cls, type) or not issubclass(cls, Message):
            raise TypeError(f"can only dispatch pashq.Message instances, got {cls.__name__}")
        found = _send_facts[cls] = _SendFacts(
            cls.type_name,
            unstructure_hook(cls) if uses_default_get_message(cls) else None,
            cls.group_by is not None
            or cls.deduplicate_by is not None
            or cls.get_group_id is not Message.get_group_id
            or cls.get_deduplication_id is not Message.get_deduplication_id,
            cls.default_priority or 0,
            cls.unique_for,
        )
    return found


def _carried_headers(
    fact: _SendFacts, message: Message, given: Mapping[str, str] | None
) -> dict[str, str]:
    """The envelope headers of one message: the dispatch's, and its unique key."""
    carried = dict(given) if given else {}
    if fact.unique_for is not None:
        carried[UNIQUE_HEADER] = unique_key_of(message)
    return carried


def _outgoing_message(
    fact: _SendFacts,
    message: Message,
    envelope_id: str,
    type_name: str,
    data: bytes,
    delay: float,
    priority: int | None,
    unique_key: str | None,
) -> OutgoingMessage:
    """What a driver pushes; ``priority`` ``None`` means the class's default."""
    return OutgoingMessage(
        envelope_id,
        type_name,
        data,
        delay,
        message.get_group_id() if fact.has_ids else None,
        message.get_deduplication_id() if fact.has_ids else None,
        fact.priority if priority is None else priority,
        unique_key,
        fact.unique_for or 0.0,
    )


@attrs.define(slots=True)
class _BatchBuilder:
    """Turns messages into what a driver pushes: envelope, serialization and options."""

    serialize: Callable[[Envelope], bytes]
    created_at: str
    headers: Mapping[str, str] | None
    delay: float
    priority: int | None

    def __call__(
        self, messages: Sequence[Message], facts: Sequence[_SendFacts], ids: Sequence[str]
    ) -> list[OutgoingMessage]:
        serialize, created_at, given, delay, priority = (
            self.serialize,
            self.created_at,
            self.headers,
            self.delay,
            self.priority,
        )
        direct = serialize is encode_envelope
        out: list[OutgoingMessage] = []
        append = out.append
        for message, fact, message_id in zip(messages, facts, ids, strict=True):
            body = body_of(message) if fact.unstructure is None else fact.unstructure(message)
            carried = _carried_headers(fact, message, given)
            data = (
                encode_fields(message_id, fact.type_name, body, created_at, carried)
                if direct
                else serialize(Envelope(message_id, fact.type_name, body, created_at, carried))
            )
            key = carried[UNIQUE_HEADER] if fact.unique_for is not None else None
            append(
                _outgoing_message(
                    fact, message, message_id, fact.type_name, data, delay, priority, key
                )
            )
        return out


class _CoreDispatch:
    """The innermost ``pashq_dispatch``: serialize the batch and push it."""

    def __init__(self, connection: Connection) -> None:
        self.connection = connection

    @hookimpl(trylast=True)
    def pashq_dispatch(
        self, queue: str, messages: Sequence[DispatchItem], options: Mapping[str, Any]
    ) -> list[str]:
        """Serialize and push (``pashq_serialize``, then ``pashq_push``)."""
        return self.connection._push(queue, messages, options)


class Connection:
    """A named connection to one backend through one driver.

    :ivar name: the connection name (``[queues.<name>]``).
    :ivar config: its validated configuration.
    :ivar driver: the driver instance.
    :ivar capabilities: what the driver declares it can do.
    :ivar hook: the plugin manager's hook relay (``connection.hook.pashq_pull(...)``).
    """

    def __init__(self, config: ConnectionConfig) -> None:
        """Load the driver named by ``config.type``, build the plugin manager and connect."""
        self.name = config.name
        self.config = config
        driver_cls = find(DRIVER_GROUP, config.type, config.where).load_checked(config.where)
        capabilities = getattr(driver_cls, "capabilities", None)
        if not isinstance(capabilities, Capabilities):
            raise ConfigError(
                f"{config.where}: driver {config.type!r} ({driver_cls!r}) does not declare "
                "`capabilities = pashq.Capabilities(...)`"
            )
        self.capabilities: Capabilities = capabilities
        self.driver = driver_cls()
        self.plugin_manager = build_plugin_manager(self.driver, config)
        self.hook = self.plugin_manager.hook
        self._closed = False
        self._lock = threading.Lock()
        self._valid_queues: set[str] = set()
        self.plugin_manager.register(_CoreDispatch(self), name="pashq.core.dispatch")
        self.hook.pashq_connect(connection=self)

    # -- what drivers read at connect time ---------------------------------------------------

    @property
    def options(self) -> Mapping[str, Any]:
        """The driver's own keys from ``[queues.<name>]``."""
        return self.config.options

    @property
    def where(self) -> str:
        """Where the configuration of this connection was read (for error messages)."""
        return self.config.where

    def __repr__(self) -> str:
        return f"<pashq.Connection {self.name!r} type={self.config.type!r}>"

    # -- dispatch ------------------------------------------------------------------------------

    @staticmethod
    def _item(
        message: Message,
        delay: float,
        created_at: str,
        message_id: str,
        headers: Mapping[str, str] | None,
        priority: int | None,
    ) -> DispatchItem:
        fact = _facts_of(type(message))  # raises for a non-Message
        carried = _carried_headers(fact, message, headers)
        envelope = Envelope(message_id, fact.type_name, body_of(message), created_at, carried)
        return DispatchItem(
            message, envelope, delay, fact.priority if priority is None else priority
        )

    @staticmethod
    def _outgoing(
        serialize: Callable[[Envelope], bytes],
        envelope: Envelope,
        message: Message,
        delay: float,
        priority: int | None,
    ) -> OutgoingMessage:
        """What a driver pushes for a dispatch item (its envelope as the wrappers left it)."""
        fact = _facts_of(type(message))
        key = None
        if fact.unique_for is not None:
            key = envelope.headers.get(UNIQUE_HEADER) or unique_key_of(message)
        return _outgoing_message(
            fact, message, envelope.id, envelope.type, serialize(envelope), delay, priority, key
        )

    def _push(
        self, queue: str, items: Sequence[DispatchItem], options: Mapping[str, Any]
    ) -> list[str]:
        # Once per batch, so a plugin registered on the manager later is still honoured.
        serialize: Callable[[Envelope], bytes] = default_only(
            self.hook.pashq_serialize, encode_envelope
        )
        batch = [
            self._outgoing(serialize, item.envelope, item.message, item.delay, item.priority)
            for item in items
        ]
        return self._push_outgoing(queue, batch, options)

    def _push_outgoing(
        self, queue: str, batch: list[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        if any(m.unique_key is not None for m in batch):
            return push_unique(self, queue, batch, options)
        return self._push_plain(queue, batch, options)

    def _push_plain(
        self, queue: str, batch: list[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """``pashq_push`` the batch (no unique keys taken)."""
        ids = self.hook.pashq_push(queue=queue, messages=batch, options=options)
        if ids is None:  # no driver answered
            raise PashqError(
                f"driver {self.config.type!r} returned nothing from pashq_push on queue {queue!r}"
            )
        return list(ids)

    def check_queue_name(self, queue: str) -> None:
        """Raise :class:`~pashq.errors.QueueNameError` if the backend cannot hold ``queue``.

        Asks the driver once per name (``pashq_check_queue_name``) and remembers the names
        that passed.
        """
        if queue in self._valid_queues:
            return
        if not isinstance(queue, str) or not queue:
            raise QueueNameError(f"queue must be a non-empty string, got {queue!r}")
        problem = "contains NUL" if "\x00" in queue else None
        if problem is None:
            problem = self.hook.pashq_check_queue_name(queue=queue)
        if problem:
            shown = (
                repr(queue) if len(queue) <= 80 else f"{queue[:60]!r}... ({len(queue)} characters)"
            )
            raise QueueNameError(
                f"queue name {shown} cannot be used on connection {self.name!r} "
                f"(driver {self.config.type!r}): it {problem}"
            )
        self._valid_queues.add(queue)

    def _check_queue(self, queue: str) -> None:
        self.check_queue_name(queue)

    def _check_delay(self, queue: str, delay: float | None) -> None:
        if not delay:
            return
        if delay < 0:
            raise ValueError(f"delay must be >= 0 seconds, got {delay!r}")
        caps = self.capabilities
        if not caps.delay:
            raise UnsupportedError(
                f"connection {self.name!r} (driver {self.config.type!r}) cannot delay messages; "
                f"dispatch to queue {queue!r} without delay= or use a driver with delays"
            )
        if caps.max_delay is not None and delay > caps.max_delay:
            raise UnsupportedError(
                f"connection {self.name!r} (driver {self.config.type!r}) accepts delays up to "
                f"{caps.max_delay:g} s, got {delay:g} s for queue {queue!r}"
            )

    def dispatch(
        self,
        queue: str,
        message: Message,
        *,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> str:
        """Push one message to ``queue`` and return its id.

        :param queue: the queue name.
        :param message: the message instance.
        :param delay: seconds before it may be delivered.
        :param headers: envelope headers (str names and values; see docs/messages.md).
        :param priority: 0 to 9, higher first (default: the class's ``priority=``, else 0).
        :param options: driver-specific options (see the driver's docs).
        """
        return self.dispatch_many(
            queue, (message,), delay=delay, headers=headers, priority=priority, **options
        )[0]

    def dispatch_many(
        self,
        queue: str,
        messages: Iterable[Message],
        *,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> list[str]:
        """Push many messages to ``queue`` in one batched push; return their ids in order.

        ``headers`` are set on every message of the batch. The batch passes through the
        ``pashq_dispatch`` wrappers, then ``pashq_serialize`` and ``pashq_push``.
        """
        self._check_queue(queue)
        self._check_delay(queue, delay)
        given = check_user_headers(headers) if headers is not None else None
        if priority is not None:
            check_priority(priority, f"dispatch to queue {queue!r}")
        created_at = utc_timestamp()
        messages = messages if isinstance(messages, list | tuple) else list(messages)
        if not messages:
            return []
        fresh_ids = new_message_ids(len(messages))
        wait = delay or 0.0
        if len(self.hook.pashq_dispatch.get_hookimpls()) == 1:
            # Only the core's own implementation: serialize and push straight away.
            facts = [_facts_of(type(m)) for m in messages]  # raises for a non-Message
            build = _BatchBuilder(
                default_only(self.hook.pashq_serialize, encode_envelope),
                created_at,
                given,
                wait,
                priority,
            )
            size = self.capabilities.batch_size or len(messages)
            if (
                len(messages) > size
                and self.hook.pashq_push_stream.get_hookimpls()
                and not any(f.unique_for for f in facts)
            ):
                return self._push_stream(queue, messages, facts, fresh_ids, build, size, options)
            batch = build(messages, facts, fresh_ids)
            self._check_priorities(queue, batch)
            return self._push_outgoing(queue, batch, options)
        items = [
            self._item(m, wait, created_at, i, given, priority)
            for m, i in zip(messages, fresh_ids, strict=True)
        ]
        self._check_priorities(queue, items)
        ids = self.hook.pashq_dispatch(queue=queue, messages=items, options=options)
        if ids is None:  # a plugin answered nothing
            raise PashqError(f"pashq_dispatch returned nothing for queue {queue!r}")
        return ids if isinstance(ids, list) else list(ids)  # keeps Dispatched.duplicates

    def _push_stream(
        self,
        queue: str,
        messages: Sequence[Message],
        facts: Sequence[_SendFacts],
        ids: Sequence[str],
        build: _BatchBuilder,
        size: int,
        options: Mapping[str, Any],
    ) -> list[str]:
        """``pashq_push_stream``: hand the driver each batch of ``size`` as soon as it is
        encoded. A message that cannot be encoded ends the stream: raised as it is when
        nothing was stored yet, else as :class:`PartialPushError` (the batches before it
        were stored)."""
        failed: list[Exception] = []
        taken = [0]  # messages handed to the driver

        def batches() -> Iterator[list[OutgoingMessage]]:
            for start in range(0, len(messages), size):
                end = start + size
                try:
                    batch = build(messages[start:end], facts[start:end], ids[start:end])
                    self._check_priorities(queue, batch)
                except Exception as exc:
                    failed.append(exc)
                    return
                taken[0] = min(end, len(messages))
                yield batch

        try:
            stored = self.hook.pashq_push_stream(queue=queue, batches=batches(), options=options)
        except PartialPushError as exc:
            # The driver names what it was handed; the rest was never sent either.
            named = set(exc.not_stored)
            exc.not_stored += [i for i in ids[taken[0] :] if i not in named]
            raise
        if stored is None:  # no driver answered
            raise PashqError(
                f"driver {self.config.type!r} returned nothing from pashq_push_stream on "
                f"queue {queue!r}"
            )
        stored = list(stored)
        if failed:
            if not stored:
                raise failed[0]
            done = set(stored)
            raise PartialPushError(
                f"dispatch to queue {queue!r} stopped after {len(stored)} of {len(messages)} "
                f"message(s) were stored: {failed[0]}",
                stored=stored,
                not_stored=[i for i in ids if i not in done],
            ) from failed[0]
        return stored

    def _check_priorities(
        self, queue: str, batch: Sequence[OutgoingMessage | DispatchItem]
    ) -> None:
        if not self.capabilities.priorities and any(m.priority for m in batch):
            raise UnsupportedError(
                f"connection {self.name!r} (driver {self.config.type!r}) has no message "
                f"priorities; dispatch to queue {queue!r} without priority= (and without a "
                "class priority=) or use a driver with the priorities capability (memory)"
            )

    async def adispatch(
        self,
        queue: str,
        message: Message,
        *,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> str:
        """Awaitable :meth:`dispatch`: the push runs in a thread, never blocking the loop."""
        return await asyncio.to_thread(
            self.dispatch,
            queue,
            message,
            delay=delay,
            headers=headers,
            priority=priority,
            **options,
        )

    async def adispatch_many(
        self,
        queue: str,
        messages: Iterable[Message],
        *,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> list[str]:
        """Awaitable :meth:`dispatch_many`."""
        batch = list(messages)
        return await asyncio.to_thread(
            self.dispatch_many,
            queue,
            batch,
            delay=delay,
            headers=headers,
            priority=priority,
            **options,
        )

    # -- administration ------------------------------------------------------------------------

    def _require(self, capability: str, what: str, queue: str) -> None:
        self.check_queue_name(queue)
        if not getattr(self.capabilities, capability):
            raise UnsupportedError(
                f"connection {self.name!r} (driver {self.config.type!r}) does not support "
                f"{what} (queue {queue!r})"
            )

    def queues(self) -> list[str]:
        """Return the names of this connection's queues, sorted.

        The driver's answer (``pashq_queues``, capability ``list_queues``) together with
        the connection's ``queues = [...]`` key.

        :raises UnsupportedError: the driver cannot tell (no ``list_queues``, or it answered
            ``None`` for this connection) and ``queues = [...]`` is not set.
        """
        found: list[str] | None = None
        if self.capabilities.list_queues:
            found = self.hook.pashq_queues()
        configured = list(self.config.queues)
        if found is None and not configured:
            raise UnsupportedError(
                f"connection {self.name!r} (driver {self.config.type!r}) cannot list its "
                f'queues; name them in {self.where} with `queues = ["..."]`'
            )
        return sorted(set(found or ()) | set(configured))

    def stats(self, queue: str) -> QueueStats:
        """Return message counts for ``queue``."""
        self._require("stats", "stats", queue)
        result: QueueStats = self.hook.pashq_stats(queue=queue)
        return result

    def purge(self, queue: str) -> int:
        """Delete every waiting message of ``queue``; return how many."""
        self._require("purge", "purge", queue)
        result: int = self.hook.pashq_purge(queue=queue)
        return result

    def failed(self, queue: str, limit: int = 100) -> list[DeadLetter]:
        """List dead letters of ``queue``, oldest first."""
        self._require("dead_letters", "listing dead letters", queue)
        result: list[DeadLetter] = self.hook.pashq_failed_list(queue=queue, limit=limit)
        return result

    def retry_failed(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Move dead letters (all, or those ``ids``) back to ``queue``; return how many."""
        self._require("dead_letters", "retrying dead letters", queue)
        result: int = self.hook.pashq_failed_retry(queue=queue, ids=ids)
        return result

    def purge_failed(self, queue: str, ids: Sequence[str] | None = None) -> int:
        """Delete dead letters (all, or those ``ids``) of ``queue``; return how many."""
        self._require("dead_letters", "purging dead letters", queue)
        result: int = self.hook.pashq_failed_purge(queue=queue, ids=ids)
        return result

    def close(self) -> None:
        """Close the driver; the connection cannot be used afterwards."""
        with self._lock:
            if self._closed:
                return
            self._closed = True
        try:
            self.hook.pashq_close()
        except Exception:
            log.exception("closing connection %r failed", self.name)
