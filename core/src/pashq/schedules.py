"""Periodic schedules: cron slots dispatched exactly once, however many schedulers run.

A schedule names a message type, a cron expression (parsed by croniter; five fields, or
six with seconds last), a timezone, the message body and where to send it. It comes from
a ``[schedules.<name>]`` table::

    [schedules.close-day]
    message = "billing.close_day"
    cron = "0 2 * * *"
    timezone = "Europe/Paris"
    body = {region = "eu"}
    queue = "billing"          # default: the class's queue=
    catch_up = 600             # seconds a missed slot may still fire (default 60)

or from the :func:`schedule` decorator on a message class. A :class:`Scheduler`
(``pashq scheduler``, ``pashq work --schedule``) wakes at each slot and takes the slot's
key (schedule name + slot time) in the coordination store before it dispatches: only
one scheduler wins a slot, so running two for availability is safe. A scheduler that was
down through a slot fires the most recent missed one on return, if it is at most
``catch_up`` seconds old; older ones are skipped (logged).
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any, TypeVar
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import attrs
from croniter import croniter

from pashq import registry
from pashq.coordination import store_key
from pashq.errors import ConfigError
from pashq.message import Message, build_message

__all__ = [
    "DEFAULT_CATCH_UP",
    "Fired",
    "Schedule",
    "Scheduler",
    "declared_schedules",
    "load_schedules",
    "schedule",
]

log = logging.getLogger("pashq.scheduler")
M = TypeVar("M", bound=type[Message])

#: Seconds after its time a slot may still be dispatched (by a late or restarted scheduler).
DEFAULT_CATCH_UP = 60.0
#: A slot's key outlives its catch-up window by this much, so no scheduler fires it twice.
_KEY_MARGIN = 3600.0


def _zone(name: str, where: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ConfigError(
            f"{where}: 'timezone' {name!r} is not an IANA time zone (e.g. 'UTC', 'Europe/Paris')"
        ) from None


@attrs.frozen
class Schedule:
    """One periodic schedule.

    :ivar name: the schedule's name (part of each slot's key: keep it stable).
    :ivar message: the message type name (``type_name``).
    :ivar cron: the cron expression.
    :ivar timezone: the IANA zone the cron fields are read in.
    :ivar body: the message body (its fields).
    :ivar queue: the queue (``None``: the class's ``queue=``).
    :ivar connection: the connection (``None``: the class's ``connection=``).
    :ivar catch_up: seconds after its time a slot may still fire.
    :ivar where: where it was declared, for error messages.
    """

    name: str
    message: str
    cron: str
    timezone: str = "UTC"
    body: Mapping[str, Any] = attrs.field(factory=dict)
    queue: str | None = None
    connection: str | None = None
    catch_up: float = DEFAULT_CATCH_UP
    where: str = "<schedule>"

    def check(self) -> None:
        """Validate the cron expression, the zone and the numbers.

        :raises ConfigError: naming :attr:`where` and the key.
        """
        if not isinstance(self.cron, str) or not croniter.is_valid(self.cron):
            raise ConfigError(
                f"{self.where}: 'cron' {self.cron!r} is not a cron expression (five fields "
                "'minute hour day month weekday', e.g. '0 2 * * *', or six with seconds last)"
            )
        _zone(self.timezone, self.where)
        if not isinstance(self.catch_up, int | float) or self.catch_up < 0:
            raise ConfigError(
                f"{self.where}: 'catch_up' must be seconds >= 0, got {self.catch_up!r}"
            )

    def latest(self, now: float) -> datetime:
        """The most recent slot at or before ``now`` (epoch seconds), timezone-aware."""
        zone = _zone(self.timezone, self.where)
        moment = datetime.fromtimestamp(now, zone)
        it = croniter(self.cron, moment + timedelta(seconds=1))
        slot: datetime = it.get_prev(datetime)
        while slot.timestamp() > now:
            slot = it.get_prev(datetime)
        return slot

    def next_after(self, now: float) -> datetime:
        """The first slot after ``now`` (epoch seconds), timezone-aware."""
        zone = _zone(self.timezone, self.where)
        found: datetime = croniter(self.cron, datetime.fromtimestamp(now, zone)).get_next(datetime)
        return found

    def message_class(self) -> type[Message]:
        """The registered class of :attr:`message` (its module must be imported)."""
        try:
            return registry.lookup(self.message)
        except Exception as exc:
            raise ConfigError(f"{self.where}: 'message' {self.message!r}: {exc}") from exc

    def slot_key(self, slot: datetime) -> str:
        """The coordination key of one slot: the schedule's name and the slot's UTC time."""
        return store_key("schedule", self.name, slot.astimezone(UTC).isoformat())


_declared: dict[str, Schedule] = {}


def schedule(
    cron: str,
    *,
    name: str | None = None,
    timezone: str = "UTC",
    body: Mapping[str, Any] | None = None,
    queue: str | None = None,
    connection: str | None = None,
    catch_up: float = DEFAULT_CATCH_UP,
) -> Callable[[M], M]:
    """Declare a schedule for a message class (the decorator form of ``[schedules.*]``)::

        @pashq.schedule("0 2 * * *", timezone="Europe/Paris")
        @attrs.define
        class CloseDay(pashq.Message, type_name="billing.close_day"):
            def process_message(self) -> None: ...

    :param cron: the cron expression.
    :param name: the schedule's name (default: the class's type name).
    :param body: the message's fields (default: none).
    """

    def decorate(cls: M) -> M:
        found = Schedule(
            name or cls.type_name,
            cls.type_name,
            cron,
            timezone,
            dict(body or {}),
            queue,
            connection,
            float(catch_up),
            f"@pashq.schedule on {cls.__module__}.{cls.__qualname__}",
        )
        found.check()
        _declared[found.name] = found
        return cls

    return decorate


def declared_schedules() -> list[Schedule]:
    """The schedules declared with :func:`schedule` in imported modules."""
    return list(_declared.values())


def load_schedules(tables: Mapping[str, Mapping[str, Any]], source: str) -> list[Schedule]:
    """Build the schedules of the config's ``[schedules.*]`` tables plus the declared ones.

    :raises ConfigError: a bad table, or a name used by both (naming both places).
    """
    found: dict[str, Schedule] = {}
    for name, table in tables.items():
        where = f"{source} [schedules.{name}]"
        for key in ("message", "cron"):
            if not isinstance(table.get(key), str) or not table[key]:
                raise ConfigError(f'{where}: missing {key} = "..."')
        body = table.get("body", {})
        if not isinstance(body, Mapping):
            raise ConfigError(f"{where}: 'body' must be a table of the message's fields")
        for key in ("queue", "connection", "timezone"):
            if key in table and not isinstance(table[key], str):
                raise ConfigError(f"{where}: '{key}' must be a string, got {table[key]!r}")
        item = Schedule(
            name,
            table["message"],
            table["cron"],
            table.get("timezone", "UTC"),
            dict(body),
            table.get("queue"),
            table.get("connection"),
            table.get("catch_up", DEFAULT_CATCH_UP),
            where,
        )
        item.check()
        found[name] = item
    for item in declared_schedules():
        if item.name in found:
            raise ConfigError(
                f"schedule {item.name!r} is declared twice: {found[item.name].where} and "
                f"{item.where}; rename one"
            )
        found[item.name] = item
    return list(found.values())


@attrs.frozen
class Fired:
    """One slot a scheduler dispatched.

    :ivar schedule: the schedule's name. :ivar slot: the slot time.
    :ivar message_id: the id of the dispatched message.
    """

    schedule: str
    slot: datetime
    message_id: str


class Scheduler:
    """Dispatches the due slots of ``schedules``, each once across every scheduler.

    :param schedules: the schedules.
    :param clock: epoch seconds now (``time.time``; tests inject a faster one).
    :param poll: longest real pause between looks at the clock, in seconds.
    """

    def __init__(
        self,
        schedules: Iterable[Schedule],
        *,
        clock: Callable[[], float] = time.time,
        poll: float = 1.0,
    ) -> None:
        self.schedules = list(schedules)
        self.clock = clock
        self.poll = poll
        self.stop_event = threading.Event()
        self._seen: dict[str, datetime] = {}
        #: Slots this scheduler dispatched.
        self.fired: list[Fired] = []

    def stop(self) -> None:
        """Ask :meth:`run` to return (thread-safe)."""
        self.stop_event.set()

    def run(self) -> None:
        """Fire due slots until :meth:`stop`; a failing schedule is logged and retried."""
        names = ", ".join(s.name for s in self.schedules) or "none"
        log.info("scheduler started: schedules=%s", names)
        while not self.stop_event.is_set():
            self.tick()
            now = self.clock()
            upcoming = [s.next_after(now).timestamp() - now for s in self.schedules]
            self.stop_event.wait(max(0.001, min([self.poll, *upcoming])))
        log.info("scheduler stopped: fired=%d", len(self.fired))

    def tick(self) -> list[Fired]:
        """Fire every slot due now (and not older than its ``catch_up``); return them."""
        now = self.clock()
        fired = []
        for item in self.schedules:
            slot = item.latest(now)
            if self._seen.get(item.name) == slot:
                continue
            late = now - slot.timestamp()
            if late > item.catch_up:
                if item.name in self._seen:
                    log.warning(
                        "schedule %r: slot %s skipped, seen %.1fs late (catch_up=%gs)",
                        item.name,
                        slot.isoformat(),
                        late,
                        item.catch_up,
                    )
                self._seen[item.name] = slot
                continue
            try:
                got = self._fire(item, slot)
            except Exception as exc:
                log.warning("schedule %r: slot %s failed, will retry: %s", item.name, slot, exc)
                continue
            self._seen[item.name] = slot
            if got is not None:
                fired.append(got)
        self.fired.extend(fired)
        return fired

    def _fire(self, item: Schedule, slot: datetime) -> Fired | None:
        from pashq.coordination_store import store_for
        from pashq.facade import queue as get_connection

        cls = item.message_class()
        message = build_message(cls, dict(item.body))
        connection = get_connection(item.connection or cls.default_connection)
        store = store_for(connection, "schedules")
        key, owner = item.slot_key(slot), uuid.uuid4().hex
        if not store.acquire(key, owner, item.catch_up + _KEY_MARGIN).taken:
            log.debug("schedule %r: slot %s fired by another scheduler", item.name, slot)
            return None
        try:
            message_id = connection.dispatch(item.queue or cls.default_queue, message)
        except BaseException:
            store.release(key, owner)  # another scheduler (or the next look) may fire it
            raise
        log.info(
            "schedule %r: slot %s dispatched as message %s", item.name, slot.isoformat(), message_id
        )
        return Fired(item.name, slot, message_id)
