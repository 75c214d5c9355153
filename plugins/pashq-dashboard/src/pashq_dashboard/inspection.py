"""What the pages show, read from pashq connections (blocking: call it in a thread).

Everything here goes through the core's public API (``pashq.queue``, ``Connection.queues``,
``stats``, ``failed``, ``retry_failed``, ``purge_failed``, ``purge``), as the CLI does.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor

import attrs

from pashq.capabilities import Capabilities
from pashq.connection import Connection
from pashq.delivery import DeadLetter, QueueStats
from pashq.errors import UnsupportedError
from pashq.redaction import redact_url

__all__ = [
    "ConnectionView",
    "Inspector",
    "NotFound",
    "QueueRow",
    "pretty_body",
    "safe_error",
    "type_of",
]

#: The most dead letters read to find one by id or to show a later page.
MAX_SCAN = 10_000
#: Queues whose counts are read at once, per connection.
STATS_THREADS = 4


class NotFound(LookupError):
    """An unknown connection, queue or dead letter (the pages answer 404)."""


def safe_error(exc: BaseException) -> str:
    """A one-line error for a page: the exception type and text, URL passwords masked."""
    text = " ".join(str(exc).split()) or type(exc).__name__
    return redact_url(f"{type(exc).__name__}: {text}")


@attrs.frozen
class QueueRow:
    """One queue on the overview: its counts, or why there are none."""

    queue: str
    stats: QueueStats | None
    error: str | None = None

    @property
    def waiting(self) -> int:
        """Ready + delayed + in flight (unknown counts as 0)."""
        s = self.stats
        if s is None:
            return 0
        return (s.ready or 0) + (s.delayed or 0) + (s.in_flight or 0)


@attrs.frozen
class ConnectionView:
    """One connection on the overview."""

    name: str
    type: str
    url: str | None
    rows: tuple[QueueRow, ...] = ()
    error: str | None = None
    capabilities: Capabilities | None = None


class Inspector:
    """Reads connections through pashq. A queue it listed once stays listed (with its
    counts) for the life of the dashboard, even when the backend stops listing it.

    :param names: the connection names, in display order (a callable, read at each call).
    :param open_connection: returns the open connection of a name (``pashq.queue``).
    """

    def __init__(
        self, names: Callable[[], Sequence[str]], open_connection: Callable[[str], Connection]
    ) -> None:
        self._names = names
        self._open = open_connection
        # Queues listed once stay known: a database queue emptied by a purge is no longer
        # listed, and its page must not turn into a 404 under the operator's feet.
        self._seen: set[tuple[str, str]] = set()
        self._lock = threading.Lock()

    def _queues(self, name: str, conn: Connection) -> list[str]:
        listed = conn.queues()
        with self._lock:
            self._seen.update((name, q) for q in listed)
            seen = {q for c, q in self._seen if c == name}
        return sorted(seen)

    def names(self) -> list[str]:
        """The configured connection names."""
        return list(self._names())

    def connection(self, name: str) -> Connection:
        """Return the open connection ``name``.

        :raises NotFound: no connection of that name is configured.
        """
        if name not in self.names():
            raise NotFound(f"no connection named {name!r}")
        return self._open(name)

    def queue(self, connection: str, queue: str) -> Connection:
        """Return the connection, after checking that it lists ``queue``.

        :raises NotFound: unknown connection, or a queue it does not list.
        """
        conn = self.connection(connection)
        try:
            known = self._queues(connection, conn)
        except UnsupportedError as exc:
            raise NotFound(str(exc)) from exc
        if queue not in known:
            raise NotFound(f"connection {connection!r} has no queue {queue!r}")
        return conn

    def overview(self) -> list[ConnectionView]:
        """Every connection with the counts of each of its queues."""
        return [self._view(name) for name in self.names()]

    def _view(self, name: str) -> ConnectionView:
        # Any failure of one connection (a third-party driver may raise anything) shows in
        # its own section: it must not hide the others.
        try:
            conn = self._open(name)
        except Exception as exc:
            return ConnectionView(name, "?", None, error=safe_error(exc))
        url = conn.options.get("url")
        shown = redact_url(url) if isinstance(url, str) else None
        base = ConnectionView(name, conn.config.type, shown, capabilities=conn.capabilities)
        try:
            names = self._queues(name, conn)
        except Exception as exc:
            return attrs.evolve(base, error=safe_error(exc))
        if not conn.capabilities.stats:
            return attrs.evolve(base, rows=tuple(QueueRow(q, None) for q in names))

        def row(queue: str) -> QueueRow:
            try:
                return QueueRow(queue, conn.stats(queue))
            except Exception as exc:
                return QueueRow(queue, None, safe_error(exc))

        if len(names) <= 1:
            return attrs.evolve(base, rows=tuple(row(q) for q in names))
        # One backend round trip per queue: a few at once (drivers are thread-safe).
        with ThreadPoolExecutor(min(STATS_THREADS, len(names))) as pool:
            return attrs.evolve(base, rows=tuple(pool.map(row, names)))

    def dead_letters(
        self, connection: str, queue: str, page: int, per_page: int
    ) -> tuple[list[DeadLetter], bool]:
        """One page (from 1) of ``queue``'s dead letters, oldest first, and whether there is
        a next page."""
        conn = self.queue(connection, queue)
        if not conn.capabilities.dead_letters:
            return [], False
        start = (page - 1) * per_page
        found = conn.failed(queue, min(start + per_page + 1, MAX_SCAN))
        return found[start : start + per_page], len(found) > start + per_page

    def dead_letter(self, connection: str, queue: str, message_id: str) -> DeadLetter:
        """The dead letter ``message_id`` of ``queue``.

        :raises NotFound: no such dead letter (among the first ``MAX_SCAN``).
        """
        conn = self.queue(connection, queue)
        if conn.capabilities.dead_letters:
            for dead in conn.failed(queue, MAX_SCAN):
                if dead.id == message_id:
                    return dead
        raise NotFound(f"queue {queue!r} has no dead letter {message_id!r}")


def pretty_body(body: bytes) -> str:
    """The stored envelope as indented JSON, or as text when it is not JSON."""
    text = body.decode("utf-8", "replace")
    try:
        data = json.loads(text)
    except ValueError:
        return text
    return json.dumps(data, indent=2, ensure_ascii=False)


def type_of(body: bytes) -> str:
    """The envelope's ``type``, or ``?`` when the body is not an envelope."""
    try:
        data = json.loads(body)
    except ValueError:
        return "?"
    found = data.get("type") if isinstance(data, dict) else None
    return found if isinstance(found, str) else "?"
