"""Moving messages from one connection's queue to another's (``pashq move``).

A move takes batches from the source and hands each to the destination; only once the
destination confirmed a batch (its push returned) is the batch acked at the source. A move
that dies therefore loses nothing: what it held at the source comes back after the
source's lease, and a batch confirmed but not yet acked is moved again. The body travels
byte for byte, so every message keeps its id and a repeat is recognisable (a FIFO SQS
destination drops it within its five-minute deduplication window; moved dead letters are
skipped by id on the database and memory drivers; elsewhere a repeat is delivered twice,
as any at-least-once redelivery is).

What travels with a message depends on both sides' capabilities:

- due time: a source with ``claim_waiting`` (database, memory) hands over delayed messages
  with the time left; other sources hand over only due messages (the rest stay until due
  and are reported);
- attempts: a destination with ``store_attempts`` (database, memory, rabbitmq) keeps the
  count; elsewhere (SQS counts receives itself) moved messages start again at attempt 1;
- dead letters (``failed=True``): a destination with ``store_dead_letters`` keeps them with
  their reason; else, or with ``failed_as="waiting"``, they become waiting messages again.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Sequence
from typing import Literal

import attrs

from pashq.connection import Connection
from pashq.delivery import DeadLetter, Delivery, MovedMessage, OutgoingMessage, WaitingDelivery
from pashq.envelope import new_message_id
from pashq.errors import MoveError, PashqError

__all__ = ["Endpoint", "Move", "MoveReport", "parse_endpoint"]

log = logging.getLogger(__name__)

FailedAs = Literal["auto", "dead", "waiting"]

#: Seconds the first pull of a source without ``claim_waiting`` waits for messages.
_PULL_TIMEOUT = 1.0
#: Pause between checks while messages leased at the source are awaited.
_LEASED_PAUSE = 0.5


@attrs.frozen
class Endpoint:
    """One side of a move: a configured connection and a queue on it.

    :ivar connection: the connection name (``[queues.<name>]``).
    :ivar queue: the queue name.
    """

    connection: str
    queue: str

    def __str__(self) -> str:
        return f"{self.connection}:{self.queue}"


def parse_endpoint(text: str, what: str = "SOURCE") -> Endpoint:
    """Parse ``CONNECTION:QUEUE``.

    :param text: the argument as given.
    :param what: its name in error messages (``SOURCE``, ``DEST``).
    :raises MoveError: no colon, or an empty connection or queue.
    """
    connection, colon, queue = text.partition(":")
    if not colon or not connection or not queue:
        raise MoveError(
            f"{what} {text!r} is not CONNECTION:QUEUE (for example default:emails, where "
            "default is a [queues.default] table of the config and emails a queue on it)"
        )
    return Endpoint(connection, queue)


@attrs.define
class MoveReport:
    """What a move did (or, for a dry run, would do).

    :ivar source: ``CONNECTION:QUEUE`` moved from.
    :ivar destination: ``CONNECTION:QUEUE`` moved to.
    :ivar dry_run: nothing was moved; the counts are what a move would take.
    :ivar moved: waiting messages stored at the destination and removed from the source.
    :ivar delayed: of those, messages not yet due that kept their due time.
    :ivar dead_letters: dead letters kept among the destination's dead letters.
    :ivar dead_as_waiting: dead letters that became waiting messages at the destination.
    :ivar batches: batches confirmed by the destination.
    :ivar total: messages expected at the start (from the source's stats), or ``None``.
    :ivar left_ready: messages still ready at the source at the end (``None``: unknown).
    :ivar left_delayed: messages still delayed at the source at the end.
    :ivar left_in_flight: messages still leased at the source (a worker's, or a move's that
        died) when the wait for them ran out.
    :ivar left_failed: dead letters still at the source.
    :ivar kept: what travelled with the messages (``due_time``, ``attempts``, ``reason``).
    :ivar notes: what could not be kept, one sentence each.
    :ivar seconds: how long the move took.
    """

    source: str
    destination: str
    dry_run: bool = False
    moved: int = 0
    delayed: int = 0
    dead_letters: int = 0
    dead_as_waiting: int = 0
    batches: int = 0
    total: int | None = None
    left_ready: int | None = None
    left_delayed: int | None = None
    left_in_flight: int | None = None
    left_failed: int | None = None
    kept: list[str] = attrs.Factory(list)
    notes: list[str] = attrs.Factory(list)
    seconds: float = 0.0

    @property
    def done(self) -> int:
        """Messages moved so far, dead letters included."""
        return self.moved + self.dead_letters + self.dead_as_waiting

    @property
    def complete(self) -> bool:
        """Nothing the move should have taken was left leased at the source."""
        return not self.left_in_flight

    def as_dict(self) -> dict[str, object]:
        """The report as JSON-ready data (``pashq move --json``)."""
        data: dict[str, object] = attrs.asdict(self)
        data["complete"] = self.complete
        data["seconds"] = round(self.seconds, 3)
        return data


class Move:
    """One move from ``source``'s queue to ``destination``'s (see the module docstring).

    :param source: the open source connection.
    :param source_queue: the queue to empty.
    :param destination: the open destination connection.
    :param destination_queue: the queue to fill.
    :param failed: move the source queue's dead letters too (after its waiting messages).
    :param failed_as: ``"dead"``: into the destination's dead letters (refused when it
        keeps none); ``"waiting"``: as waiting messages; ``"auto"``: dead letters where
        the destination keeps them, else waiting messages.
    :param limit: the most messages to move (waiting first, then dead letters).
    :param batch_size: messages per batch (default: the larger of both drivers' batch
        sizes; the destination splits a batch into its own backend calls).
    :param wait_leased: seconds to wait at the end for messages leased at the source (by a
        worker, or by a move that died) to be acked or come back.
    :param on_progress: called with the report after every batch.
    :raises MoveError: the same queue on both sides, or a side that cannot take part.
    """

    def __init__(
        self,
        source: Connection,
        source_queue: str,
        destination: Connection,
        destination_queue: str,
        *,
        failed: bool = False,
        failed_as: FailedAs = "auto",
        limit: int | None = None,
        batch_size: int | None = None,
        wait_leased: float = 60.0,
        on_progress: Callable[[MoveReport], None] | None = None,
    ) -> None:
        self.source, self.source_queue = source, source_queue
        self.destination, self.destination_queue = destination, destination_queue
        self.failed = failed
        self.limit = limit
        self.wait_leased = wait_leased
        self.on_progress = on_progress
        src, dst = source.capabilities, destination.capabilities
        self.batch_size = batch_size or max(src.batch_size, dst.batch_size)
        self.report = MoveReport(
            f"{source.name}:{source_queue}", f"{destination.name}:{destination_queue}"
        )
        self._check(failed_as)
        self.dead_target: Literal["dead", "waiting"] = (
            "dead"
            if failed_as == "dead" or (failed_as == "auto" and dst.store_dead_letters)
            else "waiting"
        )
        self._describe()

    # -- checks ------------------------------------------------------------------------------

    def _side(self, connection: Connection) -> str:
        return f"connection {connection.name!r} (driver {connection.config.type!r})"

    def _check(self, failed_as: FailedAs) -> None:
        src, dst = self.source, self.destination
        # Two connections with one persistent backend's options reach the same queues.
        same_backend = src is dst or (
            src.capabilities.persistent
            and src.config.type == dst.config.type
            and src.config.options == dst.config.options
        )
        if same_backend and self.source_queue == self.destination_queue:
            raise MoveError(
                f"source and destination are the same queue ({self.report.source} and "
                f"{self.report.destination}); name another queue or connection"
            )
        if self.limit is not None and self.limit < 1:
            raise MoveError(f"limit must be at least 1, got {self.limit}")
        if not src.capabilities.consume:
            raise MoveError(
                f"{self._side(src)} has no queue to read from: its messages never reach "
                "a queue, so there is nothing to move"
            )
        if not dst.capabilities.consume:
            raise MoveError(
                f"{self._side(dst)} cannot hold messages for a worker; move to a "
                "connection whose driver keeps queues (database, rabbitmq, sqs)"
            )
        src.check_queue_name(self.source_queue)
        dst.check_queue_name(self.destination_queue)
        if self.failed:
            if not src.capabilities.dead_letters:
                raise MoveError(
                    f"--failed: {self._side(src)} keeps no dead letters to move "
                    f"(queue {self.source_queue!r})"
                )
            if failed_as == "dead" and not dst.capabilities.store_dead_letters:
                raise MoveError(
                    f"--failed-as dead: {self._side(dst)} cannot keep moved dead letters; "
                    "use --failed-as waiting to move them as waiting messages"
                )

    def _describe(self) -> None:
        src, dst = self.source.capabilities, self.destination.capabilities
        report = self.report
        if src.claim_waiting and dst.delay:
            report.kept.append("due_time")
        elif not src.claim_waiting:
            report.notes.append(
                f"{self._side(self.source)} hands over only due messages: delayed ones stay "
                "there until due (run the move again then)"
            )
        else:
            report.notes.append(
                f"{self._side(self.destination)} has no delays: delayed messages are due at "
                "once after the move"
            )
        if dst.store_attempts:
            report.kept.append("attempts")
        else:
            report.notes.append(
                f"{self._side(self.destination)} cannot store attempt counts: moved "
                "messages start again at attempt 1"
            )
        if self.failed:
            if self.dead_target == "dead":
                report.kept.append("reason")
            else:
                report.notes.append(
                    "dead letters become waiting messages at the destination (their "
                    "reasons are not kept)"
                )

    # -- counting ----------------------------------------------------------------------------

    def count(self) -> MoveReport:
        """Fill in what a move would take, without moving anything (``--dry-run``).

        :raises MoveError: the source cannot count its messages (no ``stats``).
        """
        report = self.report
        report.dry_run = True
        if not self.source.capabilities.stats:
            raise MoveError(
                f"--dry-run: {self._side(self.source)} cannot count its messages (no stats)"
            )
        stats = self.source.stats(self.source_queue)
        ready, delayed = stats.ready or 0, stats.delayed or 0
        waiting = ready + (delayed if self.source.capabilities.claim_waiting else 0)
        dead = (stats.failed or 0) if self.failed else 0
        if self.limit is not None:
            waiting = min(waiting, self.limit)
            dead = min(dead, self.limit - waiting)
        report.moved = waiting
        report.delayed = min(delayed, waiting) if self.source.capabilities.claim_waiting else 0
        if self.dead_target == "dead":
            report.dead_letters = dead
        else:
            report.dead_as_waiting = dead
        report.total = report.done
        self._leftovers(stats_only=True)
        return report

    def _expected(self) -> int | None:
        if not self.source.capabilities.stats:
            return None
        try:
            stats = self.source.stats(self.source_queue)
        except PashqError as exc:
            log.info("cannot count %s before the move: %s", self.report.source, exc)
            return None
        total = (stats.ready or 0) + (stats.in_flight or 0)
        if self.source.capabilities.claim_waiting:
            total += stats.delayed or 0
        if self.failed:
            total += stats.failed or 0
        return total if self.limit is None else min(total, self.limit)

    def _leftovers(self, stats_only: bool = False) -> int:
        """Fill in the ``left_*`` counts; return the leased messages still at the source."""
        if not self.source.capabilities.stats:
            return 0
        stats = self.source.stats(self.source_queue)
        report = self.report
        if not stats_only:
            report.left_ready, report.left_delayed = stats.ready, stats.delayed
            report.left_in_flight, report.left_failed = stats.in_flight, stats.failed
        return stats.in_flight or 0

    # -- moving ------------------------------------------------------------------------------

    def _room(self) -> int:
        if self.limit is None:
            return self.batch_size
        return min(self.batch_size, self.limit - self.report.done)

    def _take(self, n: int, first_wait: float) -> list[WaitingDelivery]:
        """Up to ``n`` waiting messages from the source (several claims or pulls)."""
        hook, queue = self.source.hook, self.source_queue
        got: list[WaitingDelivery] = []
        wait = first_wait
        started, budget = time.monotonic(), float("inf")
        while len(got) < n and time.monotonic() - started < budget:
            if self.source.capabilities.claim_waiting:
                part: list[WaitingDelivery] = hook.pashq_claim_waiting(
                    queue=queue, max_messages=n - len(got)
                )
            else:
                pulled: list[Delivery] = hook.pashq_pull(
                    queue=queue, max_messages=n - len(got), timeout=wait
                )
                part = [WaitingDelivery(d) for d in pulled]
            if not part:
                break
            got.extend(part)
            wait = 0.0
            # Stop filling the batch well before the first reservations run out (SQS hands
            # out ten at a time: a batch of hundreds takes many receives).
            leases = [w.delivery.lease for w in part if w.delivery.lease]
            if leases:
                budget = min(budget, min(leases) / 3)
        if self.source.capabilities.claim_waiting or budget == float("inf"):
            return got  # one claim never hands out a message twice
        return self._latest(got)

    @staticmethod
    def _latest(batch: list[WaitingDelivery]) -> list[WaitingDelivery]:
        """One reservation per message: a message delivered twice within one batch (its
        lease ran out meanwhile) keeps its newest reservation, the one that settles it (the
        older one settles nothing on SQS). A second message with the same id stays at the
        source until a later batch."""
        latest: dict[object, WaitingDelivery] = {}
        for waiting in batch:
            latest.pop(waiting.delivery.id or id(waiting), None)
            latest[waiting.delivery.id or id(waiting)] = waiting
        return list(latest.values())

    def _identify(self, delivery: Delivery) -> tuple[str, str]:
        """The message's id and type name, read from its envelope where it decodes."""
        try:
            envelope = self.source.hook.pashq_deserialize(data=delivery.body)
        except PashqError:
            envelope = None
        if envelope is not None:
            return envelope.id, envelope.type
        # Not an envelope (a worker would dead-letter it): moved as it is, never dropped.
        return delivery.id or new_message_id(), ""

    def _outgoing(self, waiting: WaitingDelivery) -> OutgoingMessage:
        caps = self.destination.capabilities
        delivery = waiting.delivery
        message_id, type_name = self._identify(delivery)
        delay = waiting.due_in if caps.delay else 0.0
        if caps.max_delay is not None and delay > caps.max_delay:
            delay = caps.max_delay
        # No deduplication id: a FIFO SQS destination uses the message id (drops a repeat
        # within its five-minute window); standard queues would warn about one.
        return OutgoingMessage(message_id, type_name, delivery.body, delay, delivery.group)

    def _push(self, messages: Sequence[OutgoingMessage], attempts: Sequence[int]) -> None:
        hook, queue = self.destination.hook, self.destination_queue
        if self.destination.capabilities.store_attempts:
            moved = [MovedMessage(m, a) for m, a in zip(messages, attempts, strict=True)]
            ids = hook.pashq_push_moved(queue=queue, messages=moved)
        else:
            ids = hook.pashq_push(queue=queue, messages=list(messages), options={})
        if ids is None or len(ids) != len(messages):
            raise MoveError(
                f"{self._side(self.destination)} confirmed {0 if ids is None else len(ids)} "
                f"of {len(messages)} messages for queue {queue!r}; nothing of this batch was "
                "acked at the source (run the move again)"
            )

    def _move_waiting(self) -> None:
        report = self.report
        first_wait, empty_pulls = _PULL_TIMEOUT, 0
        while self._room() > 0:
            batch = self._take(self._room(), first_wait)
            if not batch:
                if self.source.capabilities.claim_waiting:
                    return
                # A push-based source may have messages on their way: ask, or pull again.
                answer = self.source.hook.pashq_queue_empty(queue=self.source_queue)
                empty_pulls += 1
                if answer is True or (answer is None and empty_pulls > 1) or empty_pulls > 10:
                    return
                first_wait = 2 * _PULL_TIMEOUT
                continue
            empty_pulls = 0
            outgoing = [self._outgoing(w) for w in batch]
            # The move's own reservation counted one attempt: the message had one fewer.
            attempts = [max(0, w.delivery.attempts - 1) for w in batch]
            try:
                self._push(outgoing, attempts)
            except BaseException:
                self._release(batch)
                raise
            self.source.hook.pashq_ack(
                queue=self.source_queue, deliveries=[w.delivery for w in batch]
            )
            report.moved += len(batch)
            report.delayed += sum(1 for m in outgoing if m.delay > 0)
            report.batches += 1
            self._progress()

    def _release(self, batch: Sequence[WaitingDelivery]) -> None:
        """Hand a batch the destination did not confirm back to the source at once (a
        delayed message for the time it had left)."""
        try:
            due = [w.delivery for w in batch if w.due_in <= 0]
            if due:
                self.source.hook.pashq_nack(queue=self.source_queue, deliveries=due, delay=0.0)
            for w in batch:
                if w.due_in > 0:
                    self.source.hook.pashq_nack(
                        queue=self.source_queue, deliveries=[w.delivery], delay=w.due_in
                    )
        except Exception:  # the lease brings them back anyway
            log.warning("could not release %d message(s) at %s", len(batch), self.report.source)

    def _move_dead(self) -> None:
        report = self.report
        seen: set[str] = set()
        while self._room() > 0:
            dead = self.source.failed(self.source_queue, self._room())
            if not dead:
                return
            if all(d.id in seen for d in dead):
                raise MoveError(
                    f"dead letters {', '.join(d.id for d in dead[:5])} of {report.source} are "
                    f"stored at {report.destination} but could not be removed from the source"
                )
            seen.update(d.id for d in dead)
            self._store_dead(dead)
            self.source.purge_failed(self.source_queue, [d.id for d in dead])
            if self.dead_target == "dead":
                report.dead_letters += len(dead)
            else:
                report.dead_as_waiting += len(dead)
            report.batches += 1
            self._progress()

    def _store_dead(self, dead: Sequence[DeadLetter]) -> None:
        if self.dead_target == "dead":
            ids = self.destination.hook.pashq_failed_store(
                queue=self.destination_queue, dead_letters=list(dead)
            )
            if ids is None or len(ids) != len(dead):
                raise MoveError(
                    f"{self._side(self.destination)} kept {0 if ids is None else len(ids)} of "
                    f"{len(dead)} dead letters for queue {self.destination_queue!r}; they "
                    "stay at the source"
                )
            return
        outgoing = []
        for d in dead:
            message_id, type_name = self._identify(Delivery(d.queue, d.id, d.body))
            outgoing.append(OutgoingMessage(message_id, type_name, d.body))
        self._push(outgoing, [0] * len(outgoing))  # a fresh start, as `pashq failed retry`

    def _progress(self) -> None:
        if self.on_progress is not None:
            self.on_progress(self.report)

    def _await_leased(self) -> None:
        """Wait (up to ``wait_leased``) for messages leased at the source, moving those
        that come back."""
        deadline = time.monotonic() + self.wait_leased
        while self._room() > 0:
            leased = self._leftovers()
            if not leased or time.monotonic() >= deadline:
                return
            log.info(
                "%d message(s) are leased at %s (a worker's, or a move's that died); "
                "waiting for them",
                leased,
                self.report.source,
            )
            time.sleep(_LEASED_PAUSE)
            self._move_waiting()

    def run(self) -> MoveReport:
        """Move the messages; return the report.

        :raises PashqError: a side failed; what was confirmed stays moved, the rest stays
            (or comes back after its lease) at the source.
        """
        started = time.monotonic()
        report = self.report
        report.total = self._expected()
        self._progress()
        try:
            self._move_waiting()
            self._await_leased()
            if self.failed:
                self._move_dead()
            self._leftovers()
        finally:
            report.seconds = time.monotonic() - started
        return report
