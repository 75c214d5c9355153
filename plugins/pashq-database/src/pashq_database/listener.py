"""LISTEN/NOTIFY on PostgreSQL: wake idle pullers as soon as a message is pushed.

Pushes run ``SELECT pg_notify(<channel>, <queue>)`` in their own transaction, so the
notification is sent only if the messages were committed. One dedicated psycopg 3
connection per driver LISTENs; a puller with nothing to claim waits on its socket instead
of sleeping. If that connection breaks (server restart), waiting falls back to sleeping
and the connection is opened again on a later wait: polling stays the safety net, so a lost
notification costs at most one ``poll_interval``.
"""

from __future__ import annotations

import logging
import select
import threading
import time
from typing import Any

__all__ = ["Listener"]

log = logging.getLogger(__name__)
_RETRY_SECONDS = 2.0


class Listener:
    """A lazily opened LISTEN connection shared by the pullers of one driver."""

    def __init__(self, connect: Any, channel: str) -> None:
        """:param connect: returns a new autocommit psycopg connection.
        :param channel: the channel to LISTEN on."""
        self._connect = connect
        self.channel = channel
        self._lock = threading.Lock()
        self._conn: Any = None
        self._failed_at = 0.0
        self._closed = False

    def _open(self) -> Any:
        if self._conn is not None:
            return self._conn
        if time.monotonic() - self._failed_at < _RETRY_SECONDS:
            return None
        try:
            conn = self._connect()
            conn.execute(f'LISTEN "{self.channel}"')
        except Exception as exc:
            self._failed_at = time.monotonic()
            log.info("LISTEN connection unavailable (%s); polling meanwhile", type(exc).__name__)
            return None
        self._conn = conn
        return conn

    def _drop(self) -> None:
        conn, self._conn = self._conn, None
        self._failed_at = time.monotonic()
        if conn is not None:
            try:
                conn.close()
            except Exception:  # the socket is already gone; nothing else to release
                log.debug("closing the broken LISTEN connection failed", exc_info=True)

    def wait(self, timeout: float) -> bool | None:
        """Wait up to ``timeout`` seconds for a notification.

        :returns: ``True`` if one arrived, ``False`` on timeout, ``None`` if this thread
            could not listen (another thread is listening, or the connection is down): the
            caller then sleeps instead.
        """
        if self._closed or not self._lock.acquire(blocking=False):
            return None
        try:
            conn = self._open()
            if conn is None:
                return None
            pgconn = conn.pgconn
            try:
                pgconn.consume_input()
                if self._drain(pgconn):
                    return True
                ready, _, _ = select.select([pgconn.socket], [], [], timeout)
                if not ready:
                    return False
                pgconn.consume_input()
                return self._drain(pgconn)
            except Exception as exc:
                log.info("LISTEN connection lost (%s); polling meanwhile", type(exc).__name__)
                self._drop()
                return None
        finally:
            self._lock.release()

    @staticmethod
    def _drain(pgconn: Any) -> bool:
        got = False
        while pgconn.notifies() is not None:
            got = True
        return got

    def close(self) -> None:
        """Close the LISTEN connection."""
        self._closed = True
        with self._lock:
            self._drop()
