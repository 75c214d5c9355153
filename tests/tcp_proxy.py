"""A TCP proxy of the tests' own, to cut connections without touching a shared server.

The tests import it by name (``tests/`` is on ``sys.path`` through the root
``conftest.py``). It forwards a free 127.0.0.1 port to a server, one thread per direction;
:meth:`TcpProxy.cut` drops every connection through it, as a network failure or a server
restart would, and :meth:`TcpProxy.outage` also refuses new ones until
:meth:`TcpProxy.restore` (or for a while, with ``cut(down_for=...)``).
"""

from __future__ import annotations

import contextlib
import socket
import threading
import time


class TcpProxy:
    """Forward ``127.0.0.1:<port>`` to ``target``.

    :ivar port: the local port to point a client at.
    """

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self._server = socket.create_server(("127.0.0.1", 0))
        self._server.settimeout(0.2)
        self.port: int = self._server.getsockname()[1]
        self._open: list[socket.socket] = []
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._down = threading.Event()
        self._down_until = 0.0
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _refusing(self) -> bool:
        return self._down.is_set() or time.monotonic() < self._down_until

    def _accept(self) -> None:
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            if self._refusing():
                client.close()  # "the server is down or restarting"
                continue
            try:
                upstream = socket.create_connection(self.target, timeout=5)
            except OSError:
                client.close()
                continue
            upstream.settimeout(None)
            with self._lock:
                self._open += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pump, args=(a, b), daemon=True).start()

    @staticmethod
    def _pump(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for s in (source, sink):
                with contextlib.suppress(OSError):
                    s.shutdown(socket.SHUT_RDWR)

    def cut(self, down_for: float = 0.0) -> None:
        """Drop every open connection; refuse new ones for ``down_for`` seconds."""
        if down_for:
            self._down_until = time.monotonic() + down_for
        with self._lock:
            sockets, self._open = self._open, []
        for s in sockets:
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
            s.close()

    def outage(self) -> None:
        """Drop every connection and refuse new ones until :meth:`restore`."""
        self._down.set()
        self.cut()

    def restore(self) -> None:
        """Accept connections again."""
        self._down.clear()
        self._down_until = 0.0

    def close(self) -> None:
        """Stop forwarding and drop everything."""
        self._stop.set()
        self._thread.join(5)
        self.cut()
        self._server.close()
