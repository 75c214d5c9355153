"""The coordination store's vocabulary: holds on keys and sliding windows.

Unique messages, rate limits, concurrency caps and schedules need state shared by every
process and host of an application. Brokers such as RabbitMQ and SQS do not keep it, so
a driver may offer it through the coordination hooks (capability ``coordination``, see
:mod:`pashq.hookspecs` and ``docs/writing-a-driver.md``), and a connection without them
borrows another connection's (``coordination = "<connection>"`` in its config).

Two primitives, both timed on the backend's clock (never a worker's):

- a **hold**: one of ``limit`` places on a key, taken by an owner token for ``ttl``
  seconds unless all places are live (``pashq_lock_acquire``), released or extended only
  by its owner (``pashq_lock_release``, ``pashq_lock_extend``). ``limit=1`` is a lock
  (unique messages, schedule slots); ``limit=N`` a semaphore (``max_concurrency=N``).
- a **sliding window**: count one event on a key unless ``limit`` were counted in the
  last ``period`` seconds (``pashq_window_add``). Exact: no interval of ``period`` seconds
  ever holds more than ``limit`` counted events, unlike fixed windows, which let ``2 *
  limit`` through around a window boundary.
"""

from __future__ import annotations

import hashlib

import attrs

__all__ = ["KEY_LENGTH", "OWNER_LENGTH", "Acquired", "store_key"]

#: Longest key a driver must store (characters); the core shortens longer ones.
KEY_LENGTH = 200
#: Longest owner token a driver must store (characters; message ids are 32).
OWNER_LENGTH = 64


@attrs.frozen(slots=True)
class Acquired:
    """What ``pashq_lock_acquire`` answers.

    :ivar taken: the owner now holds a place on the key.
    :ivar holder: with ``taken``, the owner itself; refused, the owner of the live hold
        that ends first (for ``limit=1``, the one holder: a unique message's id).
    :ivar wait: refused, the seconds until that hold ends (``> 0``); taken, ``0.0``.
    """

    taken: bool
    holder: str | None = None
    wait: float = 0.0


def store_key(*parts: str) -> str:
    """Join ``parts`` into a key of at most :data:`KEY_LENGTH` characters.

    Parts are joined with ``:``; a longer result keeps its first 150 characters and ends
    with the SHA-256 of the whole, so distinct keys stay distinct and readable.
    """
    key = ":".join(parts)
    if len(key) <= KEY_LENGTH:
        return key
    digest = hashlib.sha256(key.encode("utf-8", "surrogatepass")).hexdigest()
    return f"{key[:150]}~{digest[:49]}"
