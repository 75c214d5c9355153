"""A ``redis-server`` of a test's own, on a free port, that the test may kill or restart."""

from __future__ import annotations

import random
import shutil
import socket
import subprocess
import time
from pathlib import Path

import pytest
import redis


def _bindable(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("127.0.0.1", port))
        except OSError:
            return False
        return True


def free_port() -> int:
    """A TCP port free on the loopback interface right now, with port + 10000 free too
    (Redis Cluster's bus port; Redis refuses cluster ports above 55535)."""
    rng = random.Random()
    while True:
        port = rng.randrange(20000, 45000)
        if _bindable(port) and _bindable(port + 10000):
            return port


class PrivateRedis:
    """A ``redis-server`` of the test's own, on a free port, that the test may kill.

    ``appendonly yes`` with ``appendfsync always`` in its own directory, so what a command
    confirmed survives ``kill -9`` and a restart on the same port and directory.
    """

    def __init__(self, directory: Path, *extra: str) -> None:
        self.dir = directory
        self.port = free_port()
        self.extra = extra
        self.proc: subprocess.Popen[bytes] | None = None
        self.url = f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        """Start the server (again) and wait until it answers."""
        server = shutil.which("redis-server")
        if server is None:
            pytest.fail("redis-server is not installed (apt-get install redis-server)")
        self.proc = subprocess.Popen(
            [
                server,
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--dir",
                str(self.dir),
                "--appendonly",
                "yes",
                "--appendfsync",
                "always",
                "--save",
                "",
                "--logfile",
                str(self.dir / "redis.log"),
                *self.extra,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        deadline = time.monotonic() + 30
        client = redis.Redis(port=self.port, socket_connect_timeout=1)
        while True:
            try:
                if client.ping():
                    break
            except redis.RedisError:
                if time.monotonic() > deadline or self.proc.poll() is not None:
                    log = self.dir / "redis.log"
                    text = log.read_text()[-2000:] if log.exists() else ""
                    pytest.fail(f"private redis-server did not start on {self.port}:\n{text}")
                time.sleep(0.05)
        client.close()

    def kill(self) -> None:
        """``kill -9`` the server."""
        if self.proc is not None and self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait()

    def restart(self, down: float = 0.0) -> None:
        """Kill it, stay down ``down`` seconds, start it again on the same port and data."""
        self.kill()
        if down:
            time.sleep(down)
        self.start()
