"""pashq-rabbitmq beside raw pika, kombu and dramatiq (``python bench/bench_rabbitmq.py``).

Same workload as every pashq benchmark (see ``harness.py``): N messages of 253-byte JSON,
published from one process, then consumed with acknowledgement in one process, against the
RabbitMQ on ``PASHQ_BENCH_RABBITMQ_URL`` (default ``amqp://guest:guest@127.0.0.1:5672/%2F``).
Every case uses its own fresh durable queue (deleted afterwards), persistent messages and
prefetch 100.

Cases:
- ``raw pika, no confirms``: BlockingConnection ``basic_publish`` loop; ``basic_consume``
  with prefetch 100 and one ``basic_ack`` per message.
- ``raw pika, confirms``: the same with ``confirm_delivery()`` (waits for each confirm).
- ``pashq``: ``dispatch_many`` of typed messages (confirms on, pipelined), then
  ``Worker.run(max_messages=N)``; ``pashq, confirm = false`` without confirms.
- ``kombu, confirms`` / ``kombu, no confirms``: ``Producer.publish`` (``confirm_publish``
  transport option), ``Consumer`` with prefetch 100, ``message.ack()`` per message.
- ``dramatiq, confirms``: ``actor.send`` with ``confirm_delivery=True``; a dramatiq
  ``Worker`` with 8 threads and prefetch 100 processes the messages.

Needs the ``bench`` extra: ``pip install -e "plugins/pashq-rabbitmq[bench]"``.
"""

from __future__ import annotations

import json
import os
import sys
import threading
import time
import uuid
from pathlib import Path

import attrs

sys.path.insert(0, str(Path(__file__).parent))

from harness import Phases, Timer, body, main, payload

import pashq

URL = os.environ.get("PASHQ_BENCH_RABBITMQ_URL", "amqp://guest:guest@127.0.0.1:5672/%2F")
PREFETCH = 100
consumed: list[int] = []


@attrs.define
class InvoicePaid(pashq.Message, type_name="bench.invoice_paid"):
    """The benchmark message: 253 bytes of JSON."""

    id: int
    event: str
    payload: str

    def process_message(self) -> None:
        consumed.append(self.id)


def _queue() -> str:
    return f"bench-{uuid.uuid4().hex[:10]}"


def _delete(*names: str) -> None:
    import pika

    connection = pika.BlockingConnection(pika.URLParameters(URL))
    for name in names:
        channel = connection.channel()
        try:
            channel.queue_delete(name)
            channel.close()
        except Exception:
            pass
    connection.close()


# -- raw pika ---------------------------------------------------------------------------------


def _raw_pika(n: int, confirms: bool) -> Phases:
    import pika

    queue = _queue()
    bodies = [body(i) for i in range(n)]
    connection = pika.BlockingConnection(pika.URLParameters(URL))
    channel = connection.channel()
    channel.queue_declare(queue, durable=True)
    if confirms:
        channel.confirm_delivery()
    properties = pika.BasicProperties(delivery_mode=2, content_type="application/json")
    with Timer() as pub:
        for data in bodies:
            channel.basic_publish("", queue, data, properties)
    ids: list[int] = []
    consumer = connection.channel()
    consumer.basic_qos(prefetch_count=PREFETCH)

    def on_message(ch: object, method: object, props: object, data: bytes) -> None:
        ids.append(json.loads(data)["id"])
        consumer.basic_ack(method.delivery_tag)  # type: ignore[attr-defined]
        if len(ids) >= n:
            consumer.stop_consuming()

    consumer.basic_consume(queue, on_message)
    with Timer() as con:
        consumer.start_consuming()
    connection.close()
    _delete(queue)
    return Phases(pub.seconds, con.seconds, ids)


def raw_pika_no_confirms(n: int) -> Phases:
    return _raw_pika(n, False)


def raw_pika_confirms(n: int) -> Phases:
    return _raw_pika(n, True)


# -- pashq --------------------------------------------------------------------------------------


