"""pashq-redis beside raw redis-py, rq, arq and kombu (``python bench/bench_redis.py``).

Same workload as every pashq benchmark (see ``harness.py``): N messages of 253-byte JSON,
published from one process, then consumed with acknowledgement in one process, against the
Redis on ``PASHQ_BENCH_REDIS_URL`` (default ``redis://127.0.0.1:6379/0``). Every case uses
its own fresh keys (deleted afterwards).

Cases:
- ``raw redis-py (ceiling)``: pipelined ``LPUSH`` (one round trip per 500 messages), then
  batched ``RPOP key 100`` and ``json.loads`` per message. No lease, no ack, no retry: a
  worker that dies loses what it popped. This is the ceiling, not a peer.
- ``raw redis-py + msgspec``: the same, with ``msgspec.json.decode`` instead of
  ``json.loads`` (for reference only: pashq reads envelopes with msgspec, the ceiling
  above uses the standard library as every raw case of the harness does).
- ``pashq redis``: ``dispatch_many`` of typed messages (one Lua script call per 500, one
  pipeline), then ``Worker.run(max_messages=N)`` (leased claims of 500, batched acks).
- ``rq``: ``Queue.enqueue_many`` (its batched enqueue, one pipeline), then a
  ``SimpleWorker`` in burst mode (no fork per job) running a function that records the id.
- ``arq``: ``ArqRedis.enqueue_job`` per message (arq has no batch enqueue), then an arq
  ``Worker`` in burst mode (``max_jobs`` 100).
- ``kombu redis (Celery's transport)``: ``Producer.publish`` per message, then a
  ``Consumer`` with prefetch 100 and ``message.ack()`` per message; Celery's Redis broker is
  this transport.

Needs the ``bench`` extra: ``pip install -e core -e "plugins/pashq-redis[bench]"`` (rq, arq
and kombu are never test dependencies).
"""

from __future__ import annotations

import asyncio
import json
import os
import sys
import uuid
from pathlib import Path
from typing import Any

import attrs

sys.path.insert(0, str(Path(__file__).parent))

from harness import Phases, Timer, body, main, payload

import pashq

URL = os.environ.get("PASHQ_BENCH_REDIS_URL", "redis://127.0.0.1:6379/0")
consumed: list[int] = []


@attrs.define
class InvoicePaid(pashq.Message, type_name="bench.invoice_paid"):
    """The benchmark message: 253 bytes of JSON."""

    id: int
    event: str
    payload: str

    def process_message(self) -> None:
        consumed.append(self.id)


def record(message: dict[str, Any]) -> None:
    """The job rq runs (imported by name: ``bench_redis.record``)."""
    consumed.append(message["id"])


async def arq_record(ctx: dict[str, Any], message: dict[str, Any]) -> None:
    """The job arq runs."""
    consumed.append(message["id"])


def _prefix() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


def _delete(pattern: str) -> None:
    import redis

    client = redis.Redis.from_url(URL)
    keys = list(client.scan_iter(match=pattern, count=1000))
    for start in range(0, len(keys), 500):
        client.delete(*keys[start : start + 500])
    client.close()


# -- raw redis-py -------------------------------------------------------------------------------


def raw_redis(n: int, loads: Any = json.loads) -> Phases:
    import redis

    key = f"{_prefix()}:raw"
    bodies = [body(i) for i in range(n)]
    client = redis.Redis.from_url(URL)
    with Timer() as pub:
        pipe = client.pipeline(transaction=False)
        for index, data in enumerate(bodies, 1):
            pipe.lpush(key, data)
            if index % 500 == 0:
                pipe.execute()
        pipe.execute()
    ids: list[int] = []
    with Timer() as con:
        while len(ids) < n:
            got = client.rpop(key, 100)
            for data in got or []:
                ids.append(loads(data)["id"])
    client.delete(key)
    client.close()
    return Phases(pub.seconds, con.seconds, ids)


def raw_redis_msgspec(n: int) -> Phases:
    import msgspec

    return raw_redis(n, msgspec.json.decode)


# -- pashq ----------------------------------------------------------------------------------------


