"""docs/envelope.md's plain-boto3 producer, run as written against moto's server.

boto3 finds the server through ``AWS_ENDPOINT_URL_SQS`` (the page's client names only a
region); only the queue name (``billing`` in the page) is replaced by the test's own.
"""

from __future__ import annotations

import re
import uuid
from typing import Any

import pytest
from doc_samples import code_block, paid_invoices

from pashq import Worker
from pashq.testing import make_connection

PAGE = "envelope.md"


@pytest.mark.parametrize("with_pashq_id", [True, False], ids=["pashq-id", "no-pashq-id"])
def test_the_boto3_producer_sample_reaches_a_pashq_worker(
    moto_endpoint: str, monkeypatch: pytest.MonkeyPatch, with_pashq_id: bool
) -> None:
    monkeypatch.setenv("AWS_ENDPOINT_URL_SQS", moto_endpoint)
    queue = f"docs-{uuid.uuid4().hex[:12]}"
    conn = make_connection(
        {"type": "sqs", "endpoint_url": moto_endpoint, "region": "eu-west-1", "create_queues": True}
    )
    conn.hook.pashq_declare(queue=queue)  # the queue exists before the producer runs
    namespace: dict[str, Any] = {}
    exec(code_block(PAGE, "def envelope("), namespace)
    producer = code_block(PAGE, "import boto3").replace(
        'QueueName="billing"', f"QueueName={queue!r}"
    )
    if not with_pashq_id:  # the attribute is optional: the envelope's id is used
        producer, removed = re.subn(r"\n\s*MessageAttributes=.*,", "", producer)
        assert removed == 1
    exec(producer, namespace)
    worker = Worker(queue, connection=conn, install_signal_handlers=False, max_messages=1)
    stats = worker.run()
    assert stats.acked == 1
    assert 42 in paid_invoices()
    conn.close()
