"""Rate limits, concurrency caps and the worker-side end of unique messages.

A message class may say ``rate_limit="100/m"`` (at most 100 processing starts in any
60 seconds) and ``max_concurrency=5`` (at most 5 running at once), each split by
:meth:`pashq.Message.get_limit_key`. Both hold across every worker process and host that
shares the coordination store, and both are checked when a handler is about to start, in
the handler's thread: the concurrency place first (``pashq_lock_acquire`` with
``limit=N``), then the rate window (``pashq_window_add``). A message over a limit is not
run: it goes back to its queue with a delay (outcome ``DEFER``), without counting an
attempt (``pashq_defer``, or a re-push of its envelope on drivers that cannot undo the
count). The delay is the store's answer (when the oldest start leaves the window) plus
jitter, never a poll: a deferred message costs one defer and one pull per window.

A concurrency place is held for :data:`PLACE_TTL` seconds and extended every
:data:`EXTEND_EVERY` seconds while the handler runs, so a worker killed mid-message frees
its place within :data:`PLACE_TTL` seconds.
"""

from __future__ import annotations

import logging
import random
import re
import threading
import time
import uuid
from typing import TYPE_CHECKING

from pashq.coordination import store_key
from pashq.unique import UNIQUE_HEADER

if TYPE_CHECKING:
    from pashq.connection import Connection
    from pashq.coordination_store import CoordinationStore
    from pashq.envelope import Envelope
    from pashq.message import Message
    from pashq.processing import Prepared

__all__ = ["EXTEND_EVERY", "PLACE_TTL", "Gate", "Pass", "parse_rate"]

log = logging.getLogger("pashq.worker")

