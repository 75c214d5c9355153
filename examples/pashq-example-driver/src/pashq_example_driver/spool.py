"""``spool``: queues kept as files in a directory, shared by threads and processes.

pashq's example third-party driver: small, complete, and meant to be copied.

Features: persistent messages (files on disk), delays, leases with crash recovery, lease
extension, nack with delay, dead letters (list / retry / purge), stats and purge.
Delivery is at-least-once. Not provided: FIFO groups, deduplication ids (ignored),
priorities.

Layout, one directory per queue under ``path``::

    <path>/<queue>/tmp/     messages being written, then renamed into ready/
    <path>/<queue>/ready/   waiting messages (due or delayed)
    <path>/<queue>/leased/  pulled and not yet settled
    <path>/<queue>/failed/  dead letters, each with a ``.json`` sidecar (reason, traceback)

Each message is one file named ``<time_ns>-<seq>-<attempts>-<id>.msg``. The time is when
it becomes due in ready/, its lease deadline in leased/ and when it failed in failed/, so
sorting the names of ready/ gives the delivery order (``seq`` keeps a batch in dispatch
order); ``attempts`` counts the deliveries so far. Every change of state is one
``os.rename``, atomic on a local filesystem: when two pullers claim the same file, one
rename succeeds and the other gets ``FileNotFoundError`` and skips the file. Each pull
first renames leases that ran out back into ready/, so a crashed worker's messages return.

Options (``[queues.<name>]``):

- ``path`` (str, required): the spool directory, created if missing (relative paths are
  relative to the working directory).
- ``lease`` (float, default 30): seconds a pulled message stays reserved.
- ``poll_interval`` (float, default 0.2): seconds between looks at an empty queue while a
  pull waits.
- ``fsync`` (bool, default true): flush each pushed message to disk before the push
  returns, so it survives a power cut and not only a crash of the process.

Limits: one machine and a local POSIX filesystem (not NFS); times are wall-clock, so a clock
jump moves delays and leases; each pull lists the queue's directory (fine for thousands of
waiting messages, not millions). Queue names: letters, digits, ``.``, ``_`` and ``-``.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import time
from collections.abc import Iterator, Mapping, Sequence
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, NamedTuple

import attrs

from pashq import (
    Capabilities,
    ConfigError,
    Connection,
    DeadLetter,
    Delivery,
    DriverError,
    OutgoingMessage,
    QueueStats,
    hookimpl,
    parse_options,
)

__all__ = ["SpoolDriver", "SpoolOptions"]

log = logging.getLogger(__name__)

_SECOND = 1_000_000_000  # nanoseconds
_SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9._-]*")
_STATES = ("tmp", "ready", "leased", "failed")


@attrs.frozen
class SpoolOptions:
    """The driver's keys in ``[queues.<name>]``, validated by :func:`pashq.parse_options`."""

    path: str
    lease: float = attrs.field(default=30.0, validator=attrs.validators.gt(0))
    poll_interval: float = attrs.field(default=0.2, validator=attrs.validators.gt(0))
    fsync: bool = True


class _Name(NamedTuple):
    """A message file name, ``<at>-<seq>-<attempts>-<id>.msg``; tuples sort like names."""

    at: int  # nanoseconds since the epoch: due (ready/), lease deadline (leased/), failed at
    seq: int  # position in the pushed batch
    attempts: int  # deliveries so far
    id: str

    @property
    def file(self) -> str:
        return f"{self.at:020d}-{self.seq:06d}-{self.attempts}-{self.id}.msg"

    @property
    def sidecar(self) -> str:
        return self.file.removesuffix(".msg") + ".json"

    @classmethod
    def parse(cls, file: str) -> _Name | None:
        """Return the parts of a message file name, or ``None`` for any other file."""
        parts = file.removesuffix(".msg").split("-", 3)
        if not file.endswith(".msg") or len(parts) != 4:
            return None
        try:
            return cls(int(parts[0]), int(parts[1]), int(parts[2]), parts[3])
        except ValueError:
            return None


