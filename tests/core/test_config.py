"""Configuration: discovery order, validation, and every error naming file, key and fix."""

from __future__ import annotations

from pathlib import Path

import pytest

import pashq
from pashq import ConfigError, DriverNotFoundError
from pashq.config import find_config, load_settings


def test_mapping_is_validated_into_settings() -> None:
    settings = load_settings(
        {
            "imports": ["a.b"],
            "queues": {
                "default": {
                    "type": "memory",
                    "max_attempts": 3,
                    "retry_delay": 2,
                    "retry_delay_max": 10,
                    "plugins": ["metrics"],
                    "lease": 5,
                }
            },
        }
    )
    conn = settings.connections["default"]
    assert settings.imports == ("a.b",)
    assert (conn.type, conn.retry.max_attempts, conn.retry.retry_delay) == ("memory", 3, 2.0)
    assert conn.retry.retry_delay_max == 10.0
    assert conn.plugins == ("metrics",)
    assert conn.options == {"lease": 5}


def test_defaults_for_retry_policy() -> None:
    retry = load_settings({"queues": {"q": {"type": "memory"}}}).connections["q"].retry
    assert (retry.max_attempts, retry.retry_delay, retry.retry_delay_max) == (5, 1.0, 300.0)


@pytest.mark.parametrize(
    ("data", "match"),
    [
        ({"queues": {"d": {"type": "memory"}}, "workers": 1}, r"unknown key\(s\) workers"),
        ({"imports": "x", "queues": {"d": {"type": "memory"}}}, "'imports' must be a list"),
        ({}, r"no \[queues.<name>\] table"),
        ({"queues": {}}, "must hold one table per connection"),
        ({"queues": {"d": "memory"}}, r"\[queues.d\]: must be a table"),
        ({"queues": {"d": {}}}, r"\[queues.d\]: missing 'type'"),
        ({"queues": {"d": {"type": "memory", "max_attempts": 0}}}, "'max_attempts' must be an"),
        ({"queues": {"d": {"type": "memory", "max_attempts": "five"}}}, "'max_attempts' must"),
        ({"queues": {"d": {"type": "memory", "max_attempts": True}}}, "'max_attempts' must be"),
        ({"queues": {"d": {"type": "memory", "retry_delay": -1}}}, "'retry_delay' must be"),
        ({"queues": {"d": {"type": "memory", "retry_delay_max": "x"}}}, "'retry_delay_max'"),
        ({"queues": {"d": {"type": "memory", "plugins": "metrics"}}}, "'plugins' must be a list"),
    ],
)
def test_invalid_configuration_names_the_key(data: dict[str, object], match: str) -> None:
    with pytest.raises(ConfigError, match=match):
        load_settings(data, "here.toml")


def test_error_names_the_source_file() -> None:
    with pytest.raises(ConfigError, match=r"^here.toml \[queues.d\]"):
        load_settings({"queues": {"d": {}}}, "here.toml")


def test_unknown_driver_option_lists_accepted_keys() -> None:
    pashq.configure({"queues": {"default": {"type": "memory", "leese": 3}}})
    with pytest.raises(ConfigError, match=r"unknown option\(s\) leese; .*lease"):
        pashq.queue()


def test_driver_option_of_wrong_type_is_named() -> None:
    pashq.configure({"queues": {"default": {"type": "memory", "lease": "long"}}})
    with pytest.raises(ConfigError, match="'lease' must be float, got 'long'"):
        pashq.queue()


def test_unknown_first_party_driver_says_how_to_install_it(monkeypatch: pytest.MonkeyPatch) -> None:
    from pashq import discovery

    real = discovery.installed(discovery.DRIVER_GROUP)
    fake = {k: v for k, v in real.items() if k != "sqs"}
    monkeypatch.setattr(discovery, "installed", lambda group: fake)
    pashq.configure({"queues": {"default": {"type": "sqs"}}})
    with pytest.raises(
        DriverNotFoundError,
        match=r"driver 'sqs' is not installed: "
        r"pip install pashq-sqs \(installed drivers: ",
    ):
        pashq.queue()


