"""``sqs``: Amazon SQS through plain boto3 (no pycurl).

Features:

- **Batched** SendMessageBatch, DeleteMessageBatch and ChangeMessageVisibilityBatch (10
  entries, 1 MiB a batch). An entry that fails is retried when SQS says it may succeed,
  else reported: ``push`` returns only when SQS holds every message, and a push stored in
  part raises :class:`~pashq.errors.PartialPushError` with the ``stored`` and
  ``not_stored`` ids.
- **One message's trouble stays with it**: a received message with an unreadable
  ``pashq-*`` attribute is dead-lettered with the reason, a failed re-delay leaves its
  message to its visibility timeout, and the rest of the receive is delivered.
- **Ids** are the envelope's: ``pashq-id`` is a copy, read from the envelope when absent;
  never SQS's MessageId.
- **Long polling**: ReceiveMessage waits up to ``min(timeout, wait_time)`` seconds.
- **Visibility heartbeat**: deliveries carry ``lease = visibility_timeout``; the worker
  calls ``pashq_extend`` before it runs out (ChangeMessageVisibilityBatch), capped at
  SQS's 12 hours from the receive, so long work is not delivered twice.
- **Attempts are SQS's** ``ApproximateReceiveCount``; a retry changes the message's
  visibility (never re-sends it), so a queue's RedrivePolicy (``maxReceiveCount``) works.
- **Dead letters** go to the queue's dead-letter queue (its RedrivePolicy target, or
  ``<queue>-failed``) with ``pashq-reason``/``pashq-traceback`` attributes; ``failed
  list|retry|purge`` work on it. A queue without one keeps the message (and says so).
- **Delays**: DelaySeconds up to 900 s; longer delays are sent with 900 s and a
  ``pashq-deliver-at`` attribute (ISO 8601 UTC), and re-sent on receive until due (never
  delivered early, never lost). FIFO queues take no per-message delay: a warning, not silence.
- **FIFO** (``.fifo``): MessageGroupId from the message's group (default: the queue
  name), MessageDeduplicationId from the message's deduplication id, else content-based
  deduplication when the queue has it, else the pashq message id (stable across retries
  of the same dispatch; never a random id per send).
- **Least privilege**: with ``queue_urls`` the driver never calls ListQueues, GetQueueUrl
  or CreateQueue.
- **Fork-safe**: a process forked after the connection was used builds its own boto3
  client on first use; the parent's pooled sockets are never used or closed by it.
- **Queue names** are checked (``pashq_check_queue_name``): 80 characters of
  ``[A-Za-z0-9_-]`` (``.fifo``, the prefix and the dead-letter queue's suffix counted).
- **Secrets**: an ``endpoint_url`` password never reaches errors, tracebacks or logs
  (botocore's and urllib3's records are filtered).
- ``pashq move``: moved dead letters go to the dead-letter queue with their reason,
  attempts and ``failed_at``; moved messages start again at attempt 1 (the count is SQS's
  ``ApproximateReceiveCount``), and only due messages are received for a move.
- Oversized messages fail at dispatch with :class:`~pashq.errors.MessageTooLargeError`
  naming the size and the limit. ``stats`` and ``purge`` (PurgeQueue) work.

Options (``[queues.<name>]``): ``region``, ``endpoint_url``, ``profile``, ``queue_urls``,
``create_queues`` (false), ``wait_time`` (20), ``visibility_timeout`` (30), ``fifo``
(false), ``prefix`` (""), ``dead_letter_queue`` ("{queue}-failed"), ``max_receive_count``
(max_attempts).
Credentials come from boto3's chain (environment, profile, instance or task role).

Guarantee: at-least-once. A worker that dies mid-message leaves it invisible until its
visibility timeout passes, then it is delivered again with the next attempt count.
"""

from __future__ import annotations

import logging
import math
import os
import re
import threading
import time
import uuid
import warnings
import weakref
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs
import boto3
import botocore.config
from botocore.exceptions import ClientError, ProfileNotFound

from pashq.capabilities import Capabilities
from pashq.config import parse_options
from pashq.connection import Connection
from pashq.delivery import DeadLetter, Delivery, OutgoingMessage, QueueStats
from pashq.envelope import decode_envelope
from pashq.errors import (
    ConfigError,
    DriverError,
    EnvelopeError,
    MessageTooLargeError,
    PartialPushError,
    PashqError,
)
from pashq.hookspecs import hookimpl
from pashq_sqs import redacting, wire
from pashq_sqs.batching import Failure, call_batch, split
from pashq_sqs.errors import IgnoredAttributeWarning, error_code, safe_url, translated
from pashq_sqs.options import MAX_VISIBILITY_TIMEOUT, SQSOptions
from pashq_sqs.queues import QueueDirectory, QueueInfo

__all__ = ["Receipt", "SQSDriver"]

log = logging.getLogger(__name__)

#: SQS's longest DelaySeconds.
MAX_DELAY_SECONDS = 900
# Seconds kept in hand below the 12-hour visibility cap (clock and network slack).
_CAP_SLACK = 5.0
# Visibility used while browsing a dead-letter queue (list, retry, purge by id).
_BROWSE_VISIBILITY = 30
# A message due within this many seconds is delivered rather than re-delayed.
_EARLY_SLACK = 1.0
# SentTimestamp (milliseconds) of the end of year 9999.
_LATEST_MILLIS = 253_402_300_799_000
_REASON_CHARS = 4_096
# SQS queue names: 1-80 characters of these (a FIFO queue's ".fifo" counted in the 80).
_SQS_NAME = re.compile(r"[A-Za-z0-9_-]+")
_MAX_NAME = 80
# Visibility-change failures that mean "this message is already deleted".
_SETTLED_CODES = frozenset(
    {
        "ReceiptHandleIsInvalid",
        "MessageNotInflight",
        "AWS.SimpleQueueService.MessageNotInflight",
        "AWS.SimpleQueueService.ReceiptHandleIsInvalid",
    }
)
_TRACEBACK_CHARS = 32_768


