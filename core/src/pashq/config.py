"""Configuration: where it is found, how it is validated, and the driver options helper.

Sources, first match wins: the ``path_or_mapping`` given to :func:`pashq.configure`, the
``--config`` option, ``PASHQ_CONFIG``, ``./pashq.toml``, ``[tool.pashq]`` in
``./pyproject.toml``. With none, a ``default`` connection of type ``database`` on
``sqlite:///pashq.sqlite3``.

::

    imports = ["myapp.messages"]

    [queues.default]
    type = "database"
    url = "sqlite:///pashq.sqlite3"
    max_attempts = 5           # connection-level retry policy
    retry_delay = 1.0
    retry_delay_max = 300.0
    plugins = ["metrics"]

``${VAR}`` and ``${VAR:-default}`` in string values are read from the environment.
"""

from __future__ import annotations

import math
import os
import re
import tomllib
from collections.abc import Mapping
from pathlib import Path
from typing import Any, TypeVar

import attrs

from pashq.errors import ConfigError
from pashq.redaction import is_secret_key, redact

__all__ = [
    "DEFAULT_CONFIG",
    "ConnectionConfig",
    "RetryPolicy",
    "Settings",
    "find_config",
    "load_settings",
    "parse_options",
]

T = TypeVar("T")

DEFAULT_CONFIG: Mapping[str, Any] = {
    "queues": {"default": {"type": "database", "url": "sqlite:///pashq.sqlite3"}}
}
_TOP_KEYS = frozenset({"imports", "queues", "schedules"})
_SCHEDULE_KEYS = frozenset(
    {"message", "cron", "timezone", "body", "queue", "connection", "catch_up"}
)
_CONNECTION_KEYS = frozenset(
    {
        "type",
        "max_attempts",
        "retry_delay",
        "retry_delay_max",
        "time_limit",
        "plugins",
        "coordination",
    }
)
_VAR = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)(?::-([^}]*))?\}")


@attrs.frozen
class RetryPolicy:
    """Retry settings: attempts in all (first delivery included) and backoff bounds in seconds.

    ``time_limit``: seconds a handler may run (``None``: no limit).
    """

    max_attempts: int = 5
    retry_delay: float = 1.0
    retry_delay_max: float = 300.0
    time_limit: float | None = None


@attrs.frozen
class ConnectionConfig:
    """One ``[queues.<name>]`` table.

    :ivar name: the connection name.
    :ivar type: the driver name (an entry point in ``pashq.drivers``).
    :ivar options: the driver's own keys, validated by the driver.
    :ivar retry: the connection-level retry policy.
    :ivar plugins: middleware names (entry points in ``pashq.plugins``).
    :ivar where: where the table was read, for error messages.
    :ivar coordination: the connection whose coordination store (unique keys, limits,
        schedules) this one uses; ``None``: its own driver's, if it has one.
    """

    name: str
    type: str
    options: Mapping[str, Any] = attrs.field(repr=lambda options: repr(redact(options)))
    retry: RetryPolicy = attrs.field(factory=RetryPolicy)
    plugins: tuple[str, ...] = ()
    where: str = "<config>"
    coordination: str | None = None


@attrs.frozen
class Settings:
    """The whole validated configuration.

    :ivar connections: connection name -> its configuration.
    :ivar imports: modules that define message classes (imported by ``pashq work``).
    :ivar source: where it was read (a path, ``"<mapping>"`` or ``"<built-in default>"``).
    :ivar schedules: name -> its ``[schedules.<name>]`` table (keys checked; the values are
        validated by :mod:`pashq.schedules`).
    """

    connections: Mapping[str, ConnectionConfig]
    imports: tuple[str, ...]
    source: str
    schedules: Mapping[str, Mapping[str, Any]] = attrs.field(factory=dict)


class _FromEnvironment(str):
    """A value that ``${VAR}`` expansion produced: errors show the template, never the value."""

    template: str

    def __new__(cls, value: str, template: str) -> _FromEnvironment:
        made = super().__new__(cls, value)
        made.template = template
        return made


