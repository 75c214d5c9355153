"""TLS (``rediss://``) and Sentinel on private servers the tests start and stop themselves."""

from __future__ import annotations

import collections
import shutil
import subprocess
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis
from redis_servers import PrivateRedis, free_port

from pashq.delivery import OutgoingMessage
from pashq.errors import DriverError
from pashq.testing import drain, make_connection, wait_for

pytestmark = pytest.mark.slow


def _message(n: int) -> OutgoingMessage:
    return OutgoingMessage(uuid.uuid4().hex, "t", f'{{"n": {n}}}'.encode())


def _openssl(*args: str, cwd: Path) -> None:
    openssl = shutil.which("openssl")
    if openssl is None:
        pytest.fail("openssl is not installed (apt-get install openssl)")
    subprocess.run([openssl, *args], cwd=cwd, check=True, capture_output=True)


@pytest.fixture
def certificates(tmp_path: Path) -> Path:
    """A throw-away CA and a server certificate for 127.0.0.1, made with openssl."""
    folder = tmp_path / "tls"
    folder.mkdir()
    _openssl("req", "-x509", "-newkey", "rsa:2048", "-nodes", "-keyout", "ca.key",
             "-out", "ca.crt", "-days", "2", "-subj", "/CN=pashq-test-ca", cwd=folder)  # fmt: skip
    _openssl("req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key",
             "-out", "server.csr", "-subj", "/CN=localhost", cwd=folder)  # fmt: skip
    (folder / "ext.cnf").write_text("subjectAltName=IP:127.0.0.1,DNS:localhost\n")
    _openssl("x509", "-req", "-in", "server.csr", "-CA", "ca.crt", "-CAkey", "ca.key",
             "-CAcreateserial", "-out", "server.crt", "-days", "2", "-extfile", "ext.cnf",
             cwd=folder)  # fmt: skip
    return folder


def test_rediss_url_talks_tls_and_checks_the_certificate(
    tmp_path: Path, certificates: Path, key_prefix: str
) -> None:
    """``rediss://`` with the CA bundle works end to end; without it the server's
    certificate is refused (verification is on by default)."""
    tls_port = free_port()
    data = tmp_path / "data"
    data.mkdir()
    server = PrivateRedis(
        data, "--tls-port", str(tls_port),
        "--tls-cert-file", str(certificates / "server.crt"),
        "--tls-key-file", str(certificates / "server.key"),
        "--tls-ca-cert-file", str(certificates / "ca.crt"),
        "--tls-auth-clients", "no",
    )  # fmt: skip
    server.start()
    try:
        table = {
            "type": "redis",
            "url": f"rediss://127.0.0.1:{tls_port}/0",
            "key_prefix": key_prefix,
            "ssl_ca_certs": str(certificates / "ca.crt"),
        }
        conn = make_connection(table)
        try:
            conn.hook.pashq_push(queue="tls", messages=[_message(1)], options={})
            (delivery,) = drain(conn, "tls", 1)
            assert delivery.body == b'{"n": 1}'
        finally:
            conn.close()
        untrusted = make_connection({k: v for k, v in table.items() if k != "ssl_ca_certs"})
        try:
            with pytest.raises(DriverError, match=r"(?i)certificate"):
                untrusted.hook.pashq_push(queue="tls", messages=[_message(2)], options={})
        finally:
            untrusted.close()
    finally:
        server.kill()


class Sentinel:
    """A ``redis-server --sentinel`` watching one master as ``mymaster`` (quorum 1)."""

    def __init__(self, folder: Path, master_port: int) -> None:
        self.port = free_port()
        self.config = folder / "sentinel.conf"
        self.config.write_text(
            f"port {self.port}\nbind 127.0.0.1\ndir {folder}\n"
            f"sentinel monitor mymaster 127.0.0.1 {master_port} 1\n"
            "sentinel down-after-milliseconds mymaster 1000\n"
            "sentinel failover-timeout mymaster 10000\n"
        )
        self.proc = subprocess.Popen(
            ["redis-server", str(self.config), "--sentinel"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        self.client = redis.Redis(port=self.port, socket_connect_timeout=1)
        wait_for(self._up, timeout=30, what="the sentinel to answer")

    def _up(self) -> bool:
        try:
            return bool(self.client.ping())
        except redis.RedisError:
            return False

    def master_port(self) -> int:
        """The port the sentinel currently names as the master."""
        _host, port = self.client.execute_command("SENTINEL", "GET-MASTER-ADDR-BY-NAME", "mymaster")
        return int(port)

    def stop(self) -> None:
        """Kill the sentinel."""
        self.client.close()
        self.proc.kill()
        self.proc.wait()


@pytest.fixture
def sentinel_setup(tmp_path: Path) -> Iterator[tuple[PrivateRedis, PrivateRedis, Sentinel]]:
    """A master, its replica and a sentinel watching them."""
    folders = [tmp_path / name for name in ("master", "replica", "sentinel")]
    for folder in folders:
        folder.mkdir()
    master = PrivateRedis(folders[0])
    master.start()
    replica = PrivateRedis(folders[1], "--replicaof", "127.0.0.1", str(master.port))
    replica.start()
    sentinel = Sentinel(folders[2], master.port)
    yield master, replica, sentinel
    sentinel.stop()
    replica.kill()
    master.kill()


def test_sentinel_connection_follows_a_failover(
    sentinel_setup: tuple[PrivateRedis, PrivateRedis, Sentinel], key_prefix: str
) -> None:
    """Messages pushed through Sentinel (waiting for the replica) are all delivered after
    ``SENTINEL FAILOVER`` made the replica the master, with no change of configuration."""
    _master, replica, sentinel = sentinel_setup
    conn = make_connection(
        {"type": "redis", "url": "redis://localhost/0", "key_prefix": key_prefix,
         "sentinels": [f"127.0.0.1:{sentinel.port}"], "service_name": "mymaster",
         "wait_replicas": 1, "wait_timeout": 2.0, "socket_timeout": 5.0}
    )  # fmt: skip
    try:
        wait_for(
            lambda: (
                redis.Redis(port=replica.port).info("replication")["master_link_status"] == "up"
            ),
            timeout=30,
            what="the replica to sync",
        )
        first = [_message(n) for n in range(10)]
        conn.hook.pashq_push(queue="failover", messages=first, options={})
        wait_for(
            lambda: sentinel.client.execute_command("SENTINEL", "REPLICAS", "mymaster"),
            timeout=60,
            what="the sentinel to discover the replica",
        )
        sentinel.client.execute_command("SENTINEL", "FAILOVER", "mymaster")
        wait_for(lambda: sentinel.master_port() == replica.port, timeout=60, what="failover")
        deadline = time.monotonic() + 60
        second = [_message(n) for n in range(10, 20)]
        while True:  # pushes fail until the pool reaches the new master
            try:
                conn.hook.pashq_push(queue="failover", messages=second, options={})
                break
            except DriverError as exc:
                if "replica(s) acknowledged" in str(exc):
                    break  # stored on the new master, which has no replica yet
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.2)
        got = drain(conn, "failover", 20, timeout=60)
        got += drain(conn, "failover", 1000, timeout=1.0)  # any duplicates
        counts = collections.Counter(d.body for d in got)
        assert set(counts) == {m.body for m in first + second}
        assert all(counts[m.body] == 1 for m in first)  # a retried push may store twice
    finally:
        conn.close()
