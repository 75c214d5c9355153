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
import logging
import threading
import time
import traceback
import types
from collections.abc import Awaitable, Callable, Generator, Mapping
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
from pashq.lifecycle import Caller, MessageContext, process_wrappers, reset_current, set_current
from pashq.limits import Gate
from pashq.message import Message, build_message, message_builder, validates
from pashq.retry import backoff_delay, policy_for
from pashq.serializer import default_only
from pashq.text import safe_reason, safe_traceback

__all__ = [
    "Outcome",
    "Prepared",
    "Processor",
    "Result",
    "close_thread_loop",
    "run_awaitable",
]

log = logging.getLogger("pashq.worker")
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
    DEFER = "defer"  # not started, over a rate limit or concurrency cap: back after ``delay``


@attrs.define(slots=True)
class Result:
    """The outcome of one delivery, with the retry delay or dead-letter reason.

    ``timed_out``: the attempt failed by running past its time limit. ``exception``: what
    the handler (or a ``pashq_process`` wrapper) raised, for an attempt that failed.
    A ``pashq_process`` wrapper changes the decision by returning another result
    (``attrs.evolve(result, outcome=Outcome.RETRY, delay=30.0)``).
    The reason and traceback are made storable on every backend (:func:`pashq.text.safe_text`):
    no NUL, no lone surrogates, capped in length with a marker.
    """

    delivery: Delivery
    outcome: Outcome
    delay: float = 0.0
    reason: str = ""
    traceback: str | None = None
    timed_out: bool = False
    exception: BaseException | None = attrs.field(default=None, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        # Made storable here rather than by converters: an ack (no reason, no traceback),
        # built once per delivery, then pays for two truth tests only.
        if self.reason:
            self.reason = safe_reason(self.reason)
        if self.traceback is not None:
            self.traceback = safe_traceback(self.traceback)


def _start(
    wrappers: list[Caller], delivery: Delivery, envelope: Envelope | None, message: Message | None
) -> tuple[list[Generator[None, Any, Any]], Exception | None]:
    """Run each wrapper up to its ``yield``, outermost first; stop at one that raises."""
    started: list[Generator[None, Any, Any]] = []
    for call in wrappers:
        try:
            gen = call(delivery, envelope, message)
            next(gen)
        except Exception as exc:
            return started, exc
        started.append(gen)
    return started, None


def _observer_failed(method: str, exc: Exception) -> None:
    log.error("a delivery observer failed in %s(): %s: %s", method, type(exc).__name__, exc)


_NO_HEADERS: Mapping[str, str] = types.MappingProxyType({})


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
    envelope: Envelope | None = None

    @property
    def time_limit(self) -> float | None:
        """The effective time limit (class, then worker, then connection)."""
        return self.policy.time_limit


@attrs.frozen(slots=True)
class _Kind:
    """Facts about one message class (a :class:`Processor` caches one per class)."""

    policy: RetryPolicy
    is_async: bool
    #: Rate limits, concurrency caps or unique keys apply (the gate must let it start).
    gated: bool
    #: Builds an instance from an envelope body (:func:`pashq.message.message_builder`).
    build: Callable[[Any], Message]
    #: The class overrides ``validate_message`` (else it is not called: it accepts all).
    validates: bool


class Processor:
    """Applies the delivery contract to deliveries of one connection."""

    def __init__(
        self, hook: Any, policy: RetryPolicy, connection: str = "", gate: Gate | None = None
    ) -> None:
        """:param hook: the connection's hook relay. :param policy: its retry policy.
        :param connection: the connection name (for :func:`pashq.current`).
        :param gate: rate limits, concurrency caps and unique keys (``None``: none)."""
        self.hook = hook
        self.gate = gate
        self.policy = policy
        self.connection = connection
        # Like the deserializer, the pashq_process wrappers are taken once per Processor.
        self._wrappers = process_wrappers(hook)
        asked = getattr(hook, "pashq_delivery_observer", None)
        self._observers: list[Any] = [o for o in (asked() if asked else []) if o is not None]
        #: No wrappers: :meth:`run_plain` may run its deliveries.
        self.plain = not self._wrappers
        # Without observers a delivery pays no call for them.
        self._run = self._execute_observed if self._observers else self._execute_wrapped
        self._run_async = (
            self._execute_async_observed if self._observers else self._execute_async_wrapped
        )
        self._kinds: dict[type[Message], _Kind] = {}
        # Checked once per Processor (one per Worker.run): plugins are registered by then.
        self._deserialize = default_only(hook.pashq_deserialize, decode_envelope)

    def _kind(self, cls: type[Message]) -> _Kind:
        """What the processor needs to know of a message class, worked out once."""
        found = self._kinds.get(cls)
        if found is None:
            found = self._kinds[cls] = _Kind(
                policy_for(cls, self.policy),
                inspect.iscoroutinefunction(cls.process_message),
                self.gate is not None and self.gate.applies(cls),
                message_builder(cls),
                validates(cls),
            )
        return found

    def policy_of(self, cls: type[Message]) -> RetryPolicy:
        """Return the retry policy for a message class (cached)."""
        return self._kind(cls).policy

    def decode(self, body: bytes) -> tuple[Envelope, Message]:
        """Decode bytes into the envelope and the message instance.

        :raises EnvelopeError, UnknownMessageTypeError, SerializationError: poison input.
        """
        envelope: Envelope = self._deserialize(body)
        cls = registry.lookup(envelope.type)
        return envelope, build_message(cls, envelope.body)

    def prepare(self, delivery: Delivery) -> Result | Prepared:
        """Decode a delivery: a :class:`Result` when it is settled without running (poison,
        crash loop; it has passed through the ``pashq_process`` wrappers already), else the
        :class:`Prepared` message. Never raises ``Exception``."""
        found, envelope, message = self._prepare(delivery)
        if isinstance(found, Result):
            if self.gate is not None and message is not None and envelope is not None:
                self.gate.settled_unrun(message, envelope, found.outcome is Outcome.DEAD)
            if self._wrappers:
                found = self._unrun(found, envelope, message)
            if self._observers:
                self._observe_started(delivery)
                self._observe_finished(delivery, envelope, found, 0.0)
        return found

    def _observe_started(self, delivery: Delivery) -> None:
        for observer in self._observers:
            try:
                observer.started(delivery)
            except Exception as exc:
                _observer_failed("started", exc)

    def _observe_finished(
        self, delivery: Delivery, envelope: Envelope | None, result: Result | None, seconds: float
    ) -> None:
        for observer in self._observers:
            try:
                observer.finished(delivery, envelope, result, seconds)
            except Exception as exc:
                _observer_failed("finished", exc)

    def _unrun(self, result: Result, envelope: Envelope | None, message: Message | None) -> Result:
        """Pass a result decided without running the handler through the wrappers."""
        delivery = result.delivery
        context = self._message_context(delivery, envelope, None)
        token = set_current(context)
        try:
            started, error = _start(self._wrappers, delivery, envelope, message)
            if error is not None:
                log.error("a pashq_process wrapper failed before it yielded: %r", error)
            return self._finish(started, result, None)
        finally:
            reset_current(token)

    def _prepare(
        self, delivery: Delivery
    ) -> tuple[Result | Prepared, Envelope | None, Message | None]:
        if delivery.attempts < 1:  # a hostile or broken attempts header/column: never below 1
            delivery.attempts = 1
        try:
            # decode(), written out: this runs once per delivery.
            envelope = self._deserialize(delivery.body)
            message = build_message(registry.lookup(envelope.type), envelope.body)
        except EnvelopeError as exc:
            return Result(delivery, Outcome.DEAD, reason=f"undecodable envelope: {exc}"), None, None
        except UnknownMessageTypeError as exc:
            return Result(delivery, Outcome.DEAD, reason=str(exc)), None, None
        except SerializationError as exc:
            reason = f"body does not fit its class: {exc}"
            return Result(delivery, Outcome.DEAD, reason=reason), None, None
        except Exception as exc:  # a serializer plugin failing: treat as poison, keep the bytes
            reason = f"cannot decode message: {type(exc).__name__}: {exc}"
            return (
                Result(delivery, Outcome.DEAD, reason=reason, traceback=traceback.format_exc()),
                None,
                None,
            )
        if envelope.id != delivery.id:
            # The envelope's id is the message's identity on every driver; a transport id
            # (a foreign producer's AMQP message_id, a missing pashq-id) never replaces it.
            delivery.id = envelope.id
        kind = self._kind(type(message))
        policy = kind.policy
        if delivery.attempts > policy.max_attempts:
            # Only a worker that died mid-message (crash, OOM kill) lets a delivery exceed
            # max_attempts: stop the crash loop here instead of running it again.
            reason = (
                f"delivered {delivery.attempts} times, more than max_attempts="
                f"{policy.max_attempts}: a worker probably died while processing it"
            )
            return Result(delivery, Outcome.DEAD, reason=reason), envelope, message
        return Prepared(delivery, message, policy, kind.is_async, envelope), envelope, message

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
                exception=exc,
            )
        return Result(
            delivery,
            Outcome.RETRY,
            delay=backoff_delay(delivery.attempts, policy),
            reason=text,
            timed_out=timed_out,
            exception=exc,
        )

    def _context(self, prepared: Prepared) -> MessageContext:
        limit = prepared.policy.time_limit
        deadline = time.monotonic() + limit if limit else None
        return self._message_context(prepared.delivery, prepared.envelope, deadline)

    def _message_context(
        self, delivery: Delivery, envelope: Envelope | None, deadline: float | None
    ) -> MessageContext:
        """What ``pashq.current()`` shows for ``delivery`` (headers read-only)."""
        return MessageContext(
            delivery.id,
            delivery.queue,
            self.connection,
            delivery.attempts,
            _NO_HEADERS
            if envelope is None or not envelope.headers
            else types.MappingProxyType(envelope.headers),
            envelope.created_at if envelope is not None else "",
            deadline,
        )

    def _wrapper_failed(
        self, prepared: Prepared | None, exc: Exception, when: str
    ) -> Result | None:
        log.error(
            "a pashq_process wrapper failed %s it yielded: %s: %s; the attempt counts as failed",
            when,
            type(exc).__name__,
            exc,
        )
        if prepared is None:
            return None
        return self.failure(prepared, exc, "".join(traceback.format_exception(exc)))

    def _finish(
        self, started: list[Generator[None, Any, Any]], result: Result, prepared: Prepared | None
    ) -> Result:
        """Send the result back through the started wrappers, innermost first."""
        for gen in reversed(started):
            try:
                gen.send(result)
            except StopIteration as stop:
                if isinstance(stop.value, Result):
                    result = stop.value
                else:
                    log.error(
                        "a pashq_process wrapper returned %r instead of a Result (the one "
                        "it was given, or another); keeping the decision",
                        stop.value,
                    )
                continue
            except Exception as exc:
                result = self._wrapper_failed(prepared, exc, "after") or result
                continue
            gen.close()
            log.error("a pashq_process wrapper yielded more than once; keeping the decision")
        return result

    def _gate_error(self, prepared: Prepared, exc: Exception) -> Result:
        log.warning(
            "message %s on %r deferred 5s: the coordination store failed: %s: %s",
            prepared.delivery.id,
            prepared.delivery.queue,
            type(exc).__name__,
            exc,
        )
        return Result(prepared.delivery, Outcome.DEFER, delay=5.0, reason=str(exc))

    def execute(self, prepared: Prepared) -> Result:
        """Run ``prepared`` (see :meth:`_execute_wrapped`) once its limits let it start;
        over a limit it is not run: the result is ``DEFER`` with the delay."""
        gate = self.gate
        if gate is None or not gate.applies(type(prepared.message)):
            return self._run(prepared)
        try:
            entered = gate.enter(prepared)
        except Exception as exc:
            return self._gate_error(prepared, exc)
        if isinstance(entered, float):
            return Result(prepared.delivery, Outcome.DEFER, delay=entered, reason="over a limit")
        result: Result | None = None
        try:
            result = self._run(prepared)
            return result
        finally:
            final = result is not None and result.outcome in (Outcome.ACK, Outcome.DEAD)
            gate.leave(entered, final)

    async def execute_async(self, prepared: Prepared) -> Result:
        """Awaitable :meth:`execute` for ``async def`` handlers (the store is called in a
        thread, never blocking the loop)."""
        gate = self.gate
        if gate is None or not gate.applies(type(prepared.message)):
            return await self._run_async(prepared)
        try:
            entered = await asyncio.to_thread(gate.enter, prepared)
        except Exception as exc:
            return self._gate_error(prepared, exc)
        if isinstance(entered, float):
            return Result(prepared.delivery, Outcome.DEFER, delay=entered, reason="over a limit")
        result: Result | None = None
        try:
            result = await self._run_async(prepared)
            return result
        finally:
            final = result is not None and result.outcome in (Outcome.ACK, Outcome.DEAD)
            await asyncio.to_thread(gate.leave, entered, final)

    def _execute_observed(
        self, prepared: Prepared, inner: Callable[[Prepared], Result] | None = None
    ) -> Result:
        """``inner`` (default :meth:`_execute_wrapped`), the delivery observers told before
        and after.

        The loops of :meth:`_observe_started` and :meth:`_observe_finished`, written out:
        this runs once per delivery under ``--metrics-port``, where the two calls cost about
        5 % of a delivery (``bench/bench_instructions.py --wrapper prometheus``)."""
        delivery, observers = prepared.delivery, self._observers
        for observer in observers:
            try:
                observer.started(delivery)
            except Exception as exc:
                _observer_failed("started", exc)
        result: Result | None = None
        began = time.perf_counter()
        try:
            result = (inner or self._execute_wrapped)(prepared)
            return result
        finally:
            seconds = time.perf_counter() - began
            for observer in observers:
                try:
                    observer.finished(delivery, prepared.envelope, result, seconds)
                except Exception as exc:
                    _observer_failed("finished", exc)

    def _execute_plain(self, prepared: Prepared) -> Result:
        """Validate and process with :func:`pashq.current` set and no wrappers or time
        limit (:meth:`run_plain` under delivery observers)."""
        token = set_current(self._message_context(prepared.delivery, prepared.envelope, None))
        try:
            return self._execute(prepared, self._kind(type(prepared.message)).validates)
        finally:
            reset_current(token)

    def _execute_wrapped(self, prepared: Prepared) -> Result:
        """Validate and process in this thread (an ``async def`` handler runs on this
        thread's event loop), inside the ``pashq_process`` wrappers, with
        :func:`pashq.current` set. A :class:`TimeLimitExceeded` raised into the thread by the
        worker's watchdog is a failed attempt. Never raises ``Exception``."""
        token = set_current(self._context(prepared))
        try:
            if not self._wrappers:
                return self._execute(prepared)
            started, error = _start(
                self._wrappers, prepared.delivery, prepared.envelope, prepared.message
            )
            if error is None:
                result = self._execute(prepared)
            else:
                result = self._wrapper_failed(prepared, error, "before")  # type: ignore[assignment]
            return self._finish(started, result, prepared)
        finally:
            reset_current(token)

    def run_plain(self, delivery: Delivery) -> Result | Prepared | None:
        """:meth:`prepare`, then for a sync handler without a time limit or gate
        :meth:`execute`, in one call, for a :attr:`plain` processor (the worker's common
        case): ``None`` when the handler succeeded (ack it: no :class:`Result` is built,
        unless a delivery observer is told it),
        the :class:`Result` of an attempt that did not, or the :class:`Prepared` delivery
        still to run (on the worker's executor when ``async def`` or time-limited, else
        through :meth:`execute`). The same steps and outcomes as the two calls; anything
        unusual (poison, an attempt count out of range) is left to :meth:`prepare`."""
        try:
            envelope = self._deserialize(delivery.body)
            cls = registry.lookup(envelope.type)
            kind = self._kinds.get(cls) or self._kind(cls)
            message = kind.build(envelope.body)
        except Exception:
            return self.prepare(delivery)  # it decodes again, and explains
        if type(message) is not cls:  # a custom set_message built another class
            kind = self._kind(type(message))
        policy = kind.policy
        if not 1 <= delivery.attempts <= policy.max_attempts:
            return self.prepare(delivery)
        if envelope.id != delivery.id:
            delivery.id = envelope.id  # the envelope's id is the message's identity
        prepared = Prepared(delivery, message, policy, kind.is_async, envelope)
        if kind.is_async or kind.gated or policy.time_limit:
            return prepared
        if self._observers:
            return self._execute_observed(prepared, self._execute_plain)
        token = set_current(self._message_context(delivery, envelope, None))
        try:
            return self._attempt(prepared, kind.validates)
        finally:
            reset_current(token)

    def _execute(self, prepared: Prepared, validates: bool = True) -> Result:
        """Validate (unless ``validates`` is false: the class keeps the default, which
        accepts every message) and process: the result."""
        return self._attempt(prepared, validates) or Result(prepared.delivery, Outcome.ACK)

    def _attempt(self, prepared: Prepared, validates: bool) -> Result | None:
        """:meth:`_execute`, with ``None`` for a handler that succeeded (no result built)."""
        message = prepared.message
        try:
            valid = message.validate_message() if validates else True
            if (
                valid is not None
                and valid is not True
                and (valid is False or _call(valid) is False)
            ):
                return Result(
                    prepared.delivery, Outcome.DEAD, reason="validate_message() returned False"
                )
            done = message.process_message()
            if done is not None:
                _call(done)
        except TimeLimitExceeded:
            return self.failure(prepared, TimeLimitExceeded(prepared.time_limit))
        except Exception as exc:
            return self.failure(prepared, exc, traceback.format_exc())
        return None

    async def _execute_async_observed(self, prepared: Prepared) -> Result:
        """:meth:`_execute_async_wrapped`, the delivery observers told before and after."""
        delivery = prepared.delivery
        self._observe_started(delivery)
        result: Result | None = None
        began = time.perf_counter()
        try:
            result = await self._execute_async_wrapped(prepared)
            return result
        finally:
            self._observe_finished(delivery, prepared.envelope, result, time.perf_counter() - began)

    async def _execute_async_wrapped(self, prepared: Prepared) -> Result:
        """Validate and process on the running event loop, cancelled at the time limit,
        inside the ``pashq_process`` wrappers. Never raises ``Exception``."""
        token = set_current(self._context(prepared))
        try:
            if not self._wrappers:
                return await self._execute_async(prepared)
            started, error = _start(
                self._wrappers, prepared.delivery, prepared.envelope, prepared.message
            )
            if error is None:
                result = await self._execute_async(prepared)
            else:
                result = self._wrapper_failed(prepared, error, "before")  # type: ignore[assignment]
            return self._finish(started, result, prepared)
        finally:
            reset_current(token)

    async def _execute_async(self, prepared: Prepared) -> Result:
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
