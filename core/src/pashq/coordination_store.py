"""Finding a connection's coordination store and calling it.

A connection whose driver declares ``coordination`` is its own store; another names one
in its config (``coordination = "db"``), so a RabbitMQ or SQS connection keeps its unique
keys, limits and schedule slots in the application's database.
"""

from __future__ import annotations

import threading
import weakref
from typing import TYPE_CHECKING

from pashq.coordination import Acquired
from pashq.errors import ConfigError, UnsupportedError

if TYPE_CHECKING:
    from pashq.connection import Connection

__all__ = ["CoordinationStore", "store_for"]

_stores: weakref.WeakKeyDictionary[Connection, CoordinationStore] = weakref.WeakKeyDictionary()
_lock = threading.Lock()


class CoordinationStore:
    """The coordination hooks of one connection, with keyword arguments checked.

    :ivar connection: the connection that stores the state.
    """

    def __init__(self, connection: Connection) -> None:
        """:param connection: a connection whose driver declares ``coordination``."""
        self.connection = connection
        self._hook = connection.hook

    @property
    def name(self) -> str:
        """The store connection's name."""
        return self.connection.name

    def acquire(self, key: str, owner: str, ttl: float, limit: int = 1) -> Acquired:
        """Take one of ``limit`` places on ``key`` for ``ttl`` seconds (``pashq_lock_acquire``)."""
        got: Acquired | None = self._hook.pashq_lock_acquire(
            key=key, owner=owner, ttl=float(ttl), limit=int(limit)
        )
        if got is None:
            raise UnsupportedError(f"connection {self.name!r} answered no pashq_lock_acquire")
        return got

    def release(self, key: str, owner: str) -> bool:
        """Give up ``owner``'s hold on ``key`` (``pashq_lock_release``)."""
        return bool(self._hook.pashq_lock_release(key=key, owner=owner))

    def extend(self, key: str, owner: str, ttl: float) -> bool:
        """Make ``owner``'s hold on ``key`` last ``ttl`` more seconds (``pashq_lock_extend``)."""
        return bool(self._hook.pashq_lock_extend(key=key, owner=owner, ttl=float(ttl)))

    def window_add(self, key: str, limit: int, period: float) -> float:
        """Count one event in the sliding window; ``0.0`` or the seconds to wait."""
        wait: float | None = self._hook.pashq_window_add(
            key=key, limit=int(limit), period=float(period)
        )
        if wait is None:
            raise UnsupportedError(f"connection {self.name!r} answered no pashq_window_add")
        return float(wait)


def store_for(
    connection: Connection, what: str = "unique messages, limits and schedules"
) -> CoordinationStore:
    """Return the coordination store of ``connection`` (cached per connection).

    :param what: what needs it, for the error message.
    :raises UnsupportedError: the connection has no store of its own and names none.
    :raises ConfigError: the named store's driver has no coordination hooks.
    """
    found = _stores.get(connection)
    if found is not None:
        return found
    with _lock:
        found = _stores.get(connection)
        if found is not None:
            return found
        name = connection.config.coordination
        if name is None:
            if not connection.capabilities.coordination:
                raise UnsupportedError(
                    f"{what} need a coordination store, and connection {connection.name!r} "
                    f"(driver {connection.config.type!r}) has none: add "
                    f'coordination = "<connection>" to {connection.where}, naming a '
                    "database connection (see docs/configuration.md)"
                )
            store = connection
        else:
            from pashq.facade import queue as get_connection

            store = get_connection(name)
            if not store.capabilities.coordination:
                raise ConfigError(
                    f"{connection.where}: 'coordination' names connection {name!r}, whose "
                    f"driver {store.config.type!r} has no coordination hooks; name a "
                    "database (or memory) connection"
                )
        found = _stores[connection] = CoordinationStore(store)
        return found
