"""Exception classes raised by pashq.

Every error pashq raises on purpose derives from :class:`PashqError`, and its message names
what went wrong (the queue, the key, the id, the file) and what to do about it.
"""

from __future__ import annotations

from collections.abc import Sequence

__all__ = [
    "ConfigError",
    "DriverError",
    "DriverNotFoundError",
    "DuplicateDriverError",
    "EnvelopeError",
    "MessageRejectedError",
    "MessageTooLargeError",
    "MoveError",
    "PartialPushError",
    "PashqError",
    "QueueNameError",
    "QueueNotFoundError",
    "RegistryError",
    "SerializationError",
    "TimeLimitExceeded",
    "UnknownMessageTypeError",
    "UnsupportedError",
]


class PashqError(Exception):
    """Base class of every error pashq raises on purpose."""


class ConfigError(PashqError):
    """The configuration is wrong: a missing or unknown key, a bad value, an unreadable file."""


class QueueNameError(ConfigError, ValueError):
    """A queue name that the connection's backend cannot hold (length, characters)."""


class DriverNotFoundError(ConfigError):
    """A configuration names a driver (or plugin) that no installed distribution provides."""


class DuplicateDriverError(ConfigError):
    """Two installed distributions register the same driver (or plugin) name."""


class RegistryError(PashqError):
    """A message class cannot be registered (for example, its type name is already taken)."""


class EnvelopeError(PashqError):
    """Bytes read from a queue are not a valid pashq envelope (version 1)."""


class UnknownMessageTypeError(PashqError):
    """An envelope names a message type that is not registered in this process."""


class SerializationError(PashqError):
    """A message's body cannot be turned into its class, or the class into a body."""


class UnsupportedError(PashqError):
    """The connection's driver lacks a capability the call needs (delays, stats, ...)."""


class DriverError(PashqError):
    """A driver failed to talk to its backend (unreachable server, rejected request, ...)."""


class QueueNotFoundError(DriverError):
    """The backend has no such queue (or table) and the driver will not create it."""


class PartialPushError(DriverError):
    """A batched push failed part-way: some messages were stored, the others were not.

    :ivar stored: ids of the messages the backend confirmed (they will be delivered).
    :ivar not_stored: ids of the messages that were not stored (dispatch them again).
    """

    def __init__(self, message: str, stored: Sequence[str], not_stored: Sequence[str]) -> None:
        super().__init__(message)
        self.stored: list[str] = list(stored)
        self.not_stored: list[str] = list(not_stored)


class MessageTooLargeError(DriverError):
    """A message is larger than the backend accepts."""


class MoveError(PashqError):
    """``pashq move`` cannot start or finish: a bad ``CONNECTION:QUEUE``, the same queue on
    both sides, a side that cannot take part (no consumer, not persistent, no dead letters)."""


class MessageRejectedError(PashqError):
    """A message run inline (``sync`` driver) returned ``False`` from ``validate_message()``."""


class TimeLimitExceeded(PashqError):
    """A handler ran past its time limit (``time_limit`` of the message class or connection).

    Raised inside a sync handler's thread (an async handler is cancelled instead); the
    delivery counts as a failed attempt with the reason ``time limit of N s exceeded``.
    """

    def __init__(self, seconds: float | None = None) -> None:
        self.seconds = seconds
        text = "time limit exceeded" if seconds is None else f"time limit of {seconds:g} s exceeded"
        super().__init__(text)
