"""``engine_options`` errors name the key, before any connection is made."""

from __future__ import annotations

from typing import Any

import pytest

from pashq.errors import ConfigError
from pashq.testing import make_connection

URL = "sqlite:///unused.sqlite3"


@pytest.mark.parametrize(
    ("options", "message"),
    [
        ({"pool_size": "five"}, "'engine_options.pool_size' must be int, got 'five'"),
        ({"pool_recycle": "x"}, "'engine_options.pool_recycle' must be int or float, got 'x'"),
        ({"pool_size": 5.5}, "'engine_options.pool_size' must be int, got 5.5"),
        ({"echo": "loud"}, "'engine_options.echo' must be true, false or 'debug', got 'loud'"),
        ({"pool_pre_ping": 1}, "'engine_options.pool_pre_ping' must be bool, got 1"),
        ({"connect_args": "password=x"}, "'engine_options.connect_args' must be dict, got str"),
    ],
)
def test_a_wrong_engine_option_type_names_the_key(options: dict[str, Any], message: str) -> None:
    with pytest.raises(ConfigError) as caught:
        make_connection({"type": "database", "url": URL, "engine_options": options})
    assert message in str(caught.value)
    assert "[queues.contract]" in str(caught.value)


def test_text_from_the_environment_converts_and_is_never_echoed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    monkeypatch.setenv("PASHQ_TEST_POOL", "3")
    monkeypatch.setenv("PASHQ_TEST_BAD_POOL", "s3cret")
    url = f"sqlite:///{tmp_path / 'q.sqlite3'}"
    conn = make_connection(
        {"type": "database", "url": url, "engine_options": {"pool_size": "${PASHQ_TEST_POOL}"}}
    )
    assert conn.driver.engine.pool.size() == 3
    conn.close()
    with pytest.raises(ConfigError) as caught:
        make_connection(
            {
                "type": "database",
                "url": url,
                "engine_options": {"pool_size": "${PASHQ_TEST_BAD_POOL}"},
            }
        )
    assert "s3cret" not in str(caught.value)
    assert "${PASHQ_TEST_BAD_POOL}" in str(caught.value)


def test_an_unknown_engine_option_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="bad 'engine_options': Invalid argument"):
        make_connection({"type": "database", "url": URL, "engine_options": {"nosuch": 1}})
