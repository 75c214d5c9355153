"""Finding drivers and plugins through entry points.

Drivers live in the ``pashq.drivers`` group (the entry-point name is the ``type`` users
write in config), middleware in ``pashq.plugins``. Two distributions claiming one name is
an error naming both; an unknown name lists what is installed and, for first-party drivers,
the ``pip install`` that brings it.
"""

from __future__ import annotations

import functools
from importlib.metadata import EntryPoint, entry_points
from typing import Any

import attrs

from pashq.errors import ConfigError, DriverNotFoundError, DuplicateDriverError

__all__ = ["DRIVER_GROUP", "FIRST_PARTY", "PLUGIN_GROUP", "Found", "find", "installed"]

DRIVER_GROUP = "pashq.drivers"
PLUGIN_GROUP = "pashq.plugins"
COMMAND_GROUP = "pashq.commands"
#: First-party drivers that ship as their own distribution.
FIRST_PARTY = {
    "database": "pashq-database",
    "rabbitmq": "pashq-rabbitmq",
    "redis": "pashq-redis",
    "sqs": "pashq-sqs",
}


@attrs.frozen
class Found:
    """An installed entry point: its name, distribution and version, and how to load it."""

    name: str
    distribution: str
    version: str
    entry_point: EntryPoint

    def load(self) -> Any:
        """Import and return the object the entry point names."""
        return self.entry_point.load()

    def load_checked(self, where: str = "") -> Any:
        """Like :meth:`load`, but a broken entry point becomes a :class:`ConfigError`
        naming the distribution and the target."""
        try:
            return self.entry_point.load()
        except Exception as exc:
            prefix = f"{where}: " if where else ""
            raise ConfigError(
                f"{prefix}{self.entry_point.group} entry point {self.name!r} of "
                f"{self.distribution} {self.version} ({self.entry_point.value}) cannot be "
                f"loaded: {type(exc).__name__}: {exc}; reinstall or upgrade {self.distribution}"
            ) from exc


@functools.cache
def installed(group: str) -> dict[str, Found]:
    """Return the entry points of ``group`` by name.

    :raises DuplicateDriverError: two distributions register the same name.
    """
    found: dict[str, Found] = {}
    for ep in entry_points(group=group):
        dist = ep.dist
        name = dist.metadata["Name"] if dist is not None else "<unknown distribution>"
        version = dist.version if dist is not None else "?"
        item = Found(ep.name, name, version, ep)
        previous = found.get(ep.name)
        if previous is not None and previous.distribution != name:
            raise DuplicateDriverError(
                f"{group} name {ep.name!r} is registered by two distributions: "
                f"{previous.distribution} {previous.version} ({previous.entry_point.value}) and "
                f"{name} {version} ({ep.value}); uninstall one of them"
            )
        found[ep.name] = item
    return found


def find(group: str, name: str, where: str = "") -> Found:
    """Return the entry point ``name`` of ``group``.

    :raises DriverNotFoundError: naming the installed choices and the install command.
    """
    items = installed(group)
    if name in items:
        return items[name]
    kind = "driver" if group == DRIVER_GROUP else "plugin"
    prefix = f"{where}: " if where else ""
    hint = ""
    if group == DRIVER_GROUP and name in FIRST_PARTY:
        hint = f": pip install {FIRST_PARTY[name]}"
    choices = ", ".join(sorted(items)) or "none"
    raise DriverNotFoundError(
        f"{prefix}{kind} {name!r} is not installed{hint} (installed {kind}s: {choices})"
    )
