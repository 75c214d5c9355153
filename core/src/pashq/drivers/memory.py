"""``memory``: the reference driver, in one process.

Features: priorities (0-9, higher first; a retried dead letter comes back at 0), delays,
leases (an unacked delivery comes back after ``lease`` seconds), lease extension, nack with
delay, dead letters (list / retry / purge), stats and purge, defer (release without counting
the attempt) and the coordination hooks (holds and sliding windows, on ``time.monotonic``;
unique dispatch checks and pushes under one lock). Messages and coordination state live in
the process's memory: at-least-once within the process, lost with it.

Options (``[queues.<name>]``):

- ``lease`` (float, default 30): seconds a pulled message stays reserved.
"""

from __future__ import annotations

import heapq
import itertools
import threading
import time
from collections import deque
from collections.abc import Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

import attrs

from pashq.capabilities import Capabilities
from pashq.config import parse_options
from pashq.connection import Connection
from pashq.coordination import Acquired
from pashq.delivery import DeadLetter, Delivery, OutgoingMessage, QueueStats
from pashq.errors import ConfigError
from pashq.hookspecs import hookimpl

__all__ = ["MemoryDriver", "MemoryOptions"]


@attrs.frozen
class MemoryOptions:
    """Options of the memory driver."""

    lease: float = 30.0


class _Entry:
    __slots__ = ("attempts", "body", "group", "id", "priority")

    def __init__(self, id: str, body: bytes, group: str | None = None, priority: int = 0) -> None:
        self.id = id
        self.body = body
        self.group = group
        self.priority = priority
        self.attempts = 0


class _Ready:
    """Ready entries in one FIFO lane per priority; the highest non-empty lane goes first."""

    __slots__ = ("high", "lanes")

    def __init__(self) -> None:
        self.lanes: list[deque[_Entry]] = [deque() for _ in range(10)]
        self.high = 0  # entries in lanes 1-9: while 0, only lane 0 is looked at

    def append(self, entry: _Entry) -> None:
        self.lanes[entry.priority].append(entry)
        if entry.priority:
            self.high += 1

    def extend(self, entries: Iterable[_Entry]) -> None:
        for entry in entries:
            self.append(entry)

    def extendleft(self, entries: Iterable[_Entry]) -> None:
        for entry in entries:
            self.lanes[entry.priority].appendleft(entry)
            if entry.priority:
                self.high += 1

    def popleft(self) -> _Entry:
        if self.high:
            for lane in reversed(self.lanes):
                if lane:
                    if lane is not self.lanes[0]:
                        self.high -= 1
                    return lane.popleft()
        return self.lanes[0].popleft()

    def clear(self) -> None:
        for lane in self.lanes:
            lane.clear()
        self.high = 0

    def __len__(self) -> int:
        return len(self.lanes[0]) + self.high

    def __bool__(self) -> bool:
        return bool(self.high or self.lanes[0])


class _Queue:
    __slots__ = ("dead", "delayed", "leased", "ready")

    def __init__(self) -> None:
        self.ready = _Ready()
        self.delayed: list[tuple[float, int, _Entry]] = []
        self.leased: dict[int, tuple[_Entry, float]] = {}
        self.dead: list[DeadLetter] = []


