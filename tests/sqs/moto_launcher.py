"""Run moto's standalone server (``python moto_launcher.py -H 127.0.0.1 -p PORT``) with a
faster clock.

moto's SQS model reads the time through ``unix_time()``, which builds two naive datetimes
per call; it calls it for every message of a queue on every request (the attribute
counts), which makes a 2,000-message queue crawl. ``time.time()`` returns the same value
(seconds since the epoch, UTC) a hundred times faster. Nothing else changes: the server is
a separate process that boto3 reaches over HTTP. The benchmark uses stock moto.
"""

from __future__ import annotations

import time
from datetime import datetime

import moto.core.utils
import moto.server
import moto.sqs.models

_original = moto.core.utils.unix_time


def unix_time(dt: datetime | None = None) -> float:
    """Seconds since the epoch: ``time.time()`` for "now", moto's own code otherwise."""
    return time.time() if dt is None else _original(dt)


def unix_time_millis(dt: datetime | None = None) -> float:
    """Milliseconds since the epoch."""
    return unix_time(dt) * 1000.0


for module in (moto.core.utils, moto.sqs.models):
    module.unix_time = unix_time  # type: ignore[attr-defined]
    module.unix_time_millis = unix_time_millis  # type: ignore[attr-defined]

if __name__ == "__main__":
    moto.server.main()
