"""Idle wake-up latency per backend, an idle worker's CPU, and ``--processes`` on CPU-bound
handlers (``python bench/bench_latency.py``).

Latency: an idle ``pashq work`` runs in its own process (``python -m pashq work q``,
concurrency 1); this process dispatches one message every 20 ms (``--interval``), each
carrying the wall-clock time just before its ``dispatch()``; the handler's first statement
writes ``now - sent`` to a file. Reported: p50 / p90 / p99 / max of those latencies, and the
worker's CPU while idle (utime + stime from ``/proc/<pid>/stat`` over ``--idle-window``
seconds with nothing dispatched, as % of one core; the database server's own CPU is not
counted). Backends: SQLite (a fresh file), PostgreSQL (``PASHQ_BENCH_POSTGRESQL_URL``),
MariaDB (``PASHQ_BENCH_MYSQL_URL``), RabbitMQ (``PASHQ_BENCH_RABBITMQ_URL``); each run
uses fresh tables or queues.

CPU case (``--cpu``): ``pashq work q --until-empty`` on SQLite with handlers that spin the
CPU for ``--cpu-ms`` milliseconds of pure Python (the GIL holds), once with ``--processes 1``
and once with ``--processes 2``, alternating, ``--repeat`` times. Throughput is messages
over the span from the first handler start to the last handler end (process start-up is
not counted); the table shows the medians and the median of the per-round ratios.

Every message must arrive exactly once or the run fails.
"""

from __future__ import annotations

import argparse
import collections
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
import uuid
from pathlib import Path
from typing import Any

POSTGRESQL_URL = os.environ.get(
    "PASHQ_BENCH_POSTGRESQL_URL", "postgresql+psycopg://postgres@127.0.0.1:5432/test"
)
MYSQL_URL = os.environ.get("PASHQ_BENCH_MYSQL_URL", "mysql+pymysql://root@127.0.0.1:3306/test")
RABBITMQ_URL = os.environ.get("PASHQ_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")

APP = """
import os, time
import attrs
import pashq

OUT = os.environ["LATENCY_OUT"]


@attrs.define
class Ping(pashq.Message, type_name="bench.latency.ping"):
    n: int
    sent: float

    def process_message(self) -> None:
        latency = time.time() - self.sent
        with open(OUT, "a", encoding="ascii") as out:
            out.write(f"{self.n} {latency:.6f}\\n")


@attrs.define
class Burn(pashq.Message, type_name="bench.latency.burn"):
    n: int
    ms: float

    def process_message(self) -> None:
        started = time.time()
        end = time.thread_time() + self.ms / 1000
        x = 0
        while time.thread_time() < end:
            for i in range(1000):
                x += i * i
        with open(OUT, "a", encoding="ascii") as out:
            out.write(f"{self.n} {started:.6f} {time.time():.6f} {os.getpid()}\\n")
"""


def _config(backend: str, folder: Path, prefix: str) -> dict[str, Any]:
    if backend == "sqlite":
        return {"type": "database", "url": f"sqlite:///{folder / 'q.sqlite3'}"}
    if backend == "rabbitmq":
        return {"type": "rabbitmq", "url": RABBITMQ_URL}
    url = POSTGRESQL_URL if backend == "postgresql" else MYSQL_URL
    return {"type": "database", "url": url, "table_prefix": prefix, "create_tables": True}


def _write_config(folder: Path, table: dict[str, Any]) -> None:
    lines = ['imports = ["latency_app"]', "[queues.default]"]
    lines += [f"{key} = {json.dumps(value)}" for key, value in table.items()]
    (folder / "pashq.toml").write_text("\n".join(lines) + "\n")
    (folder / "latency_app.py").write_text(APP)


def _cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat", encoding="ascii") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def _lines(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split() for line in path.read_text().splitlines() if line.strip()]


def _wait_lines(path: Path, count: int, timeout: float) -> list[list[str]]:
    deadline = time.monotonic() + timeout
    while True:
        lines = _lines(path)
        if len(lines) >= count or time.monotonic() > deadline:
            return lines
        time.sleep(0.05)


def _percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    index = min(len(ordered) - 1, max(0, round(p / 100 * len(ordered) + 0.5) - 1))
    return ordered[index]


