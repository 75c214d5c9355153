"""``opentelemetry``: a producer span per dispatch and a consumer span per delivery.

Enable it per connection with ``plugins = ["opentelemetry"]`` on producers and workers.
``pashq_dispatch`` opens the producer span and writes the W3C trace context into the
envelope headers (``traceparent``, ``tracestate``; whatever the global propagator writes);
``pashq_process`` reads it back in the worker and opens the ``process`` span as its child,
so every attempt of a message, in any process, lands in the producer's trace.
"""

from __future__ import annotations

import time
from collections.abc import Generator, Mapping, Sequence
from typing import Any

from opentelemetry import context as otel_context
from opentelemetry import propagate, trace
from opentelemetry.trace import Link, SpanKind, Status, StatusCode

from pashq import Delivery, DispatchItem, Envelope, Message, Outcome, Result, hookimpl
from pashq_opentelemetry import semconv
from pashq_opentelemetry.instruments import Instruments

__all__ = ["OpenTelemetryPlugin"]

_VERSION = "0.1.0"
_NO_SDK = (trace.ProxyTracerProvider, trace.NoOpTracerProvider)
#: Without an SDK, look for one installed since at most this often (seconds).
_RECHECK_SECONDS = 1.0
#: Extracted trace contexts kept (a batch of messages sent together shares one).
_PARENTS_KEPT = 1024
_OUTCOMES = {Outcome.ACK: "ack", Outcome.RETRY: "retry", Outcome.DEAD: "dead_letter"}


def _error_type(exc: BaseException) -> str:
    cls = type(exc)
    return (
        cls.__qualname__ if cls.__module__ == "builtins" else f"{cls.__module__}.{cls.__qualname__}"
    )


def _result_error(result: Result) -> str | None:
    """The ``error.type`` of a result: the exception's class, ``retry`` or ``dead_letter``
    without one, ``None`` for an ack."""
    if result.exception is not None:
        return _error_type(result.exception)
    if result.outcome is Outcome.RETRY:
        return "retry"
    if result.outcome is Outcome.DEAD:
        return "dead_letter"
    return None


def _one(item: DispatchItem) -> dict[str, str]:
    """The per-message attributes of a span that accounts for one message."""
    return {semconv.MESSAGE_ID: item.id, semconv.MESSAGE_TYPE: item.envelope.type}


