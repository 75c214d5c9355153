"""Option errors name the table and the key, and never show a password."""

from __future__ import annotations

from typing import Any

import pytest

from pashq.errors import ConfigError
from pashq.testing import make_connection
from pashq_redis import RedisDriver, RedisOptions
from pashq_redis.options import safe_url


@pytest.mark.parametrize(
    ("table", "message"),
    [
        ({"url": "http://localhost"}, "'url' must start with redis://, rediss://"),
        ({"key_prefix": "a{b"}, "'key_prefix' must not contain"),
        ({"lease": 0}, "'lease' must be > 0"),
        ({"batch_size": 0}, "'batch_size' must be between 1 and 5000"),
        ({"max_connections": 1}, "'max_connections' must be at least 2"),
        ({"sentinels": ["localhost"]}, "'sentinels' entries must be 'host:port'"),
        ({"sentinels": ["localhost:26379"]}, "'sentinels' needs 'service_name'"),
        ({"service_name": "mymaster"}, "'service_name' needs 'sentinels'"),
        ({"wait_replicas": -1}, "'wait_replicas' must be >= 0"),
        ({"cluster": True, "wait_replicas": 1}, "'wait_replicas' cannot be used with 'cluster'"),
        ({"wait_replicas": 1, "wait_timeout": 10}, "'wait_timeout' (10.0) must be shorter"),
        ({"ssl_cert_reqs": "maybe"}, "ssl_cert_reqs"),
        ({"lease_seconds": 3}, "unknown option(s) lease_seconds"),
    ],
)
def test_bad_option_is_a_config_error_naming_the_key(table: dict[str, Any], message: str) -> None:
    """Each wrong value fails at connect with a ConfigError that names the table and key."""
    with pytest.raises(ConfigError) as info:
        make_connection({"type": "redis", **table})
    assert message in str(info.value)
    assert "<test>" in str(info.value)


def test_password_never_appears_in_repr_or_errors() -> None:
    """The URL's password is masked in the options' repr and in URL errors."""
    options = RedisOptions(url="redis://user:s3cret@example.com:6380/2", sentinel_password="x9")
    assert "s3cret" not in repr(options) and "x9" not in repr(options)
    assert safe_url(options.url) == "redis://user:***@example.com:6380/2"
    with pytest.raises(ConfigError) as info:
        make_connection({"type": "redis", "url": "redis://user:s3cret@example.com:notaport/0"})
    assert "s3cret" not in str(info.value)


def test_tls_and_sentinel_options_build_clients() -> None:
    """rediss:// with a CA bundle and a Sentinel setup are accepted (nothing connects yet)."""
    tls = make_connection(
        {"type": "redis", "url": "rediss://:pw@example.com:6380/0", "ssl_cert_reqs": "required",
         "ssl_ca_certs": "/etc/ssl/certs/ca-certificates.crt"}
    )  # fmt: skip
    sentinel = make_connection(
        {"type": "redis", "url": "redis://:pw@ignored/3", "sentinels": ["10.0.0.1:26379",
         "[::1]:26380"], "service_name": "mymaster", "sentinel_password": "spw"}
    )  # fmt: skip
    for conn in (tls, sentinel):
        assert isinstance(conn.driver, RedisDriver)
        conn.close()


def test_driver_is_registered_under_redis() -> None:
    """``type = "redis"`` finds the driver through the pashq.drivers entry point."""
    conn = make_connection({"type": "redis"})
    try:
        assert isinstance(conn.driver, RedisDriver)
        caps = conn.capabilities
        assert caps.persistent and caps.lease and caps.extend_lease and caps.priorities
    finally:
        conn.close()