def test_unknown_driver_lists_installed_drivers() -> None:
    pashq.configure({"queues": {"default": {"type": "carrier-pigeon"}}})
    with pytest.raises(
        DriverNotFoundError,
        match=r"'carrier-pigeon' is not installed \(installed "
        r"drivers: .*memory",
    ):
        pashq.queue()


def test_unknown_plugin_is_named() -> None:
    pashq.configure({"queues": {"default": {"type": "memory", "plugins": ["nope"]}}})
    with pytest.raises(DriverNotFoundError, match="plugin 'nope' is not installed"):
        pashq.queue()


def test_unknown_connection_lists_configured_ones() -> None:
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    with pytest.raises(ConfigError, match=r"no connection named 'events' \(configured: default\)"):
        pashq.queue("events")


def test_environment_variables_are_expanded(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PASHQ_T_LEASE", "7")
    settings = load_settings(
        {
            "queues": {
                "d": {
                    "type": "memory",
                    "url": "x-${PASHQ_T_LEASE}",
                    "other": "${PASHQ_T_MISSING:-fallback}",
                }
            }
        }
    )
    assert settings.connections["d"].options == {"url": "x-7", "other": "fallback"}


def test_missing_environment_variable_is_an_error(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PASHQ_T_MISSING", raising=False)
    with pytest.raises(
        ConfigError,
        match=r"\[queues.d\].url: environment variable "
        r"PASHQ_T_MISSING is not set",
    ):
        load_settings({"queues": {"d": {"type": "memory", "url": "${PASHQ_T_MISSING}"}}}, "f")


def test_missing_file_is_named(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="does not exist"):
        find_config(tmp_path / "nope.toml")


def test_invalid_toml_is_named(tmp_path: Path) -> None:
    bad = tmp_path / "pashq.toml"
    bad.write_text("[queues.default\ntype=")
    with pytest.raises(ConfigError, match=r"pashq.toml: not valid TOML"):
        find_config(bad)


def test_pyproject_without_tool_pashq_is_an_error(tmp_path: Path) -> None:
    file = tmp_path / "pyproject.toml"
    file.write_text("[project]\nname='x'\n")
    with pytest.raises(ConfigError, match=r"no \[tool.pashq\] table"):
        find_config(file)


def test_discovery_order(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("PASHQ_CONFIG", raising=False)
    assert find_config().source == "<built-in default>"
    assert find_config().connections["default"].type == "database"
    (tmp_path / "pyproject.toml").write_text('[tool.pashq.queues.default]\ntype = "logger"\n')
    assert find_config().connections["default"].type == "logger"
    (tmp_path / "pashq.toml").write_text('[queues.default]\ntype = "memory"\n')
    assert find_config().connections["default"].type == "memory"
    other = tmp_path / "other.toml"
    other.write_text('[queues.default]\ntype = "sync"\n')
    monkeypatch.setenv("PASHQ_CONFIG", str(other))
    assert find_config().connections["default"].type == "sync"
    assert find_config(tmp_path / "pashq.toml").connections["default"].type == "memory"


def test_numbers_and_booleans_from_environment_text(monkeypatch: pytest.MonkeyPatch) -> None:
    import attrs

    from pashq import parse_options

    @attrs.frozen
    class Opts:
        lease: float = 1.0
        port: int = 0
        tls: bool = False
        timeout: float | None = None

    monkeypatch.setenv("PASHQ_T_ATTEMPTS", "3")
    table = {
        "type": "memory",
        "max_attempts": "${PASHQ_T_ATTEMPTS}",
        "lease": "2.5",
        "port": "5672",
        "tls": "on",
        "timeout": "4",
    }
    conn = load_settings({"queues": {"d": table}}).connections["d"]
    assert conn.retry.max_attempts == 3
    assert parse_options(Opts, conn.options, "w") == Opts(2.5, 5672, True, 4.0)
    with pytest.raises(ConfigError, match="'timeout' must be float, got 'soon'"):
        parse_options(Opts, {"timeout": "soon"}, "w")
    with pytest.raises(ConfigError, match="'tls' must be bool, got 'maybe'"):
        parse_options(Opts, {"tls": "maybe"}, "w")