def _names(directory: Path) -> list[_Name]:
    """The message files of ``directory``, oldest first."""
    return sorted(name for file in os.listdir(directory) if (name := _Name.parse(file)))


def _lost(delivery: Delivery, doing: str) -> None:
    log.warning(
        "spool: the lease of message %s on %r ran out before it was %s; it will be delivered again",
        delivery.id,
        delivery.queue,
        doing,
    )


def _fsync_dir(directory: Path) -> None:
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class SpoolDriver:
    """Queues as directories of message files (see the module docstring)."""

    name = "spool"
    capabilities = Capabilities(
        persistent=True,
        delay=True,
        batch_size=100,
        nack_delay=True,
        lease=True,
        extend_lease=True,
        dead_letters=True,
        stats=True,
        purge=True,
        list_queues=True,
    )
    options: SpoolOptions
    root: Path

    def __init__(self) -> None:
        # The core instantiates drivers without arguments; options arrive in pashq_connect.
        self._created: set[str] = set()
        # Settling uses the receipt, which pashq_extend replaces: one settlement at a time.
        self._settle = threading.Lock()
        self._closed = threading.Event()

    # -- lifecycle ----------------------------------------------------------------------------

    @hookimpl
    def pashq_connect(self, connection: Connection) -> None:
        """Validate the options and create the spool directory."""
        self.options = parse_options(SpoolOptions, connection.options, connection.where)
        root = Path(self.options.path).expanduser()
        try:
            root.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise ConfigError(
                f"{connection.where}: 'path' {self.options.path!r} cannot be used as the spool "
                f"directory ({exc}); point it at a writable directory"
            ) from exc
        self.root = root.resolve()

    @hookimpl
    def pashq_close(self) -> None:
        """Wake pulls that are waiting; the files stay."""
        self._closed.set()

    @hookimpl
    def pashq_declare(self, queue: str) -> None:
        """Create the queue's directories before a worker starts."""
        self._dir(queue, "ready")

    def _dir(self, queue: str, state: str) -> Path:
        """Return ``<path>/<queue>/<state>``, creating the queue's directories on first use."""
        if queue not in self._created:
            if not _SAFE_NAME.fullmatch(queue):
                raise DriverError(
                    f"spool: queue name {queue!r} cannot be a directory name; "
                    "use letters, digits, '.', '_' and '-'"
                )
            for sub in _STATES:
                (self.root / queue / sub).mkdir(parents=True, exist_ok=True)
            self._created.add(queue)
        return self.root / queue / state

    def queues(self) -> list[str]:
        """Return the names of the queues that have a directory under ``path``."""
        return sorted(p.name for p in self.root.iterdir() if (p / "ready").is_dir())

    def _store(self, queue: str, directory: Path, file: str, data: bytes) -> None:
        """Write ``data`` in tmp/, then rename it into ``directory``: all of it or nothing."""
        temp = self._dir(queue, "tmp") / file
        with open(temp, "wb") as fh:
            fh.write(data)
            if self.options.fsync:
                fh.flush()
                os.fsync(fh.fileno())
        os.replace(temp, directory / file)

    # -- the data path ------------------------------------------------------------------------

    @hookimpl
    def pashq_push(
        self, queue: str, messages: Sequence[OutgoingMessage], options: Mapping[str, Any]
    ) -> list[str]:
        """Store each message as one file in ready/, due after its delay."""
        if options:
            raise TypeError(f"spool driver takes no dispatch options, got {sorted(options)}")
        ready = self._dir(queue, "ready")
        now = time.time_ns()
        for index, message in enumerate(messages):
            name = _Name(now + int(message.delay * _SECOND), index, 0, message.id)
            try:
                if not _SAFE_NAME.fullmatch(message.id):
                    raise ValueError(f"message id {message.id!r} cannot be part of a file name")
                self._store(queue, ready, name.file, message.body)
            except (OSError, ValueError) as exc:
                failed = ", ".join(m.id for m in messages[index:])
                raise DriverError(
                    f"spool: queue {queue!r} did not store message(s) {failed}: {exc}"
                ) from exc
        if self.options.fsync:
            _fsync_dir(ready)  # the renames into ready/ are durable too
        return [m.id for m in messages]

    @hookimpl
    def pashq_pull(self, queue: str, max_messages: int, timeout: float) -> list[Delivery]:
        """Claim up to ``max_messages`` due messages, polling up to ``timeout`` for the first."""
        deadline = time.monotonic() + timeout
        while True:
            claimed = self._claim(queue, max_messages)
            remaining = deadline - time.monotonic()
            if claimed or remaining <= 0 or self._closed.is_set():
                return claimed
            self._closed.wait(min(self.options.poll_interval, remaining))

    def _claim(self, queue: str, max_messages: int) -> list[Delivery]:
        ready, leased = self._dir(queue, "ready"), self._dir(queue, "leased")
        now = time.time_ns()
        self._reclaim(queue, now)
        lease = self.options.lease
        claimed: list[Delivery] = []
        for name in _names(ready):
            if name.at > now or len(claimed) >= max_messages:
                break
            mine = name._replace(at=now + int(lease * _SECOND), attempts=name.attempts + 1)
            try:
                os.rename(ready / name.file, leased / mine.file)
                body = (leased / mine.file).read_bytes()
            except FileNotFoundError:
                continue  # another thread or process claimed it first
            claimed.append(Delivery(queue, name.id, body, mine.attempts, mine, lease))
        return claimed

    def _reclaim(self, queue: str, now: int) -> None:
        """Rename leases that ran out back into ready/, where they are due at once."""
        ready, leased = self._dir(queue, "ready"), self._dir(queue, "leased")
        for name in _names(leased):
            if name.at > now:
                break
            with contextlib.suppress(FileNotFoundError):  # settled or reclaimed meanwhile
                os.rename(leased / name.file, ready / name.file)

    @hookimpl
    def pashq_ack(self, queue: str, deliveries: Sequence[Delivery]) -> None:
        """Delete the claimed files."""
        leased = self._dir(queue, "leased")
        with self._settle:
            for delivery in deliveries:
                # Gone: the lease ran out and the message went back; it will come again.
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(leased / delivery.receipt.file)

    @hookimpl
    def pashq_nack(self, queue: str, deliveries: Sequence[Delivery], delay: float) -> None:
        """Rename the claimed files back into ready/, due in ``delay`` seconds."""
        ready, leased = self._dir(queue, "ready"), self._dir(queue, "leased")
        due = time.time_ns() + int(delay * _SECOND)
        with self._settle:
            for delivery in deliveries:
                name: _Name = delivery.receipt
                with contextlib.suppress(FileNotFoundError):
                    os.rename(leased / name.file, ready / name._replace(at=due).file)

    @hookimpl
    def pashq_extend(self, queue: str, deliveries: Sequence[Delivery], seconds: float) -> None:
        """Rename the claimed files to a new lease deadline and remember the new names."""
        leased = self._dir(queue, "leased")
        until = time.time_ns() + int(seconds * _SECOND)
        with self._settle:
            for delivery in deliveries:
                name: _Name = delivery.receipt
                try:
                    os.rename(leased / name.file, leased / name._replace(at=until).file)
                except FileNotFoundError:
                    _lost(delivery, "extended")
                    continue
                delivery.receipt = name._replace(at=until)

    @hookimpl
    def pashq_dead_letter(
        self, queue: str, delivery: Delivery, reason: str, traceback: str | None
    ) -> None:
        """Write the reason in a sidecar, then rename the claimed file into failed/."""
        failed, leased = self._dir(queue, "failed"), self._dir(queue, "leased")
        name: _Name = delivery.receipt
        dead = name._replace(at=time.time_ns())
        sidecar = json.dumps({"reason": reason, "traceback": traceback}).encode()
        with self._settle:
            # Sidecar first: a crash in between leaves an unused sidecar, never a dead letter
            # without its reason; the message itself is then still leased and comes back.
            self._store(queue, failed, dead.sidecar, sidecar)
            try:
                os.rename(leased / name.file, failed / dead.file)
            except FileNotFoundError:
                (failed / dead.sidecar).unlink(missing_ok=True)
                _lost(delivery, "dead-lettered")

    # -- inspection and administration --------------------------------------------------------

    @hookimpl
    def pashq_stats(self, queue: str) -> QueueStats:
        """Count the files of each state (a lease that ran out counts as ready)."""
        now = time.time_ns()
        ready = _names(self._dir(queue, "ready"))
        leased = _names(self._dir(queue, "leased"))
        due = sum(name.at <= now for name in ready)
        expired = sum(name.at <= now for name in leased)
        failed = len(_names(self._dir(queue, "failed")))
        return QueueStats(
            queue,
            ready=due + expired,
            delayed=len(ready) - due,
            in_flight=len(leased) - expired,
            failed=failed,
        )

    @hookimpl
    def pashq_queues(self) -> list[str]:
        """The queues that have a directory under ``path``."""
        return self.queues()

    @hookimpl
    def pashq_purge(self, queue: str) -> int:
        """Delete every file in ready/ (due or delayed)."""
        ready = self._dir(queue, "ready")
        deleted = 0
        for name in _names(ready):
            with contextlib.suppress(FileNotFoundError):  # claimed meanwhile
                os.unlink(ready / name.file)
                deleted += 1
        return deleted

    def _dead(self, queue: str, ids: Sequence[str] | None) -> Iterator[_Name]:
        wanted = None if ids is None else set(ids)
        for name in _names(self._dir(queue, "failed")):
            if wanted is None or name.id in wanted:
                yield name

    @hookimpl
    def pashq_failed_list(self, queue: str, limit: int) -> list[DeadLetter]:
        """Read the oldest ``limit`` dead letters with their sidecars."""
        failed = self._dir(queue, "failed")
        letters: list[DeadLetter] = []
        for name in self._dead(queue, None):
            if len(letters) >= limit:
                break
            try:
                body = (failed / name.file).read_bytes()
                info = json.loads((failed / name.sidecar).read_bytes())
            except FileNotFoundError:
                continue  # retried or purged meanwhile
            when = datetime.fromtimestamp(name.at / _SECOND, UTC)
            reason, traceback = info["reason"], info["traceback"]
            letters.append(DeadLetter(name.id, queue, body, reason, traceback, name.attempts, when))
        return letters

    @hookimpl
    def pashq_failed_retry(self, queue: str, ids: Sequence[str] | None) -> int:
        """Rename dead letters back into ready/, due now, with no attempts counted."""
        failed, ready = self._dir(queue, "failed"), self._dir(queue, "ready")
        now, moved = time.time_ns(), 0
        for name in self._dead(queue, ids):
            with contextlib.suppress(FileNotFoundError):  # retried or purged meanwhile
                os.rename(failed / name.file, ready / name._replace(at=now, attempts=0).file)
                (failed / name.sidecar).unlink(missing_ok=True)
                moved += 1
        return moved

    @hookimpl
    def pashq_failed_purge(self, queue: str, ids: Sequence[str] | None) -> int:
        """Delete dead letters and their sidecars."""
        failed = self._dir(queue, "failed")
        deleted = 0
        for name in self._dead(queue, ids):
            with contextlib.suppress(FileNotFoundError):  # retried or purged meanwhile
                os.unlink(failed / name.file)
                (failed / name.sidecar).unlink(missing_ok=True)
                deleted += 1
        return deleted

    @hookimpl
    def pashq_queue_empty(self, queue: str) -> bool:
        """Whether no file in ready/ is due (for ``until_empty``; one directory listing)."""
        now = time.time_ns()
        names = _names(self._dir(queue, "ready"))
        return not names or names[0].at > now
