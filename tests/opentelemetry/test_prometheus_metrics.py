"""``pashq work --metrics-port``: a running worker's /metrics, scraped over HTTP and parsed
with prometheus-client's parser, counts what it processed (SQLite, separate process)."""

from __future__ import annotations

import json
import queue as queue_module
import signal
import subprocess
import sys
import threading
import time
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from otel_messages import AlwaysFails, FailsTwice, Fine
from otel_support import backend_table, worker_env, write_config
from prometheus_client.parser import text_string_to_metric_families

import pashq
from pashq.errors import ConfigError, PashqError
from pashq.testing import make_connection
from pashq.worker.prometheus import serve_metrics

Samples = dict[tuple[str, tuple[tuple[str, str], ...]], float]


class RunningWorker:
    """A ``pashq work`` subprocess whose stderr lines are read as they come."""

    def __init__(self, command: list[str], env: dict[str, str], cwd: Path) -> None:
        self.proc = subprocess.Popen(
            command, env=env, cwd=cwd, stderr=subprocess.PIPE, stdout=subprocess.PIPE, text=True
        )
        self.lines: queue_module.Queue[str] = queue_module.Queue()
        self.seen: list[str] = []
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)

    def wait_for_line(self, found: Callable[[dict[str, Any]], bool], timeout: float = 60) -> Any:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                line = self.lines.get(timeout=0.2)
            except queue_module.Empty:
                if self.proc.poll() is not None:
                    break
                continue
            self.seen.append(line)
            record = json.loads(line)
            if found(record):
                return record
        pytest.fail(f"no such log line within {timeout}s; seen:\n{''.join(self.seen)[-3000:]}")

    def stop(self) -> int:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
        try:
            return self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            return self.proc.wait()


def scrape(url: str) -> Samples:
    """GET /metrics and parse it: (sample name, sorted labels) -> value."""
    with urllib.request.urlopen(url, timeout=10) as response:
        text = response.read().decode()
    return {
        (sample.name, tuple(sorted(sample.labels.items()))): sample.value
        for family in text_string_to_metric_families(text)
        for sample in family.samples
    }


def wait_for_scrape(url: str, ready: Callable[[Samples], bool], timeout: float = 60) -> Samples:
    deadline = time.monotonic() + timeout
    while True:
        samples = scrape(url)
        if ready(samples) or time.monotonic() > deadline:
            return samples
        time.sleep(0.1)


@pytest.fixture
def worker(tmp_path: Path, queue_name: str, request: pytest.FixtureRequest) -> Iterator[Any]:
    """Dispatch 5 fine, 1 failing twice, 1 dead-lettered message; start a worker with
    --metrics-port 0 and four handler threads; yield (worker, metrics URL, queue)."""
    table = backend_table("sqlite", tmp_path, queue_name, request)
    config = write_config(tmp_path / "pashq.toml", table, imports=["otel_messages"])
    producer = make_connection(table)
    producer.dispatch_many(queue_name, [Fine(i) for i in range(5)])
    producer.dispatch(queue_name, FailsTwice(5))
    producer.dispatch(queue_name, AlwaysFails(6))
    producer.close()
    command = [
        sys.executable, "-m", "pashq", "work", queue_name, "--config", str(config),
        "--metrics-port", "0", "--metrics-interval", "0.2", "--log-format", "json",
        "--poll-timeout", "0.2", "--concurrency", "4",  # counts kept per handler thread
    ]  # fmt: skip
    running = RunningWorker(command, worker_env(), tmp_path)
    try:
        record = running.wait_for_line(lambda r: r["event"] == "metrics.serving")
        url = record["message"].removeprefix("serving metrics on ")
        yield running, url, queue_name
    finally:
        assert running.stop() == 0


def _handled(samples: Samples, queue: str, kind: str, outcome: str) -> float:
    key = (
        "pashq_messages_handled_total",
        (("outcome", outcome), ("queue", queue), ("type", kind)),
    )
    return samples.get(key, 0.0)


def test_scraped_counts_equal_what_the_worker_processed(worker: Any) -> None:
    _, url, queue = worker
    samples = wait_for_scrape(
        url, lambda s: _handled(s, queue, "pashq_tests.otel.always_fails", "dead_letter") == 1
    )
    samples = wait_for_scrape(
        url, lambda s: _handled(s, queue, "pashq_tests.otel.fails_twice", "ack") == 1
    )
    assert _handled(samples, queue, "pashq_tests.otel.fine", "ack") == 5
    assert _handled(samples, queue, "pashq_tests.otel.fails_twice", "retry") == 2
    assert _handled(samples, queue, "pashq_tests.otel.fails_twice", "ack") == 1
    assert _handled(samples, queue, "pashq_tests.otel.always_fails", "retry") == 1
    assert _handled(samples, queue, "pashq_tests.otel.always_fails", "dead_letter") == 1
    counts = {
        dict(labels)["type"]: value
        for (name, labels), value in samples.items()
        if name == "pashq_message_process_duration_seconds_count"
    }
    assert counts == {
        "pashq_tests.otel.fine": 5,
        "pashq_tests.otel.fails_twice": 3,
        "pashq_tests.otel.always_fails": 2,
    }
    assert samples[("pashq_messages_in_flight", (("queue", queue),))] == 0


