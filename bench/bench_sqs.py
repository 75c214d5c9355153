"""pashq-sqs beside raw boto3 and kombu's SQS transport (``python bench/bench_sqs.py``).

Same workload as every pashq benchmark (see ``harness.py``): N messages (default 2,000) of
253-byte JSON, published from one process, consumed with acknowledgement in one process,
every id checked. moto's SQS slows down as a queue grows (it rescans the queue on every
call), so the queue is kept small: each case publishes 100 messages, consumes those 100,
and repeats; the publish and consume phases are timed separately and summed.

All cases run against ONE moto server (stock ``python -m moto.server``), started by this
script on a free loopback port unless ``PASHQ_BENCH_SQS_ENDPOINT`` names a running one.
Each case uses its own fresh standard queue. The notes count SQS API calls per message
(what SQS bills), counted in botocore under every client.

Cases:
- ``raw boto3 (batches of 10)``: SendMessageBatch of 10; ReceiveMessage (10, no wait)
  and one DeleteMessageBatch per receive.
- ``pashq``: ``dispatch_many`` of typed messages (the driver sends batches of 10), then
  ``Worker(max_messages=100).run()`` (long-poll receive of 10, DeleteMessageBatch acks,
  heartbeat thread running). A chunk's consume time ends when its last DeleteMessageBatch
  returns: stopping the Worker afterwards (up to 0.2 s for its heartbeat thread, see
  plugins/pashq-sqs/CORE_REQUESTS.md) is a per-Worker cost that a long-running worker does
  not pay per 100 messages; the rate including it is printed below the table.
- ``kombu SQS``: ``SimpleQueue.put`` per message; ``SimpleQueue.get`` + ``ack`` per
  message (kombu sends, receives and deletes one at a time here).

``--rounds R`` runs the cases interleaved (A, B, C, A, B, C, ...) R times instead of
case after case, and prints the pashq / raw boto3 ratio of each round: use it on a
machine shared with other jobs, where load drifts between cases.

Needs the ``bench`` extra: ``pip install -e "plugins/pashq-sqs[bench]"``.
"""

from __future__ import annotations

import collections
import json
import os
import socket
import statistics
import subprocess
import sys
import time
import urllib.error
import urllib.request
import uuid
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).parent))

from harness import Phases, Timer, body, main, payload

import pashq

ENDPOINT_VAR = "PASHQ_BENCH_SQS_ENDPOINT"
NOTES_VAR = "PASHQ_BENCH_SQS_NOTES"
REGION = "us-east-1"
CHUNK = 100  # queue depth: publish this many, consume them, repeat
consumed: list[int] = []
calls: collections.Counter[str] = collections.Counter()


@attrs.define
class InvoicePaid(pashq.Message, type_name="bench.invoice_paid"):
    """The benchmark message: 253 bytes of JSON."""

    id: int
    event: str
    payload: str

    def process_message(self) -> None:
        consumed.append(self.id)


def _count_api_calls() -> None:
    """Count every SQS API call any botocore client makes in this process."""
    import botocore.client

    original = botocore.client.BaseClient._make_api_call

    def counting(self: Any, operation_name: str, api_params: Any) -> Any:
        calls[operation_name] += 1
        return original(self, operation_name, api_params)

    botocore.client.BaseClient._make_api_call = counting  # type: ignore[method-assign]


def _notes(case: str, n: int, extra: dict[str, float] | None = None) -> dict[str, float]:
    """API calls per message, also appended to the notes file the parent prints."""
    notes = {name: round(count / n, 3) for name, count in sorted(calls.items())}
    notes["all"] = round(sum(calls.values()) / n, 3)
    path = os.environ.get(NOTES_VAR)
    if path:
        with open(path, "a") as fh:
            fh.write(json.dumps({"case": case, "calls": notes, "extra": extra or {}}) + "\n")
    return {**notes, **(extra or {})}


def _print_calls(path: str) -> None:
    runs: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    extras: dict[str, list[float]] = collections.defaultdict(list)
    with open(path) as fh:
        for line in fh:
            run = json.loads(line)
            runs[run["case"]].append(run["calls"])
            for key, value in run.get("extra", {}).items():
                extras[f"{run['case']}: {key}"].append(value)
    print("\nSQS API calls per message (median of runs):\n")
    print("| case | all | SendMessage(Batch) | ReceiveMessage | DeleteMessage(Batch) | other |")
    print("|---|---:|---:|---:|---:|---:|")
    for case, found in runs.items():

        def median(*names: str, found: list[dict[str, float]] = found) -> float:
            return statistics.median(sum(r.get(x, 0.0) for x in names) for r in found)

        send = median("SendMessage", "SendMessageBatch")
        receive = median("ReceiveMessage")
        delete = median("DeleteMessage", "DeleteMessageBatch")
        total = median("all")
        other = max(0.0, total - send - receive - delete)
        print(f"| {case} | {total:.3f} | {send:.3f} | {receive:.3f} | {delete:.3f} | {other:.3f} |")
    for key, values in extras.items():
        print(f"\n{key}: {statistics.median(values):,.0f} msg/s (median)")


