"""Settlement: what a worker holds, batched acks, nacks and dead letters, with retries.

A failed ack, nack or dead-letter call is tried again with backoff (:data:`RETRY_DELAYS`)
before the worker gives up and leaves the delivery to its lease: a short backend outage
(a database restart) then costs no duplicate runs. Deliveries whose ack is being retried
stay held, so the heartbeat keeps their leases alive meanwhile.
"""

from __future__ import annotations

import logging
import math
import threading
import time
import traceback
from collections.abc import Callable, Sequence
from typing import Any

import attrs

from pashq.delivery import Delivery
from pashq.processing import Outcome, Result
from pashq.redaction import redact_url
from pashq.text import safe_reason, safe_traceback
from pashq.worker.deferral import defer
from pashq.worker.stats import WorkerStats

__all__ = ["ACK_FLUSH_SECONDS", "RETRY_DELAYS", "Settlement"]

log = logging.getLogger("pashq.worker")

#: Pending acks are sent at least this often (and whenever a batch is full or the worker idles).
ACK_FLUSH_SECONDS = 0.1
#: Seconds before each new try of a failed settlement; then it is left to the lease.
RETRY_DELAYS = (0.2, 0.5, 1.0, 2.0, 4.0, 8.0)


@attrs.define(eq=False)
class _Retry:
    """A settlement call that failed and will be tried again."""

    kind: str  # "ack", "nack", "defer" or "dead"
    queue: str
    deliveries: list[Delivery]
    delay: float = 0.0
    reason: str = ""
    traceback: str | None = None
    tries: int = 1
    due: float = 0.0


