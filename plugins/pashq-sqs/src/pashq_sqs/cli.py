"""``pashq sqs ...``: create queues and print the least-privilege IAM policy.

Registered through the ``pashq.commands`` entry point ``sqs``::

    pashq sqs create orders invoices        # queue + dead-letter queue + RedrivePolicy
    pashq sqs policy orders invoices        # the IAM policy a worker needs, as JSON
"""

from __future__ import annotations

import json
from typing import Any

import attrs
import click

from pashq.cli import cli_errors, connection_options, load_driver
from pashq_sqs.driver import SQSDriver
from pashq_sqs.errors import translated
from pashq_sqs.queues import QueueDirectory

__all__ = ["policy_document", "sqs"]


#: What a worker calls on its queues (batch actions are covered by these).
WORKER_ACTIONS = (
    "sqs:SendMessage",
    "sqs:ReceiveMessage",
    "sqs:DeleteMessage",
    "sqs:ChangeMessageVisibility",
    "sqs:GetQueueAttributes",
)
#: What a producer that only dispatches calls.
PRODUCER_ACTIONS = ("sqs:SendMessage", "sqs:GetQueueAttributes")


def _driver(connection: str, config: str | None, imports: tuple[str, ...]) -> SQSDriver:
    return load_driver(SQSDriver, connection, config, imports)


def policy_document(arns: list[str], actions: tuple[str, ...]) -> dict[str, Any]:
    """Return an IAM policy allowing ``actions`` on the queues ``arns``."""
    return {
        "Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": list(actions), "Resource": sorted(arns)}],
    }


@click.group()
def sqs() -> None:
    """Amazon SQS driver tools (pashq-sqs)."""


@sqs.command()
@click.argument("queues", nargs=-1, required=True)
@connection_options
@cli_errors
def create(
    queues: tuple[str, ...], connection: str, config: str | None, imports: tuple[str, ...]
) -> None:
    """Create QUEUES with their dead-letter queues and a RedrivePolicy (as create_queues
    does); queues that exist are left as they are."""
    driver = _driver(connection, config, imports)
    assert driver.queues is not None
    options = attrs.evolve(driver.options, create_queues=True)
    directory = QueueDirectory(
        driver.client, options, driver.queues.max_receive_count, driver.queues.where
    )
    for name in queues:
        info = directory.get(name)
        dlq = directory.dead_letter(name)
        click.echo(f"{name}: {info.url}" + (f" (dead letters: {dlq.url})" if dlq else ""))


@sqs.command()
@click.argument("queues", nargs=-1, required=True)
@connection_options
@click.option("--producer", is_flag=True, help="Only what dispatching needs.")
@cli_errors
def policy(
    queues: tuple[str, ...],
    connection: str,
    config: str | None,
    imports: tuple[str, ...],
    producer: bool,
) -> None:
    """Print the least-privilege IAM policy for QUEUES (and their dead-letter queues)."""
    driver = _driver(connection, config, imports)
    assert driver.queues is not None
    arns = []
    for name in queues:
        found = [driver.queues.get(name)]
        if not producer:
            dlq = driver.queues.dead_letter(name)
            if dlq is not None:
                found.append(dlq)
        for info in found:
            with translated("GetQueueAttributes", info.name, driver.options.endpoint_url):
                attributes = driver.client.get_queue_attributes(
                    QueueUrl=info.url, AttributeNames=["QueueArn"]
                )["Attributes"]
            arns.append(attributes["QueueArn"])
    actions = PRODUCER_ACTIONS if producer else WORKER_ACTIONS
    click.echo(json.dumps(policy_document(arns, actions), indent=2))