def pashq_redis(n: int) -> Phases:
    prefix = _prefix()
    queue = "bench"
    pashq.configure(
        {"queues": {"default": {"type": "redis", "url": URL, "key_prefix": f"{prefix}:"}}}
    )
    connection = pashq.queue()
    messages = [InvoicePaid(**payload(i)) for i in range(n)]  # type: ignore[arg-type]
    with Timer() as pub:
        connection.dispatch_many(queue, messages)
    worker = pashq.Worker(queue, max_messages=n, install_signal_handlers=False)
    with Timer() as con:
        worker.run()
    pashq.close()
    _delete(f"{prefix}:*")
    return Phases(pub.seconds, con.seconds, list(consumed))


# -- rq -------------------------------------------------------------------------------------------


def rq_case(n: int) -> Phases:
    import redis
    import rq

    client = redis.Redis.from_url(URL)
    name = _prefix()
    queue = rq.Queue(name, connection=client)
    jobs = [
        rq.Queue.prepare_data(record, args=(payload(i),), result_ttl=0, description="bench")
        for i in range(n)
    ]
    with Timer() as pub:
        for start in range(0, n, 500):
            queue.enqueue_many(jobs[start : start + 500])
    worker = rq.SimpleWorker([queue], connection=client)
    with Timer() as con:
        worker.work(burst=True, logging_level="WARNING")
    queue.delete(delete_jobs=True)
    _delete(f"rq:*{name}*")
    client.close()
    return Phases(pub.seconds, con.seconds, list(consumed))


# -- arq ------------------------------------------------------------------------------------------


def arq_case(n: int) -> Phases:
    from arq import Worker, create_pool
    from arq.connections import RedisSettings

    name = _prefix()
    settings = RedisSettings.from_dsn(URL)

    async def run() -> tuple[float, float]:
        pool = await create_pool(settings, default_queue_name=name)
        with Timer() as pub:
            for i in range(n):
                await pool.enqueue_job("arq_record", payload(i), _queue_name=name)
        worker = Worker(
            functions=[arq_record],  # type: ignore[list-item]
            redis_pool=pool,
            queue_name=name,
            burst=True,
            max_jobs=100,
            keep_result=0,
            handle_signals=False,
            poll_delay=0.05,
        )
        with Timer() as con:
            await worker.main()
        await worker.close()
        await pool.aclose()
        return pub.seconds, con.seconds

    pub_s, con_s = asyncio.run(run())
    _delete(f"*{name}*")
    _delete("arq:job:*")
    return Phases(pub_s, con_s, list(consumed))


# -- kombu (Celery's Redis transport) -------------------------------------------------------------


def kombu_redis(n: int) -> Phases:
    import kombu

    name = _prefix()
    bodies = [body(i) for i in range(n)]
    ids: list[int] = []
    with kombu.Connection(URL) as connection:
        queue = kombu.Queue(name, kombu.Exchange(name, type="direct"), routing_key=name)
        channel = connection.channel()
        queue(channel).declare()
        producer = kombu.Producer(channel, exchange=queue.exchange, routing_key=name)
        with Timer() as pub:
            for data in bodies:
                producer.publish(
                    data,
                    content_type="application/json",
                    content_encoding="utf-8",
                    serializer=None,
                )

        def on_message(message: kombu.Message) -> None:
            ids.append(json.loads(message.body)["id"])
            message.ack()

        consumer_channel = connection.channel()
        with (
            kombu.Consumer(
                consumer_channel,
                queues=[queue],
                on_message=on_message,
                prefetch_count=100,
                accept=["json"],
            ),
            Timer() as con,
        ):
            while len(ids) < n:
                connection.drain_events(timeout=10)
        queue(channel).delete()
    _delete(f"*{name}*")
    return Phases(pub.seconds, con.seconds, ids)


if __name__ == "__main__":
    main(
        {
            "raw redis-py (ceiling)": raw_redis,
            "raw redis-py + msgspec": raw_redis_msgspec,
            "pashq redis": pashq_redis,
            "rq": rq_case,
            "arq": arq_case,
            "kombu redis (Celery's transport)": kombu_redis,
        },
        default_n=20_000,
        title="pashq-redis beside raw redis-py, rq, arq and kombu",
    )
