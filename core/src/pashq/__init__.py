"""pashq: typed message queues for Python.

Define messages as attrs classes deriving from :class:`Message`, dispatch them to named
queues on named connections, and run :class:`Worker` (or ``pashq work``) to process them.
Backends are drivers found through the ``pashq.drivers`` entry-point group.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from pashq.capabilities import Capabilities
from pashq.config import RetryPolicy, Settings, parse_options
from pashq.connection import Connection
from pashq.delivery import DeadLetter, Delivery, OutgoingMessage, QueueStats
from pashq.envelope import Envelope, decode_envelope, encode_envelope
from pashq.errors import (
    ConfigError,
    DriverError,
    DriverNotFoundError,
    DuplicateDriverError,
    EnvelopeError,
    MessageRejectedError,
    MessageTooLargeError,
    PartialPushError,
    PashqError,
    QueueNameError,
    QueueNotFoundError,
    RegistryError,
    SerializationError,
    TimeLimitExceeded,
    UnknownMessageTypeError,
    UnsupportedError,
)
from pashq.facade import close, configure, import_messages, queue, reset, settings
from pashq.hookspecs import hookimpl
from pashq.lifecycle import DispatchItem, MessageContext, current
from pashq.message import Message
from pashq.processing import Outcome, Result
from pashq.schedules import Schedule, Scheduler, schedule
from pashq.unique import Dispatched
from pashq.worker import Worker, WorkerStats

try:
    __version__ = version("pashq")
except PackageNotFoundError:  # pragma: no cover - running from a source tree
    __version__ = "0.0.0"

__all__ = [
    "Capabilities",
    "ConfigError",
    "Connection",
    "DeadLetter",
    "Delivery",
    "DispatchItem",
    "Dispatched",
    "DriverError",
    "DriverNotFoundError",
    "DuplicateDriverError",
    "Envelope",
    "EnvelopeError",
    "Message",
    "MessageContext",
    "MessageRejectedError",
    "MessageTooLargeError",
    "Outcome",
    "OutgoingMessage",
    "PartialPushError",
    "PashqError",
    "QueueNameError",
    "QueueNotFoundError",
    "QueueStats",
    "RegistryError",
    "Result",
    "RetryPolicy",
    "Schedule",
    "Scheduler",
    "SerializationError",
    "Settings",
    "TimeLimitExceeded",
    "UnknownMessageTypeError",
    "UnsupportedError",
    "Worker",
    "WorkerStats",
    "__version__",
    "close",
    "configure",
    "current",
    "decode_envelope",
    "encode_envelope",
    "hookimpl",
    "import_messages",
    "parse_options",
    "queue",
    "reset",
    "schedule",
    "settings",
]
