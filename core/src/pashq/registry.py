"""The registry of message type names.

The consumer builds only classes registered here: the wire names a type, never code to
import. Classes register themselves when defined (``class Ping(Message, type_name=...)``).
"""

from __future__ import annotations

import threading
from typing import TYPE_CHECKING

from pashq.errors import RegistryError, UnknownMessageTypeError

if TYPE_CHECKING:
    from pashq.message import Message

__all__ = ["lookup", "register", "registered_types", "unregister"]

_types: dict[str, type[Message]] = {}
_lock = threading.Lock()


def register(type_name: str, cls: type[Message]) -> None:
    """Register ``cls`` under ``type_name``.

    Re-registering the same class (same module and qualified name, as ``attrs.define``
    does when it rebuilds a slotted class) replaces the entry.

    :raises RegistryError: the name belongs to another class.
    """
    if not type_name or not isinstance(type_name, str):
        raise RegistryError(f"{cls.__qualname__}: type_name must be a non-empty string")
    with _lock:
        existing = _types.get(type_name)
        if existing is not None and (existing.__module__, existing.__qualname__) != (
            cls.__module__,
            cls.__qualname__,
        ):
            raise RegistryError(
                f"message type name {type_name!r} is already used by "
                f"{existing.__module__}.{existing.__qualname__}; give "
                f"{cls.__module__}.{cls.__qualname__} its own type_name=..."
            )
        _types[type_name] = cls


def unregister(type_name: str) -> None:
    """Remove a type name from the registry (tests, hot reload)."""
    with _lock:
        _types.pop(type_name, None)


def lookup(type_name: str) -> type[Message]:
    """Return the class registered under ``type_name``.

    :raises UnknownMessageTypeError: nothing is registered under that name.
    """
    try:
        return _types[type_name]
    except KeyError:
        raise UnknownMessageTypeError(
            f"unknown message type {type_name!r}: no class with that type_name is imported "
            "in this process (add its module to `imports` in the config or pass --import)"
        ) from None


def registered_types() -> dict[str, type[Message]]:
    """Return a copy of the registry: type name -> class."""
    with _lock:
        return dict(_types)
