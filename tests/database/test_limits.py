"""Bodies near MySQL/MariaDB's max_allowed_packet: refused up front, never a lost
connection."""

from __future__ import annotations

import os
import uuid

import pytest

from pashq.delivery import Delivery, OutgoingMessage
from pashq.errors import MessageTooLargeError

from .conftest import Backends

pytestmark = pytest.mark.mariadb


def _packet(backends: Backends) -> int:
    conn = backends.connect("mariadb")
    try:
        with conn.driver.engine.connect() as raw:  # type: ignore[attr-defined]
            return int(raw.exec_driver_sql("SELECT @@max_allowed_packet").scalar_one())
    finally:
        conn.close()


def test_body_over_half_of_max_allowed_packet_is_refused_before_sending(
    backends: Backends, queue_name: str
) -> None:
    """The body travels hex-encoded (twice its size): between half the packet and the
    packet, the driver refuses it (naming the queue, sizes and the setting) and the
    connection stays usable."""
    packet = _packet(backends)
    conn = backends.connect("mariadb")
    try:
        big = OutgoingMessage("too-big", "t", b"x" * (packet // 2 + 1024))
        with pytest.raises(MessageTooLargeError) as caught:
            conn.hook.pashq_push(queue=queue_name, messages=[big], options={})
        text = str(caught.value)
        assert queue_name in text and "too-big" in text and "max_allowed_packet" in text
        assert f"{len(big.body):,}" in text
        small = OutgoingMessage(uuid.uuid4().hex, "t", b"{}")
        conn.hook.pashq_push(queue=queue_name, messages=[small], options={})
        assert conn.stats(queue_name).ready == 1
    finally:
        conn.close()


def test_body_just_under_the_limit_is_stored_intact(backends: Backends, queue_name: str) -> None:
    """The largest accepted body goes in and comes back byte for byte."""
    packet = _packet(backends)
    conn = backends.connect("mariadb")
    try:
        body = os.urandom(packet // 2 - 256 * 1024)
        message = OutgoingMessage(uuid.uuid4().hex, "t", body)
        conn.hook.pashq_push(queue=queue_name, messages=[message], options={})
        got: list[Delivery] = conn.hook.pashq_pull(queue=queue_name, max_messages=1, timeout=0)
        assert [d.body == body for d in got] == [True]
        conn.hook.pashq_ack(queue=queue_name, deliveries=got)
    finally:
        conn.close()
