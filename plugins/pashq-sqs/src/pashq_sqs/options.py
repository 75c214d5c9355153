"""The ``[queues.<name>]`` options of the SQS driver, validated at connect time."""

from __future__ import annotations

from typing import Any

import attrs

from pashq_sqs.errors import safe_url

__all__ = ["MAX_VISIBILITY_TIMEOUT", "MAX_WAIT_TIME", "SQSOptions"]

#: SQS's longest long poll (``WaitTimeSeconds``).
MAX_WAIT_TIME = 20
#: SQS's longest visibility timeout, counted from the receive (12 hours).
MAX_VISIBILITY_TIMEOUT = 43_200


def _between(low: float, high: float) -> Any:
    def check(instance: object, attribute: attrs.Attribute[Any], value: float | None) -> None:
        if value is not None and not low <= value <= high:
            raise ValueError(
                f"'{attribute.name}' must be between {low:g} and {high:g}, got {value!r}"
            )

    return check


def _check_queue_urls(instance: object, attribute: attrs.Attribute[Any], value: Any) -> None:
    for name, url in value.items():
        if not isinstance(url, str) or not url.startswith(("https://", "http://")):
            raise ValueError(
                f"'queue_urls.{name}' must be the queue's URL "
                f"(https://sqs.<region>.amazonaws.com/<account>/<name>), got {url!r}"
            )


def _check_template(instance: object, attribute: attrs.Attribute[Any], value: str) -> None:
    if "{queue}" not in value:
        raise ValueError(
            f"'dead_letter_queue' must contain '{{queue}}' (e.g. \"{{queue}}-failed\"), "
            f"got {value!r}"
        )


@attrs.frozen
class SQSOptions:
    """Options of the ``sqs`` driver (see ``docs/sqs.md`` for the full table).

    :ivar region: AWS region; ``None`` = boto3's chain (``AWS_REGION``, profile).
    :ivar endpoint_url: a non-AWS endpoint (moto, LocalStack, a VPC endpoint).
    :ivar profile: a named profile of the shared AWS config; ``None`` = boto3's chain.
    :ivar queue_urls: pashq queue name -> queue URL. When set, the driver never calls
        ListQueues, GetQueueUrl or CreateQueue (least privilege); dead-letter queues are
        looked up here too, under their name (``dead_letter_queue``).
    :ivar create_queues: create missing queues (and their dead-letter queue, with a
        RedrivePolicy) instead of failing.
    :ivar wait_time: the longest long poll in seconds (``WaitTimeSeconds``, <= 20).
    :ivar visibility_timeout: seconds a received message stays hidden (the lease);
        the worker's heartbeat extends it while a handler runs.
    :ivar fifo: every queue of this connection is a FIFO queue: ``.fifo`` is appended to
        the SQS names (a pashq queue name ending in ``.fifo`` is FIFO in any case).
    :ivar prefix: prepended to every queue name on SQS (not to ``queue_urls`` keys).
    :ivar dead_letter_queue: the dead-letter queue's name, ``{queue}`` standing for the
        queue name without ``.fifo`` (which is added back for FIFO queues).
    :ivar max_receive_count: ``maxReceiveCount`` of the RedrivePolicy written by
        ``create_queues`` (default: the connection's ``max_attempts``).
    """

    region: str | None = None
    endpoint_url: str | None = attrs.field(
        default=None, repr=lambda v: safe_url(v) if v else "None"
    )
    profile: str | None = None
    queue_urls: dict[str, str] = attrs.field(factory=dict, validator=_check_queue_urls)
    create_queues: bool = False
    wait_time: int = attrs.field(default=MAX_WAIT_TIME, validator=_between(0, MAX_WAIT_TIME))
    visibility_timeout: int = attrs.field(default=30, validator=_between(1, MAX_VISIBILITY_TIMEOUT))
    fifo: bool = False
    prefix: str = ""
    dead_letter_queue: str = attrs.field(default="{queue}-failed", validator=_check_template)
    max_receive_count: int | None = attrs.field(default=None, validator=_between(1, 1000))
