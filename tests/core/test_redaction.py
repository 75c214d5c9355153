"""Secrets never reach reprs or error text."""

from __future__ import annotations

import pytest

from pashq import ConfigError
from pashq.config import load_settings, parse_options
from pashq.drivers.memory import MemoryOptions
from pashq.redaction import redact, redact_url


def test_url_passwords_are_masked() -> None:
    assert redact_url("amqp://guest:s3cret@host:5672/%2F") == "amqp://guest:***@host:5672/%2F"
    assert redact_url("postgresql+psycopg://u:p%40ss@db/x") == "postgresql+psycopg://u:***@db/x"
    assert redact_url("sqlite:///pashq.sqlite3") == "sqlite:///pashq.sqlite3"


def test_secret_keys_are_masked_at_any_depth() -> None:
    value = {"password": "x", "engine": {"api_token": "y", "n": 1}, "aws_secret_access_key": "z"}
    assert redact(value) == {
        "password": "***",
        "engine": {"api_token": "***", "n": 1},
        "aws_secret_access_key": "***",
    }


def test_connection_config_repr_hides_secrets() -> None:
    settings = load_settings(
        {"queues": {"d": {"type": "rabbitmq", "url": "amqp://u:hunter2@h/", "password": "pw"}}}
    )
    text = repr(settings)
    assert "hunter2" not in text and "'pw'" not in text
    assert "amqp://u:***@h/" in text


def test_config_type_error_does_not_echo_secret_values() -> None:
    import attrs

    @attrs.frozen
    class Opts:
        password: int = 0

    with pytest.raises(ConfigError) as info:
        parse_options(Opts, {"password": "hunter2"}, "f.toml [queues.d]")
    assert "hunter2" not in str(info.value)
    assert "'password' must be int, got str" in str(info.value)
    with pytest.raises(ConfigError, match="got 'long'"):
        parse_options(MemoryOptions, {"lease": "long"}, "f")
