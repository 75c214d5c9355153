"""Turning one delivery into an outcome: decode, build, validate, process, decide.

Shared by the worker and the inline (``sync``) driver, so both follow one contract:
success -> ack; exception -> retry with backoff until ``max_attempts``, then dead letter;
``validate_message()`` False, an undecodable envelope, an unknown type or a body that does
not fit the class -> dead letter at once, with the reason.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import enum
import inspect
import threading
import traceback
from collections.abc import Awaitable
from typing import Any

import attrs

from pashq import registry
from pashq.config import RetryPolicy
from pashq.delivery import Delivery
from pashq.envelope import Envelope, decode_envelope
from pashq.errors import (
    EnvelopeError,
    SerializationError,
    TimeLimitExceeded,
    UnknownMessageTypeError,
)
from pashq.message import Message, build_message
from pashq.retry import backoff_delay, policy_for
from pashq.serializer import default_only
from pashq.text import REASON_LIMIT, TRACEBACK_LIMIT, safe_text

__all__ = [
    "Outcome",
    "Prepared",
    "Processor",
    "Result",
    "close_thread_loop",
    "run_awaitable",
]

_loops = threading.local()


def run_awaitable(value: Awaitable[Any]) -> Any:
    """Run a coroutine returned by an ``async def`` handler on this thread's event loop.

    Called where an event loop is already running (``sync`` driver used from async code),
    it runs the coroutine on a loop in a helper thread and waits for it.
    """
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        with concurrent.futures.ThreadPoolExecutor(1) as pool:
            return pool.submit(asyncio.run, _awaited(value)).result()
    loop: asyncio.AbstractEventLoop | None = getattr(_loops, "loop", None)
    if loop is None or loop.is_closed():
        loop = asyncio.new_event_loop()
        _loops.loop = loop
    return loop.run_until_complete(value)


def close_thread_loop() -> None:
    """Close this thread's handler event loop, if :func:`run_awaitable` made one."""
    loop: asyncio.AbstractEventLoop | None = getattr(_loops, "loop", None)
    if loop is not None and not loop.is_closed():
        loop.close()
    _loops.loop = None


async def _awaited(value: Awaitable[Any]) -> Any:
    return await value


class Outcome(enum.Enum):
    """What the worker does with a delivery after processing it."""

    ACK = "ack"
    RETRY = "retry"
    DEAD = "dead"
    RELEASE = "release"  # not started: hand back at once, without counting a failure


def _safe_reason(text: str) -> str:
    return safe_text(text, REASON_LIMIT)


def _safe_traceback(text: str | None) -> str | None:
    return None if text is None else safe_text(text, TRACEBACK_LIMIT, keep="tail")


@attrs.frozen(slots=True)
class Result:
    """The outcome of one delivery, with the retry delay or dead-letter reason.

    ``timed_out``: the attempt failed by running past its time limit.
    The reason and traceback are made storable on every backend (:func:`pashq.text.safe_text`):
    no NUL, no lone surrogates, capped in length with a marker.
    """

    delivery: Delivery
    outcome: Outcome
    delay: float = 0.0
    reason: str = attrs.field(default="", converter=_safe_reason)
    traceback: str | None = attrs.field(default=None, converter=_safe_traceback)
    timed_out: bool = False


def _call(value: Any) -> Any:
    if value is None or value is True or value is False:  # the sync handlers' answers
        return value
    return run_awaitable(value) if inspect.isawaitable(value) else value


async def _acall(value: Any) -> Any:
    if inspect.isawaitable(value):
        return await value
    return value


@attrs.define(slots=True, eq=False)
class Prepared:
    """A decoded delivery ready to run: its message, retry policy and how to run it.

    :ivar is_async: ``process_message`` is ``async def`` (runs on the worker's event loop).
    :ivar time_limit: seconds the handler may run, or ``None``.
    """

    delivery: Delivery
    message: Message
    policy: RetryPolicy
    is_async: bool

    @property
    def time_limit(self) -> float | None:
        """The effective time limit (class, then worker, then connection)."""
        return self.policy.time_limit


