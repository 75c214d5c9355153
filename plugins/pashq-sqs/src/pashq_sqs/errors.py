"""Turning boto3 failures into pashq errors that name the action, the queue and the fix."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from urllib.parse import urlsplit, urlunsplit

from botocore.exceptions import (
    BotoCoreError,
    ClientError,
    EndpointConnectionError,
    NoCredentialsError,
    NoRegionError,
)

from pashq.errors import ConfigError, DriverError, PashqError, QueueNotFoundError
from pashq_sqs.redacting import carries_secret, scrub

__all__ = [
    "NONEXISTENT_QUEUE",
    "IgnoredAttributeWarning",
    "error_code",
    "safe_url",
    "translated",
]

#: Error codes SQS uses for a missing queue (JSON and query protocols).
NONEXISTENT_QUEUE = frozenset(
    {"QueueDoesNotExist", "AWS.SimpleQueueService.NonExistentQueue", "NonExistentQueue"}
)
_DENIED = frozenset({"AccessDenied", "AccessDeniedException", "UnauthorizedOperation"})


class IgnoredAttributeWarning(UserWarning):
    """A message attribute the target queue type ignores (a delay on a FIFO queue, a
    deduplication id on a standard queue): the message is sent without it."""


def error_code(exc: ClientError) -> str:
    """Return the error code of a botocore ``ClientError``."""
    return str(exc.response.get("Error", {}).get("Code", ""))


def safe_url(url: str | None) -> str:
    """Return ``url`` without any user:password part, for messages and logs."""
    if not url:
        return "<AWS default endpoint>"
    parts = urlsplit(url)
    host = parts.hostname or ""
    if parts.port:
        host = f"{host}:{parts.port}"
    return urlunsplit((parts.scheme, host, parts.path, "", ""))


@contextmanager
def translated(
    action: str, queue: str, endpoint: str | None, create_queues: bool = False
) -> Iterator[None]:
    """Raise boto3 failures inside the block as pashq errors.

    :param action: the SQS action being called (``SendMessageBatch``).
    :param queue: the pashq queue name involved.
    :param endpoint: the configured endpoint URL, shown without credentials.
    :param create_queues: the connection's ``create_queues``: a queue missing although
        it is on was deleted after pashq resolved it, and the advice says so.
    """
    try:
        yield
    except PashqError:
        raise
    except ClientError as exc:
        code = error_code(exc)
        text = scrub(exc.response.get("Error", {}).get("Message", "") or str(exc))
        # The original is chained for debugging unless its text shows a password.
        cause = None if carries_secret(exc) else exc
        if code in NONEXISTENT_QUEUE:
            advice = (
                "it was deleted after this connection resolved it: recreate it "
                "(`pashq sqs create`) or restart the process, which creates it again"
                if create_queues
                else "create it, list its URL in 'queue_urls', or set create_queues = true"
            )
            raise QueueNotFoundError(
                f"SQS queue for {queue!r} does not exist ({action}): {advice}"
            ) from cause
        if code in _DENIED:
            raise DriverError(
                f"SQS refused {action} on queue {queue!r} ({code}): grant sqs:{action} on "
                f"the queue to these credentials (see the IAM policy in docs/sqs.md)"
            ) from cause
        raise DriverError(f"SQS {action} on queue {queue!r} failed: {code}: {text}") from cause
    except NoCredentialsError as exc:
        raise DriverError(
            f"no AWS credentials for {action} on queue {queue!r}: set AWS_ACCESS_KEY_ID / "
            "AWS_SECRET_ACCESS_KEY, a 'profile', or run with an instance/task role"
        ) from exc
    except NoRegionError as exc:
        raise ConfigError(
            f"no AWS region for queue {queue!r}: set 'region' in the connection's options "
            "or AWS_REGION in the environment"
        ) from exc
    except EndpointConnectionError:
        # botocore's text names the URL, password included: never chained.
        raise DriverError(
            f"cannot reach SQS at {safe_url(endpoint)} for {action} on queue {queue!r}: "
            "EndpointConnectionError; check 'endpoint_url'/'region' and the network"
        ) from None
    except BotoCoreError as exc:
        # Timeouts and protocol errors name the endpoint URL too.
        raise DriverError(
            f"SQS {action} on queue {queue!r} at {safe_url(endpoint)} failed: "
            f"{type(exc).__name__}: {scrub(str(exc))}"
        ) from (None if carries_secret(exc) else exc)
