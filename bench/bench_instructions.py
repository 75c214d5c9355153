"""Instructions per message on the memory driver (``python bench/bench_instructions.py``).

Timings on the shared 2-core development machine swing by +-50 % from one minute to the
next; instruction counts do not. This runs the standard workload (``harness.py``'s 253-byte
message, ``dispatch_many`` then ``Worker.run``) under valgrind's callgrind, for N and 2N
messages, and reports the difference per message, so start-up (imports, config) cancels
out. Needs valgrind (``apt-get install valgrind``); each count takes about a minute.

``--core PATH`` measures another checkout's core (``PATH`` = its ``core/src``), to compare
two commits on the same interpreter: ``git worktree add /tmp/old <rev>`` then
``--core /tmp/old/core/src``. ``--wrapper noop|prometheus`` registers a ``pashq_process``
wrapper (a no-op one, or ``--metrics-port``'s) on the connection first.
"""

from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).parent))

from bench_memory import InvoicePaid
from harness import payload

import pashq


class _NoOp:
    @pashq.hookimpl(wrapper=True)
    def pashq_process(self, delivery: Any, envelope: Any, message: Any) -> Any:
        return (yield)


def child(n: int, phases: str, wrapper: str, driver: str = "memory") -> None:
    """What runs under valgrind: set up, then publish (and consume) ``n`` messages."""
    import gc
    import uuid

    gc.disable()  # a collection's cost depends on the whole heap, not on the message
    table: dict[str, Any] = {"type": "memory"}
    if driver == "redis":
        url = os.environ.get("PASHQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
        table = {"type": "redis", "url": url, "key_prefix": f"instr-{uuid.uuid4().hex[:8]}:"}
    pashq.configure({"queues": {"default": table}})
    connection = pashq.queue()
    if wrapper == "noop":
        connection.plugin_manager.register(_NoOp())
    elif wrapper == "prometheus":
        from pashq.worker.prometheus import WorkerMetrics

        connection.plugin_manager.register(WorkerMetrics(connection, ["bench"], 3600.0))
    messages = [InvoicePaid(**payload(i)) for i in range(n)]  # type: ignore[arg-type]
    connection.dispatch_many("warm", messages[:10])  # first-call costs, outside the count
    pashq.Worker("warm", max_messages=10, install_signal_handlers=False).run()
    if phases in ("publish", "both"):
        connection.dispatch_many("bench", messages)
    if phases == "both":
        pashq.Worker("bench", max_messages=n, install_signal_handlers=False).run()
    if driver == "redis":
        for queue in ("warm", "bench"):
            connection.driver.delete_queue(queue)


def _count(core: str | None, n: int, phases: str, wrapper: str, driver: str) -> int:
    env = dict(os.environ)
    if core:
        env["PYTHONPATH"] = core + os.pathsep + env.get("PYTHONPATH", "")
    command = [
        "valgrind",
        "--tool=callgrind",
        "--callgrind-out-file=/dev/null",
        sys.executable,
        __file__,
        "--child",
        str(n),
        phases,
        wrapper,
        driver,
    ]
    done = subprocess.run(command, env=env, capture_output=True, text=True, check=True)
    found = re.search(r"Collected\s*:\s*(\d+)", done.stderr)
    if found is None:
        raise SystemExit(f"no instruction count in valgrind's output:\n{done.stderr[-2000:]}")
    return int(found.group(1))


def main() -> None:
    """Print publish and consume instructions per message."""
    parser = argparse.ArgumentParser(description="instructions per message (callgrind)")
    parser.add_argument("-n", type=int, default=1000, help="messages of the smaller run")
    parser.add_argument("--core", help="another core/src to import pashq from")
    parser.add_argument("--wrapper", choices=["none", "noop", "prometheus"], default="none")
    parser.add_argument(
        "--driver",
        choices=["memory", "redis"],
        default="memory",
        help="redis: the client's instructions against PASHQ_BENCH_REDIS_URL (the server's "
        "work is not counted)",
    )
    args = parser.parse_args()
    if shutil.which("valgrind") is None:
        raise SystemExit("valgrind is not installed (apt-get install valgrind)")
    counts = {
        (size, phases): _count(args.core, size, phases, args.wrapper, args.driver)
        for size in (args.n, 2 * args.n)
        for phases in ("none", "publish", "both")
    }

    def per_message(phases: str, before: str) -> float:
        grown = counts[(2 * args.n, phases)] - counts[(2 * args.n, before)]
        small = counts[(args.n, phases)] - counts[(args.n, before)]
        return (grown - small) / args.n

    print(
        f"core {args.core or 'installed'}, wrapper {args.wrapper}, driver {args.driver}: "
        f"publish {per_message('publish', 'none') / 1000:.1f}k instructions/message, "
        f"consume {per_message('both', 'publish') / 1000:.1f}k instructions/message"
    )


if __name__ == "__main__":
    if "--child" in sys.argv:
        at = sys.argv.index("--child")
        child(int(sys.argv[at + 1]), sys.argv[at + 2], sys.argv[at + 3], sys.argv[at + 4])
    else:
        main()
