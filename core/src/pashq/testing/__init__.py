"""``pashq.testing``: the driver contract suite, shipped in the core wheel.

A driver's tests subclass :class:`DriverContract` (or the per-capability classes they
want) and override one fixture, ``queue_under_test``, that yields a fresh, empty queue::

    class TestMyDriver(DriverContract):
        @pytest.fixture
        def queue_under_test(self):
            table = {"type": "mine", "url": "..."}
            connection = make_connection(table)
            yield QueueUnderTest(connection, f"contract-{uuid.uuid4().hex[:8]}",
                                 open_connection=lambda: make_connection(table), lease=2.0)
            connection.close()

Tests skip by the driver's declared capabilities, never by driver name. A guard test fails
when a contract test is deleted or overridden without :func:`contract_override`.
"""

from __future__ import annotations

from pashq.testing.contract import (
    BasicContract,
    BatchContract,
    BodyContract,
    CrashRecoveryContract,
    DeadLetterContract,
    DelayContract,
    DriverContract,
    ForkContract,
    IsolationContract,
    LeaseContract,
    NackContract,
    PurgeContract,
    StatsContract,
    WorkerContract,
    contract_override,
)
from pashq.testing.coordination import CoordinationContract, DeferContract
from pashq.testing.support import QueueUnderTest, drain, make_connection, wait_for

__all__ = [
    "BasicContract",
    "BatchContract",
    "BodyContract",
    "CoordinationContract",
    "CrashRecoveryContract",
    "DeadLetterContract",
    "DeferContract",
    "DelayContract",
    "DriverContract",
    "ForkContract",
    "IsolationContract",
    "LeaseContract",
    "NackContract",
    "PurgeContract",
    "QueueUnderTest",
    "StatsContract",
    "WorkerContract",
    "contract_override",
    "drain",
    "make_connection",
    "wait_for",
]
