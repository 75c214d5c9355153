"""Two schedulers, one ``* * * * *`` schedule, three minutes: exactly three dispatches, on
every backend (the slot keys live in the coordination store).

The schedulers run in two processes on an injected clock fifteen times faster than real
time (three simulated minutes in twelve seconds); ``test_real_time`` in
tests/schedules/test_scheduler.py is the unhurried variant (marked slow).
"""

from __future__ import annotations

import json
import math
import time
import uuid

import pashq

from .conftest import App
from .test_unique import _count_queued

_SPEED = 15.0


def test_two_schedulers_fire_each_slot_once(app: App) -> None:
    """Both schedulers run through the same three minute slots: 3 messages in all."""
    queue = app.queue("ticks")
    name = f"tick-{uuid.uuid4().hex[:8]}"
    # Simulated time starts 30 s into a minute: the minute's own slot is older than
    # catch_up (28 s) and is skipped; the next three slots fall within 180 s.
    base = math.floor(time.time() / 60) * 60 + 30.0
    wall = time.time() + 2.0  # both processes are running (importing) by then
    args = (name, queue, str(base), str(wall), str(_SPEED), "180")
    schedulers = [app.spawn("schedule", *args) for _ in range(2)]
    fired: list[str] = []
    for process in schedulers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        fired.extend(json.loads(out.strip().splitlines()[-1]))
    assert len(fired) == 3 and len(set(fired)) == 3
    pashq.configure(app.config)
    assert len(_count_queued(pashq.queue("main"), queue)) == 3
