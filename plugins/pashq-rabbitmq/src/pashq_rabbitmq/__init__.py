"""pashq-rabbitmq: the ``rabbitmq`` driver for pashq, on pika.

Install with ``pip install pashq-rabbitmq`` and configure a connection::

    [queues.default]
    type = "rabbitmq"
    url = "amqp://guest:guest@127.0.0.1:5672/%2F"

See :mod:`pashq_rabbitmq.driver` for the options and guarantees.
"""

from __future__ import annotations

from pashq_rabbitmq.driver import RabbitMQDriver
from pashq_rabbitmq.options import RabbitMQOptions

__all__ = ["RabbitMQDriver", "RabbitMQOptions"]
