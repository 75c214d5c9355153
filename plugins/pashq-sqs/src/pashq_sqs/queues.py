"""Finding (and, when allowed, creating) the SQS queues behind pashq queue names.

Three ways to a queue URL, in order:

1. ``queue_urls`` (least privilege): the URL is taken from the configuration and the
   driver never calls ListQueues, GetQueueUrl or CreateQueue. The dead-letter queue is
   the entry named like ``dead_letter_queue`` (``orders-failed``).
2. GetQueueUrl on ``prefix + name``; the dead-letter queue is the target of the queue's
   RedrivePolicy, else ``prefix + dead_letter_queue`` if it exists.
3. With ``create_queues``, a missing queue is created with its dead-letter queue and a
   RedrivePolicy (``maxReceiveCount`` = ``max_receive_count`` or ``max_attempts``).

Queue facts (FIFO, content-based deduplication, maximum size) are read once per queue
with GetQueueAttributes and cached for the life of the connection.
"""

from __future__ import annotations

import json
import logging
import threading
from collections.abc import Callable
from typing import Any

import attrs
from botocore.exceptions import ClientError

from pashq.errors import QueueNotFoundError
from pashq_sqs.errors import NONEXISTENT_QUEUE, error_code, translated
from pashq_sqs.options import SQSOptions
from pashq_sqs.wire import MAX_MESSAGE_BYTES

__all__ = ["DLQ_RETENTION_SECONDS", "QueueDirectory", "QueueInfo"]

log = logging.getLogger(__name__)

#: Retention of created dead-letter queues: SQS's maximum, 14 days (AWS advises keeping
#: dead letters longer than the source queue keeps messages).
DLQ_RETENTION_SECONDS = 1_209_600
_FACTS = ["ContentBasedDeduplication", "MaximumMessageSize", "RedrivePolicy"]


@attrs.frozen
class QueueInfo:
    """What the driver knows about one SQS queue.

    :ivar name: the pashq queue name.
    :ivar url: the queue URL.
    :ivar fifo: a FIFO queue (name ends in ``.fifo``).
    :ivar content_dedup: ContentBasedDeduplication is on (FIFO only).
    :ivar max_size: the largest message the queue takes, in bytes.
    :ivar dead_letter_arn: the RedrivePolicy's target, if the queue has one.
    """

    name: str
    url: str
    fifo: bool
    content_dedup: bool = False
    max_size: int = MAX_MESSAGE_BYTES
    dead_letter_arn: str | None = None


