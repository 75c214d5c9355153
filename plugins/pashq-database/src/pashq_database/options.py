"""The driver's options (the keys of a ``[queues.<name>]`` table with ``type = "database"``)."""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = ["DEFAULT_URL", "DatabaseOptions", "check_engine_options"]

#: The database used when no ``url`` is configured.
DEFAULT_URL = "sqlite:///pashq.sqlite3"
_PREFIX = re.compile(r"[A-Za-z_][A-Za-z0-9_]{0,39}\Z")


def _positive(instance: object, attribute: attrs.Attribute[Any], value: float) -> None:
    if value <= 0:
        raise ValueError(f"'{attribute.name}' must be > 0, got {value!r}")


def _prefix(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if not _PREFIX.match(value):
        raise ValueError(
            f"'table_prefix' must be letters, digits and underscores (at most 40, not "
            f"starting with a digit), got {value!r}"
        )


def _batch(instance: object, attribute: attrs.Attribute[Any], value: int) -> None:
    if not 1 <= value <= 5000:
        raise ValueError(f"'batch_size' must be between 1 and 5000, got {value!r}")


#: Types of the :func:`sqlalchemy.create_engine` keywords a TOML table can give; checked
#: (and converted from ``${VAR}`` text) before the engine is built, so an error names the key.
_ENGINE_OPTION_TYPES: dict[str, tuple[type, ...]] = {
    "pool_size": (int,),
    "max_overflow": (int,),
    "pool_recycle": (int, float),
    "pool_timeout": (int, float),
    "pool_pre_ping": (bool,),
    "pool_use_lifo": (bool,),
    "echo": (bool, str),
    "echo_pool": (bool, str),
    "hide_parameters": (bool,),
    "isolation_level": (str,),
    "pool_reset_on_return": (str,),
    "query_cache_size": (int,),
    "insertmanyvalues_page_size": (int,),
    "label_length": (int,),
    "max_identifier_length": (int,),
    "logging_name": (str,),
    "pool_logging_name": (str,),
    "connect_args": (dict,),
    "execution_options": (dict,),
}
_TEXT_TO_BOOL = {"true": True, "yes": True, "on": True, "1": True,
                 "false": False, "no": False, "off": False, "0": False}  # fmt: skip


def _from_text(value: str, kinds: tuple[type, ...]) -> Any:
    """``${VAR}`` gives text: convert it for number and bool keys when it fits."""
    text = value.strip()
    if bool in kinds and text.lower() in _TEXT_TO_BOOL:
        return _TEXT_TO_BOOL[text.lower()]
    for kind in (int, float):
        if kind in kinds:
            try:
                return kind(text)
            except ValueError:
                pass
    return value


def check_engine_options(options: dict[str, Any], where: str) -> dict[str, Any]:
    """Return ``engine_options`` with known keys type-checked; raise ``ValueError`` naming
    the key (``'engine_options.pool_size' must be int, got 'five'``)."""
    checked: dict[str, Any] = {}
    for key, value in options.items():
        kinds = _ENGINE_OPTION_TYPES.get(key)
        if kinds is not None and value is not None:
            original = value
            if isinstance(value, str) and str not in kinds:
                value = _from_text(value, kinds)
            wrong = isinstance(value, bool) and bool not in kinds
            if key in ("echo", "echo_pool") and isinstance(value, str) and value != "debug":
                wrong = True
                kinds = (bool,)
            if wrong or not isinstance(value, kinds):
                names = (
                    "true, false or 'debug'"
                    if key in ("echo", "echo_pool")
                    else " or ".join(k.__name__ for k in kinds)
                )
                template = getattr(original, "template", None)  # from ${VAR}: never the value
                shown = (
                    f"{template!r} (from the environment)"
                    if template
                    else type(value).__name__
                    if key == "connect_args"
                    else repr(value)
                )
                raise ValueError(f"{where}: 'engine_options.{key}' must be {names}, got {shown}")
        checked[key] = value
    return checked


@attrs.frozen
class DatabaseOptions:
    """Options of the database driver.

    :ivar url: SQLAlchemy URL (``sqlite:///path``, ``postgresql+psycopg://...``,
        ``mysql+pymysql://...``).
    :ivar table_prefix: prefix of the two tables (``<prefix>messages``,
        ``<prefix>dead_letters``).
    :ivar lease: seconds a pulled message stays reserved before another worker may take it.
    :ivar poll_interval: longest pause between two claims of an idle worker (seconds).
    :ivar batch_size: most rows claimed per transaction and inserted per statement.
    :ivar create_tables: create missing tables on first use (default: on SQLite only).
    :ivar listen: use LISTEN/NOTIFY on PostgreSQL (psycopg 3) to wake idle workers.
    :ivar engine_options: keyword arguments passed to :func:`sqlalchemy.create_engine`.
    """

    url: str = DEFAULT_URL
    table_prefix: str = attrs.field(default="pashq_", validator=_prefix)
    lease: float = attrs.field(default=30.0, validator=_positive)
    poll_interval: float = attrs.field(default=1.0, validator=_positive)
    batch_size: int = attrs.field(default=500, validator=_batch)
    create_tables: bool | None = None
    listen: bool = True
    engine_options: dict[str, Any] = attrs.field(factory=dict)