#: Seconds a concurrency place lasts unless extended (a killed worker frees it by then).
PLACE_TTL = 30.0
#: Seconds between extensions of the places held by running handlers.
EXTEND_EVERY = 10.0
_UNITS = {"s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0}
_RATE = re.compile(r"^\s*(\d+)\s*/\s*(\d*(?:\.\d+)?)\s*(s|m|h|d)\s*$")
#: Longest pause for a message refused a concurrency place (a place frees when a handler
#: ends, which the store cannot announce): it tries again after 0.2 to this many seconds.
_PLACE_RETRY = 1.0
_LOG_EVERY = 10.0


def parse_rate(text: object, where: str) -> tuple[int, float]:
    """Parse ``"100/m"``, ``"50/s"``, ``"1000/h"``, ``"10/30s"`` into ``(limit, seconds)``.

    :raises ValueError: naming ``where`` and the accepted forms.
    """
    match = _RATE.match(text) if isinstance(text, str) else None
    if match is None or int(match[1]) < 1 or (match[2] and float(match[2]) <= 0):
        raise ValueError(
            f"{where}: rate_limit must look like '100/m' (a count >= 1, '/', an optional "
            f"number and a unit s, m, h or d, as in '10/30s'), got {text!r}"
        )
    return int(match[1]), (float(match[2]) if match[2] else 1.0) * _UNITS[match[3]]


class Pass:
    """A handler let through the gate: what it holds until it ends."""

    __slots__ = ("place", "unique")

    def __init__(self, place: tuple[str, str] | None, unique: tuple[str, str] | None) -> None:
        self.place = place
        self.unique = unique


_FREE = Pass(None, None)


class Gate:
    """The limits and unique keys of one connection's worker run (thread-safe)."""

    def __init__(self, connection: Connection) -> None:
        """:param connection: the consumed connection (its store is looked up on first need)."""
        self.connection = connection
        self._store: CoordinationStore | None = None
        self._places: dict[tuple[str, str], float] = {}
        self._lock = threading.Lock()
        self._stop = threading.Event()
        self._extender: threading.Thread | None = None
        self._logged: dict[str, float] = {}
        #: Messages deferred over a limit, by reason kind.
        self.deferred = 0

    @staticmethod
    def applies(cls: type[Message]) -> bool:
        """Whether messages of ``cls`` pass through the gate at all."""
        return bool(cls.rate_limit or cls.max_concurrency or cls.unique_for)

    @property
    def store(self) -> CoordinationStore:
        """The coordination store (raises ``UnsupportedError`` when there is none)."""
        if self._store is None:
            from pashq.coordination_store import store_for

            self._store = store_for(self.connection, "rate_limit, max_concurrency and unique_for")
        return self._store

    def enter(self, prepared: Prepared) -> Pass | float:
        """Take what ``prepared`` needs to start: a :class:`Pass`, or the seconds to defer it."""
        message = prepared.message
        cls = type(message)
        if not self.applies(cls):
            return _FREE
        place: tuple[str, str] | None = None
        part = "*"
        if cls.max_concurrency or cls.rate_limit:
            limit_key = message.get_limit_key()
            if limit_key is not None:
                part = f"k:{limit_key}"
        if cls.max_concurrency:
            key = store_key("concurrency", cls.type_name, part)
            owner = uuid.uuid4().hex
            got = self.store.acquire(key, owner, PLACE_TTL, cls.max_concurrency)
            if not got.taken:
                return self._refused(
                    prepared,
                    f"max_concurrency={cls.max_concurrency}",
                    key,
                    random.uniform(0.2, min(_PLACE_RETRY, max(got.wait, 0.2))),
                )
            place = (key, owner)
            self._hold(place)
        if cls.rate_limit:
            limit, period = cls.rate_limit
            key = store_key("rate", cls.type_name, part)
            try:
                wait = self.store.window_add(key, limit, period)
            except BaseException:
                self._free(place)
                raise
            if wait > 0:
                self._free(place)
                # Spread the deferred messages over the next window instead of returning
                # all of them at the instant the oldest start leaves it.
                jitter = random.uniform(0, min(period, 30.0) * 0.5)
                return self._refused(
                    prepared, f"rate_limit={cls.rate_limit_text}", key, wait + jitter
                )
        unique = None
        envelope = prepared.envelope
        if cls.unique_for and envelope is not None:
            unique_key = envelope.headers.get(UNIQUE_HEADER)
            if unique_key:
                unique = (unique_key, envelope.id)
                if cls.unique_until == "start":
                    self._release_unique(unique)
                    unique = None
        return Pass(place, unique)

    def leave(self, passed: Pass, outcome_final: bool) -> None:
        """Give back what the handler held; with ``outcome_final`` (acked or
        dead-lettered) also its unique key."""
        if passed is _FREE:
            return
        self._free(passed.place)
        if outcome_final and passed.unique is not None:
            self._release_unique(passed.unique)

    def settled_unrun(self, message: Message, envelope: Envelope, dead: bool) -> None:
        """A delivery settled without running (a crash loop past ``max_attempts``): free
        its unique key when it is dead-lettered."""
        if dead and type(message).unique_for:
            unique_key = envelope.headers.get(UNIQUE_HEADER)
            if unique_key:
                self._release_unique((unique_key, envelope.id))

    def close(self) -> None:
        """Stop extending places (at the end of the worker run)."""
        self._stop.set()

    # -- internals -----------------------------------------------------------------------

    def _refused(self, prepared: Prepared, limit: str, key: str, delay: float) -> float:
        with self._lock:
            self.deferred += 1
            now = time.monotonic()
            first = now - self._logged.get(key, -_LOG_EVERY) >= _LOG_EVERY
            if first:
                self._logged[key] = now
        delivery = prepared.delivery
        log.log(
            logging.INFO if first else logging.DEBUG,
            "message %s (%s) on %r deferred %.2fs: %s reached (key %r)",
            delivery.id,
            type(prepared.message).type_name,
            delivery.queue,
            delay,
            limit,
            key,
        )
        return delay

    def _release_unique(self, unique: tuple[str, str]) -> None:
        try:
            self.store.release(*unique)
        except Exception as exc:
            log.warning(
                "could not release unique key %r of message %s (%s); it frees itself "
                "after unique_for",
                unique[0],
                unique[1],
                exc,
            )

    def _hold(self, place: tuple[str, str]) -> None:
        with self._lock:
            self._places[place] = time.monotonic()
            if self._extender is None:
                self._extender = threading.Thread(
                    target=self._extend_loop, name="pashq-limits", daemon=True
                )
                self._extender.start()

    def _free(self, place: tuple[str, str] | None) -> None:
        if place is None:
            return
        with self._lock:
            self._places.pop(place, None)
        try:
            self.store.release(*place)
        except Exception as exc:
            log.warning(
                "could not release concurrency place %r (%s); it frees itself after %gs",
                place[0],
                exc,
                PLACE_TTL,
            )

    def _extend_loop(self) -> None:
        while not self._stop.wait(EXTEND_EVERY):
            with self._lock:
                due = [p for p, since in self._places.items() if time.monotonic() - since >= 5]
            for place in due:
                try:
                    self.store.extend(place[0], place[1], PLACE_TTL)
                except Exception as exc:
                    log.warning("could not extend concurrency place %r: %s", place[0], exc)
