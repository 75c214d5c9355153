"""Building the redis-py client for a connection: a plain pool, Sentinel or Redis Cluster."""

from __future__ import annotations

from typing import Any

import redis
from redis.backoff import ExponentialBackoff
from redis.cluster import RedisCluster
from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError
from redis.retry import Retry
from redis.sentinel import Sentinel

from pashq.errors import ConfigError
from pashq_redis.options import RedisOptions, safe_url

__all__ = ["build_client"]

#: Keys of ``redis.connection.parse_url`` that Sentinel decides itself.
_ADDRESS_KEYS = ("host", "port", "path", "connection_class")


def _retry() -> Retry:
    """One quick retry on a fresh connection: a pooled socket that died with a server
    restart fails its first command, and the next connection reaches the new server."""
    return Retry(ExponentialBackoff(cap=0.5, base=0.05), retries=1)


def _common(options: RedisOptions) -> dict[str, Any]:
    return {
        "socket_timeout": options.socket_timeout,
        "socket_connect_timeout": options.socket_connect_timeout,
        "health_check_interval": options.health_check_interval,
        "retry": _retry(),
        "retry_on_error": [RedisConnectionError, RedisTimeoutError],
        "socket_keepalive": True,
    }


def _tls(options: RedisOptions) -> dict[str, Any]:
    tls: dict[str, Any] = {"ssl_cert_reqs": options.ssl_cert_reqs}
    if options.ssl_ca_certs:
        tls["ssl_ca_certs"] = options.ssl_ca_certs
    return tls


def build_client(options: RedisOptions, where: str) -> redis.Redis | RedisCluster:
    """A client for ``options`` (nothing is connected yet: connections open on first use).

    :raises ConfigError: a URL redis-py cannot read, or a sentinel address that is not
        ``host:port``.
    """
    tls = options.url.lower().startswith("rediss://")
    common = _common(options)
    if tls:
        common.update(_tls(options))
    try:
        if options.cluster:
            return RedisCluster.from_url(options.url, **common)
        if options.sentinels:
            # redis-py leaves parse_url, Sentinel and master_for untyped.
            parsed = dict(redis.connection.parse_url(options.url))  # type: ignore[no-untyped-call]
            for key in _ADDRESS_KEYS:
                parsed.pop(key, None)
            if tls:
                parsed["ssl"] = True
            addresses = []
            for entry in options.sentinels:
                host, _, port = entry.rpartition(":")
                addresses.append((host.strip("[]"), int(port)))
            sentinel_kwargs: dict[str, Any] = {
                "socket_timeout": options.socket_timeout,
                "socket_connect_timeout": options.socket_connect_timeout,
            }
            if options.sentinel_password:
                sentinel_kwargs["password"] = options.sentinel_password
            sentinel = Sentinel(  # type: ignore[no-untyped-call]
                addresses, sentinel_kwargs=sentinel_kwargs, **common, **parsed
            )
            assert options.service_name is not None  # checked by RedisOptions
            client: redis.Redis = sentinel.master_for(  # type: ignore[no-untyped-call]
                options.service_name, max_connections=options.max_connections
            )
            return client
        pool = redis.BlockingConnectionPool.from_url(
            options.url,
            max_connections=options.max_connections,
            timeout=options.socket_timeout,
            **common,
        )
        return redis.Redis(connection_pool=pool)
    except ValueError as exc:
        problem = safe_url(str(exc))
        raise ConfigError(
            f"{where}: 'url' {safe_url(options.url)!r} cannot be used: {problem}"
        ) from exc