class Processor:
    """Applies the delivery contract to deliveries of one connection."""

    def __init__(self, hook: Any, policy: RetryPolicy) -> None:
        """:param hook: the connection's hook relay. :param policy: its retry policy."""
        self.hook = hook
        self.policy = policy
        self._policies: dict[type[Message], RetryPolicy] = {}
        self._async: dict[type[Message], bool] = {}
        # Checked once per Processor (one per Worker.run): plugins are registered by then.
        self._deserialize = default_only(hook.pashq_deserialize, decode_envelope)

    def policy_of(self, cls: type[Message]) -> RetryPolicy:
        """Return the retry policy for a message class (cached)."""
        found = self._policies.get(cls)
        if found is None:
            found = self._policies[cls] = policy_for(cls, self.policy)
        return found

    def decode(self, body: bytes) -> tuple[Envelope, Message]:
        """Decode bytes into the envelope and the message instance.

        :raises EnvelopeError, UnknownMessageTypeError, SerializationError: poison input.
        """
        envelope: Envelope = self._deserialize(data=body)
        cls = registry.lookup(envelope.type)
        return envelope, build_message(cls, envelope.body)

    def prepare(self, delivery: Delivery) -> Result | Prepared:
        """Decode a delivery: a :class:`Result` when it is settled without running (poison,
        crash loop), else the :class:`Prepared` message. Never raises ``Exception``."""
        if delivery.attempts < 1:  # a hostile or broken attempts header/column: never below 1
            delivery.attempts = 1
        try:
            envelope, message = self.decode(delivery.body)
        except EnvelopeError as exc:
            return Result(delivery, Outcome.DEAD, reason=f"undecodable envelope: {exc}")
        except UnknownMessageTypeError as exc:
            return Result(delivery, Outcome.DEAD, reason=str(exc))
        except SerializationError as exc:
            return Result(delivery, Outcome.DEAD, reason=f"body does not fit its class: {exc}")
        except Exception as exc:  # a serializer plugin failing: treat as poison, keep the bytes
            return Result(
                delivery,
                Outcome.DEAD,
                reason=f"cannot decode message: {type(exc).__name__}: {exc}",
                traceback=traceback.format_exc(),
            )
        if envelope.id != delivery.id:
            # The envelope's id is the message's identity on every driver; a transport id
            # (a foreign producer's AMQP message_id, a missing pashq-id) never replaces it.
            delivery.id = envelope.id
        cls = type(message)
        policy = self.policy_of(cls)
        if delivery.attempts > policy.max_attempts:
            # Only a worker that died mid-message (crash, OOM kill) lets a delivery exceed
            # max_attempts: stop the crash loop here instead of running it again.
            return Result(
                delivery,
                Outcome.DEAD,
                reason=(
                    f"delivered {delivery.attempts} times, more than max_attempts="
                    f"{policy.max_attempts}: a worker probably died while processing it"
                ),
            )
        is_async = self._async.get(cls)
        if is_async is None:
            is_async = self._async[cls] = inspect.iscoroutinefunction(cls.process_message)
        return Prepared(delivery, message, policy, is_async)

    def failure(self, prepared: Prepared, exc: BaseException, tb: str | None = None) -> Result:
        """The result of a failed attempt: a retry with backoff, or the dead letters."""
        delivery, policy = prepared.delivery, prepared.policy
        text = f"{type(exc).__name__}: {exc}"
        timed_out = isinstance(exc, TimeLimitExceeded)
        if delivery.attempts >= policy.max_attempts:
            return Result(
                delivery,
                Outcome.DEAD,
                reason=f"failed {delivery.attempts} time(s), last: {text}",
                traceback=tb,
                timed_out=timed_out,
            )
        return Result(
            delivery,
            Outcome.RETRY,
            delay=backoff_delay(delivery.attempts, policy),
            reason=text,
            timed_out=timed_out,
        )

    def execute(self, prepared: Prepared) -> Result:
        """Validate and process in this thread (an ``async def`` handler runs on this
        thread's event loop). A :class:`TimeLimitExceeded` raised into the thread by the
        worker's watchdog is a failed attempt. Never raises ``Exception``."""
        message = prepared.message
        try:
            if _call(message.validate_message()) is False:
                return Result(
                    prepared.delivery, Outcome.DEAD, reason="validate_message() returned False"
                )
            _call(message.process_message())
        except TimeLimitExceeded:
            return self.failure(prepared, TimeLimitExceeded(prepared.time_limit))
        except Exception as exc:
            return self.failure(prepared, exc, traceback.format_exc())
        return Result(prepared.delivery, Outcome.ACK)

    async def execute_async(self, prepared: Prepared) -> Result:
        """Validate and process on the running event loop, cancelled at the time limit.
        Never raises ``Exception``."""
        message = prepared.message
        limit = prepared.time_limit
        deadline = asyncio.timeout(limit)
        try:
            async with deadline:
                if await _acall(message.validate_message()) is False:
                    return Result(
                        prepared.delivery, Outcome.DEAD, reason="validate_message() returned False"
                    )
                await _acall(message.process_message())
        except TimeoutError as exc:
            if deadline.expired():
                return self.failure(prepared, TimeLimitExceeded(limit))
            return self.failure(prepared, exc, traceback.format_exc())
        except Exception as exc:
            return self.failure(prepared, exc, traceback.format_exc())
        return Result(prepared.delivery, Outcome.ACK)

    def run(self, delivery: Delivery) -> Result:
        """Process one delivery in this thread and return what to do with it.

        Never raises ``Exception``.
        """
        prepared = self.prepare(delivery)
        if isinstance(prepared, Result):
            return prepared
        return self.execute(prepared)
