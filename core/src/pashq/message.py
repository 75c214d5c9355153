"""``pashq.Message``: the base class of typed messages.

A message is an attrs class deriving from :class:`Message`::

    @attrs.define
    class InvoicePaid(Message, type_name="billing.invoice_paid", queue="billing"):
        invoice_id: int
        amount: Decimal

        def process_message(self) -> None:
            mark_paid(self.invoice_id, self.amount)

    InvoicePaid(42, Decimal("9.99")).dispatch()

The seed framework's five methods keep their names: :meth:`Message.get_message`,
:meth:`Message.set_message`, :meth:`Message.validate_message`,
:meth:`Message.process_message` and :meth:`Message.dispatch`.
"""

from __future__ import annotations

import functools
import json
from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Any, ClassVar, Self

from pashq import registry
from pashq.converter import plain_structure_hook, structure, unstructure
from pashq.errors import RegistryError, SerializationError

if TYPE_CHECKING:
    pass

__all__ = ["Message", "body_of", "build_message"]


class Message:
    """Base class of every message: subclass it and decorate with ``@attrs.define``.

    Class keywords: ``type_name`` (the stable wire name, default ``module.QualName``),
    ``queue`` and ``connection`` (where :meth:`dispatch` sends by default), ``priority``
    (0 to 9, higher first, on drivers with priorities; kept as ``default_priority``),
    ``time_limit``
    (seconds a handler may run before it is interrupted and the attempt counts as failed;
    also settable as a class attribute).

    Class attributes (plain assignments, not attrs fields) tune retries for this class:
    ``max_attempts``, ``retry_delay``, ``retry_delay_max`` (seconds); ``None`` falls back to
    the connection's configuration, then to 5 / 1 s / 300 s. ``group_by`` and
    ``deduplicate_by`` name the fields used as ordering group and deduplication id on FIFO
    backends (or override :meth:`get_group_id` / :meth:`get_deduplication_id`).

    Coordination keywords (need a coordination store, see docs/unique-messages.md and
    docs/rate-limits.md): ``unique_for`` (seconds: a message whose :meth:`get_unique_key` is
    held is not pushed again; dispatch returns the id of the one queued), ``unique_until``
    (``"ack"``, the default: the key is held until the message is acked or dead-lettered;
    ``"start"``: until its processing starts), ``rate_limit`` (``"100/m"``: at most 100
    processing starts in any minute, across every worker) and ``max_concurrency`` (at most
    N running at once, across every worker), both per :meth:`get_limit_key`.
    """

    __slots__ = ()

    type_name: ClassVar[str] = ""
    default_queue: ClassVar[str] = "default"
    default_connection: ClassVar[str] = "default"
    default_priority: ClassVar[int | None] = None
    max_attempts: ClassVar[int | None] = None
    retry_delay: ClassVar[float | None] = None
    retry_delay_max: ClassVar[float | None] = None
    time_limit: ClassVar[float | None] = None
    group_by: ClassVar[str | None] = None
    deduplicate_by: ClassVar[str | None] = None
    unique_for: ClassVar[float | None] = None
    unique_until: ClassVar[str] = "ack"
    rate_limit: ClassVar[tuple[int, float] | None] = None
    rate_limit_text: ClassVar[str | None] = None
    max_concurrency: ClassVar[int | None] = None

    def __init_subclass__(
        cls,
        *,
        type_name: str | None = None,
        queue: str | None = None,
        connection: str | None = None,
        time_limit: float | None = None,
        priority: int | None = None,
        unique_for: float | None = None,
        unique_until: str | None = None,
        rate_limit: str | None = None,
        max_concurrency: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init_subclass__(**kwargs)
        # attrs rebuilds slotted classes from the class dict without the class keywords, so
        # the chosen name is stored in the dict where the rebuilt class finds it again.
        name = type_name or cls.__dict__.get("type_name") or f"{cls.__module__}.{cls.__qualname__}"
        cls.type_name = name
        if queue is not None:
            cls.default_queue = queue
        if connection is not None:
            cls.default_connection = connection
        if priority is not None:
            check_priority(priority, cls.__qualname__)
            cls.default_priority = priority
        if time_limit is not None:
            if not isinstance(time_limit, int | float) or not time_limit > 0:
                raise ValueError(
                    f"{cls.__qualname__}: time_limit must be a number of seconds > 0, "
                    f"got {time_limit!r}"
                )
            cls.time_limit = float(time_limit)
        if unique_for is not None:
            if type(unique_for) not in (int, float) or not unique_for > 0:
                raise ValueError(
                    f"{cls.__qualname__}: unique_for must be a number of seconds > 0, "
                    f"got {unique_for!r}"
                )
            cls.unique_for = float(unique_for)
        if unique_until is not None:
            if unique_until not in ("ack", "start"):
                raise ValueError(
                    f"{cls.__qualname__}: unique_until must be 'ack' (held until acked or "
                    f"dead-lettered) or 'start' (until processing starts), got {unique_until!r}"
                )
            if cls.unique_for is None:
                raise ValueError(f"{cls.__qualname__}: unique_until needs unique_for=<seconds>")
            cls.unique_until = unique_until
        if rate_limit is not None:
            from pashq.limits import parse_rate

            cls.rate_limit = parse_rate(rate_limit, cls.__qualname__)
            cls.rate_limit_text = rate_limit
        if max_concurrency is not None:
            if type(max_concurrency) is not int or max_concurrency < 1:
                raise ValueError(
                    f"{cls.__qualname__}: max_concurrency must be an int >= 1, "
                    f"got {max_concurrency!r}"
                )
            cls.max_concurrency = max_concurrency
        registry.register(name, cls)

    # -- the seed's five methods ---------------------------------------------------------

    def get_message(self) -> str:
        """Return the message body as text: by default the JSON of its fields.

        Override together with :meth:`set_message` for a custom body; a JSON object is
        stored as such in the envelope, any other text as a JSON string.
        """
        return json.dumps(unstructure(self), ensure_ascii=False, separators=(",", ":"))

    @classmethod
    def set_message(cls, value: str | Mapping[str, Any]) -> Self:
        """Build a message from its body (text or the decoded JSON object).

        :raises SerializationError: the body does not fit the class; names the field.
        """
        if isinstance(value, str):
            try:
                value = json.loads(value)
            except ValueError as exc:
                raise SerializationError(f"{cls.__qualname__}: body is not JSON: {exc}") from exc
        return structure(value, cls)

    def validate_message(self) -> bool | Awaitable[bool]:
        """Return ``False`` to reject the message: it is dead-lettered at once, never retried.

        May be ``async def``. The default accepts every message.
        """
        return True

    def process_message(self) -> Awaitable[None] | None:
        """Do the work. Raising means failure: retried with backoff, then dead-lettered.

        May be ``async def``.
        """
        raise NotImplementedError(f"{type(self).__qualname__} does not define process_message()")

    def dispatch(
        self,
        queue: str | None = None,
        *,
        connection: str | None = None,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> str:
        """Push this message and return its id.

        :param queue: the queue (default: the class's ``queue=``, else ``"default"``).
        :param connection: the configured connection name (default: the class's
            ``connection=``, else ``"default"``).
        :param delay: seconds before it may be delivered.
        :param headers: envelope headers: str names and values, at most 64, names not
            starting with ``pashq-`` (read them in the handler with ``pashq.current()``).
        :param priority: 0 to 9, higher first (default: the class's ``priority=``, else 0);
            drivers without priorities raise :class:`~pashq.errors.UnsupportedError`.
        :param options: driver-specific options (e.g. a database transaction).
        """
        from pashq.facade import queue as get_connection

        return get_connection(connection or self.default_connection).dispatch(
            self.default_queue if queue is None else queue,
            self,
            delay=delay,
            headers=headers,
            priority=priority,
            **options,
        )

    async def adispatch(
        self,
        queue: str | None = None,
        *,
        connection: str | None = None,
        delay: float | None = None,
        headers: Mapping[str, str] | None = None,
        priority: int | None = None,
        **options: Any,
    ) -> str:
        """Like :meth:`dispatch`, for async code: the push runs off the event loop."""
        from pashq.facade import queue as get_connection

        return await get_connection(connection or self.default_connection).adispatch(
            self.default_queue if queue is None else queue,
            self,
            delay=delay,
            headers=headers,
            priority=priority,
            **options,
        )

    # -- coordination ----------------------------------------------------------------------

    def get_unique_key(self) -> str:
        """Return the key that makes this message unique (classes with ``unique_for``).

        Default: the type name and the JSON of the message's body (keys sorted), so two
        messages with equal fields are duplicates. Override to narrow it, e.g.
        ``return f"sync:{self.account_id}"``.
        """
        body = body_of(self)
        text = json.dumps(body, sort_keys=True, ensure_ascii=False, separators=(",", ":"))
        return f"{type(self).type_name}:{text}"

    def get_limit_key(self) -> str | None:
        """Return the key that splits ``rate_limit`` and ``max_concurrency`` (default
        ``None``: one limit for the whole class), e.g. ``return str(self.account_id)``."""
        return None

    # -- FIFO support ----------------------------------------------------------------------

    def get_group_id(self) -> str | None:
        """Return the ordering group on FIFO backends (default: the ``group_by`` field)."""
        return None if self.group_by is None else str(getattr(self, self.group_by))

    def get_deduplication_id(self) -> str | None:
        """Return the deduplication id on FIFO backends (default: the ``deduplicate_by`` field)."""
        return None if self.deduplicate_by is None else str(getattr(self, self.deduplicate_by))


def check_priority(priority: object, where: str) -> int:
    """Return ``priority`` if it is an int from 0 to 9, else raise ``ValueError``."""
    if type(priority) is not int or not 0 <= priority <= 9:
        raise ValueError(f"{where}: priority must be an int from 0 to 9, got {priority!r}")
    return priority


_default_get_message = Message.get_message
_default_set_message = Message.set_message.__func__  # type: ignore[attr-defined]


def _check_attrs(cls: type[Message]) -> None:
    if "__attrs_attrs__" not in cls.__dict__:
        raise RegistryError(
            f"{cls.__module__}.{cls.__qualname__} must be decorated with @attrs.define "
            "(or @attrs.frozen) to be a pashq message"
        )


def uses_default_get_message(cls: type[Message]) -> bool:
    """Whether ``cls`` keeps the default ``get_message`` (its body is its attrs fields).

    :raises RegistryError: it does, and is not an attrs class.
    """
    if cls.get_message is _default_get_message:
        _check_attrs(cls)
        return True
    return False


def body_of(message: Message) -> Any:
    """Return the envelope body for ``message`` (JSON object, or text for custom bodies)."""
    cls = type(message)
    if cls.get_message is _default_get_message:
        _check_attrs(cls)
        return unstructure(message)
    text = message.get_message()
    if not isinstance(text, str):
        raise SerializationError(
            f"{cls.__qualname__}.get_message() must return str, got {type(text).__name__}"
        )
    if text.startswith("{"):
        try:
            value = json.loads(text)
        except ValueError:
            return text
        if isinstance(value, dict):
            return value
    return text


def message_builder(cls: type[Message]) -> Callable[[Any], Message]:
    """:func:`build_message` for ``cls``, with what can be decided once decided (the
    converter's hook of a class that keeps the default ``set_message``)."""
    if cls.set_message.__func__ is not _default_set_message:  # type: ignore[attr-defined]
        return functools.partial(build_message, cls)
    hook = plain_structure_hook(cls)

    def build(body: Any) -> Message:
        if type(body) is dict:
            try:
                return hook(body, cls)  # type: ignore[no-any-return]
            except Exception:  # build_message explains, naming every failing field
                pass
        return build_message(cls, body)

    return build


def validates(cls: type[Message]) -> bool:
    """Whether ``cls`` overrides ``validate_message`` (the default accepts every message)."""
    return cls.validate_message is not Message.validate_message


def build_message(cls: type[Message], body: Any) -> Message:
    """Build an instance of ``cls`` from an envelope body (the worker's way back).

    :raises SerializationError: the body does not fit; the message names the field.
    """
    if cls.set_message.__func__ is _default_set_message:  # type: ignore[attr-defined]
        if not isinstance(body, dict):
            raise SerializationError(
                f"{cls.__qualname__}: body must be a JSON object, got {type(body).__name__}"
            )
        return structure(body, cls)
    if not isinstance(body, str | dict):
        raise SerializationError(
            f"{cls.__qualname__}: body must be text or a JSON object, got {type(body).__name__}"
        )
    return cls.set_message(body)