def test_queue_depth_is_sampled_from_the_drivers_stats(worker: Any) -> None:
    _, url, queue = worker

    def depth(s: Samples, state: str) -> float | None:
        return s.get(("pashq_queue_messages", (("queue", queue), ("state", state))))

    # The dead letter may be sampled while the message failing twice waits for its retry
    # (ready again): wait for the sample after both have settled.
    samples = wait_for_scrape(url, lambda s: depth(s, "failed") == 1 and depth(s, "ready") == 0)
    assert depth(samples, "failed") == 1
    assert depth(samples, "ready") == 0


def test_worker_info_and_start_time_are_exported(worker: Any) -> None:
    _, url, queue = worker
    samples = scrape(url)
    [info] = [labels for (name, labels), _ in samples.items() if name == "pashq_worker_info"]
    assert dict(info)["driver"] == "database"
    assert dict(info)["queues"] == queue
    assert dict(info)["version"] == pashq.__version__
    started = samples[("pashq_worker_start_time_seconds", ())]
    assert time.time() - 600 < started <= time.time()


def test_missing_prometheus_client_is_an_error_naming_the_extra(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(sys.modules, "prometheus_client", None)
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    with pytest.raises(ConfigError, match=r"pip install 'pashq\[prometheus\]'"):
        serve_metrics(pashq.queue(), ["q"], port=0)


def test_port_in_use_is_an_error_naming_the_option() -> None:
    pashq.configure({"queues": {"default": {"type": "memory"}}})
    server = serve_metrics(pashq.queue(), ["q"], port=0)
    try:
        with pytest.raises(PashqError, match=rf"cannot serve metrics on 127.0.0.1:{server.port}"):
            serve_metrics(pashq.queue(), ["q"], port=server.port)
    finally:
        server.close()


def _free_port_pair() -> int:
    """A port P with P and P + 1 both free on 127.0.0.1 (for two worker processes)."""
    import socket

    for _ in range(50):
        with socket.socket() as first:
            first.bind(("127.0.0.1", 0))
            port = int(first.getsockname()[1])
            with socket.socket() as second:
                try:
                    second.bind(("127.0.0.1", port + 1))
                except OSError:
                    continue
                return port
    pytest.fail("no two consecutive free ports")


def test_each_worker_process_serves_its_own_port(
    tmp_path: Path, queue_name: str, request: pytest.FixtureRequest
) -> None:
    """``--processes 2 --metrics-port P``: process 0 serves P, process 1 serves P + 1, and
    their counts add up to what was processed."""
    table = backend_table("sqlite", tmp_path, queue_name, request)
    config = write_config(tmp_path / "pashq.toml", table, imports=["otel_messages"])
    producer = make_connection(table)
    producer.dispatch_many(queue_name, [Fine(i) for i in range(20)])
    producer.close()
    port = _free_port_pair()
    command = [
        sys.executable, "-m", "pashq", "work", queue_name, "--config", str(config),
        "--processes", "2", "--metrics-port", str(port), "--log-format", "json",
        "--poll-timeout", "0.2",
    ]  # fmt: skip
    running = RunningWorker(command, worker_env(), tmp_path)
    try:
        urls = [f"http://127.0.0.1:{p}/metrics" for p in (port, port + 1)]
        serving: set[str] = set()  # the two children start in either order

        def both_serving(record: dict[str, Any]) -> bool:
            for p in (port, port + 1):
                if f"serving metrics on http://127.0.0.1:{p}/" in record["message"]:
                    serving.add(str(p))
            return len(serving) == 2

        running.wait_for_line(both_serving)

        def acked() -> float:
            return sum(
                _handled(scrape(u), queue_name, "pashq_tests.otel.fine", "ack") for u in urls
            )

        deadline = time.monotonic() + 60
        while acked() < 20 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert acked() == 20
    finally:
        assert running.stop() == 0


def test_metrics_port_zero_is_refused_with_processes(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "pashq", "work", "q", "--processes", "2", "--metrics-port", "0"],
        capture_output=True, text=True, cwd=tmp_path, env=worker_env(), timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "child i serves on PORT + i" in done.stderr
