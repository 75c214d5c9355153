"""A cheap change check that wakes an idle puller without a claim per poll.

Where PostgreSQL's LISTEN/NOTIFY (:mod:`pashq_database.listener`) is not available, an idle
puller asks the database every few milliseconds whether anything was committed since its
last claim, on a dedicated autocommit connection, and claims only when the answer changed
(and at least every ``poll_interval``, for delayed messages coming due):

- SQLite: ``PRAGMA data_version`` (changes whenever another connection, in this process or
  another, commits a write to the file; a claim that found nothing writes nothing). About
  15 µs per check, every :data:`SQLITE_INTERVAL` seconds.
- MySQL/MariaDB (and PostgreSQL without LISTEN): ``SELECT MAX(id)`` on the messages table,
  one index dive that changes on every insert, every :data:`SERVER_INTERVAL` seconds.

The mark is read *before* the claim, so a message committed between the claim and the wait
is never missed. If the check fails (a server restart), the puller falls back to sleeping
and the connection is opened again on a later check.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable
from typing import Any

__all__ = ["SERVER_INTERVAL", "SQLITE_INTERVAL", "ChangeWatch"]

log = logging.getLogger(__name__)

#: Seconds between two ``PRAGMA data_version`` checks of an idle SQLite puller.
SQLITE_INTERVAL = 0.025
#: Seconds between two ``MAX(id)`` checks of an idle puller on a database server.
SERVER_INTERVAL = 0.05
_RETRY_SECONDS = 2.0


class ChangeWatch:
    """A lazily opened connection that tells whether the messages table changed."""

    def __init__(self, connect: Callable[[], Any], query: str, interval: float) -> None:
        """:param connect: returns a new autocommit DB-API connection.
        :param query: one-value SQL whose answer changes when messages are committed.
        :param interval: seconds between two checks while idle."""
        self._connect = connect
        self.query = query
        self.interval = interval
        self._lock = threading.Lock()
        self._conn: Any = None
        self._failed_at = 0.0
        self._closed = False

    def mark(self) -> tuple[Any] | None:
        """The current answer (wrapped, so a NULL answer is a mark too), or ``None`` when the
        check is unavailable (then the caller sleeps instead)."""
        if self._closed:
            return None
        with self._lock:
            conn = self._conn
            if conn is None:
                if time.monotonic() - self._failed_at < _RETRY_SECONDS:
                    return None
                try:
                    conn = self._conn = self._connect()
                except Exception as exc:
                    self._failed_at = time.monotonic()
                    log.info("change check unavailable (%s); polling", type(exc).__name__)
                    return None
            try:
                cursor = conn.cursor()
                try:
                    cursor.execute(self.query)
                    row = cursor.fetchone()
                finally:
                    cursor.close()
            except Exception as exc:
                log.info("change check failed (%s); polling meanwhile", type(exc).__name__)
                self._drop()
                return None
            return (row[0] if row else None,)

    def changed(self, mark: tuple[Any]) -> bool:
        """Whether the answer differs from ``mark`` (True also when the check failed: the
        caller then claims, which is never wrong)."""
        return self.mark() != mark

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._failed_at = time.monotonic()
        if conn is not None:
            try:
                conn.close()
            except Exception:  # the connection is already broken; nothing else to free
                log.debug("closing the change-check connection failed", exc_info=True)

    def close(self) -> None:
        """Close the connection."""
        self._closed = True
        with self._lock:
            self._drop()
