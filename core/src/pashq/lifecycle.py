"""The message's whole life as plugins see it: dispatch items, the message context
(:func:`pashq.current`) and the driving of ``pashq_process`` wrappers.

``pashq_dispatch`` is an ordinary pluggy hook (the core's own implementation serializes and
pushes, innermost). ``pashq_process`` wraps work that may be an ``async def`` handler on the
worker's event loop, which a synchronous pluggy call cannot wait for, so the core drives its
``wrapper=True`` implementations itself, in pluggy's order (:func:`run_wrappers` and
:func:`arun_wrappers`).
"""

from __future__ import annotations

import contextvars
import time
from collections.abc import Callable, Generator, Mapping
from datetime import datetime
from typing import TYPE_CHECKING, Any

import attrs

from pashq.envelope import HEADERS_LIMIT, Envelope, check_headers
from pashq.errors import ConfigError, EnvelopeError, PashqError

if TYPE_CHECKING:
    from pashq.message import Message

__all__ = [
    "RESERVED_HEADER_PREFIX",
    "DispatchItem",
    "MessageContext",
    "check_user_headers",
    "current",
]


#: Header names starting with this (any case) belong to pashq and its own plugins.
RESERVED_HEADER_PREFIX = "pashq-"


def check_user_headers(headers: object) -> dict[str, str]:
    """Check headers given to ``dispatch(headers=...)`` and return them as a new dict.

    :raises EnvelopeError: not a mapping of str to str, more than 64, a bad name, a value
        over 8192 characters, or a name with the reserved ``pashq-`` prefix.
    """
    if not isinstance(headers, Mapping):
        raise EnvelopeError(
            f"headers must be a mapping of str to str, got {type(headers).__name__}"
        )
    result: dict[str, str] = {}
    for name, value in headers.items():
        if not isinstance(name, str) or not isinstance(value, str):
            raise EnvelopeError(
                f"headers must be str names and str values, got {name!r}: "
                f"{type(value).__name__} (convert numbers and ids with str())"
            )
        if name[:6].lower() == RESERVED_HEADER_PREFIX:
            raise EnvelopeError(
                f"header {name!r}: names starting with {RESERVED_HEADER_PREFIX!r} are reserved "
                "for pashq; choose another name"
            )
        result[name] = value
    if len(result) > HEADERS_LIMIT:
        raise EnvelopeError(f"{len(result)} headers given; the most is {HEADERS_LIMIT}")
    check_headers(result)
    return result


@attrs.define(slots=True, eq=False)
class DispatchItem:
    """One message of a ``pashq_dispatch`` batch, before serialization.

    A wrapper may add to ``envelope.headers`` (a plain ``dict``) before it yields.

    :ivar message: the message instance.
    :ivar envelope: the envelope about to be serialized (id, type, body, created_at, headers).
    :ivar delay: seconds before it may be delivered (0 = at once).
    :ivar priority: 0 to 9, higher first (0 on drivers without priorities).
    """

    message: Message
    envelope: Envelope
    delay: float = 0.0
    priority: int = 0

    @property
    def id(self) -> str:
        """The message id (the envelope's)."""
        return self.envelope.id

    @property
    def headers(self) -> dict[str, str]:
        """The envelope's headers, to read or add to before the push."""
        headers: dict[str, str] = self.envelope.headers  # type: ignore[assignment]
        return headers


class MessageContext:
    """What :func:`pashq.current` returns inside a handler (read-only by convention).

    :ivar id: the message id.
    :ivar queue: the queue it was pulled from.
    :ivar connection: the connection name.
    :ivar attempts: which delivery this is (1 for the first).
    :ivar headers: the envelope's headers (read-only).
    :ivar created_text: ``created_at`` as the envelope carries it.
    :ivar deadline: ``time.monotonic()`` value at which the time limit ends, or ``None``.
    """

    # A plain slotted class: one is built per delivery, and attrs' frozen __init__ costs
    # several times more.
    __slots__ = ("attempts", "connection", "created_text", "deadline", "headers", "id", "queue")

    def __init__(
        self,
        id: str,
        queue: str,
        connection: str,
        attempts: int,
        headers: Mapping[str, str],
        created_text: str,
        deadline: float | None = None,
    ) -> None:
        self.id = id
        self.queue = queue
        self.connection = connection
        self.attempts = attempts
        self.headers = headers
        self.created_text = created_text
        self.deadline = deadline

    def __repr__(self) -> str:
        return (
            f"MessageContext(id={self.id!r}, queue={self.queue!r}, "
            f"connection={self.connection!r}, attempts={self.attempts})"
        )

    @property
    def created_at(self) -> datetime | None:
        """When the message was dispatched (timezone-aware, UTC); ``None`` for a delivery
        that could not be decoded."""
        return datetime.fromisoformat(self.created_text) if self.created_text else None

    def time_left(self) -> float | None:
        """Seconds left before the time limit (may be negative), or ``None`` without one."""
        return None if self.deadline is None else self.deadline - time.monotonic()


_current: contextvars.ContextVar[MessageContext | None] = contextvars.ContextVar(
    "pashq_current", default=None
)
set_current = _current.set
reset_current = _current.reset


def current() -> MessageContext:
    """Return the delivery being handled: call it inside ``validate_message`` or
    ``process_message`` (sync or ``async def``), or in a ``pashq_process`` wrapper.

    :raises PashqError: outside a handler.
    """
    found = _current.get()
    if found is None:
        raise PashqError(
            "pashq.current() was called outside a message handler: call it inside "
            "validate_message() or process_message() of a message run by a worker"
        )
    return found


# -- pashq_process wrappers ---------------------------------------------------------------


Wrapper = Callable[..., Generator[None, Any, Any]]
#: A wrapper called with (delivery, envelope, message), whatever arguments it names.
Caller = Callable[[Any, Any, Any], Generator[None, Any, Any]]
_ARGS = ("delivery", "envelope", "message")


def _caller(function: Wrapper, names: tuple[str, ...]) -> Caller:
    if names == _ARGS:
        return function
    unknown = [n for n in names if n not in _ARGS]
    if unknown:
        raise ConfigError(
            f"pashq_process wrapper {function!r} takes unknown arguments {unknown}; "
            f"it may take {', '.join(_ARGS)}"
        )
    if names == ("delivery",):
        return lambda delivery, envelope, message: function(delivery)
    if not names:
        return lambda delivery, envelope, message: function()
    picks = tuple(_ARGS.index(n) for n in names)

    def call(delivery: Any, envelope: Any, message: Any) -> Generator[None, Any, Any]:
        args = (delivery, envelope, message)
        return function(*[args[i] for i in picks])

    return call


def process_wrappers(hook: Any) -> list[Caller]:
    """Return the ``pashq_process`` wrappers in call order (outermost first), each
    callable as ``(delivery, envelope, message)``.

    :raises ConfigError: an implementation is not ``wrapper=True``.
    """
    caller = getattr(hook, "pashq_process", None)
    if caller is None:
        return []
    found = []
    for impl in reversed(caller.get_hookimpls()):  # pluggy calls the last registered first
        if not impl.wrapper:
            raise ConfigError(
                f"plugin {impl.plugin_name!r}: pashq_process must be a wrapper "
                "(@hookimpl(wrapper=True), a generator that yields once)"
            )
        found.append(_caller(impl.function, tuple(impl.argnames)))
    return found
