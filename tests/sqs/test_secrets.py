"""A password in ``endpoint_url`` never reaches a log record, an error or a traceback."""

from __future__ import annotations

import logging
import threading
import traceback
from typing import Any

import pytest

from pashq import Worker
from pashq.errors import DriverError, PashqError
from pashq.testing import make_connection

pytestmark = pytest.mark.sqs

SECRET = "s3cretPassw0rd"


def _everything_logged(caplog: pytest.LogCaptureFixture) -> str:
    """The formatted log, plus each record's message, arguments and exception text."""
    parts = [caplog.text]
    for record in caplog.records:
        parts.append(record.getMessage())
        parts.append(repr(record.args))
        if record.exc_info and record.exc_info[1] is not None:
            parts.append("".join(traceback.format_exception(record.exc_info[1])))
        parts.append(record.exc_text or "")
    return "\n".join(parts)


def _unreachable(port: int = 9, **extra: Any) -> dict[str, Any]:
    return {
        "type": "sqs",
        "region": "us-east-1",
        "endpoint_url": f"http://pashq:{SECRET}@127.0.0.1:{port}",
        **extra,
    }


def test_failed_push_to_an_endpoint_with_a_password_never_shows_it(
    caplog: pytest.LogCaptureFixture,
) -> None:
    caplog.set_level(logging.DEBUG)
    conn = make_connection(_unreachable())
    try:
        with pytest.raises(PashqError) as info:
            conn.hook.pashq_declare(queue="orders")
    finally:
        conn.close()
    assert "127.0.0.1:9" in str(info.value)
    assert SECRET not in "".join(traceback.format_exception(info.value))
    assert SECRET not in _everything_logged(caplog)


def test_worker_on_an_unreachable_endpoint_never_logs_its_password(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The worker logs each failed pull (the first one with its traceback), and botocore
    and urllib3 log every attempt at DEBUG: none of it may carry the password."""
    caplog.set_level(logging.DEBUG)
    url = "http://127.0.0.1:9/000000000000/orders"
    conn = make_connection(_unreachable(queue_urls={"orders": url}))
    worker = Worker(["orders"], connection=conn, poll_timeout=0.1, install_signal_handlers=False)
    stopper = threading.Timer(3.0, worker.stop)
    stopper.start()
    raised = ""
    try:
        worker.run()
    except DriverError as exc:  # declare may fail first: its text is checked too
        raised = "".join(traceback.format_exception(exc))
    finally:
        stopper.cancel()
        conn.close()
    assert SECRET not in raised
    logged = _everything_logged(caplog)
    assert "127.0.0.1" in logged  # it did try, and said so
    assert SECRET not in logged