class QueueDirectory:
    """Resolves pashq queue names to :class:`QueueInfo`, thread-safely and cached."""

    def __init__(
        self,
        client: Any,
        options: SQSOptions,
        max_receive_count: int,
        where: str,
        *,
        source: Callable[[], Any] | None = None,
    ) -> None:
        """:param client: the boto3 SQS client. :param options: the driver options.
        :param max_receive_count: maxReceiveCount for created redrive policies.
        :param where: where the options were read (for error messages).
        :param source: returns the client to use at each call instead (the driver's
            client of the current process, rebuilt after a fork)."""
        self._client = client
        self._source = source
        self.options = options
        self.max_receive_count = max_receive_count
        self.where = where
        self._lock = threading.Lock()
        self._known: dict[str, QueueInfo] = {}

    @property
    def client(self) -> Any:
        """The boto3 SQS client the lookups use."""
        return self._source() if self._source is not None else self._client

    def after_fork_in_child(self) -> None:
        """Replace the lock (a parent's thread may have held it at the fork)."""
        self._lock = threading.Lock()

    # -- names -----------------------------------------------------------------------------

    def dead_letter_name(self, queue: str) -> str:
        """Return the pashq-level name of ``queue``'s dead-letter queue."""
        fifo = queue.endswith(".fifo")
        base = queue.removesuffix(".fifo")
        name = self.options.dead_letter_queue.format(queue=base)
        return f"{name}.fifo" if fifo and not name.endswith(".fifo") else name

    def sqs_name(self, queue: str) -> str:
        """Return the SQS queue name of a pashq queue name (prefix, ``.fifo``)."""
        name = self.options.prefix + queue
        if self.options.fifo and not name.endswith(".fifo"):
            name += ".fifo"
        return name

    def list_names(self) -> list[str]:
        """Return the pashq queue names that exist: the ``queue_urls`` keys when set (no
        ListQueues call), else ListQueues under ``prefix``; dead-letter queues of listed
        queues are left out."""
        options = self.options
        if options.queue_urls:
            names = set(options.queue_urls)
        else:
            names = set()
            params: dict[str, Any] = {"MaxResults": 1000}
            if options.prefix:
                params["QueueNamePrefix"] = options.prefix
            with translated(
                "ListQueues", options.prefix or "*", options.endpoint_url, options.create_queues
            ):
                while True:
                    response = self.client.list_queues(**params)
                    for url in response.get("QueueUrls", []):
                        name = str(url).rsplit("/", 1)[-1].removeprefix(options.prefix)
                        if options.fifo:  # sqs_name() added it
                            name = name.removesuffix(".fifo")
                        names.add(name)
                    token = response.get("NextToken")
                    if not token:
                        break
                    params["NextToken"] = token
        dead = {self.dead_letter_name(n) for n in names}
        return sorted(n for n in names if n not in dead)

    # -- lookups ---------------------------------------------------------------------------

    def get(self, queue: str) -> QueueInfo:
        """Return the queue's info, looking it up (or creating it) on first use.

        :raises QueueNotFoundError: the queue does not exist and will not be created.
        """
        with self._lock:
            found = self._known.get(queue)
        if found is not None:
            return found
        info = self._resolve(queue)
        with self._lock:
            return self._known.setdefault(queue, info)

    def dead_letter(self, queue: str) -> QueueInfo | None:
        """Return ``queue``'s dead-letter queue, or ``None`` when it has none."""
        name = self.dead_letter_name(queue)
        with self._lock:
            found = self._known.get(name)
        if found is not None:
            return found
        info = self.get(queue)
        url: str | None = None
        if self.options.queue_urls:
            url = self.options.queue_urls.get(name)
        elif info.dead_letter_arn:
            url = self._url_of_arn(queue, info.dead_letter_arn)
        else:
            url = self._lookup(name, self.sqs_name(name))
        if url is None:
            return None
        dlq = self._describe(name, url)
        with self._lock:
            return self._known.setdefault(name, dlq)

    def forget(self, queue: str) -> None:
        """Drop a cached queue (after it was deleted or recreated)."""
        with self._lock:
            self._known.pop(queue, None)

    # -- internals -------------------------------------------------------------------------

    def _resolve(self, queue: str) -> QueueInfo:
        options = self.options
        if options.queue_urls:
            url = options.queue_urls.get(queue)
            if url is None:
                raise QueueNotFoundError(
                    f"{self.where}: queue {queue!r} is not in 'queue_urls' (with queue_urls "
                    f'set the driver never looks queues up); add {queue} = "<its URL>"'
                )
            return self._describe(queue, url)
        sqs_name = self.sqs_name(queue)
        url = self._lookup(queue, sqs_name)
        if url is None:
            if not options.create_queues:
                raise QueueNotFoundError(
                    f"SQS queue {sqs_name!r} (pashq queue {queue!r}) does not exist: create "
                    f"it, or set create_queues = true in {self.where}"
                )
            url = self._create(queue, sqs_name)
        return self._describe(queue, url)

    def _lookup(self, queue: str, sqs_name: str) -> str | None:
        try:
            with translated(
                "GetQueueUrl", queue, self.options.endpoint_url, self.options.create_queues
            ):
                try:
                    response = self.client.get_queue_url(QueueName=sqs_name)
                except ClientError as exc:
                    if error_code(exc) in NONEXISTENT_QUEUE:
                        return None
                    raise
        except QueueNotFoundError:
            return None
        return str(response["QueueUrl"])

    def _url_of_arn(self, queue: str, arn: str) -> str | None:
        # arn:aws:sqs:<region>:<account>:<name>
        parts = arn.split(":")
        if len(parts) < 6:
            return None
        with translated(
            "GetQueueUrl", queue, self.options.endpoint_url, self.options.create_queues
        ):
            try:
                response = self.client.get_queue_url(
                    QueueName=parts[5], QueueOwnerAWSAccountId=parts[4]
                )
            except ClientError as exc:
                if error_code(exc) in NONEXISTENT_QUEUE:
                    log.warning(
                        "queue %r: its RedrivePolicy names %s, which does not exist", queue, arn
                    )
                    return None
                raise
        return str(response["QueueUrl"])

    def _describe(self, queue: str, url: str) -> QueueInfo:
        fifo = url.rstrip("/").endswith(".fifo") or queue.endswith(".fifo") or self.options.fifo
        try:
            with translated(
                "GetQueueAttributes", queue, self.options.endpoint_url, self.options.create_queues
            ):
                facts = self.client.get_queue_attributes(QueueUrl=url, AttributeNames=_FACTS)
        except QueueNotFoundError:
            raise
        except Exception as exc:
            # A producer-only role may lack GetQueueAttributes: fall back to SQS defaults.
            log.warning(
                "queue %r: cannot read its attributes (%s); assuming SQS defaults", queue, exc
            )
            return QueueInfo(queue, url, fifo)
        attributes = facts.get("Attributes", {})
        dead_letter_arn = None
        policy = attributes.get("RedrivePolicy")
        if policy:
            try:
                dead_letter_arn = json.loads(policy).get("deadLetterTargetArn")
            except (ValueError, AttributeError):
                dead_letter_arn = None
        return QueueInfo(
            queue,
            url,
            fifo,
            content_dedup=attributes.get("ContentBasedDeduplication") == "true",
            max_size=int(attributes.get("MaximumMessageSize", MAX_MESSAGE_BYTES)),
            dead_letter_arn=dead_letter_arn,
        )

    def _create(self, queue: str, sqs_name: str) -> str:
        fifo = sqs_name.endswith(".fifo")
        dlq_name = self.sqs_name(self.dead_letter_name(queue))
        common = {"FifoQueue": "true"} if fifo else {}
        with translated(
            "CreateQueue", queue, self.options.endpoint_url, self.options.create_queues
        ):
            dlq_url = self.client.create_queue(
                QueueName=dlq_name,
                Attributes={**common, "MessageRetentionPeriod": str(DLQ_RETENTION_SECONDS)},
            )["QueueUrl"]
            dlq_arn = self.client.get_queue_attributes(
                QueueUrl=dlq_url, AttributeNames=["QueueArn"]
            )["Attributes"]["QueueArn"]
            policy = {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": self.max_receive_count}
            url = self.client.create_queue(
                QueueName=sqs_name,
                Attributes={
                    **common,
                    "VisibilityTimeout": str(self.options.visibility_timeout),
                    "RedrivePolicy": json.dumps(policy),
                },
            )["QueueUrl"]
        log.info(
            "created SQS queue %r with dead-letter queue %r (maxReceiveCount %d)",
            sqs_name,
            dlq_name,
            self.max_receive_count,
        )
        return str(url)