def _endpoint() -> str:
    return os.environ[ENDPOINT_VAR]


def _queue() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


def _chunks(n: int) -> list[range]:
    return [range(start, min(n, start + CHUNK)) for start in range(0, n, CHUNK)]


def raw_boto3(n: int) -> Phases:
    import boto3

    client = boto3.client("sqs", region_name=REGION, endpoint_url=_endpoint())
    url = client.create_queue(QueueName=_queue())["QueueUrl"]
    _count_api_calls()
    ids: list[int] = []
    publish = consume = 0.0
    for chunk in _chunks(n):
        with Timer() as t:
            numbers = list(chunk)
            for start in range(0, len(numbers), 10):
                entries = [
                    {"Id": str(j), "MessageBody": body(i).decode()}
                    for j, i in enumerate(numbers[start : start + 10])
                ]
                response = client.send_message_batch(QueueUrl=url, Entries=entries)
                assert not response.get("Failed"), response["Failed"]
        publish += t.seconds
        with Timer() as t:
            got = 0
            while got < len(chunk):
                messages = client.receive_message(
                    QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0
                ).get("Messages", [])
                if not messages:
                    continue
                ids.extend(json.loads(m["Body"])["id"] for m in messages)
                client.delete_message_batch(
                    QueueUrl=url,
                    Entries=[
                        {"Id": str(j), "ReceiptHandle": m["ReceiptHandle"]}
                        for j, m in enumerate(messages)
                    ],
                )
                got += len(messages)
        consume += t.seconds
    return Phases(publish, consume, ids, _notes("raw boto3 (batches of 10)", n))


def pashq_sqs(n: int) -> Phases:
    from pashq.testing import make_connection

    conn = make_connection(
        {
            "type": "sqs",
            "endpoint_url": _endpoint(),
            "region": REGION,
            "create_queues": True,
            "visibility_timeout": 30,
            "wait_time": 1,
        }
    )
    queue = _queue()
    conn.hook.pashq_declare(queue=queue)
    _count_api_calls()
    last_delete = [0.0]

    def deleted(**kwargs: Any) -> None:
        last_delete[0] = time.perf_counter()

    conn.driver.client.meta.events.register("after-call.sqs.DeleteMessageBatch", deleted)
    publish = consume = with_teardown = 0.0
    for chunk in _chunks(n):
        messages = [InvoicePaid(**payload(i)) for i in chunk]
        with Timer() as t:
            conn.dispatch_many(queue, messages)
        publish += t.seconds
        worker = pashq.Worker(
            queue, connection=conn, max_messages=len(chunk), install_signal_handlers=False
        )
        with Timer() as t:
            worker.run()
        # The chunk is consumed when its last ack (DeleteMessageBatch) returns; run() then
        # stops the heartbeat thread, a per-Worker cost a long-running worker never pays.
        consume += last_delete[0] - t.start
        with_teardown += t.seconds
    conn.close()
    extra = {"consume_with_worker_teardown_per_s": round(n / with_teardown, 1)}
    return Phases(publish, consume, consumed, _notes("pashq sqs", n, extra))


def kombu_sqs(n: int) -> Phases:
    import kombu

    host_port = _endpoint().removeprefix("http://")
    connection = kombu.Connection(
        f"sqs://@{host_port}",
        transport_options={"region": REGION, "is_secure": False, "wait_time_seconds": 1},
    )
    queue = connection.SimpleQueue(_queue())
    _count_api_calls()
    ids: list[int] = []
    publish = consume = 0.0
    for chunk in _chunks(n):
        with Timer() as t:
            for i in chunk:
                queue.put(payload(i))
        publish += t.seconds
        with Timer() as t:
            for _ in chunk:
                message = queue.get(block=True, timeout=30)
                ids.append(message.payload["id"])
                message.ack()
        consume += t.seconds
    queue.close()
    connection.release()
    return Phases(publish, consume, ids, _notes("kombu SQS transport", n))


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _start_moto() -> subprocess.Popen[bytes]:
    port = _free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + 60
    while True:
        try:
            with urllib.request.urlopen(f"{url}/moto-api/", timeout=2):
                break
        except (urllib.error.URLError, OSError):
            if process.poll() is not None or time.monotonic() > deadline:
                raise SystemExit(f"moto's server did not start on {url}") from None
            time.sleep(0.1)
    os.environ[ENDPOINT_VAR] = url
    return process


