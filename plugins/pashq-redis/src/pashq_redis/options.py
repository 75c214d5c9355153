"""The driver's options (the keys of a ``[queues.<name>]`` table with ``type = "redis"``)."""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = ["DEFAULT_URL", "RedisOptions", "safe_url"]

#: The server used when no ``url`` is configured.
DEFAULT_URL = "redis://127.0.0.1:6379/0"
_SCHEMES = ("redis", "rediss", "unix")
_PASSWORD = re.compile(r"(//[^:/@]*:)[^@/]*@")
_SENTINEL = re.compile(r"[^\s:]+:\d{1,5}\Z|\[[0-9A-Fa-f:.]+\]:\d{1,5}\Z")


def safe_url(url: str) -> str:
    """``url`` without its password (``redis://user:***@host``), for logs and errors."""
    return _PASSWORD.sub(r"\1***@", url)


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
    if value is not None and value <= 0:
        raise ValueError(f"'{attribute.name}' must be > 0, got {value!r}")


def _url(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    scheme = value.split("://", 1)[0].lower() if "://" in value else ""
    if scheme not in _SCHEMES:
        raise ValueError(
            f"'url' must start with redis://, rediss:// (TLS) or unix://, got {safe_url(value)!r}"
        )


def _prefix(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if "{" in value or "}" in value:
        raise ValueError(
            f"'key_prefix' must not contain '{{' or '}}' (the driver puts the queue name in "
            f"a Redis Cluster hash tag after it), got {value!r}"
        )
    if len(value) > 200:
        raise ValueError(f"'key_prefix' must be at most 200 characters, got {len(value)}")


def _batch(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= 5000:
        raise ValueError(f"'batch_size' must be between 1 and 5000, got {value!r}")


def _sentinels(instance: object, attribute: attrs.Attribute[Any], value: list[str]) -> None:
    for entry in value:
        if not isinstance(entry, str) or not _SENTINEL.match(entry):
            raise ValueError(
                f"'sentinels' entries must be 'host:port' strings, got {entry!r} "
                f'(for example sentinels = ["10.0.0.1:26379", "10.0.0.2:26379"])'
            )


def _wait_replicas(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 0:
        raise ValueError(f"'wait_replicas' must be >= 0, got {value!r}")


def _max_connections(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if value < 2:
        raise ValueError(
            f"'max_connections' must be at least 2 (a waiting pull holds one), got {value!r}"
        )


@attrs.frozen
class RedisOptions:
    """Options of the Redis driver.

    :ivar url: ``redis://[[user]:password@]host[:port][/db]``, ``rediss://`` for TLS, or
        ``unix:///path/to/redis.sock``; with ``sentinels``, only its user, password, db and
        scheme are used (the master's address comes from the sentinels).
    :ivar key_prefix: prepended to every key (``<prefix>{<queue>}:ready`` ...).
    :ivar lease: seconds a pulled message stays reserved before another worker may take it.
    :ivar batch_size: most messages per script call (push, claim, ack).
    :ivar max_connections: size of the connection pool.
    :ivar socket_timeout: seconds a command may take before it fails.
    :ivar socket_connect_timeout: seconds to open a connection.
    :ivar health_check_interval: seconds of idleness after which a pooled connection is
        checked with PING before use (0 = never).
    :ivar ssl_ca_certs: CA bundle for ``rediss://`` (default: the system's).
    :ivar ssl_cert_reqs: ``required`` (default), ``optional`` or ``none`` for ``rediss://``.
    :ivar sentinels: ``host:port`` of Redis Sentinels; the master of ``service_name`` is
        asked of them on every (re)connection, so a failover is followed.
    :ivar service_name: the Sentinel service (master group) name.
    :ivar sentinel_password: the password of the sentinels themselves, if they have one.
    :ivar cluster: connect with redis-py's ``RedisCluster`` (Redis Cluster).
    :ivar wait_replicas: after each push, wait (``WAIT``) until this many replicas hold it.
    :ivar wait_timeout: seconds a push waits for ``wait_replicas`` before it fails.
    """

    url: str = attrs.field(default=DEFAULT_URL, validator=_url, repr=safe_url)
    key_prefix: str = attrs.field(default="pashq:", validator=_prefix)
    lease: float = attrs.field(default=30.0, validator=_positive)
    batch_size: int = attrs.field(default=500, validator=_batch)
    max_connections: int = attrs.field(default=50, validator=_max_connections)
    socket_timeout: float = attrs.field(default=10.0, validator=_positive)
    socket_connect_timeout: float = attrs.field(default=5.0, validator=_positive)
    health_check_interval: float = attrs.field(default=30.0)
    ssl_ca_certs: str | None = None
    ssl_cert_reqs: str = attrs.field(
        default="required", validator=attrs.validators.in_(("required", "optional", "none"))
    )
    sentinels: list[str] = attrs.field(factory=list, validator=_sentinels)
    service_name: str | None = None
    sentinel_password: str | None = attrs.field(default=None, repr=False)
    cluster: bool = False
    wait_replicas: int = attrs.field(default=0, validator=_wait_replicas)
    wait_timeout: float = attrs.field(default=1.0, validator=_positive)

    def __attrs_post_init__(self) -> None:
        if self.sentinels and not self.service_name:
            raise ValueError("'sentinels' needs 'service_name' (the master group to follow)")
        if self.service_name and not self.sentinels:
            raise ValueError("'service_name' needs 'sentinels' (host:port of each sentinel)")
        if self.sentinels and self.cluster:
            raise ValueError("'sentinels' and 'cluster' cannot be used together")
        if self.cluster and self.wait_replicas:
            raise ValueError(
                "'wait_replicas' cannot be used with 'cluster' (WAIT must run on the "
                "connection that wrote; configure it per node with min-replicas-to-write)"
            )
        if self.wait_replicas and self.wait_timeout >= self.socket_timeout:
            raise ValueError(
                f"'wait_timeout' ({self.wait_timeout}) must be shorter than 'socket_timeout' "
                f"({self.socket_timeout}): the push waits for replicas on its socket"
            )
        if self.health_check_interval < 0:
            raise ValueError(
                f"'health_check_interval' must be >= 0, got {self.health_check_interval!r}"
            )
