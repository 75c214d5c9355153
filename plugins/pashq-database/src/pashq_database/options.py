"""The driver's options (the keys of a ``[queues.<name>]`` table with ``type = "database"``)."""

from __future__ import annotations

import re
from typing import Any

import attrs

__all__ = ["DEFAULT_URL", "DatabaseOptions"]

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