def _expand(value: Any, where: str) -> Any:
    if isinstance(value, str):
        if not _VAR.search(value):
            return value

        def replace(match: re.Match[str]) -> str:
            name, default = match.group(1), match.group(2)
            found = os.environ.get(name)
            if found is None or (found == "" and default is not None):
                if default is None:
                    raise ConfigError(
                        f"{where}: environment variable {name} is not set "
                        f"(write ${{{name}:-default}} to give a default)"
                    )
                return default
            return found

        return _FromEnvironment(_VAR.sub(replace, value), value)
    if isinstance(value, dict):
        return {k: _expand(v, f"{where}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [_expand(v, where) for v in value]
    return value


def _number(value: Any, key: str, where: str, *, integer: bool = False, minimum: float) -> Any:
    shown = _shown(key, value)
    if isinstance(value, str):
        value = _from_text(value, "int" if integer else "float")  # ${VAR} gives text
    ok = isinstance(value, int) if integer else isinstance(value, int | float)
    if isinstance(value, bool) or not ok or not math.isfinite(value) or value < minimum:
        kind = "an integer" if integer else "a finite number"
        raise ConfigError(f"{where}: '{key}' must be {kind} >= {minimum}, got {shown}")
    return value if integer else float(value)


def _time_limit(value: Any, where: str) -> float | None:
    if value is None:
        return None
    seconds = float(_number(value, "time_limit", where, minimum=0))
    if seconds <= 0:
        raise ConfigError(f"{where}: 'time_limit' must be > 0 seconds, got {seconds:g}")
    return seconds


def _connection(name: str, table: Any, source: str) -> ConnectionConfig:
    where = f"{source} [queues.{name}]"
    if not isinstance(table, dict):
        raise ConfigError(f'{where}: must be a table with at least `type = "..."`')
    table = _expand(table, where)
    driver = table.get("type")
    if not isinstance(driver, str) or not driver:
        raise ConfigError(
            f"{where}: missing 'type' (the driver name, e.g. type = \"database\"; "
            "`pashq drivers` lists the installed ones)"
        )
    defaults = RetryPolicy()
    retry = RetryPolicy(
        max_attempts=_number(
            table.get("max_attempts", defaults.max_attempts),
            "max_attempts",
            where,
            integer=True,
            minimum=1,
        ),
        retry_delay=_number(
            table.get("retry_delay", defaults.retry_delay), "retry_delay", where, minimum=0
        ),
        retry_delay_max=_number(
            table.get("retry_delay_max", defaults.retry_delay_max),
            "retry_delay_max",
            where,
            minimum=0,
        ),
        time_limit=_time_limit(table.get("time_limit"), where),
    )
    plugins = table.get("plugins", [])
    if not isinstance(plugins, list) or not all(isinstance(p, str) for p in plugins):
        raise ConfigError(f"{where}: 'plugins' must be a list of plugin names, got {plugins!r}")
    coordination = table.get("coordination")
    if coordination is not None and (not isinstance(coordination, str) or not coordination):
        raise ConfigError(
            f"{where}: 'coordination' must name another connection (coordination = \"db\"), "
            f"got {coordination!r}"
        )
    options = {k: v for k, v in table.items() if k not in _CONNECTION_KEYS}
    return ConnectionConfig(name, driver, options, retry, tuple(plugins), where, coordination)


def load_settings(data: Mapping[str, Any], source: str = "<mapping>") -> Settings:
    """Validate a configuration mapping (the parsed TOML) into :class:`Settings`.

    :raises ConfigError: naming the source, the key and what is expected.
    """
    if not isinstance(data, Mapping):
        raise ConfigError(f"{source}: configuration must be a table, got {type(data).__name__}")
    unknown = set(data) - _TOP_KEYS
    if unknown:
        raise ConfigError(
            f"{source}: unknown key(s) {', '.join(sorted(unknown))}; expected "
            "`imports = [...]`, `[queues.<name>]` and `[schedules.<name>]` tables"
        )
    imports = data.get("imports", [])
    if not isinstance(imports, list) or not all(isinstance(i, str) for i in imports):
        raise ConfigError(f"{source}: 'imports' must be a list of module names, got {imports!r}")
    queues = data.get("queues")
    if queues is None:
        raise ConfigError(f"{source}: no [queues.<name>] table; add at least [queues.default]")
    if not isinstance(queues, Mapping) or not queues:
        raise ConfigError(f"{source}: 'queues' must hold one table per connection name")
    connections = {name: _connection(name, table, source) for name, table in queues.items()}
    for config in connections.values():
        if config.coordination is not None and config.coordination not in connections:
            raise ConfigError(
                f"{config.where}: 'coordination' names connection {config.coordination!r}, "
                f"which is not configured; configured: {', '.join(sorted(connections))}"
            )
    return Settings(connections, tuple(imports), source, _schedules(data, source))


def _schedules(data: Mapping[str, Any], source: str) -> dict[str, Mapping[str, Any]]:
    tables = data.get("schedules", {})
    if not isinstance(tables, Mapping):
        raise ConfigError(f"{source}: 'schedules' must hold one table per schedule name")
    found: dict[str, Mapping[str, Any]] = {}
    for name, table in tables.items():
        where = f"{source} [schedules.{name}]"
        if not isinstance(table, Mapping):
            raise ConfigError(f'{where}: must be a table with message = "..." and cron = "..."')
        unknown = set(table) - _SCHEDULE_KEYS
        if unknown:
            raise ConfigError(
                f"{where}: unknown key(s) {', '.join(sorted(unknown))}; a schedule takes "
                f"{', '.join(sorted(_SCHEDULE_KEYS))}"
            )
        found[name] = _expand(dict(table), where)
    return found


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(f"{path}: not valid TOML: {exc}") from exc
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read: {exc}") from exc


def find_config(path: str | os.PathLike[str] | None = None) -> Settings:
    """Find and load the configuration, following the documented order of sources."""
    if path is None:
        path = os.environ.get("PASHQ_CONFIG") or None
    if path is not None:
        file = Path(path)
        data = _read_toml(file)
        if file.name == "pyproject.toml":
            section = data.get("tool", {}).get("pashq")
            if section is None:
                raise ConfigError(f"{file}: no [tool.pashq] table")
            return load_settings(section, f"{file} [tool.pashq]")
        return load_settings(data, str(file))
    local = Path("pashq.toml")
    if local.is_file():
        return load_settings(_read_toml(local), str(local))
    pyproject = Path("pyproject.toml")
    if pyproject.is_file():
        section = _read_toml(pyproject).get("tool", {}).get("pashq")
        if section is not None:
            return load_settings(section, f"{pyproject} [tool.pashq]")
    return load_settings(DEFAULT_CONFIG, "<built-in default>")


def parse_options(cls: type[T], options: Mapping[str, Any], where: str) -> T:
    """Validate a driver's options into the attrs class ``cls``.

    Unknown keys, missing required keys and values of the wrong type raise
    :class:`ConfigError` naming ``where`` and the key. Field types supported: ``str``,
    ``int``, ``float``, ``bool``, their ``| None`` forms, and ``dict``/``list`` of those.

    :param cls: an attrs class whose fields are the accepted keys.
    :param options: the driver keys from ``[queues.<name>]``.
    :param where: where they were read (``connection.where``).
    """
    fields = {f.name: f for f in attrs.fields(cls)}  # type: ignore[arg-type]
    unknown = set(options) - set(fields)
    if unknown:
        raise ConfigError(
            f"{where}: unknown option(s) {', '.join(sorted(unknown))}; "
            f"this driver accepts: type, max_attempts, retry_delay, retry_delay_max, time_limit, "
            f"plugins, "
            f"{', '.join(sorted(fields))}"
        )
    values: dict[str, Any] = {}
    for name, value in options.items():
        values[name] = _coerce(value, fields[name].type, name, where)
    try:
        return cls(**values)
    except TypeError as exc:
        missing = [n for n, f in fields.items() if f.default is attrs.NOTHING and n not in values]
        raise ConfigError(f"{where}: missing option(s) {', '.join(missing) or exc}") from exc
    except ValueError as exc:
        raise ConfigError(f"{where}: {exc}") from exc


_SIMPLE: dict[str, tuple[type[Any], ...]] = {
    "str": (str,),
    "int": (int,),
    "float": (int, float),
    "bool": (bool,),
}


_BOOL_TEXT = {
    "true": True, "yes": True, "on": True, "1": True,
    "false": False, "no": False, "off": False, "0": False,
}  # fmt: skip


def _annotation_text(annotation: Any) -> str:
    """``float | None`` -> ``"float|None"``, whether the annotation is a string or a type."""
    if isinstance(annotation, str):
        text = annotation
    elif isinstance(annotation, type):
        text = annotation.__name__
    else:  # float | None, list[str], typing.Optional[float]
        text = str(annotation)
    text = text.replace(" ", "").replace("typing.", "")
    if text.startswith("Optional[") and text.endswith("]"):
        text = text.removeprefix("Optional[").removesuffix("]") + "|None"
    return text


def _from_text(value: str, base: str) -> Any:
    """Convert text (what ``${VAR}`` gives) for a number or bool field, if it fits."""
    if base == "bool":
        return _BOOL_TEXT.get(value.strip().lower(), value)
    try:
        return int(value) if base == "int" else float(value)
    except ValueError:
        return value


def _shown(key: str, value: Any) -> str:
    """How a bad value appears in an error: its type only, for secret-looking keys; the
    ``${VAR}`` template, for values read from the environment."""
    if isinstance(value, _FromEnvironment):
        return f"{value.template!r} (from the environment)"
    return type(value).__name__ if is_secret_key(key) else repr(redact(value))


def _coerce(value: Any, annotation: Any, key: str, where: str) -> Any:
    text = _annotation_text(annotation)
    optional = text.endswith("|None") or text.startswith("None|")
    base = text.removesuffix("|None").removeprefix("None|")
    if value is None and optional:
        return None
    if base.startswith(("dict", "Mapping")):
        if not isinstance(value, dict):
            raise ConfigError(f"{where}: '{key}' must be a table, got {_shown(key, value)}")
        return dict(value)
    if base.startswith(("list", "tuple", "Sequence")):
        if not isinstance(value, list):
            raise ConfigError(f"{where}: '{key}' must be a list, got {_shown(key, value)}")
        return tuple(value) if base.startswith("tuple") else list(value)
    kinds = _SIMPLE.get(base)
    if kinds is None:
        return value
    shown = _shown(key, value)
    if isinstance(value, str) and base != "str":
        value = _from_text(value, base)  # ${VAR} always expands to text
    if isinstance(value, bool) and base != "bool":
        kinds = ()
    if not isinstance(value, kinds):
        raise ConfigError(f"{where}: '{key}' must be {base}, got {shown}")
    if base == "float":
        if not math.isfinite(value):
            raise ConfigError(f"{where}: '{key}' must be a finite number, got {shown}")
        return float(value)
    return str(value) if base == "str" else value