class OpenTelemetryPlugin:
    """Traces and measures a connection's messages by the messaging semantic conventions.

    :param tracer_provider: spans go there (default: the global tracer provider).
    :param meter_provider: metrics go there (default: the global meter provider).
    :param system: the ``messaging.system`` value (default: found from the connection's
        driver when it opens; see :func:`pashq_opentelemetry.messaging_system`).
    :param create_spans: on a batch dispatch, also open a ``create`` span per message and
        give each message its own creation context (the ``send`` span links to them all).
        Off by default: the conventions let the one ``send`` span's context be every
        message's creation context, which costs one span per batch instead of one per
        message.
    """

    def __init__(
        self,
        tracer_provider: Any | None = None,
        meter_provider: Any | None = None,
        system: str | None = None,
        create_spans: bool = False,
    ) -> None:
        self._tracer = trace.get_tracer(
            "pashq_opentelemetry", _VERSION, tracer_provider=tracer_provider
        )
        # Until an SDK is installed the API records nothing: skip the span work then.
        self._tracing = tracer_provider is not None and not isinstance(
            tracer_provider, trace.NoOpTracerProvider
        )
        self._next_check = 0.0  # time.monotonic() of the next look for a global provider
        self._instruments = Instruments(meter_provider, _VERSION)
        self.system = system or "pashq"
        self._given_system = system is not None
        self.create_spans = create_spans
        # The last trace contexts extracted, by the propagator's header values: a batch
        # dispatched together carries one context, so most deliveries find it here.
        self._parents: dict[tuple[str | None, ...], otel_context.Context] = {}
        self._textmap: Any = None  # the global propagator those were read with
        self._fields: tuple[str, ...] = ()
        # Per-queue attribute dicts, built once: a delivery copies one instead of building it.
        self._process_base: dict[str, dict[str, Any]] = {}
        self._metric_base: dict[tuple[str, str], dict[str, str]] = {}
        self._metric_keys: dict[str, tuple[tuple[str, str], ...]] = {}

    @hookimpl
    def pashq_connect(self, connection: Any) -> None:
        """Learn the connection's ``messaging.system`` from its driver."""
        if not self._given_system:
            self.system = semconv.messaging_system(connection.config.type, connection.options)
            self._process_base.clear()
            self._metric_base.clear()
            self._metric_keys.clear()

    def _traces(self) -> bool:
        """Whether spans are recorded: a tracer provider was given or one is installed.

        Once true it stays true (a global tracer provider can be set only once)."""
        if self._tracing:
            return True
        now = time.monotonic()
        if now < self._next_check:
            return False
        provider = trace.get_tracer_provider()
        if isinstance(provider, _NO_SDK):
            self._next_check = now + _RECHECK_SECONDS
            return False
        self._tracing = True
        return True

    def _metric_attributes(self, queue: str, operation: str) -> dict[str, str]:
        key = (operation, queue)
        found = self._metric_base.get(key)
        if found is None:
            found = self._metric_base[key] = {
                semconv.OPERATION_NAME: operation,
                semconv.SYSTEM: self.system,
                semconv.DESTINATION_NAME: queue,
            }
        return found

    # -- producer --------------------------------------------------------------------------

    @hookimpl(wrapper=True)
    def pashq_dispatch(
        self, queue: str, messages: Sequence[DispatchItem], options: Mapping[str, Any]
    ) -> Generator[None, list[str], list[str]]:
        """A ``send`` span around the push; the trace context into every message's headers.

        One message: one ``send`` span (kind PRODUCER), its context in the headers. A batch:
        one ``send`` span (PRODUCER) with ``messaging.batch.message_count``, whose context
        goes into every message; with ``create_spans``, a ``create`` span (PRODUCER) per
        message, whose context goes into that message, and the ``send`` span (CLIENT)
        linking to them. Both are the conventions' ways of sending a batch.
        """
        if not self._traces():
            try:
                ids = yield
            except BaseException as exc:
                self._instruments.sent.add(
                    len(messages),
                    {
                        **self._metric_attributes(queue, "send"),
                        semconv.ERROR_TYPE: _error_type(exc),
                    },
                )
                raise
            self._instruments.sent.add(len(messages), self._metric_attributes(queue, "send"))
            return ids
        base = {
            semconv.SYSTEM: self.system,
            semconv.DESTINATION_NAME: queue,
        }
        links: list[Link] = []
        count = {semconv.BATCH_MESSAGE_COUNT: len(messages)}  # for a batch's send span
        if len(messages) == 1:
            item = messages[0]
            span = self._producer_span("send", queue, SpanKind.PRODUCER, base, _one(item))
            propagate.inject(item.headers, context=trace.set_span_in_context(span))
        elif not self.create_spans:
            span = self._producer_span("send", queue, SpanKind.PRODUCER, base, count)
            carrier: dict[str, str] = {}
            propagate.inject(carrier, context=trace.set_span_in_context(span))
            for item in messages:
                item.headers.update(carrier)
        else:
            for item in messages:
                created = self._producer_span("create", queue, SpanKind.PRODUCER, base, _one(item))
                propagate.inject(item.headers, context=trace.set_span_in_context(created))
                created.end()
                links.append(Link(created.get_span_context()))
            span = self._producer_span("send", queue, SpanKind.CLIENT, base, count, links)
        token = otel_context.attach(trace.set_span_in_context(span))
        try:
            ids = yield
        except BaseException as exc:
            error = _error_type(exc)
            span.record_exception(exc)
            span.set_status(Status(StatusCode.ERROR, f"{type(exc).__name__}: {exc}"))
            span.set_attribute(semconv.ERROR_TYPE, error)
            self._instruments.sent.add(
                len(messages),
                {**self._metric_attributes(queue, "send"), semconv.ERROR_TYPE: error},
            )
            raise
        finally:
            otel_context.detach(token)
            span.end()
        self._instruments.sent.add(len(messages), self._metric_attributes(queue, "send"))
        return ids

    def _producer_span(
        self,
        operation: str,
        queue: str,
        kind: SpanKind,
        base: Mapping[str, Any],
        extra: Mapping[str, Any],
        links: Sequence[Link] = (),
    ) -> Any:
        """Start a ``send`` or ``create`` span with the conventions' attributes."""
        attributes = {
            **base,
            semconv.OPERATION_TYPE: operation,
            semconv.OPERATION_NAME: operation,
            **extra,
        }
        return self._tracer.start_span(
            f"{operation} {queue}", kind=kind, attributes=attributes, links=links
        )

    # -- consumer --------------------------------------------------------------------------

    def _base(self, queue: str) -> dict[str, Any]:
        found = self._process_base.get(queue)
        if found is None:
            found = self._process_base[queue] = {
                semconv.SYSTEM: self.system,
                semconv.DESTINATION_NAME: queue,
                semconv.OPERATION_TYPE: "process",
                semconv.OPERATION_NAME: "process",
            }
        return found

    @hookimpl(wrapper=True)
    def pashq_process(
        self, delivery: Delivery, envelope: Envelope | None, message: Message | None
    ) -> Generator[None, Result, Result]:
        """A ``process`` span (kind CONSUMER) per delivery, child of the producer's span,
        with the attempt number and the outcome; the exception recorded and status ERROR on
        a failed attempt, the reason on a dead letter."""
        queue = delivery.queue
        self._instruments.consumed(self._metric_key(queue))
        metric_attributes = self._metric_attributes(queue, "process")
        if not self._traces():
            started = time.perf_counter()
            result = yield
            error = _result_error(result)
            if error is not None:
                metric_attributes = {**metric_attributes, semconv.ERROR_TYPE: error}
            self._instruments.process_duration.record(
                time.perf_counter() - started, metric_attributes
            )
            return result
        attributes = self._base(queue).copy()
        attributes[semconv.MESSAGE_ID] = delivery.id
        attributes[semconv.ATTEMPT] = delivery.attempts
        parent = None
        if envelope is not None:
            attributes[semconv.MESSAGE_TYPE] = envelope.type
            if envelope.headers:
                parent = self._parent(envelope.headers)
        span = self._tracer.start_span(
            f"process {queue}", context=parent, kind=SpanKind.CONSUMER, attributes=attributes
        )
        token = otel_context.attach(trace.set_span_in_context(span, parent))
        started = time.perf_counter()
        try:
            result = yield
        finally:
            elapsed = time.perf_counter() - started
            otel_context.detach(token)
        error = self._settle_span(span, result)
        if error is not None:
            metric_attributes = {**metric_attributes, semconv.ERROR_TYPE: error}
        self._instruments.process_duration.record(elapsed, metric_attributes)
        return result

    def _parent(self, headers: Mapping[str, str]) -> otel_context.Context:
        """The trace context the headers carry (the global propagator's reading of them),
        extracted once per distinct set of the propagator's header values.

        Extracted into an empty context, so the answer depends on the headers alone."""
        textmap = propagate.get_global_textmap()
        if textmap is not self._textmap:  # a propagator set since: forget the old readings
            self._textmap = textmap
            self._fields = tuple(sorted(textmap.fields))
            self._parents.clear()
        key = tuple([headers.get(field) for field in self._fields])
        found = self._parents.get(key)
        if found is None:
            found = propagate.extract(headers, context=otel_context.Context())
            if len(self._parents) >= _PARENTS_KEPT:
                self._parents.clear()
            self._parents[key] = found
        return found

    def _metric_key(self, queue: str) -> tuple[tuple[str, str], ...]:
        found = self._metric_keys.get(queue)
        if found is None:
            attributes = self._metric_attributes(queue, "process")
            found = self._metric_keys[queue] = tuple(sorted(attributes.items()))
        return found

    @staticmethod
    def _settle_span(span: Any, result: Result) -> str | None:
        """Put the outcome on the span and end it; return the ``error.type``, if any."""
        outcome = result.outcome
        error = _result_error(result)
        if span.is_recording():
            span.set_attribute(semconv.OUTCOME, _OUTCOMES.get(outcome, outcome.value))
            if result.exception is not None:
                span.record_exception(result.exception)
            if outcome is Outcome.RETRY:
                span.set_attribute(semconv.RETRY_DELAY, result.delay)
                span.set_status(Status(StatusCode.ERROR, result.reason))
            elif outcome is Outcome.DEAD:
                span.set_attribute(semconv.DEAD_LETTER_REASON, result.reason)
                span.set_status(Status(StatusCode.ERROR, f"dead-lettered: {result.reason}"))
            if error is not None:
                span.set_attribute(semconv.ERROR_TYPE, error)
        span.end()
        return error
