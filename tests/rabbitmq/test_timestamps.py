"""Dead-letter times: written as ISO 8601 UTC, read back as timezone-aware UTC."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pika
import pytest

from pashq.connection import Connection
from pashq.testing import wait_for

from .conftest import URL, raw_connection
from .rabbitmq_test_messages import Recorded

pytestmark = pytest.mark.rabbitmq

_ISO_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{6}Z$")


def test_dead_letter_time_is_iso_8601_utc_and_read_as_aware_utc(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    """x-pashq-failed-at is `YYYY-MM-DDTHH:MM:SS.ffffffZ`; failed_at is aware UTC."""
    conn = connect()
    conn.dispatch(queue_name, Recorded("time", 1))
    (delivery,) = wait_for(
        lambda: conn.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=0.5), timeout=10
    )
    before = datetime.now(UTC)
    conn.hook.pashq_dead_letter(queue=queue_name, delivery=delivery, reason="r", traceback=None)
    (dead,) = wait_for(lambda: conn.failed(queue_name), timeout=10)
    assert dead.failed_at is not None and dead.failed_at.utcoffset() == timedelta(0)
    assert before - timedelta(seconds=1) <= dead.failed_at <= datetime.now(UTC)
    raw = pika.BlockingConnection(pika.URLParameters(URL))
    try:
        method, properties, _ = raw.channel().basic_get(f"{queue_name}.failed")
    finally:
        raw.close()
    assert method is not None
    assert _ISO_UTC.match(properties.headers["x-pashq-failed-at"])


@pytest.mark.parametrize(
    "written",
    [
        "2026-12-01T18:00:00.000000Z",  # what pashq writes (and always wrote)
        "2026-12-01T19:00:00+01:00",  # ISO 8601 with an offset, from another producer
        "2026-12-01T18:00:00",  # no offset: UTC
        datetime(2026, 12, 1, 18, 0, 0),  # an AMQP timestamp value
    ],
    ids=["pashq", "offset", "naive", "amqp_timestamp"],
)
def test_dead_letter_times_already_stored_are_read_as_aware_utc(
    connect: Callable[..., Connection], queue_name: str, written: Any
) -> None:
    """Dead letters already in the failed queue keep a readable failed_at."""
    raw = raw_connection()
    try:
        channel = raw.channel()
        channel.queue_declare(f"{queue_name}.failed", durable=True)
        body = json.dumps({"v": 1, "id": uuid.uuid4().hex, "type": "t", "body": {}}).encode()
        headers = {"x-pashq-failed-at": written, "x-pashq-reason": "old"}
        channel.basic_publish(
            "", f"{queue_name}.failed", body, pika.BasicProperties(headers=headers)
        )
    finally:
        raw.close()
    conn = connect()
    (dead,) = conn.failed(queue_name)
    assert dead.failed_at == datetime(2026, 12, 1, 18, 0, 0, tzinfo=UTC)