class Settlement:
    """Settles the deliveries of one worker run (thread-safe where the heartbeat needs it).

    :param hook: the connection's hook relay.
    :param stats: the run's counters.
    :param batch: most deliveries per ack call.
    :param connection_name: for log lines.
    """

    def __init__(
        self,
        hook: Any,
        stats: WorkerStats,
        batch: int,
        connection_name: str,
        delay_resolution: float = 0.0,
    ) -> None:
        self.hook = hook
        self.stats = stats
        self.batch = batch
        self.connection_name = connection_name
        self.delay_resolution = delay_resolution
        self.held: dict[Delivery, float] = {}  # delivery -> monotonic lease deadline
        self.held_lock = threading.Lock()
        # Held while a delivery is settled (forgotten, then acked/nacked/dead-lettered) and
        # while the heartbeat extends leases: an extension never lands after a settlement.
        self.lock = threading.RLock()
        self.acks: dict[str, list[Delivery]] = {}
        self.ack_since = 0.0
        self.retry_until = 0.0  # until_empty waits for retries scheduled this run
        self.retries: list[_Retry] = []

    def backend_delay(self, delay: float) -> float:
        """The delay the backend really keeps: ``delay`` rounded up to its resolution."""
        step = self.delay_resolution
        if step <= 0 or delay <= 0:
            return delay
        return math.ceil(delay / step - 1e-9) * step

    # -- holding -----------------------------------------------------------------------------

    def hold(self, deliveries: Sequence[Delivery]) -> None:
        """Remember pulled deliveries until they are settled (the heartbeat extends them)."""
        now = time.monotonic()
        with self.held_lock:
            held = self.held
            for d in deliveries:
                held[d] = now + (d.lease or 0.0)

    def forget(self, deliveries: Sequence[Delivery]) -> None:
        """Stop holding deliveries (settled, or left to their lease)."""
        with self.held_lock:
            pop = self.held.pop
            for d in deliveries:
                pop(d, None)

    @property
    def holding(self) -> int:
        """Deliveries held (pulled and not yet settled)."""
        return len(self.held)

    @property
    def busy(self) -> bool:
        """Whether acks are pending or settlements are waiting to be tried again."""
        return bool(self.acks or self.retries)

    # -- errors --------------------------------------------------------------------------------

    def backend_error(self, what: str, exc: Exception) -> None:
        """Count and log a failed backend call (the URL passwords redacted)."""
        stats = self.stats
        stats.errors += 1
        stats.consuming = False
        # Client errors may quote a URL with its password (botocore's "Could not connect to
        # the endpoint URL"): redact the text and the traceback the log shows.
        text = redact_url(str(exc))
        stats.last_error = f"{what}: {type(exc).__name__}: {text}"
        if stats.errors == 1:
            text += "\n" + redact_url("".join(traceback.format_exception(exc)).rstrip())
        log.warning("%s failed on connection %r: %s", what, self.connection_name, text)

    # -- settling ------------------------------------------------------------------------------

    def settle(self, result: Result) -> None:
        """Ack (batched), retry with a delay, dead-letter or release one processed delivery."""
        delivery = result.delivery
        outcome = result.outcome
        if outcome is Outcome.ACK:
            self.ack(delivery)
            return
        with self.lock:
            self.forget((delivery,))  # acked ones are forgotten when the ack is flushed
            if outcome is Outcome.RELEASE:
                self._call(_Retry("nack", delivery.queue, [delivery]))
                self.stats.released += 1
            elif outcome is Outcome.DEFER:
                self._call(_Retry("defer", delivery.queue, [delivery], delay=result.delay))
                self.stats.deferred += 1
                self.retry_until = max(self.retry_until, time.monotonic() + result.delay)
            elif outcome is Outcome.RETRY:
                self._call(_Retry("nack", delivery.queue, [delivery], delay=result.delay))
                self.stats.retried += 1
                delay = self.backend_delay(result.delay)
                self.retry_until = max(self.retry_until, time.monotonic() + delay)
                log.info(
                    "message %s on %r failed (attempt %d), retrying in %.2fs: %s",
                    delivery.id,
                    delivery.queue,
                    delivery.attempts,
                    delay,
                    result.reason,
                )
            else:
                self._call(
                    _Retry(
                        "dead",
                        delivery.queue,
                        [delivery],
                        # Results are mutable: a wrapper may have set any text since.
                        reason=safe_reason(result.reason),
                        traceback=safe_traceback(result.traceback),
                    )
                )
                self.stats.dead_lettered += 1
                log.warning(
                    "message %s on %r dead-lettered: %s", delivery.id, delivery.queue, result.reason
                )

    def ack(self, delivery: Delivery) -> None:
        """Settle a delivery that succeeded: its ack waits for the next flush (batched)."""
        # No lock: only the worker's thread settles and flushes, and an ack waiting here
        # makes no backend call (flush() takes the lock for that).
        pending = self.acks.get(delivery.queue)
        if pending is None:
            pending = self.acks[delivery.queue] = []
        if not self.ack_since:
            self.ack_since = time.monotonic()
        pending.append(delivery)
        self.stats.acked += 1
        if len(pending) >= self.batch:
            self.flush()

    def release(self, name: str, deliveries: Sequence[Delivery]) -> None:
        """Hand back deliveries that were pulled but not started (no attempt counted)."""
        if not deliveries:
            return
        with self.lock:
            self.forget(deliveries)
            self._call(_Retry("nack", name, list(deliveries)))
            self.stats.released += len(deliveries)

    def flush_due(self) -> None:
        """Send pending acks that waited :data:`ACK_FLUSH_SECONDS`; retry due settlements."""
        if self.ack_since and time.monotonic() - self.ack_since >= ACK_FLUSH_SECONDS:
            self.flush()
        if self.retries:
            self.retry_due()

    def flush(self) -> None:
        """Send every pending ack now."""
        with self.lock:
            self.ack_since = 0.0
            if not self.acks:
                return
            acks, self.acks = self.acks, {}
            for name, deliveries in acks.items():
                self._call(_Retry("ack", name, deliveries))

    def _call(self, op: _Retry) -> bool:
        """Make one settlement call; on failure schedule it again (bounded)."""
        try:
            if op.kind == "ack":
                self.hook.pashq_ack(queue=op.queue, deliveries=op.deliveries)
            elif op.kind == "nack":
                self.hook.pashq_nack(queue=op.queue, deliveries=op.deliveries, delay=op.delay)
            elif op.kind == "defer":
                defer(self.hook, op.queue, op.deliveries, op.delay)
            else:
                self.hook.pashq_dead_letter(
                    queue=op.queue,
                    delivery=op.deliveries[0],
                    reason=op.reason,
                    traceback=op.traceback,
                )
        except Exception as exc:
            what = {"ack": "ack", "nack": "nack", "defer": "defer", "dead": "dead letter"}[op.kind]
            self.backend_error(f"{what} of {len(op.deliveries)} message(s) on {op.queue!r}", exc)
            if op.tries <= len(RETRY_DELAYS):
                op.due = time.monotonic() + RETRY_DELAYS[op.tries - 1]
                op.tries += 1
                self.retries.append(op)
                return False
            log.warning(
                "giving up the %s of %d message(s) on %r after %d tries; their lease returns them",
                what,
                len(op.deliveries),
                op.queue,
                op.tries,
            )
        if op.kind == "ack":
            self.forget(op.deliveries)
        return True

    def retry_due(self, force: bool = False) -> None:
        """Try again the failed settlements whose backoff has passed (all with ``force``)."""
        now = time.monotonic()
        with self.lock:
            due = [op for op in self.retries if force or op.due <= now]
            if not due:
                return
            self.retries = [op for op in self.retries if op not in due]
            for op in due:
                if self._call(op) and op.tries > 1:
                    log.info("%s on %r succeeded on try %d", op.kind, op.queue, op.tries)

    def next_retry(self) -> float | None:
        """When the next failed settlement is due (monotonic), if any."""
        return min((op.due for op in self.retries), default=None)

    def drain(self, deadline: float, stop: Callable[[], bool] = lambda: False) -> None:
        """At the end of a run: flush the acks, then keep retrying until done or ``deadline``."""
        self.flush()
        while self.retries and not stop():
            due = self.next_retry() or 0.0
            now = time.monotonic()
            if due > deadline:
                break
            if due > now:
                time.sleep(min(due - now, max(0.0, deadline - now)))
            self.retry_due()
        for op in self.retries:
            log.warning(
                "%s of %d message(s) on %r not settled before the worker stopped; "
                "their lease returns them",
                op.kind,
                len(op.deliveries),
                op.queue,
            )
            if op.kind == "ack":
                self.forget(op.deliveries)
        self.retries = []

    # -- heartbeat -----------------------------------------------------------------------------

    def extend_due(self) -> None:
        """Extend the leases that are past half their length (call with :attr:`lock` held)."""
        now = time.monotonic()
        due: dict[str, list[Delivery]] = {}
        with self.held_lock:
            for delivery, deadline in self.held.items():
                if delivery.lease and deadline - now < delivery.lease / 2:
                    due.setdefault(delivery.queue, []).append(delivery)
        for name, deliveries in due.items():
            seconds = max(d.lease or 0.0 for d in deliveries)
            try:
                self.hook.pashq_extend(queue=name, deliveries=deliveries, seconds=seconds)
            except Exception as exc:
                self.backend_error(f"lease extension on {name!r}", exc)
                continue
            with self.held_lock:
                for d in deliveries:
                    if d in self.held:
                        self.held[d] = now + (d.lease or 0.0)
