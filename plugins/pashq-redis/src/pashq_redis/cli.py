"""``pashq redis ...``: check a server's settings, show a queue's keys.

Registered through the ``pashq.commands`` entry point ``redis``::

    pashq redis check             # persistence and eviction: what can lose messages
    pashq redis keys orders       # the queue's keys, their types and sizes
"""

from __future__ import annotations

import json

import attrs
import click

from pashq.cli import cli_errors, connection_options, load_driver
from pashq.errors import DriverError
from pashq_redis.driver import RedisDriver
from pashq_redis.keys import PARTS
from pashq_redis.server_check import check_server

__all__ = ["redis"]


@click.group()
def redis() -> None:
    """Redis driver tools (pashq-redis)."""


@redis.command()
@connection_options
@click.option("--json", "as_json", is_flag=True, help="Print JSON.")
@cli_errors
def check(connection: str, config: str | None, imports: tuple[str, ...], as_json: bool) -> None:
    """Say what the server's persistence and eviction settings mean for messages.

    Exits with status 2 when a setting can lose messages (no persistence at all, or an
    eviction policy that may delete queue keys).
    """
    driver = load_driver(RedisDriver, connection, config, imports)
    try:
        findings = check_server(driver.redis())
    except Exception as exc:
        raise DriverError(f"redis check failed: {type(exc).__name__}: {exc}") from exc
    if as_json:
        click.echo(json.dumps([attrs.asdict(f) for f in findings]))
    else:
        for f in findings:
            click.echo(f"{f.level:<8} {f.setting} = {f.value}: {f.meaning}")
    if any(f.level == "danger" for f in findings):
        raise SystemExit(2)


@redis.command()
@click.argument("queue")
@connection_options
@cli_errors
def keys(queue: str, connection: str, config: str | None, imports: tuple[str, ...]) -> None:
    """List the Redis keys of QUEUE with their type and size."""
    driver = load_driver(RedisDriver, connection, config, imports)
    client = driver.redis()
    names = driver.keys(queue)
    sizes = {
        "string": client.strlen,
        "hash": client.hlen,
        "zset": client.zcard,
        "list": client.llen,
    }
    try:
        for part in PARTS:
            key = names.key(part)
            kind = client.type(key)
            kind = kind.decode() if isinstance(kind, bytes) else str(kind)
            size = sizes[kind](key) if kind in sizes else 0
            click.echo(f"{key}  {kind}  {size}")
    except Exception as exc:
        raise DriverError(f"redis keys of {queue!r} failed: {type(exc).__name__}: {exc}") from exc
