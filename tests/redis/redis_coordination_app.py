"""One process of the Redis coordination tests: ``python redis_coordination_app.py MODE ...``.

Modes:

- ``dispatch QUEUE GO N ACCOUNT OUT``: wait for the file ``GO``, dispatch
  ``RedisUnique(ACCOUNT)`` ``N`` times to ``main``/``QUEUE``, write the returned ids (one a
  line) to ``OUT``.
- ``work QUEUE STOP CONCURRENCY``: run a worker on ``main``/``QUEUE`` until the file
  ``STOP`` exists, then print its stats as JSON.

The messages are in ``redis_coordination_messages.py``.
"""

from __future__ import annotations

import json
import sys
import threading
import time
from pathlib import Path

from redis_coordination_messages import RedisUnique

import pashq


def _wait_file(path: Path, timeout: float = 120.0) -> None:
    deadline = time.monotonic() + timeout
    while not path.exists():
        if time.monotonic() > deadline:
            raise SystemExit(f"{path} never appeared")
        time.sleep(0.01)


def main() -> None:
    """Run one mode (see the module docstring)."""
    mode, config = sys.argv[1], json.loads(Path(sys.argv[2]).read_text())
    pashq.configure(config)
    if mode == "dispatch":
        queue, go, count = sys.argv[3], Path(sys.argv[4]), int(sys.argv[5])
        account, out = int(sys.argv[6]), Path(sys.argv[7])
        connection = pashq.queue("main")
        connection.check_queue_name(queue)
        _wait_file(go)
        ids = [connection.dispatch(queue, RedisUnique(account)) for _ in range(count)]
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
        print(json.dumps(worker.run().as_dict()), flush=True)
    else:
        raise SystemExit(f"unknown mode {mode!r}")


if __name__ == "__main__":
    main()
