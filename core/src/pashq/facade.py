"""The process-wide entry points: :func:`configure`, :func:`queue` and :func:`close`."""

from __future__ import annotations

import importlib
import os
import threading
import traceback
from collections.abc import Mapping
from typing import Any

from pashq.config import Settings, find_config, load_settings
from pashq.connection import Connection
from pashq.errors import ConfigError

__all__ = ["close", "configure", "import_messages", "queue", "reset", "settings"]

_lock = threading.RLock()
_settings: Settings | None = None
_connections: dict[str, Connection] = {}


def configure(
    path_or_mapping: str | os.PathLike[str] | Mapping[str, Any] | None = None,
) -> Settings:
    """Load the configuration (closing connections opened under the previous one).

    :param path_or_mapping: a TOML file path, a mapping shaped like the TOML, or ``None``
        to search ``PASHQ_CONFIG``, ``./pashq.toml``, ``[tool.pashq]`` in
        ``./pyproject.toml``, then fall back to SQLite through the database driver.
    :returns: the validated settings.
    :raises ConfigError: naming the file, the key and the fix.
    """
    global _settings
    if isinstance(path_or_mapping, Mapping):
        new = load_settings(path_or_mapping, "<mapping passed to pashq.configure>")
    else:
        new = find_config(path_or_mapping)
    with _lock:
        close()
        _settings = new
    return new


def reset() -> None:
    """Close every connection and forget the configuration: the next use discovers it
    again, as in a fresh process (for tests)."""
    global _settings
    with _lock:
        close()
        _settings = None


def settings() -> Settings:
    """Return the current settings, discovering them on first use."""
    global _settings
    with _lock:
        if _settings is None:
            _settings = find_config()
        return _settings


def queue(name: str = "default") -> Connection:
    """Return the connection called ``name``, opening it on first use.

    :raises ConfigError: no such connection is configured (the message lists those that are).
    """
    with _lock:
        found = _connections.get(name)
        if found is not None:
            return found
        current = settings()
        config = current.connections.get(name)
        if config is None:
            raise ConfigError(
                f"{current.source}: no connection named {name!r} "
                f"(configured: {', '.join(sorted(current.connections))}); "
                f"add a [queues.{name}] table"
            )
        connection = Connection(config)
        _connections[name] = connection
        return connection


def close() -> None:
    """Close every open connection (they reopen on next use)."""
    with _lock:
        connections = list(_connections.values())
        _connections.clear()
    for connection in connections:
        connection.close()


def _raised_at(exc: BaseException) -> str:
    """`` (at file:line)`` of the innermost frame that raised ``exc``, or ``""``."""
    frames = traceback.extract_tb(exc.__traceback__)
    return f" (at {frames[-1].filename}:{frames[-1].lineno})" if frames else ""


def import_messages(modules: tuple[str, ...] | list[str] | None = None) -> None:
    """Import the modules that define message classes (the config's ``imports`` by default).

    :raises ConfigError: a module cannot be imported; names it and the error.
    """
    names = settings().imports if modules is None else modules
    for name in names:
        try:
            importlib.import_module(name)
        except ImportError as exc:
            raise ConfigError(f"cannot import message module {name!r}: {exc}") from exc
        except Exception as exc:  # the module itself is broken: say where, not a traceback
            raise ConfigError(
                f"importing message module {name!r} failed: {type(exc).__name__}: {exc}"
                f"{_raised_at(exc)}"
            ) from exc
