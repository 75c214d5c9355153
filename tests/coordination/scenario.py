"""One process of a coordination test: ``python scenario.py MODE CONFIG.json ...``.

Modes:

- ``dispatch QUEUE GO N ACCOUNT OUT``: wait for the file ``GO``, dispatch
  ``SyncAccount(ACCOUNT)`` ``N`` times to ``main``/``QUEUE``, write the returned ids (one
  a line) to ``OUT``.
- ``schedule NAME QUEUE BASE WALL SPEED SECONDS``: run a scheduler for schedule ``NAME``
  (``* * * * *``, message ``Tick`` to ``main``/``QUEUE``, ``catch_up`` 28 s) on a clock
  that reads ``BASE`` at wall time ``WALL`` and runs ``SPEED`` times faster, until it reads
  ``BASE + SECONDS``; print the slots it fired as JSON.
- ``work QUEUE STOP CONCURRENCY``: run a worker on ``main``/``QUEUE`` until the file
  ``STOP`` exists.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

import coordination_messages

import pashq


def _wait_file(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.01)


def main() -> None:
    mode, config = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    pashq.configure(config)
    if mode == "dispatch":
        queue, go, count = sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])
        account, out = int(sys.argv[6]), Path(sys.argv[7])
        connection = pashq.queue("main")
        connection.check_queue_name(queue)
        _wait_file(go)
        message = coordination_messages.SyncAccount(account)
        ids = [connection.dispatch(queue, message) for _ in range(count)]
        out.write_text("\n".join(ids) + "\n")
    elif mode == "work":
        queue, stop, concurrency = sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])
        worker = pashq.Worker(
            queue,
            connection="main",
            concurrency=concurrency,
            install_signal_handlers=False,
            poll_timeout=0.5,
        )

        def watch() -> None:
            _wait_file(stop, timeout=600.0)
            worker.stop()

        threading.Thread(target=watch, daemon=True).start()
        stats = worker.run()
        print(json.dumps(stats.as_dict()), flush=True)
    elif mode == "schedule":
        name, queue = sys.argv[3], sys.argv[4]
        base, wall, speed, seconds = (float(a) for a in sys.argv[5:9])

        def clock() -> float:
            return base + (time.time() - wall) * speed

        item = pashq.Schedule(
            name, "coord.tick", "* * * * *", queue=queue, connection="main", catch_up=28.0
        )
        runner = pashq.Scheduler([item], clock=clock, poll=0.005)
        time.sleep(max(0.0, wall - time.time()))  # both processes start together

        def watch() -> None:
            while clock() < base + seconds:
                time.sleep(0.005)
            runner.stop()

        threading.Thread(target=watch, daemon=True).start()
        runner.run()
        print(json.dumps([f.slot.isoformat() for f in runner.fired]), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
