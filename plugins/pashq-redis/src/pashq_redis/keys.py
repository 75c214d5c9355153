"""The Redis keys of one queue, all in one Redis Cluster hash slot.

Every key of queue ``Q`` is ``<key_prefix>{Q}:<part>``: the queue name is the key's hash
tag, so a cluster keeps all of them on one node and every Lua script may touch them
together. A queue name must therefore hold no ``{`` or ``}`` (nor may the prefix), which
:func:`queue_name_problem` says.
"""

from __future__ import annotations

import attrs
from redis.crc import key_slot

__all__ = ["PARTS", "QueueKeys", "queue_name_problem"]

#: Parts of a queue's keys: the message store, the sets a message moves between, the dead
#: letters, the id sequence, the wake-up list and the list of fresh messages (see
#: :mod:`pashq_redis.scripts`).
PARTS = (
    "seq",  # string: how many message numbers were given out (INCRBY); a number is 10**13 + n
    "body",  # hash: number -> "<id>\0<envelope bytes>"
    "meta",  # hash: number -> stamp, claims * 10**7 + attempts * 10 + priority (integer)
    "ready",  # sorted set: number, score 9 - priority (ties by number: FIFO)
    "delayed",  # sorted set: number, score = due time (ms, server clock)
    "leased",  # sorted set: number, score = lease deadline (ms, server clock)
    "failed",  # sorted set: number, score = dead-lettered at (ms, server clock)
    "reason",  # hash: number -> dead-letter reason
    "trace",  # hash: number -> dead-letter traceback
    "wake",  # list: tokens that wake an idle puller (BLPOP)
    "fresh",  # list: "<id>\0<envelope bytes>" pushed ready at priority 0, oldest first
)
#: Longest queue name, in UTF-8 bytes (keys stay short; Redis allows far more).
MAX_NAME_BYTES = 1000


def queue_name_problem(queue: str) -> str | None:
    """What is wrong with ``queue`` as a Redis queue name, or ``None``."""
    if "{" in queue or "}" in queue:
        return "contains '{' or '}', which would break the Redis Cluster hash tag of its keys"
    try:
        size = len(queue.encode("utf-8"))
    except UnicodeEncodeError:
        return "is not valid UTF-8 text (it holds a lone surrogate)"
    if size > MAX_NAME_BYTES:
        return f"is {size} bytes of UTF-8, more than {MAX_NAME_BYTES}"
    return None


@attrs.frozen
class QueueKeys:
    """The key names of one queue (see :data:`PARTS`)."""

    prefix: str
    queue: str

    def key(self, part: str) -> str:
        """The key of one part: ``<prefix>{<queue>}:<part>``."""
        return f"{self.prefix}{{{self.queue}}}:{part}"

    def all(self) -> list[str]:
        """Every key of the queue, in :data:`PARTS` order (a new list each call)."""
        return [self.key(part) for part in PARTS]

    def slot(self) -> int:
        """The Redis Cluster hash slot all of the queue's keys live in."""
        return key_slot(self.key("ready").encode("utf-8"))
