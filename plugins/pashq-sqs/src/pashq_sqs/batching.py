"""SQS batch actions: split into legal batches, retry failed entries, report the rest.

SendMessageBatch, DeleteMessageBatch and ChangeMessageVisibilityBatch take at most 10
entries (and, for sends, at most 1 MiB in all) and can fail per entry while the call as a
whole succeeds. Entries that failed on the server's side are retried a few times; entries
the server rejected (``SenderFault``) or that keep failing are returned to the caller,
which reports them: an entry is never dropped silently.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs

__all__ = ["MAX_ENTRIES", "Failure", "call_batch", "split"]

#: The most entries an SQS batch action takes.
MAX_ENTRIES = 10
_RETRIES = 3
_PAUSE = 0.1


@attrs.frozen
class Failure:
    """One batch entry that could not be applied.

    :ivar entry: the request entry.
    :ivar code: the error code SQS returned.
    :ivar message: the error text SQS returned.
    :ivar sender_fault: whether SQS blamed the request (retrying will not help).
    """

    entry: dict[str, Any]
    code: str
    message: str
    sender_fault: bool


def split(
    entries: Sequence[dict[str, Any]],
    size: Callable[[dict[str, Any]], int] | None = None,
    max_bytes: int = 0,
) -> Iterator[list[dict[str, Any]]]:
    """Yield batches of at most :data:`MAX_ENTRIES` entries and ``max_bytes`` in all."""
    batch: list[dict[str, Any]] = []
    total = 0
    for entry in entries:
        weight = size(entry) if size is not None else 0
        if batch and (len(batch) >= MAX_ENTRIES or (max_bytes and total + weight > max_bytes)):
            yield batch
            batch, total = [], 0
        batch.append(entry)
        total += weight
    if batch:
        yield batch


def call_batch(
    call: Callable[[list[dict[str, Any]]], dict[str, Any]],
    entries: list[dict[str, Any]],
    *,
    retries: int = _RETRIES,
) -> list[Failure]:
    """Apply one batch with ``call`` (a boto3 ``*_batch`` method bound to its queue).

    :returns: the entries that still failed, with SQS's reason; ``[]`` when all succeeded.
    """
    final: list[Failure] = []
    pending = entries
    for attempt in range(retries + 1):
        if attempt:
            time.sleep(_PAUSE * 2 ** (attempt - 1))
        response = call(pending)
        failed = response.get("Failed") or []
        if not failed:
            return final
        by_id = {entry["Id"]: entry for entry in pending}
        failures = [
            Failure(
                by_id[f["Id"]],
                str(f.get("Code", "")),
                str(f.get("Message", "")),
                bool(f.get("SenderFault")),
            )
            for f in failed
            if f.get("Id") in by_id
        ]
        final.extend(f for f in failures if f.sender_fault)
        retryable = [f for f in failures if not f.sender_fault]
        if not retryable:
            return final
        if attempt == retries:
            return final + retryable
        pending = [f.entry for f in retryable]
    return final  # pragma: no cover - the loop always returns