CASES = {
    "raw boto3 (batches of 10)": raw_boto3,
    "pashq sqs": pashq_sqs,
    "kombu SQS transport": kombu_sqs,
}


def _interleaved(argv: list[str]) -> None:
    """Run the cases in rounds (A, B, C, A, B, C, ...) rather than case after case, so a
    machine whose load drifts (other jobs on the same cores) skews every case alike; print
    the medians in the harness's table format plus the pashq / raw boto3 ratios."""
    import argparse
    import contextlib
    import io
    import platform

    parser = argparse.ArgumentParser(description="pashq-sqs benchmark, interleaved rounds")
    parser.add_argument("-n", type=int, default=2_000)
    parser.add_argument("--rounds", type=int, default=3)
    args, _ = parser.parse_known_args(argv)
    results: dict[str, list[dict[str, float]]] = collections.defaultdict(list)
    result_file = Path(f"/tmp/pashq-bench-sqs-{os.getpid()}.json")
    for number in range(args.rounds):
        for case in CASES:
            with contextlib.redirect_stdout(io.StringIO()):
                main(
                    CASES,
                    argv=[
                        "--only",
                        case,
                        "--repeat",
                        "1",
                        "-n",
                        str(args.n),
                        "--json",
                        str(result_file),
                    ],
                )
            (row,) = json.loads(result_file.read_text())["rows"]
            results[case].append(row)
            print(
                f"  round {number + 1}: {case}: publish {row['publish_per_s']:,.0f}/s, "
                f"consume {row['consume_per_s']:,.0f}/s",
                file=sys.stderr,
                flush=True,
            )
    result_file.unlink(missing_ok=True)
    print(
        f"\nSQS (moto server), queue depth <= {CHUNK} — N = {args.n:,}, median of "
        f"{args.rounds} interleaved rounds, {platform.python_version()}\n"
    )
    print("| case | publish msg/s | consume msg/s | peak RSS MB |")
    print("|---|---:|---:|---:|")
    medians = {}
    for case, rows in results.items():
        pub = statistics.median(r["publish_per_s"] for r in rows)
        con = statistics.median(r["consume_per_s"] for r in rows)
        rss = statistics.median(r["rss_mb"] for r in rows)
        medians[case] = (pub, con)
        print(f"| {case} | {pub:,.0f} | {con:,.0f} | {rss:.0f} |")
    raw, ours = "raw boto3 (batches of 10)", "pashq sqs"
    if raw in results and ours in results:
        pub_ratios = [
            o["publish_per_s"] / r["publish_per_s"]
            for o, r in zip(results[ours], results[raw], strict=True)
        ]
        con_ratios = [
            o["consume_per_s"] / r["consume_per_s"]
            for o, r in zip(results[ours], results[raw], strict=True)
        ]
        print(
            f"\npashq / raw boto3, per round: publish "
            f"{', '.join(f'{x:.2f}' for x in pub_ratios)} (median "
            f"{statistics.median(pub_ratios):.2f}); consume "
            f"{', '.join(f'{x:.2f}' for x in con_ratios)} (median "
            f"{statistics.median(con_ratios):.2f})"
        )


if __name__ == "__main__":
    for key, value in {
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_DEFAULT_REGION": REGION,
        "AWS_EC2_METADATA_DISABLED": "true",
    }.items():
        os.environ.setdefault(key, value)
    server = None
    parent = "--child" not in sys.argv
    if parent:
        if ENDPOINT_VAR not in os.environ:
            server = _start_moto()
        notes = Path(f"/tmp/pashq-bench-sqs-{os.getpid()}.jsonl")
        notes.unlink(missing_ok=True)
        os.environ[NOTES_VAR] = str(notes)
    try:
        if parent and "--rounds" in sys.argv:
            _interleaved(sys.argv[1:])
        else:
            main(CASES, default_n=2_000, title="SQS (moto server), queue depth <= 100")
    finally:
        if server is not None:
            server.terminate()
            server.wait()
        if parent and notes.exists():
            _print_calls(str(notes))
            notes.unlink()