class MemoryDriver:
    """In-process queues with the full delivery contract (see the module docstring)."""

    name = "memory"
    capabilities = Capabilities(
        persistent=False,
        priorities=True,
        delay=True,
        batch_size=1000,
        nack_delay=True,
        lease=True,
        extend_lease=True,
        dead_letters=True,
        stats=True,
        purge=True,
        coordination=True,
        defer=True,
    )

    def __init__(self) -> None:
        self._holds: dict[str, dict[str, float]] = {}  # key -> owner -> expires (monotonic)
        self._windows: dict[str, deque[float]] = {}  # key -> times of the counted events
        self._queues: dict[str, _Queue] = {}
        self._cond = threading.Condition()
        self._seq = itertools.count(1)
        self.lease = 30.0

    @hookimpl
    def pashq_connect(self, connection: Connection) -> None:
        """Validate the options."""
        options = parse_options(MemoryOptions, connection.options, connection.where)
        if options.lease <= 0:
            raise ConfigError(f"{connection.where}: 'lease' must be > 0, got {options.lease}")
        self.lease = options.lease

    def _queue(self, name: str) -> _Queue:
        found = self._queues.get(name)
        if found is None:
            found = self._queues[name] = _Queue()
        return found

    def _mature(self, q: _Queue, now: float) -> None:
        delayed = q.delayed
        while delayed and delayed[0][0] <= now:
            q.ready.append(heapq.heappop(delayed)[2])
        if q.leased:
            expired = [r for r, (_, deadline) in q.leased.items() if deadline <= now]
            for receipt in expired:
                q.ready.append(q.leased.pop(receipt)[0])

    @hookimpl
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """Store the messages; delayed ones wait in a heap."""
        if options:
            raise TypeError(f"memory driver takes no dispatch options, got {sorted(options)}")
        now = time.monotonic()
        with self._cond:
            q = self._queue(queue)
            for m in messages:
                entry = _Entry(m.id, m.body, m.group_id, m.priority)
                if m.delay > 0:
                    heapq.heappush(q.delayed, (now + m.delay, next(self._seq), entry))
                else:
                    q.ready.append(entry)
            self._cond.notify_all()
        return [m.id for m in messages]

    @hookimpl
    def pashq_push_unique(
        self,
        queue: str,
        messages: Sequence[OutgoingMessage],
        keys: Sequence[str | None],
        ttls: Sequence[float],
        options: Mapping[str, Any],
    ) -> list[str]:
        """Take each key and push its message under one lock (the check and push are atomic)."""
        if options:
            raise TypeError(f"memory driver takes no dispatch options, got {sorted(options)}")
        with self._cond:
            answers: list[str] = []
            stored: list[OutgoingMessage] = []
            for m, key, ttl in zip(messages, keys, ttls, strict=True):
                if key is not None:
                    got = self._acquire(key, m.id, ttl, 1)
                    if not got.taken:
                        answers.append(got.holder or "")
                        continue
                answers.append(m.id)
                stored.append(m)
            if stored:
                self.pashq_push(queue=queue, messages=stored, options={})
            return answers

    @hookimpl
    def pashq_pull(self, queue: str, max_messages: int, timeout: float) -> list[Delivery]:
        """Lease up to ``max_messages``, waiting up to ``timeout`` for the first."""
        deadline = time.monotonic() + timeout
        lease = self.lease
        with self._cond:
            q = self._queue(queue)
            while True:
                now = time.monotonic()
                self._mature(q, now)
                if q.ready or now >= deadline:
                    break
                wait = deadline - now
                if q.delayed:
                    wait = min(wait, q.delayed[0][0] - now)
                if q.leased:
                    wait = min(wait, min(d for _, d in q.leased.values()) - now)
                self._cond.wait(max(wait, 0.001))
            out: list[Delivery] = []
            ready, leased, until = q.ready, q.leased, now + lease
            # Only lane 0 holds messages unless some have a priority: pop it directly.
            pop = ready.popleft if ready.high else ready.lanes[0].popleft
            for _ in range(min(max_messages, len(ready))):
                entry = pop()
                entry.attempts += 1
                receipt = next(self._seq)
                leased[receipt] = (entry, until)
                out.append(
                    Delivery(
                        queue, entry.id, entry.body, entry.attempts, receipt, lease, entry.group
                    )
                )
            return out

    @hookimpl
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Forget acked deliveries (a lease that expired meanwhile is ignored)."""
        with self._cond:
            leased = self._queue(queue).leased
            for d in deliveries:
                leased.pop(d.receipt, None)

    @hookimpl
    def pashq_nack(self, queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
        """Put deliveries back, visible after ``delay`` seconds."""
        with self._cond:
            q = self._queue(queue)
            at = time.monotonic() + delay
            back = []
            for d in deliveries:
                found = q.leased.pop(d.receipt, None)
                if found is None:
                    continue
                if delay > 0:
                    heapq.heappush(q.delayed, (at, next(self._seq), found[0]))
                else:
                    back.append(found[0])
            q.ready.extendleft(reversed(back))  # released messages keep their order
            self._cond.notify_all()

    @hookimpl
    def pashq_defer(self, queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
        """Put deliveries back after ``delay`` seconds; this delivery does not count."""
        with self._cond:
            q = self._queue(queue)
            for d in deliveries:
                found = q.leased.get(d.receipt)
                if found is not None:
                    found[0].attempts = max(found[0].attempts - 1, 0)
        self.pashq_nack(queue=queue, deliveries=deliveries, delay=delay)

    # -- coordination --------------------------------------------------------------------

    def _acquire(self, key: str, owner: str, ttl: float, limit: int) -> Acquired:
        now = time.monotonic()
        holds = self._holds.setdefault(key, {})
        for other, until in list(holds.items()):
            if until <= now:
                del holds[other]
        if owner in holds or len(holds) < limit:
            holds[owner] = now + ttl
            return Acquired(True, owner)
        first, until = min(holds.items(), key=lambda item: item[1])
        return Acquired(False, first, max(until - now, 0.001))

    @hookimpl
    def pashq_lock_acquire(self, key: str, owner: str, ttl: float, limit: int) -> Acquired:
        """Take one of ``limit`` places on ``key`` unless all are live."""
        with self._cond:
            return self._acquire(key, owner, ttl, limit)

    @hookimpl
    def pashq_lock_release(self, key: str, owner: str) -> bool:
        """Drop ``owner``'s live hold on ``key``."""
        with self._cond:
            holds = self._holds.get(key)
            if not holds:
                return False
            until = holds.pop(owner, None)
            if not holds:
                del self._holds[key]
            return until is not None and until > time.monotonic()

    @hookimpl
    def pashq_lock_extend(self, key: str, owner: str, ttl: float) -> bool:
        """Move the end of ``owner``'s live hold to ``now + ttl``."""
        with self._cond:
            holds = self._holds.get(key)
            now = time.monotonic()
            if not holds or holds.get(owner, 0.0) <= now:
                return False
            holds[owner] = now + ttl
            return True

    @hookimpl
    def pashq_window_add(self, key: str, limit: int, period: float) -> float:
        """Count one event unless ``limit`` happened in the last ``period`` seconds."""
        with self._cond:
            now = time.monotonic()
            times = self._windows.setdefault(key, deque())
            while times and times[0] <= now - period:
                times.popleft()
            if len(times) < limit:
                times.append(now)
                return 0.0
            return max(times[len(times) - limit] + period - now, 0.001)

    @hookimpl
    def pashq_extend(self, queue: str, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Push the lease deadline of deliveries still being worked on."""
        with self._cond:
            leased = self._queue(queue).leased
            until = time.monotonic() + seconds
            for d in deliveries:
                found = leased.get(d.receipt)
                if found is not None:
                    leased[d.receipt] = (found[0], until)

    @hookimpl
    def pashq_dead_letter(
        self, queue: str, delivery: Delivery, reason: str, traceback: str | None
    ) -> None:
        """Move the delivery to the queue's dead letters."""
        with self._cond:
            q = self._queue(queue)
            found = q.leased.pop(delivery.receipt, None)
            if found is None:
                return
            entry = found[0]
            q.dead.append(
                DeadLetter(
                    delivery.id or entry.id,  # the envelope's id, once the worker decoded it
                    queue,
                    entry.body,
                    reason,
                    traceback,
                    entry.attempts,
                    datetime.now(UTC),
                )
            )

    @hookimpl
    def pashq_queue_empty(self, queue: str) -> bool:
        """Nothing ready now (delayed and leased messages do not count)."""
        with self._cond:
            q = self._queue(queue)
            self._mature(q, time.monotonic())
            return not q.ready

    @hookimpl
    def pashq_stats(self, queue: str) -> QueueStats:
        """Count ready, delayed, leased and dead messages."""
        with self._cond:
            q = self._queue(queue)
            self._mature(q, time.monotonic())
            return QueueStats(queue, len(q.ready), len(q.delayed), len(q.leased), len(q.dead))

    @hookimpl
    def pashq_purge(self, queue: str) -> int:
        """Drop ready and delayed messages."""
        with self._cond:
            q = self._queue(queue)
            count = len(q.ready) + len(q.delayed)
            q.ready.clear()
            q.delayed.clear()
            return count

    @hookimpl
    def pashq_failed_list(self, queue: str, limit: int) -> list[DeadLetter]:
        """Return the oldest ``limit`` dead letters."""
        with self._cond:
            return list(self._queue(queue).dead[:limit])

    def _take_dead(self, queue: str, ids: Sequence[str] | None) -> list[DeadLetter]:
        q = self._queue(queue)
        wanted = None if ids is None else set(ids)
        taken = [d for d in q.dead if wanted is None or d.id in wanted]
        q.dead = [d for d in q.dead if not (wanted is None or d.id in wanted)]
        return taken

    @hookimpl
    def pashq_failed_retry(self, queue: str, ids: Sequence[str] | None) -> int:
        """Move dead letters back to the queue with a fresh attempt count."""
        with self._cond:
            taken = self._take_dead(queue, ids)
            self._queue(queue).ready.extend(_Entry(d.id, d.body) for d in taken)
            self._cond.notify_all()
            return len(taken)

    @hookimpl
    def pashq_failed_purge(self, queue: str, ids: Sequence[str] | None) -> int:
        """Delete dead letters for good."""
        with self._cond:
            return len(self._take_dead(queue, ids))

    @hookimpl
    def pashq_close(self) -> None:
        """Wake any waiting puller; the data goes with the driver."""
        with self._cond:
            self._cond.notify_all()