def _pashq(n: int, confirm: bool) -> Phases:
    queue = _queue()
    pashq.configure(
        {
            "queues": {
                "default": {
                    "type": "rabbitmq",
                    "url": URL,
                    "prefetch": PREFETCH,
                    "confirm": confirm,
                }
            }
        }
    )
    connection = pashq.queue()
    connection.hook.pashq_declare(queue=queue)
    messages = [InvoicePaid(**payload(i)) for i in range(n)]  # type: ignore[arg-type]
    with Timer() as pub:
        connection.dispatch_many(queue, messages)
    worker = pashq.Worker(queue, max_messages=n, install_signal_handlers=False)
    with Timer() as con:
        worker.run()
    pashq.close()
    _delete(queue, f"{queue}.failed")
    return Phases(pub.seconds, con.seconds, list(consumed))


def pashq_confirms(n: int) -> Phases:
    return _pashq(n, True)


def pashq_no_confirms(n: int) -> Phases:
    return _pashq(n, False)


# -- kombu --------------------------------------------------------------------------------------


def _kombu(n: int, confirms: bool) -> Phases:
    import kombu

    name = _queue()
    bodies = [body(i) for i in range(n)]
    with kombu.Connection(URL, transport_options={"confirm_publish": confirms}) as connection:
        queue = kombu.Queue(name, kombu.Exchange(""), routing_key=name, durable=True)
        channel = connection.channel()
        queue(channel).declare()
        producer = kombu.Producer(channel)
        with Timer() as pub:
            for data in bodies:
                producer.publish(
                    data,
                    routing_key=name,
                    delivery_mode=2,
                    content_type="application/json",
                    content_encoding="utf-8",
                    serializer=None,
                )
        ids: list[int] = []

        def on_message(message: kombu.Message) -> None:
            ids.append(json.loads(message.body)["id"])
            message.ack()

        consumer_channel = connection.channel()
        with (
            kombu.Consumer(
                consumer_channel,
                queues=[queue],
                on_message=on_message,
                prefetch_count=PREFETCH,
                accept=["json"],
            ),
            Timer() as con,
        ):
            while len(ids) < n:
                connection.drain_events(timeout=10)
    _delete(name)
    return Phases(pub.seconds, con.seconds, ids)


def kombu_confirms(n: int) -> Phases:
    return _kombu(n, True)


def kombu_no_confirms(n: int) -> Phases:
    return _kombu(n, False)


# -- dramatiq -----------------------------------------------------------------------------------


def dramatiq_confirms(n: int) -> Phases:
    import dramatiq
    from dramatiq.brokers.rabbitmq import RabbitmqBroker

    name = _queue()
    broker = RabbitmqBroker(url=URL, confirm_delivery=True)
    dramatiq.set_broker(broker)
    ids: list[int] = []
    lock = threading.Lock()
    done = threading.Event()

    @dramatiq.actor(queue_name=name, max_retries=0)
    def invoice_paid(id: int, event: str, payload: str) -> None:
        with lock:
            ids.append(id)
            if len(ids) >= n:
                done.set()

    broker.declare_queue(name)
    with Timer() as pub:
        for i in range(n):
            invoice_paid.send(**payload(i))
    worker = dramatiq.Worker(broker, worker_threads=8, worker_timeout=100)
    worker.consumer_whitelist = {name}
    with Timer() as con:
        worker.start()
        done.wait(600)
    worker.stop()
    broker.close()
    _delete(name, f"{name}.DQ", f"{name}.XQ")
    time.sleep(0)
    return Phases(pub.seconds, con.seconds, ids)


if __name__ == "__main__":
    main(
        {
            "raw pika, no confirms": raw_pika_no_confirms,
            "raw pika, confirms (one at a time)": raw_pika_confirms,
            "pashq rabbitmq (confirms, pipelined)": pashq_confirms,
            "pashq rabbitmq, confirm = false": pashq_no_confirms,
            "kombu, no confirms": kombu_no_confirms,
            "kombu, confirms": kombu_confirms,
            "dramatiq, confirms, 8 threads": dramatiq_confirms,
        },
        default_n=20_000,
        title="pashq-rabbitmq vs raw pika, kombu, dramatiq (RabbitMQ 3.10, prefetch 100)",
    )