# Every driver of this process, to fix up after os.fork (see SQSDriver._after_fork_in_child).
_DRIVERS: weakref.WeakSet[SQSDriver] = weakref.WeakSet()


def _after_fork_in_child() -> None:
    for driver in list(_DRIVERS):
        driver._after_fork_in_child()


os.register_at_fork(after_in_child=_after_fork_in_child)


@attrs.frozen(slots=True)
class Receipt:
    """The driver's handle on one received message (``Delivery.receipt``).

    :ivar handle: the SQS receipt handle.
    :ivar received_at: ``time.monotonic()`` at the receive (for the 12-hour cap).
    :ivar message_id: the SQS MessageId.
    :ivar group_id: the MessageGroupId, on FIFO queues.
    """

    handle: str
    received_at: float
    message_id: str
    group_id: str | None = None


def _whole_seconds(seconds: float) -> int:
    """Round a delay up to SQS's whole seconds (never early), ignoring float noise."""
    return max(0, math.ceil(seconds - 1e-6))


class SQSDriver:
    """Amazon SQS through boto3 (see the module docstring for the full spec)."""

    name = "sqs"
    capabilities = Capabilities(
        persistent=True,
        delay=True,
        max_delay=None,
        delay_resolution=1.0,
        batch_size=10,
        nack_delay=True,
        lease=True,
        extend_lease=True,
        dead_letters=True,
        stats=True,
        purge=True,
        fifo_groups=True,
        list_queues=True,
        store_dead_letters=True,
    )

    def __init__(self) -> None:
        self.options = SQSOptions()
        self.queues: QueueDirectory | None = None
        self._system_attributes_param = "MessageSystemAttributeNames"
        self._cap_warned = threading.Event()
        self._client: Any = None
        self._client_pid = os.getpid()
        self._client_lock = threading.Lock()
        # Clients built by a parent process: never used or closed here (their pooled
        # sockets are the parent's), only kept so that garbage collection leaves them be.
        self._inherited: list[Any] = []
        self._region = ""
        self._config: botocore.config.Config | None = None
        _DRIVERS.add(self)

    # -- lifecycle ----------------------------------------------------------------------------

    @property
    def client(self) -> Any:
        """The boto3 SQS client of this process (built again after ``os.fork``)."""
        if self._client_pid != os.getpid():
            return self._client_for_this_process()
        return self._client

    def _client_for_this_process(self) -> Any:
        with self._client_lock:
            if self._client_pid != os.getpid() and self._client is not None:
                # A child of a fork: the parent's client shares its sockets, session and
                # credential locks with the parent, so build a fresh one, leave that be.
                self._inherited.append(self._client)
                self._client = self._build_client()
                redacting.protect(self.options.endpoint_url)
            self._client_pid = os.getpid()
            return self._client

    def _after_fork_in_child(self) -> None:
        # Locks held by another thread of the parent at the fork stay held for ever in
        # the child: replace them (the client itself is rebuilt on first use).
        self._client_lock = threading.Lock()
        warned = self._cap_warned.is_set()
        self._cap_warned = threading.Event()
        if warned:
            self._cap_warned.set()
        if self.queues is not None:
            self.queues.after_fork_in_child()

    def _build_client(self) -> Any:
        session = boto3.session.Session(
            profile_name=self.options.profile, region_name=self.options.region
        )
        return session.client(
            "sqs",
            region_name=self._region,
            endpoint_url=self.options.endpoint_url,
            config=self._config,
        )

    @hookimpl
    def pashq_connect(self, connection: Connection) -> None:
        """Validate the options and build the boto3 client (no network call yet)."""
        options = parse_options(SQSOptions, connection.options, connection.where)
        try:
            session = boto3.session.Session(
                profile_name=options.profile, region_name=options.region
            )
        except ProfileNotFound as exc:
            raise ConfigError(
                f"{connection.where}: 'profile' {options.profile!r} is not in the AWS "
                "config files (~/.aws/config, ~/.aws/credentials)"
            ) from exc
        region = session.region_name
        if region is None:
            if options.endpoint_url is None:
                raise ConfigError(
                    f"{connection.where}: no AWS region: set 'region' (e.g. \"eu-west-1\") "
                    "or AWS_REGION in the environment"
                )
            region = "us-east-1"  # only signs requests to a local endpoint
        self._config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 5},
            connect_timeout=5,
            # Longer than the longest long poll, as AWS advises.
            read_timeout=max(options.wait_time, 20) + 15,
            max_pool_connections=32,
            user_agent_extra="pashq-sqs/0.1.0",
        )
        self.options = options
        self._region = region
        with self._client_lock:
            self._client = session.client(
                "sqs", region_name=region, endpoint_url=options.endpoint_url, config=self._config
            )
            self._client_pid = os.getpid()
        # botocore and urllib3 log the endpoint URL (password included) at DEBUG.
        redacting.protect(options.endpoint_url)
        receive = self._client.meta.service_model.operation_model("ReceiveMessage")
        if "MessageSystemAttributeNames" not in receive.input_shape.members:
            self._system_attributes_param = "AttributeNames"  # botocore before 1.34.x
        max_receive = options.max_receive_count or connection.config.retry.max_attempts
        self.queues = QueueDirectory(
            self._client, options, max_receive, connection.where, source=lambda: self.client
        )
        log.debug(
            "sqs connection %r: region %s, endpoint %s",
            connection.name,
            region,
            safe_url(options.endpoint_url),
        )

    @hookimpl
    def pashq_close(self) -> None:
        """Close this process's HTTP connections (never a parent's, after a fork)."""
        if self._client is not None and self._client_pid == os.getpid():
            self._client.close()

    def _queue(self, queue: str) -> QueueInfo:
        assert self.queues is not None, "pashq_connect was not called"
        return self.queues.get(queue)

    def _call(self, action: str, queue: str) -> Any:
        return translated(action, queue, self.options.endpoint_url, self.options.create_queues)

    @hookimpl
    def pashq_check_queue_name(self, queue: str) -> str | None:
        """SQS names: at most 80 letters, digits, ``-`` and ``_`` (``.fifo`` counted),
        with the prefix, and for the dead-letter queue ``create_queues`` would make."""
        if self.options.queue_urls:
            return None  # a pashq name is only a key: the SQS name is in the URL
        assert self.queues is not None, "pashq_connect was not called"
        names = [("", self.queues.sqs_name(queue))]
        if self.options.create_queues:
            dlq = self.queues.sqs_name(self.queues.dead_letter_name(queue))
            names.append(("its dead-letter queue ", dlq))
        for what, name in names:
            if not _SQS_NAME.fullmatch(name.removesuffix(".fifo")):
                return (
                    f"would make {what}the SQS queue {name!r}, and SQS names take only "
                    "letters, digits, '-' and '_' (and may end in '.fifo')"
                )
            if len(name) > _MAX_NAME:
                return (
                    f"would make {what}the SQS queue {name!r}, {len(name)} characters "
                    f"long; SQS allows {_MAX_NAME} (prefix and '.fifo' included): use a "
                    "shorter name"
                )
        return None

    @hookimpl
    def pashq_declare(self, queue: str) -> None:
        """Resolve the queue (creating it when ``create_queues`` is on)."""
        self._queue(queue)

    # -- push ---------------------------------------------------------------------------------

    @hookimpl
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """Send the messages with SendMessageBatch; return once SQS holds every one."""
        if options:
            raise TypeError(f"the sqs driver takes no dispatch options, got {sorted(options)}")
        info = self._queue(queue)
        ignored: dict[str, int] = {}
        entries = [self._entry(info, str(i), m, ignored) for i, m in enumerate(messages)]
        if ignored:
            self._warn_ignored(info, ignored)
        by_entry = {e["Id"]: m.id for e, m in zip(entries, messages, strict=True)}
        failures: list[Failure] = []  # entries SQS refused
        sent: set[str] = set()  # entries SQS confirmed
        error: PashqError | None = None  # a call that failed as a whole
        for batch in split(entries, _entry_size, wire.MAX_BATCH_BYTES):
            try:
                with self._call("SendMessageBatch", queue):
                    failed = call_batch(
                        lambda b: self.client.send_message_batch(QueueUrl=info.url, Entries=b),
                        batch,
                    )
            except PashqError as exc:
                if not sent and not failures:
                    raise  # nothing stored: the plain error (QueueNotFoundError ...)
                error = exc  # this batch and the later ones are not sent
                break
            failures += failed
            sent |= {e["Id"] for e in batch} - {f.entry["Id"] for f in failed}
        if failures or error is not None:
            stored = [by_entry[e["Id"]] for e in entries if e["Id"] in sent]
            not_stored = [by_entry[e["Id"]] for e in entries if e["Id"] not in sent]
            refused = {f.entry["Id"] for f in failures}
            unsent = [by_entry[e["Id"]] for e in entries if e["Id"] not in sent | refused]
            parts = [f"{by_entry[f.entry['Id']]} ({f.code}: {f.message})" for f in failures[:20]]
            if error is not None:
                shown = ", ".join(unsent[:20]) + (
                    f" and {len(unsent) - 20} more" if len(unsent) > 20 else ""
                )
                parts.append(f"{shown} (not sent: {type(error).__name__}: {error})")
            raise PartialPushError(
                f"SQS stored {len(stored)} of {len(entries)} message(s) on queue {queue!r}; "
                f"NOT stored: {'; '.join(parts)} — dispatch those again (the error's "
                "not_stored lists them)",
                stored=stored,
                not_stored=not_stored,
            ) from error
        return [m.id for m in messages]

    def _entry(
        self, info: QueueInfo, entry_id: str, m: OutgoingMessage, ignored: dict[str, int]
    ) -> dict[str, Any]:
        body, base64 = wire.encode_body(m.body)
        attributes = {wire.ID: wire.text(m.id)}
        if base64:
            attributes[wire.ENCODING] = wire.text("base64")
        entry: dict[str, Any] = {"Id": entry_id, "MessageBody": body}
        if info.fifo:
            if m.delay > 0:
                ignored["delay"] = ignored.get("delay", 0) + 1
            entry["MessageGroupId"] = wire.fifo_token(m.group_id or info.name)
            dedup = m.deduplication_id
            if dedup is None and not info.content_dedup:
                dedup = m.id
            if dedup is not None:
                entry["MessageDeduplicationId"] = wire.fifo_token(dedup)
        else:
            if m.deduplication_id is not None:
                ignored["deduplication id"] = ignored.get("deduplication id", 0) + 1
            if m.group_id is not None:
                # Standard queues take a group as a "fair queue" tenant key.
                entry["MessageGroupId"] = wire.fifo_token(m.group_id)
            delay = _whole_seconds(m.delay)
            if delay > MAX_DELAY_SECONDS:
                attributes[wire.DELIVER_AT] = wire.text(wire.iso_time(time.time() + m.delay))
                delay = MAX_DELAY_SECONDS
            if delay:
                entry["DelaySeconds"] = delay
        entry["MessageAttributes"] = attributes
        size = wire.message_size(body, attributes)
        if size > info.max_size:
            raise MessageTooLargeError(
                f"message {m.id} ({m.type_name}) for queue {info.name!r} is {size:,} bytes "
                f"(body{' base64-encoded' if base64 else ''} and attributes), over the SQS "
                f"limit of {info.max_size:,} bytes; nothing was sent. Keep large data "
                "elsewhere (e.g. S3) and send a reference"
            )
        return entry

    def _warn_ignored(self, info: QueueInfo, ignored: Mapping[str, int]) -> None:
        kind = "FIFO" if info.fifo else "standard"
        what = ", ".join(f"{name} on {count} message(s)" for name, count in ignored.items())
        hint = (
            "SQS FIFO queues take no per-message delay (set the queue's DelaySeconds)"
            if info.fifo
            else "deduplication ids need a FIFO (.fifo) queue"
        )
        warnings.warn(
            f"queue {info.name!r} is a {kind} SQS queue, which ignores: {what}; sent without "
            f"it ({hint})",
            IgnoredAttributeWarning,
            stacklevel=2,
        )

    # -- pull ---------------------------------------------------------------------------------

    @hookimpl
    def pashq_pull(self, queue: str, max_messages: int, timeout: float) -> list[Delivery]:
        """ReceiveMessage with long polling; attempts = ApproximateReceiveCount.

        What goes wrong with one received message stays with it: a message whose
        attributes cannot be read is dead-lettered with the reason, a message that is not
        due yet and cannot be re-delayed is left to come back after its visibility
        timeout, and the others of the receive are delivered either way.
        """
        info = self._queue(queue)
        wait = 0 if timeout <= 0 else min(self.options.wait_time, math.ceil(timeout))
        messages = self._receive(
            info, max(1, min(10, max_messages)), wait, self.options.visibility_timeout
        )
        if not messages:
            return []
        received_at = time.monotonic()
        out: list[Delivery] = []
        early: list[tuple[dict[str, Any], float]] = []
        unreadable: list[tuple[Delivery, str]] = []
        now = time.time()
        for message in messages:
            delivery = self._delivery(info, message, received_at)
            attributes = message.get("MessageAttributes") or {}
            deliver_at = wire.attribute_value(attributes, wire.DELIVER_AT)
            if deliver_at is not None and not info.fifo:
                try:
                    remaining = wire.parse_time(deliver_at) - now
                except ValueError as exc:
                    unreadable.append(
                        (
                            delivery,
                            f"its {wire.DELIVER_AT} attribute is not a Unix time or an "
                            f"ISO 8601 UTC time: {exc}",
                        )
                    )
                    continue
                if remaining > _EARLY_SLACK:
                    early.append((message, remaining))
                    continue
            out.append(delivery)
        if early:
            self._redelay(info, early)
        for delivery, reason in unreadable:
            self._dead_letter_unreadable(queue, delivery, reason)
        return out

    def _delivery(self, info: QueueInfo, message: dict[str, Any], received_at: float) -> Delivery:
        """Build the delivery of one received message; never raises for odd attributes."""
        attributes = message.get("MessageAttributes") or {}
        system = message.get("Attributes") or {}
        body = wire.decode_body(str(message.get("Body", "")), attributes)
        group = system.get("MessageGroupId")
        return Delivery(
            info.name,
            self._id_of(attributes, body),
            body,
            max(1, wire.parse_count(system.get("ApproximateReceiveCount"), 1)),
            Receipt(
                message["ReceiptHandle"], received_at, str(message.get("MessageId", "")), group
            ),
            float(self.options.visibility_timeout),
            # The worker keeps a FIFO group's order: one at a time, stop on failure.
            group if info.fifo else None,
        )

    @staticmethod
    def _id_of(attributes: Mapping[str, Any], body: bytes, envelope_first: bool = False) -> str:
        """The pashq id of a message: the envelope's id (the ``pashq-id`` copy, when usable,
        saves decoding unless ``envelope_first``), else the ``pashq-id`` of a body that does
        not decode, else ``""``: never SQS's MessageId, which pashq knows nothing by."""
        copy = wire.usable_id(wire.attribute_value(attributes, wire.ID))
        if copy is not None and not envelope_first:
            return copy  # the worker replaces it if the envelope says otherwise
        try:  # sent without pashq-id (plain boto3, another language): read the envelope
            return decode_envelope(body).id
        except (EnvelopeError, ValueError, TypeError):
            return copy or ""

    def _dead_letter_unreadable(self, queue: str, delivery: Delivery, reason: str) -> None:
        try:
            self.pashq_dead_letter(queue, delivery, reason, None)
        except Exception as exc:  # it must not fail the pull: SQS redrive is the backstop
            log.warning(
                "queue %r: message %s cannot be delivered (%s) and could not be "
                "dead-lettered (%s); it comes back after the visibility timeout",
                queue,
                delivery.id or delivery.receipt.message_id,
                reason,
                exc,
            )
        else:
            log.warning("message %s on %r dead-lettered: %s", delivery.id, queue, reason)

    def _receive(
        self, info: QueueInfo, count: int, wait: int, visibility: int
    ) -> list[dict[str, Any]]:
        system = ["ApproximateReceiveCount", "SentTimestamp"]
        params: dict[str, Any] = {
            "QueueUrl": info.url,
            "MaxNumberOfMessages": count,
            "WaitTimeSeconds": wait,
            "VisibilityTimeout": visibility,
            "MessageAttributeNames": ["pashq-.*"],
        }
        if info.fifo:
            system.append("MessageGroupId")
            # Lets SQS return the same messages if botocore retries this very receive.
            params["ReceiveRequestAttemptId"] = uuid.uuid4().hex
        params[self._system_attributes_param] = system
        with self._call("ReceiveMessage", info.name):
            response = self.client.receive_message(**params)
        return list(response.get("Messages") or [])

    def _redelay(self, info: QueueInfo, early: list[tuple[dict[str, Any], float]]) -> None:
        """Send messages that arrived before their ``pashq-deliver-at`` again, then delete
        them: a re-send keeps the receive count for real attempts (a visibility change
        would count one per 15 minutes and trip the RedrivePolicy).

        Never raises: a message whose copy was not sent is not deleted (it comes back
        after its visibility timeout and is re-delayed then), and a message whose copy was
        sent but that could not be deleted comes back too (a duplicate, never a loss).
        """
        entries = []
        for index, (message, remaining) in enumerate(early):
            entry: dict[str, Any] = {
                "Id": str(index),
                "MessageBody": message["Body"],
                "MessageAttributes": message.get("MessageAttributes") or {},
                "DelaySeconds": min(MAX_DELAY_SECONDS, _whole_seconds(remaining)),
            }
            entries.append(entry)
        failures: list[Failure] = []
        # Split by count and total size: two 600 KB messages do not fit one batch.
        for batch in split(entries, _entry_size, wire.MAX_BATCH_BYTES):
            try:
                with self._call("SendMessageBatch", info.name):
                    failures += call_batch(
                        lambda b: self.client.send_message_batch(QueueUrl=info.url, Entries=b),
                        batch,
                    )
            except PashqError as exc:  # throttled, denied, unreachable: only this batch
                failures += [Failure(e, type(exc).__name__, str(exc), False) for e in batch]
        failed = {f.entry["Id"] for f in failures}
        sent = [early[int(e["Id"])][0] for e in entries if e["Id"] not in failed]
        if failures:
            log.warning(
                "queue %r: %d message(s) not due yet could not be re-delayed and come back "
                "after the visibility timeout: %s",
                info.name,
                len(failures),
                "; ".join(
                    f"{self._message_id(early[int(f.entry['Id'])][0]) or '?'} ({f.code}: "
                    f"{f.message})"
                    for f in failures
                ),
            )
        try:
            self._delete(
                info, [m["ReceiptHandle"] for m in sent], [self._message_id(m) for m in sent]
            )
        except PashqError as exc:
            log.warning(
                "queue %r: re-delayed message(s) were sent again but the received copies "
                "could not be deleted; they come back after the visibility timeout and are "
                "re-delayed again (a duplicate, not a loss): %s",
                info.name,
                exc,
            )

    # -- settle -------------------------------------------------------------------------------

    @hookimpl
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Delete the messages with DeleteMessageBatch."""
        if not deliveries:
            return
        info = self._queue(queue)
        self._delete(info, [d.receipt.handle for d in deliveries], [d.id for d in deliveries])

    def _delete(self, info: QueueInfo, handles: Sequence[str], ids: Sequence[str]) -> None:
        if not handles:
            return
        entries = [{"Id": str(i), "ReceiptHandle": h} for i, h in enumerate(handles)]
        failures: list[Failure] = []
        with self._call("DeleteMessageBatch", info.name):
            for batch in split(entries):
                failures += call_batch(
                    lambda b: self.client.delete_message_batch(QueueUrl=info.url, Entries=b),
                    batch,
                )
        if failures:
            raise DriverError(
                f"SQS could not delete {len(failures)} of {len(entries)} message(s) from "
                f"queue {info.name!r} (they will be delivered again): "
                + "; ".join(
                    f"{ids[int(f.entry['Id'])] or '?'} ({f.code}: {f.message})" for f in failures
                )
            )

    def _visibility(
        self,
        queue: str,
        deliveries: Sequence[Delivery],
        seconds: float,
        what: str,
        settled_ok: bool = False,
    ) -> None:
        if not deliveries:
            return
        info = self._queue(queue)
        now = time.monotonic()
        wanted = _whole_seconds(seconds)
        entries = []
        for index, d in enumerate(deliveries):
            receipt: Receipt = d.receipt
            left = int(MAX_VISIBILITY_TIMEOUT - (now - receipt.received_at) - _CAP_SLACK)
            value = min(wanted, max(0, left))
            if value < wanted and not self._cap_warned.is_set():
                self._cap_warned.set()
                log.warning(
                    "queue %r: message %s reaches SQS's 12-hour visibility limit; "
                    "it will be delivered again after %ds",
                    queue,
                    d.id,
                    value,
                )
            entries.append(
                {"Id": str(index), "ReceiptHandle": receipt.handle, "VisibilityTimeout": value}
            )
        failures: list[Failure] = []
        with self._call("ChangeMessageVisibilityBatch", queue):
            for batch in split(entries):
                failures += call_batch(
                    lambda b: self.client.change_message_visibility_batch(
                        QueueUrl=info.url, Entries=b
                    ),
                    batch,
                )
        if settled_ok:
            gone = [f for f in failures if _is_settled(f)]
            if gone:
                # The ack (DeleteMessageBatch) won the race with this heartbeat: the
                # message is settled, there is nothing left to extend.
                log.debug(
                    "queue %r: not extending %d message(s) already deleted: %s",
                    queue,
                    len(gone),
                    ", ".join(deliveries[int(f.entry["Id"])].id or "?" for f in gone),
                )
                failures = [f for f in failures if not _is_settled(f)]
        if failures:
            raise DriverError(
                f"SQS could not {what} {len(failures)} of {len(entries)} message(s) on queue "
                f"{queue!r}: "
                + "; ".join(
                    f"{deliveries[int(f.entry['Id'])].id or '?'} ({f.code}: {f.message})"
                    for f in failures
                )
            )

    @hookimpl
    def pashq_nack(self, queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
        """Make the messages visible again after ``delay`` (a visibility change, so the
        receive count, and with it the RedrivePolicy, keeps counting)."""
        self._visibility(queue, deliveries, delay, "release")

    @hookimpl
    def pashq_extend(self, queue: str, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Heartbeat: keep the messages hidden for ``seconds`` more (12-hour cap)."""
        self._visibility(queue, deliveries, seconds, "extend the visibility of", settled_ok=True)

    # -- dead letters -------------------------------------------------------------------------

    def _dead_letter_queue(self, queue: str) -> QueueInfo:
        assert self.queues is not None
        dlq = self.queues.dead_letter(queue)
        if dlq is None:
            name = self.queues.dead_letter_name(queue)
            raise DriverError(
                f"queue {queue!r} has no dead-letter queue, so dead letters stay in it (they "
                f"come back after the visibility timeout): create SQS queue "
                f"{self.queues.sqs_name(name)!r} and set it as the RedrivePolicy target "
                f"(or list it in 'queue_urls' as {name!r}); create_queues and pashq sqs "
                "create never change an existing queue"
            )
        return dlq

    @hookimpl
    def pashq_dead_letter(
        self, queue: str, delivery: Delivery, reason: str, traceback: str | None
    ) -> None:
        """Send the message to the dead-letter queue with the reason, then delete it.

        Not atomic on SQS: a crash between the two leaves the message in both queues
        (never in neither).
        """
        info = self._queue(queue)
        dlq = self._dead_letter_queue(queue)
        receipt: Receipt = delivery.receipt
        body, base64 = wire.encode_body(delivery.body)
        attributes: dict[str, dict[str, str]] = {}
        if wire.usable_id(delivery.id):
            # Otherwise left out: a listing reads the id from the envelope.
            attributes[wire.ID] = wire.text(delivery.id)
        if base64:
            attributes[wire.ENCODING] = wire.text("base64")
        # The text may come from anyone (message data, a third-party caller): make it
        # text SQS stores, or the send fails and the message can never be dead-lettered.
        attributes[wire.REASON] = wire.text(
            wire.safe_attribute(reason or "(no reason)", _REASON_CHARS)
        )
        attributes[wire.ATTEMPTS] = wire.number(delivery.attempts)
        attributes[wire.FAILED_AT] = wire.text(wire.iso_time(time.time()))
        attributes[wire.SOURCE] = wire.text(queue)
        if traceback:
            attributes[wire.TRACEBACK] = wire.text(
                wire.safe_attribute(traceback, _TRACEBACK_CHARS, keep="tail")
            )
        if wire.message_size(body, attributes) > dlq.max_size:
            attributes.pop(wire.TRACEBACK, None)
        if wire.message_size(body, attributes) > dlq.max_size:
            attributes[wire.REASON] = wire.text(wire.safe_attribute(reason, 200))
        params: dict[str, Any] = {
            "QueueUrl": dlq.url,
            "MessageBody": body,
            "MessageAttributes": attributes,
        }
        if dlq.fifo:
            params["MessageGroupId"] = receipt.group_id or wire.fifo_token(queue)
            # Stable for this SQS message: a repeated dead-lettering is deduplicated.
            params["MessageDeduplicationId"] = wire.fifo_token(receipt.message_id)
        with self._call("SendMessage", dlq.name):
            self.client.send_message(**params)
        self._delete(info, [receipt.handle], [delivery.id])

    def _browse(
        self, dlq: QueueInfo, limit: int, take: Callable[[dict[str, Any]], bool]
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Receive dead letters (hidden for a while) until ``limit`` are taken or none is
        left; return (taken, passed over). SQS cannot browse a queue without receiving."""
        taken: list[dict[str, Any]] = []
        passed: list[dict[str, Any]] = []
        seen: set[str] = set()
        while len(taken) < limit:
            batch = self._receive(dlq, min(10, max(1, limit - len(taken))), 1, _BROWSE_VISIBILITY)
            fresh = [m for m in batch if m["MessageId"] not in seen]
            if not fresh:
                break
            for message in fresh:
                seen.add(message["MessageId"])
                (taken if take(message) and len(taken) < limit else passed).append(message)
        return taken, passed

    def _release(self, dlq: QueueInfo, messages: Sequence[dict[str, Any]]) -> None:
        if not messages:
            return
        entries = [
            {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"], "VisibilityTimeout": 0}
            for i, m in enumerate(messages)
        ]
        with self._call("ChangeMessageVisibilityBatch", dlq.name):
            for batch in split(entries):
                failures = call_batch(
                    lambda b: self.client.change_message_visibility_batch(
                        QueueUrl=dlq.url, Entries=b
                    ),
                    batch,
                )
                if failures:
                    log.warning(
                        "dead-letter queue %r: %d message(s) stay hidden for up to "
                        "%ds after browsing",
                        dlq.name,
                        len(failures),
                        _BROWSE_VISIBILITY,
                    )

    def _message_id(self, message: Mapping[str, Any]) -> str:
        attributes = message.get("MessageAttributes") or {}
        body = wire.decode_body(str(message.get("Body", "")), attributes)
        # Dead letters and re-delays: the envelope's id wins over a copy that differs.
        return self._id_of(attributes, body, envelope_first=True)

    def _matcher(self, wanted: set[str] | None) -> Callable[[dict[str, Any]], bool]:
        ids = None if wanted is None else frozenset(wanted)
        return lambda message: ids is None or self._message_id(message) in ids

    def _dead_letter_of(self, queue: str, message: Mapping[str, Any]) -> DeadLetter:
        attributes = message.get("MessageAttributes") or {}
        system = message.get("Attributes") or {}
        reason = wire.attribute_value(attributes, wire.REASON) or (
            "moved by the queue's SQS RedrivePolicy: received maxReceiveCount times without "
            "being deleted (worker crashed or timed out)"
        )
        failed_at: datetime | None = None
        stamp = wire.attribute_value(attributes, wire.FAILED_AT)
        if stamp:
            try:
                failed_at = datetime.fromtimestamp(wire.parse_time(stamp), UTC)
            except (ValueError, OverflowError, OSError):
                failed_at = None
        if failed_at is None:
            sent = wire.parse_count(system.get("SentTimestamp"), 0, most=_LATEST_MILLIS)
            failed_at = datetime.fromtimestamp(sent / 1000, UTC) if sent else None
        return DeadLetter(
            self._message_id(message),
            queue,
            wire.decode_body(str(message.get("Body", "")), attributes),
            reason,
            wire.attribute_value(attributes, wire.TRACEBACK),
            wire.parse_count(wire.attribute_value(attributes, wire.ATTEMPTS), 0),
            failed_at,
        )

    @hookimpl
    def pashq_failed_list(self, queue: str, limit: int) -> list[DeadLetter]:
        """List up to ``limit`` dead letters, oldest first.

        SQS has no browse: the driver receives them (hiding them for up to 30 s), reads
        them and makes them visible again. Each listing counts as a receive.
        """
        dlq = self._dead_letter_queue(queue)
        taken, passed = self._browse(dlq, limit, lambda m: True)
        try:
            letters = [self._dead_letter_of(queue, m) for m in taken]
        finally:
            self._release(dlq, taken + passed)
        epoch = datetime.fromtimestamp(0, UTC)
        return sorted(letters, key=lambda d: d.failed_at or epoch)

    @hookimpl
    def pashq_failed_retry(self, queue: str, ids: Sequence[str] | None) -> int:
        """Move dead letters back to ``queue`` as fresh messages (send, then delete)."""
        info = self._queue(queue)
        dlq = self._dead_letter_queue(queue)
        wanted = None if ids is None else set(ids)
        moved = 0
        passed_all: list[dict[str, Any]] = []
        try:
            while wanted is None or wanted:
                taken, passed = self._browse(dlq, 10, self._matcher(wanted))
                passed_all += passed
                if not taken:
                    break
                moved += self._move_back(info, dlq, taken)
                if wanted is not None:
                    wanted -= {self._message_id(m) for m in taken}
        finally:
            self._release(dlq, passed_all)
        return moved

    def _move_back(
        self, info: QueueInfo, dlq: QueueInfo, messages: Sequence[dict[str, Any]]
    ) -> int:
        entries = []
        for index, message in enumerate(messages):
            attributes = message.get("MessageAttributes") or {}
            keep = {k: v for k, v in attributes.items() if k in (wire.ID, wire.ENCODING)}
            entry: dict[str, Any] = {
                "Id": str(index),
                "MessageBody": message["Body"],
                "MessageAttributes": keep,
            }
            if info.fifo:
                group = (message.get("Attributes") or {}).get("MessageGroupId")
                entry["MessageGroupId"] = group or wire.fifo_token(info.name)
                # The dead letter's own SQS id: unique per dead-lettering, so the retried
                # message is not mistaken for the original within the 5-minute window.
                entry["MessageDeduplicationId"] = wire.fifo_token(message["MessageId"])
            entries.append(entry)
        failures: list[Failure] = []
        with self._call("SendMessageBatch", info.name):
            for batch in split(entries, _entry_size, wire.MAX_BATCH_BYTES):
                failures += call_batch(
                    lambda b: self.client.send_message_batch(QueueUrl=info.url, Entries=b),
                    batch,
                )
        failed = {f.entry["Id"] for f in failures}
        sent = [messages[int(e["Id"])] for e in entries if e["Id"] not in failed]
        self._delete(dlq, [m["ReceiptHandle"] for m in sent], [self._message_id(m) for m in sent])
        if failures:
            raise DriverError(
                f"{len(failures)} dead letter(s) of queue {info.name!r} could not be moved "
                "back and stay in the dead-letter queue: "
                + "; ".join(
                    f"{self._message_id(messages[int(f.entry['Id'])])} ({f.code})" for f in failures
                )
            )
        return len(sent)

    @hookimpl
    def pashq_failed_purge(self, queue: str, ids: Sequence[str] | None) -> int:
        """Delete dead letters: PurgeQueue on the dead-letter queue, or by id."""
        dlq = self._dead_letter_queue(queue)
        if ids is None:
            count = self._count(dlq, all_states=True)
            self._purge(dlq)
            return count
        wanted = set(ids)
        deleted = 0
        passed_all: list[dict[str, Any]] = []
        try:
            while wanted:
                taken, passed = self._browse(dlq, 10, self._matcher(wanted))
                passed_all += passed
                if not taken:
                    break
                self._delete(
                    dlq, [m["ReceiptHandle"] for m in taken], [self._message_id(m) for m in taken]
                )
                deleted += len(taken)
                wanted -= {self._message_id(m) for m in taken}
        finally:
            self._release(dlq, passed_all)
        return deleted

    # -- inspection ---------------------------------------------------------------------------

    def _attributes(self, info: QueueInfo) -> dict[str, str]:
        with self._call("GetQueueAttributes", info.name):
            response = self.client.get_queue_attributes(
                QueueUrl=info.url,
                AttributeNames=[
                    "ApproximateNumberOfMessages",
                    "ApproximateNumberOfMessagesNotVisible",
                    "ApproximateNumberOfMessagesDelayed",
                ],
            )
        return dict(response.get("Attributes") or {})

    def _count(self, info: QueueInfo, all_states: bool) -> int:
        found = self._attributes(info)
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesDelayed"]
        if all_states:
            names.append("ApproximateNumberOfMessagesNotVisible")
        return sum(int(found.get(n, 0)) for n in names)

    @hookimpl
    def pashq_queues(self) -> list[str]:
        """ListQueues under ``prefix`` (or the ``queue_urls`` keys), without dead-letter
        queues."""
        assert self.queues is not None, "pashq_connect was not called"
        return self.queues.list_names()

    @hookimpl
    def pashq_stats(self, queue: str) -> QueueStats:
        """ApproximateNumberOfMessages / ...NotVisible / ...Delayed; failed = the DLQ's."""
        assert self.queues is not None
        info = self._queue(queue)
        found = self._attributes(info)
        failed = None
        try:
            dlq = self.queues.dead_letter(queue)
        except DriverError:
            dlq = None
        if dlq is not None:
            failed = self._count(dlq, all_states=True)
        return QueueStats(
            queue,
            ready=int(found.get("ApproximateNumberOfMessages", 0)),
            delayed=int(found.get("ApproximateNumberOfMessagesDelayed", 0)),
            in_flight=int(found.get("ApproximateNumberOfMessagesNotVisible", 0)),
            failed=failed,
        )

    @hookimpl
    def pashq_queue_empty(self, queue: str) -> bool:
        """Whether SQS counts no visible message on ``queue`` (one GetQueueAttributes).

        Asked by a worker running ``until_empty`` only after its receives came back short or
        empty, so the count confirms what the last short receive saw: the run ends at once
        instead of after one more long-poll receive of ``poll_timeout``. The count is
        approximate; a ``False`` (messages still counted, e.g. just made visible) makes the
        worker confirm with one more receive that waits, as before.
        """
        found = self._attributes(self._queue(queue))
        return int(found.get("ApproximateNumberOfMessages", 0)) == 0

    def _purge(self, info: QueueInfo) -> None:
        with self._call("PurgeQueue", info.name):
            try:
                self.client.purge_queue(QueueUrl=info.url)
            except ClientError as exc:
                if "PurgeQueueInProgress" in error_code(exc):
                    raise DriverError(
                        f"queue {info.name!r} was purged less than 60 seconds ago; SQS allows "
                        "one PurgeQueue a minute: try again shortly"
                    ) from exc
                raise

    @hookimpl
    def pashq_purge(self, queue: str) -> int:
        """PurgeQueue (SQS allows one a minute and takes up to 60 s to finish)."""
        info = self._queue(queue)
        count = self._count(info, all_states=False)
        self._purge(info)
        return count

    # -- pashq move ---------------------------------------------------------------------------

    @hookimpl
    def pashq_failed_store(self, queue: str, dead_letters: Sequence[DeadLetter]) -> list[str]:
        """Send moved dead letters to the dead-letter queue with their reason, attempts and
        ``failed_at`` (one SendMessage each); a repeat is not recognised, except by a FIFO
        dead-letter queue within its deduplication window."""
        dlq = self._dead_letter_queue(queue)
        for dead in dead_letters:
            body, base64 = wire.encode_body(dead.body)
            attributes: dict[str, dict[str, str]] = {}
            if wire.usable_id(dead.id):
                attributes[wire.ID] = wire.text(dead.id)
            if base64:
                attributes[wire.ENCODING] = wire.text("base64")
            attributes[wire.REASON] = wire.text(
                wire.safe_attribute(dead.reason or "(no reason)", _REASON_CHARS)
            )
            attributes[wire.ATTEMPTS] = wire.number(dead.attempts)
            failed_at = dead.failed_at.timestamp() if dead.failed_at else time.time()
            attributes[wire.FAILED_AT] = wire.text(wire.iso_time(failed_at))
            attributes[wire.SOURCE] = wire.text(queue)
            if dead.traceback:
                attributes[wire.TRACEBACK] = wire.text(
                    wire.safe_attribute(dead.traceback, _TRACEBACK_CHARS, keep="tail")
                )
            if wire.message_size(body, attributes) > dlq.max_size:
                attributes.pop(wire.TRACEBACK, None)
            params: dict[str, Any] = {
                "QueueUrl": dlq.url,
                "MessageBody": body,
                "MessageAttributes": attributes,
            }
            if dlq.fifo:
                params["MessageGroupId"] = wire.fifo_token(queue)
                params["MessageDeduplicationId"] = wire.fifo_token(dead.id or uuid.uuid4().hex)
            with self._call("SendMessage", dlq.name):
                self.client.send_message(**params)
        return [d.id for d in dead_letters]


def _is_settled(failure: Failure) -> bool:
    """Whether a visibility change failed because the message is no longer in flight
    (deleted, or its receipt handle is stale), as SQS and moto word it."""
    if failure.code in _SETTLED_CODES:
        return True
    text = failure.message.lower()
    return failure.code == "InvalidParameterValue" and (
        "does not exist" in text or "not available" in text
    )


def _entry_size(entry: Mapping[str, Any]) -> int:
    return wire.message_size(entry["MessageBody"], entry.get("MessageAttributes") or {})
