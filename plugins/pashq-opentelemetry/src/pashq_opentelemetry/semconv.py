"""The OpenTelemetry messaging semantic conventions as pashq uses them: attribute names,
operation names and the ``messaging.system`` of each pashq driver.

The conventions' well-known ``messaging.system`` values cover brokers (``rabbitmq``,
``aws_sqs``); for the database driver pashq reports the SQL backend itself, named as
OpenTelemetry's database conventions name it (``postgresql``, ``sqlite``, ``mysql``), since
that is what an operator looks for. Other drivers report ``pashq.<driver>``.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

__all__ = [
    "ATTEMPT",
    "BATCH_MESSAGE_COUNT",
    "BODY_SIZE",
    "DEAD_LETTER_REASON",
    "DESTINATION_NAME",
    "ERROR_TYPE",
    "MESSAGE_ID",
    "MESSAGE_TYPE",
    "OPERATION_NAME",
    "OPERATION_TYPE",
    "OUTCOME",
    "RETRY_DELAY",
    "SYSTEM",
    "messaging_system",
]

SYSTEM = "messaging.system"
DESTINATION_NAME = "messaging.destination.name"
MESSAGE_ID = "messaging.message.id"
OPERATION_TYPE = "messaging.operation.type"
OPERATION_NAME = "messaging.operation.name"
BATCH_MESSAGE_COUNT = "messaging.batch.message_count"
BODY_SIZE = "messaging.message.body.size"
ERROR_TYPE = "error.type"
#: pashq's own attributes (the conventions have no generic delivery-attempt attribute).
MESSAGE_TYPE = "pashq.message.type"
ATTEMPT = "pashq.attempt"
OUTCOME = "pashq.outcome"
RETRY_DELAY = "pashq.retry.delay"
DEAD_LETTER_REASON = "pashq.dead_letter.reason"

_BROKERS = {"rabbitmq": "rabbitmq", "sqs": "aws_sqs"}
_SQL = {
    "postgresql": "postgresql",
    "postgres": "postgresql",
    "sqlite": "sqlite",
    "mysql": "mysql",
    "mariadb": "mariadb",
    "mssql": "microsoft.sql_server",
    "oracle": "oracle.db",
}


def messaging_system(driver: str, options: Mapping[str, Any]) -> str:
    """Return the ``messaging.system`` value for a connection.

    :param driver: the driver name (``type = ...`` in the config).
    :param options: the connection's driver options (the database driver's ``url`` names
        the SQL backend).

    >>> messaging_system("sqs", {})
    'aws_sqs'
    >>> messaging_system("database", {"url": "postgresql+psycopg://db/app"})
    'postgresql'
    """
    if driver in _BROKERS:
        return _BROKERS[driver]
    if driver == "database":
        url = options.get("url")
        if isinstance(url, str) and ":" in url:
            dialect = url.split(":", 1)[0].split("+", 1)[0].lower()
            return _SQL.get(dialect, dialect)
        return "sqlite"  # the database driver's default URL
    return f"pashq.{driver}"