def _cleanup(backend: str, queue: str) -> None:
    import pashq

    if backend in ("postgresql", "mariadb"):
        pashq.queue().driver.drop_tables()
    elif backend == "rabbitmq":
        pashq.queue().purge(queue)


def latency(backend: str, count: int, interval: float, idle_window: float) -> dict[str, Any]:
    """Run one backend's latency case; returns the row of the table."""
    import pashq

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        prefix = f"lat{uuid.uuid4().hex[:6]}_"
        queue = f"latency-{uuid.uuid4().hex[:6]}"
        table = _config(backend, folder, prefix)
        _write_config(folder, table)
        out = folder / "out.txt"
        env = {**os.environ, "LATENCY_OUT": str(out)}
        sys.path.insert(0, str(folder))
        os.environ["LATENCY_OUT"] = str(out)
        pashq.configure(str(folder / "pashq.toml"))
        import latency_app

        pashq.queue().hook.pashq_declare(queue=queue)
        worker = subprocess.Popen(
            [sys.executable, "-m", "pashq", "work", queue],
            cwd=folder,
            env=env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        try:
            latency_app.Ping(-1, time.time()).dispatch(queue)  # warm-up: the worker is ready
            if len(_wait_lines(out, 1, 60)) < 1:
                raise RuntimeError(f"{backend}: the worker did not start")
            time.sleep(1.5)  # let the idle pause settle as it would on a quiet queue
            before = _cpu_seconds(worker.pid)
            time.sleep(idle_window)
            idle_cpu = (_cpu_seconds(worker.pid) - before) / idle_window * 100
            next_at = time.monotonic()
            for n in range(count):
                next_at += interval
                latency_app.Ping(n, time.time()).dispatch(queue)
                time.sleep(max(0.0, next_at - time.monotonic()))
            lines = _wait_lines(out, count + 1, 60)
        finally:
            worker.send_signal(signal.SIGTERM)
            try:
                worker.wait(30)
            except subprocess.TimeoutExpired:
                worker.kill()
            _cleanup(backend, queue)
            pashq.reset()
            sys.path.remove(str(folder))
            sys.modules.pop("latency_app", None)
        ids = [int(n) for n, _ in lines if int(n) >= 0]
        if sorted(ids) != list(range(count)):
            raise RuntimeError(
                f"{backend}: {len(ids)} of {count} arrived ({len(set(ids))} distinct)"
            )
        ms = [float(seconds) * 1000 for n, seconds in lines if int(n) >= 0]
        return {
            "backend": backend,
            "p50": _percentile(ms, 50),
            "p90": _percentile(ms, 90),
            "p99": _percentile(ms, 99),
            "max": max(ms),
            "idle_cpu": idle_cpu,
        }


def cpu_round(processes: int, count: int, cpu_ms: float) -> tuple[float, list[int]]:
    """Messages per second of ``count`` CPU-bound handlers on ``processes`` processes, and
    how many messages each process ran."""
    import pashq

    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        _write_config(folder, _config("sqlite", folder, ""))
        out = folder / "out.txt"
        os.environ["LATENCY_OUT"] = str(out)
        sys.path.insert(0, str(folder))
        try:
            pashq.configure(str(folder / "pashq.toml"))
            import latency_app

            pashq.queue().dispatch_many("cpu", [latency_app.Burn(n, cpu_ms) for n in range(count)])
            pashq.reset()
            subprocess.run(
                [
                    sys.executable,
                    "-m",
                    "pashq",
                    "work",
                    "cpu",
                    "--until-empty",
                    "--processes",
                    str(processes),
                    "--poll-timeout",
                    "0.2",
                ],
                cwd=folder,
                env={**os.environ, "LATENCY_OUT": str(out)},
                check=True,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        finally:
            sys.path.remove(str(folder))
            sys.modules.pop("latency_app", None)
        lines = _lines(out)
        if sorted(int(n) for n, *_ in lines) != list(range(count)):
            raise RuntimeError(f"cpu case: {len(lines)} of {count} handled")
        first = min(float(start) for _, start, _, _ in lines)
        last = max(float(end) for _, _, end, _ in lines)
        shares = sorted(collections.Counter(pid for *_, pid in lines).values())
        return count / (last - first), shares


def notify_cost(repeat: int, count: int = 300) -> tuple[list[float], list[float]]:
    """Single ``dispatch()`` rates on PostgreSQL with and without the NOTIFY, alternating."""
    from pashq.testing import make_connection
    from pashq.testing.messages import Recorded

    prefix = f"nc{uuid.uuid4().hex[:6]}_"
    rates: dict[bool, list[float]] = {True: [], False: []}
    table = {"type": "database", "url": POSTGRESQL_URL, "table_prefix": prefix}
    for _ in range(repeat):
        for listen in (True, False):
            conn = make_connection({**table, "create_tables": True, "listen": listen})
            conn.hook.pashq_declare(queue="q")
            started = time.perf_counter()
            for i in range(count):
                conn.dispatch("q", Recorded("k", i))
            rates[listen].append(count / (time.perf_counter() - started))
            conn.purge("q")
            conn.close()
    conn = make_connection(table)
    conn.driver.drop_tables()
    conn.close()
    return rates[True], rates[False]


def main() -> None:
    """Parse the options, run the cases, print the tables (Markdown)."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--backends", default="sqlite,postgresql,mariadb,rabbitmq", help="comma-separated"
    )
    parser.add_argument("-n", "--count", type=int, default=500, help="messages per backend")
    parser.add_argument("--interval", type=float, default=0.02, help="seconds between messages")
    parser.add_argument("--idle-window", type=float, default=5.0, help="seconds of idle CPU")
    parser.add_argument("--cpu", action="store_true", help="also run the --processes case")
    parser.add_argument("--cpu-only", action="store_true", help="only the --processes case")
    parser.add_argument("--cpu-count", type=int, default=200, help="CPU-bound messages")
    parser.add_argument("--cpu-ms", type=float, default=20.0, help="CPU ms per handler")
    parser.add_argument("--repeat", type=int, default=3, help="rounds of the CPU case")
    parser.add_argument(
        "--notify-cost", action="store_true", help="single dispatch() with and without NOTIFY"
    )
    args = parser.parse_args()
    print(f"python {sys.version.split()[0]}, {os.cpu_count()} cores; machine: see docs")
    if not args.cpu_only:
        print(f"\n{args.count} messages, one every {args.interval * 1000:g} ms, idle worker\n")
        print("| backend | p50 ms | p90 ms | p99 ms | max ms | idle worker CPU |")
        print("|---|---:|---:|---:|---:|---:|")
        for backend in args.backends.split(","):
            row = latency(backend, args.count, args.interval, args.idle_window)
            print(
                f"| {row['backend']} | {row['p50']:.1f} | {row['p90']:.1f} | {row['p99']:.1f} "
                f"| {row['max']:.1f} | {row['idle_cpu']:.2f}% |",
                flush=True,
            )
    if args.cpu or args.cpu_only:
        one: list[float] = []
        two: list[float] = []
        ratios: list[float] = []
        shares: list[list[int]] = []
        for _ in range(args.repeat):
            a, _ = cpu_round(1, args.cpu_count, args.cpu_ms)
            b, share = cpu_round(2, args.cpu_count, args.cpu_ms)
            one.append(a)
            two.append(b)
            ratios.append(b / a)
            shares.append(share)
        print(f"\nCPU-bound handlers ({args.cpu_count} x {args.cpu_ms:g} ms, SQLite), medians\n")
        print("| processes | msg/s | ratio |")
        print("|---:|---:|---:|")
        print(f"| 1 | {statistics.median(one):.1f} | 1.00 |")
        print(f"| 2 | {statistics.median(two):.1f} | {statistics.median(ratios):.2f} |")
        print(f"\nratios per round: {', '.join(f'{r:.2f}' for r in ratios)}")
        print(f"messages per process (2 processes): {shares}")
    if args.notify_cost:
        with_notify, without = notify_cost(args.repeat)
        ratio = statistics.median(a / b for a, b in zip(with_notify, without, strict=True))
        print("\nPostgreSQL, 300 single dispatch() calls, medians\n")
        print("| NOTIFY per dispatch | msg/s |")
        print("|---|---:|")
        print(f"| yes (`listen = true`) | {statistics.median(with_notify):.0f} |")
        print(f"| no (`listen = false`) | {statistics.median(without):.0f} |")
        print(f"\nratio with/without: {ratio:.2f}")


if __name__ == "__main__":
    main()
