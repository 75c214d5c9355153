"""``pashq redis check|keys`` and the generic commands on the Redis driver (subprocesses)."""

from __future__ import annotations

import json
import subprocess
import sys
import uuid
from pathlib import Path
from typing import Any

from redis_servers import PrivateRedis

from pashq.testing import make_connection
from pashq.testing.messages import Recorded


def _config(tmp_path: Path, table: dict[str, Any]) -> Path:
    path = tmp_path / "pashq.toml"
    path.write_text(
        "[queues.default]\n" + "".join(f"{k} = {json.dumps(v)}\n" for k, v in table.items())
    )
    return path


def pashq(config: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """Run ``python -m pashq ARGS --config CONFIG``."""
    return subprocess.run(
        [sys.executable, "-m", "pashq", *args, "--config", str(config)],
        capture_output=True, text=True, timeout=120,
    )  # fmt: skip


def test_check_calls_a_server_without_persistence_dangerous(tmp_path: Path) -> None:
    """appendonly off and no snapshots (like the shared test server): exit status 2."""
    folder = tmp_path / "data"
    folder.mkdir()
    server = PrivateRedis(folder, "--appendonly", "no")  # later arguments win
    server.start()
    try:
        config = _config(tmp_path, {"type": "redis", "url": server.url})
        done = pashq(config, "redis", "check", "--json")
        assert done.returncode == 2, done.stderr
        findings = {f["setting"]: f for f in json.loads(done.stdout)}
        assert findings["appendonly"]["level"] == "danger"
        assert findings["maxmemory-policy"]["value"] == "noeviction"
    finally:
        server.kill()


def test_check_accepts_appendonly_with_fsync_always(
    private_redis: PrivateRedis, tmp_path: Path, key_prefix: str
) -> None:
    """appendonly yes + appendfsync always, noeviction: every line ok, exit status 0."""
    config = _config(tmp_path, {"type": "redis", "url": private_redis.url})
    done = pashq(config, "redis", "check")
    assert done.returncode == 0, done.stdout + done.stderr
    assert "ok       appendfsync = always" in done.stdout
    assert "danger" not in done.stdout


def test_check_warns_about_an_eviction_policy(tmp_path: Path, key_prefix: str) -> None:
    """maxmemory-policy allkeys-lru may delete queue keys: danger, exit status 2."""
    folder = tmp_path / "data"
    folder.mkdir()
    server = PrivateRedis(folder, "--maxmemory-policy", "allkeys-lru")
    server.start()
    try:
        done = pashq(_config(tmp_path, {"type": "redis", "url": server.url}), "redis", "check")
        assert done.returncode == 2
        assert "danger   maxmemory-policy = allkeys-lru" in done.stdout
    finally:
        server.kill()


def test_keys_and_generic_commands(tmp_path: Path, redis_table: dict[str, Any]) -> None:
    """``pashq redis keys``, ``stats``, ``failed list`` and ``purge`` on a Redis queue."""
    queue = f"cli-{uuid.uuid4().hex[:8]}"
    conn = make_connection(redis_table)
    try:
        conn.dispatch_many(queue, [Recorded("cli", n) for n in range(3)])
        config = _config(tmp_path, redis_table)
        keys = pashq(config, "redis", "keys", queue)
        assert keys.returncode == 0, keys.stderr
        assert f"{{{queue}}}:fresh  list  3" in keys.stdout
        stats = pashq(config, "stats", queue, "--json")
        assert json.loads(stats.stdout)[0]["ready"] == 3
        purge = pashq(config, "purge", queue, "--yes")
        assert purge.returncode == 0, purge.stderr
        assert conn.stats(queue).ready == 0
    finally:
        conn.driver.delete_queue(queue)  # type: ignore[attr-defined]
        conn.close()
