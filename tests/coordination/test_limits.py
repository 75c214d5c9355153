"""Rate limits and concurrency caps across four worker processes, on every backend."""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

import pashq
from pashq.testing import wait_for

from .conftest import App

sys.path.insert(0, str(Path(__file__).parent))

import coordination_messages

#: Seconds between a start's admission by the store and the line the handler records
#: (thread scheduling on a loaded machine). Counting recorded starts in windows this much
#: shorter than the limit's period is sound: 51 recorded starts within 0.8 s mean 51
#: admissions within 1 s.
_SLACK = 0.2


def _workers(app: App, queue: str, stop: Path, count: int = 4, concurrency: int = 4) -> list:  # type: ignore[type-arg]
    return [app.spawn("work", queue, str(stop), str(concurrency)) for _ in range(count)]


def _stop(workers: list, stop: Path) -> list[dict]:  # type: ignore[type-arg]
    stop.touch()
    stats = []
    for process in workers:
        out, err = process.communicate(timeout=120)
        assert process.returncode == 0, err
        stats.append(json.loads(out.strip().splitlines()[-1]))
    return stats


def _most_in_window(times: list[float], window: float) -> int:
    most, first = 0, 0
    for last, at in enumerate(times):
        while at - times[first] >= window:
            first += 1
        most = max(most, last - first + 1)
    return most


def test_rate_limit_holds_across_four_workers(app: App) -> None:
    """``rate_limit="50/s"``: 4 workers (4 threads each) run 500 messages, each exactly
    once; no second holds more than 50 starts, so the last starts >= 9 s after the first
    (>= 9.5 s after the first dispatch);
    over-limit messages were deferred without counting attempts (none dead-lettered)."""
    pashq.configure(app.config)
    connection = pashq.queue("main")
    queue = app.queue("rate")
    stop = app.tmp / "stop"
    began = time.monotonic()
    for chunk in range(5):
        connection.dispatch_many(
            queue, [coordination_messages.CallApi(chunk * 100 + i) for i in range(100)]
        )
    workers = _workers(app, queue, stop)
    try:
        wait_for(
            lambda: len({mid for _, mid in app.events()}) >= 500,
            timeout=180,
            interval=0.2,
            what="500 messages started",
        )
        elapsed = time.monotonic() - began
    finally:
        stats = _stop(workers, stop)
    starts = app.events()
    times = [at for at, _ in starts]
    assert len({mid for _, mid in starts}) == 500
    if app.backend != "sqs":  # SQS is at-least-once: a receipt gone stale may run one twice
        assert len(starts) == 500
    assert _most_in_window(times, 1.0 - _SLACK) <= 50
    assert times[-1] - times[0] >= 9.0 - _SLACK  # what the window proves
    assert elapsed >= 9.5  # from the first dispatch (the figure)
    assert sum(s["dead_lettered"] for s in stats) == 0
    assert sum(s["deferred"] for s in stats) > 0
    print(
        f"{app.backend}: 500 messages at 50/s in {elapsed:.2f}s, "
        f"starts spread over {times[-1] - times[0]:.2f}s, "
        f"deferred {sum(s['deferred'] for s in stats)} times"
    )


def test_max_concurrency_holds_across_four_workers(app: App) -> None:
    """``max_concurrency=2``: 4 workers (4 threads each) never run 3 at once."""
    pashq.configure(app.config)
    connection = pashq.queue("main")
    queue = app.queue("cap")
    stop = app.tmp / "stop"
    connection.dispatch_many(queue, [coordination_messages.Render(i) for i in range(40)])
    workers = _workers(app, queue, stop)
    try:
        wait_for(lambda: len(app.events("end")) >= 40, timeout=180, interval=0.2, what="40 ends")
    finally:
        stats = _stop(workers, stop)
    changes = sorted(
        [(at, 1) for at, _ in app.events("start")] + [(at, -1) for at, _ in app.events("end")]
    )
    running = most = 0
    for _, step in changes:
        running += step
        most = max(most, running)
    assert len(app.events("start")) == 40
    assert most <= 2
    assert sum(s["dead_lettered"] for s in stats) == 0
    print(f"{app.backend}: at most {most} running; deferred {sum(s['deferred'] for s in stats)}")
