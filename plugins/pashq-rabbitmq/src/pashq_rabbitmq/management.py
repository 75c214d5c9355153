"""Queue counts from RabbitMQ's management HTTP API (the ``management_url`` option).

AMQP itself reports only a queue's ready count (passive declare). The management plugin
(``rabbitmq-plugins enable rabbitmq_management``) also knows the unacknowledged count;
with ``management_url`` set, ``pashq stats`` asks it. Its figures are refreshed by the
broker every few seconds (``collect_statistics_interval``, 5 s by default).
"""

from __future__ import annotations

import base64
import json
import urllib.error
import urllib.parse
import urllib.request

import attrs

from pashq.errors import DriverError, QueueNotFoundError
from pashq.redaction import redact_url

__all__ = ["ManagementCounts", "queue_counts", "queue_names"]


@attrs.frozen
class ManagementCounts:
    """What the management API reports for one queue."""

    ready: int
    unacknowledged: int


def queue_counts(
    management_url: str, amqp_url: str, queue: str, timeout: float
) -> ManagementCounts:
    """Return the ready and unacknowledged counts of ``queue``.

    Credentials come from ``management_url`` if it has any, else from the AMQP URL; the
    vhost is the AMQP URL's.

    :raises QueueNotFoundError: the broker has no such queue.
    :raises DriverError: the API cannot be reached or answers something else.
    """
    vhost = _vhost(amqp_url)
    request = _request(management_url, amqp_url, f"/{urllib.parse.quote(queue, safe='')}")
    shown = redact_url(management_url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.load(response)
    except urllib.error.HTTPError as exc:
        if exc.code == 404:
            raise QueueNotFoundError(f"RabbitMQ has no queue {queue!r} (vhost {vhost!r})") from exc
        raise DriverError(
            f"RabbitMQ management API at {shown} answered HTTP {exc.code} for queue {queue!r}"
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DriverError(
            f"cannot read queue {queue!r} from the RabbitMQ management API at {shown}: {exc} "
            "(is the plugin enabled? rabbitmq-plugins enable rabbitmq_management)"
        ) from exc
    return ManagementCounts(
        ready=int(data.get("messages_ready", 0) or 0),
        unacknowledged=int(data.get("messages_unacknowledged", 0) or 0),
    )


def queue_names(management_url: str, amqp_url: str, timeout: float) -> list[str]:
    """Return the names of every queue of the AMQP URL's vhost (``GET /api/queues/<vhost>``).

    Credentials and vhost as for :func:`queue_counts`.

    :raises DriverError: the API cannot be reached or answers something else.
    """
    vhost = _vhost(amqp_url)
    request = _request(management_url, amqp_url, "", query="columns=name")
    shown = redact_url(management_url)
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            data = json.load(response)
    except urllib.error.HTTPError as exc:
        raise DriverError(
            f"RabbitMQ management API at {shown} answered HTTP {exc.code} listing the queues "
            f"of vhost {vhost!r}"
        ) from exc
    except (urllib.error.URLError, OSError, ValueError) as exc:
        raise DriverError(
            f"cannot list queues from the RabbitMQ management API at {shown}: {exc} "
            "(is the plugin enabled? rabbitmq-plugins enable rabbitmq_management)"
        ) from exc
    if not isinstance(data, list):
        raise DriverError(f"RabbitMQ management API at {shown} did not answer a list of queues")
    return [str(q["name"]) for q in data if isinstance(q, dict) and "name" in q]


def _vhost(amqp_url: str) -> str:
    """The AMQP URL's vhost (``/`` when the URL names none)."""
    path = urllib.parse.urlsplit(amqp_url).path
    return urllib.parse.unquote(path[1:]) if len(path) > 1 else "/"


def _request(
    management_url: str, amqp_url: str, under: str, query: str = ""
) -> urllib.request.Request:
    """A GET of ``/api/queues/<vhost><under>``, with credentials from ``management_url`` if
    it has any, else from the AMQP URL (``guest`` by default)."""
    amqp = urllib.parse.urlsplit(amqp_url)
    base = urllib.parse.urlsplit(management_url)
    user = urllib.parse.unquote(base.username or amqp.username or "guest")
    password = urllib.parse.unquote(base.password or amqp.password or "guest")
    netloc = base.hostname or ""
    if base.port:
        netloc = f"{netloc}:{base.port}"
    vhost = urllib.parse.quote(_vhost(amqp_url), safe="")
    path = f"{base.path.rstrip('/')}/api/queues/{vhost}{under}"
    url = urllib.parse.urlunsplit((base.scheme, netloc, path, query, ""))
    token = base64.b64encode(f"{user}:{password}".encode()).decode()
    return urllib.request.Request(url, headers={"Authorization": f"Basic {token}"})
