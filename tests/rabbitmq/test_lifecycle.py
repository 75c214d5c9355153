"""Issue 9's middleware scenario on RabbitMQ: dispatch and process wrappers see every batch
and every outcome, with headers and attempts."""

from __future__ import annotations

from collections.abc import Callable

import pytest
from lifecycle_scenario import check_scenario, run_scenario

from pashq.connection import Connection

pytestmark = pytest.mark.rabbitmq


def test_recorder_sees_every_dispatch_batch_and_every_outcome(
    connect: Callable[..., Connection], queue_name: str
) -> None:
    check_scenario(run_scenario(connect(), queue_name))
