"""Unique messages: at most one queued message per key (``unique_for=`` on the class).

At dispatch the key (:meth:`pashq.Message.get_unique_key`, shortened to the store's 200
characters) is taken in the coordination store for ``unique_for`` seconds, owned by the
new message's id; a message whose key is held is not pushed, and dispatch answers the id
of the one holding it. The key travels in the envelope's ``pashq-unique`` header, so the
worker frees it when the message is acked or dead-lettered (``unique_until="ack"``) or
when its processing starts (``unique_until="start"``); ``unique_for`` bounds it either way.

On a driver that is its own store and implements ``pashq_push_unique`` (the database and
memory drivers) the check and the push are one transaction. Elsewhere the core takes the
keys, pushes, and gives the keys back when the push failed; a dispatching process that
dies between the two leaves the key held (no message) until ``unique_for`` ends.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING, Any

from pashq.coordination import store_key
from pashq.delivery import OutgoingMessage
from pashq.errors import PartialPushError

if TYPE_CHECKING:
    from pashq.connection import Connection
    from pashq.message import Message

__all__ = ["UNIQUE_HEADER", "Dispatched", "push_unique", "unique_key_of"]

log = logging.getLogger(__name__)

#: The envelope header carrying a unique message's coordination key.
UNIQUE_HEADER = "pashq-unique"


class Dispatched(list[str]):
    """The ids ``dispatch_many`` returns when unique messages were in the batch.

    A plain list of ids, in order (a duplicate's entry is the id of the message already
    queued), with :attr:`duplicates`, the positions of the messages that were not pushed.
    """

    duplicates: tuple[int, ...] = ()

    def __init__(self, ids: Sequence[str], duplicates: Sequence[int] = ()) -> None:
        super().__init__(ids)
        self.duplicates = tuple(duplicates)


def unique_key_of(message: Message) -> str:
    """The coordination key of a unique message (``unique:`` + its unique key)."""
    key = message.get_unique_key()
    if not isinstance(key, str) or not key:
        raise TypeError(
            f"{type(message).__qualname__}.get_unique_key() must return a non-empty str, "
            f"got {key!r}"
        )
    return store_key("unique", key)


def push_unique(
    connection: Connection, queue: str, batch: list[OutgoingMessage], options: Mapping[str, Any]
) -> Dispatched:
    """Push the messages of ``batch`` whose unique key is free; see the module docstring."""
    from pashq.coordination_store import store_for

    store = store_for(connection, "unique messages (unique_for=)")
    keys = [m.unique_key for m in batch]
    if store.connection is connection and connection.hook.pashq_push_unique.get_hookimpls():
        answers: list[str] = connection.hook.pashq_push_unique(
            queue=queue,
            messages=batch,
            keys=keys,
            ttls=[m.unique_for for m in batch],
            options=options,
        )
        return _report(queue, batch, answers)
    answers = []
    taken: list[OutgoingMessage] = []
    to_push: list[OutgoingMessage] = []
    try:
        for m in batch:
            if m.unique_key is None:
                to_push.append(m)
                answers.append(m.id)
                continue
            got = store.acquire(m.unique_key, m.id, m.unique_for)
            if got.taken:
                taken.append(m)
                to_push.append(m)
                answers.append(m.id)
            else:
                answers.append(got.holder or "")
        if to_push:
            connection._push_plain(queue, to_push, options)
    except PartialPushError as exc:
        stored = set(exc.stored)
        _give_back(store, [m for m in taken if m.id not in stored])
        raise
    except BaseException:
        _give_back(store, taken)
        raise
    return _report(queue, batch, answers)


def _give_back(store: Any, taken: Sequence[OutgoingMessage]) -> None:
    for m in taken:
        try:
            store.release(m.unique_key, m.id)
        except Exception:
            log.warning(
                "could not release unique key %r of message %s after its push failed; it "
                "frees itself after unique_for (%gs)",
                m.unique_key,
                m.id,
                m.unique_for,
                exc_info=True,
            )


def _report(queue: str, batch: Sequence[OutgoingMessage], answers: Sequence[str]) -> Dispatched:
    duplicates = [i for i, (m, got) in enumerate(zip(batch, answers, strict=True)) if got != m.id]
    for i in duplicates:
        log.debug(
            "message %s (%s) on %r not pushed: its unique key is held by message %s",
            batch[i].id,
            batch[i].type_name,
            queue,
            answers[i],
        )
    return Dispatched(answers, duplicates)
