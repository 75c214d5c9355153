"""Message classes used by the contract suite; they record what they process in memory."""

from __future__ import annotations

import collections
import threading

import attrs

from pashq.message import Message

__all__ = ["AlwaysFails", "AppendToFile", "Recorded", "Rejected", "processed"]

_lock = threading.Lock()
_processed: dict[str, list[int]] = collections.defaultdict(list)


def processed(key: str) -> list[int]:
    """Return the values processed so far under ``key``."""
    with _lock:
        return list(_processed[key])


@attrs.define
class Recorded(Message, type_name="pashq.testing.recorded"):
    """Records ``value`` under ``key`` when processed."""

    key: str
    value: int
    text: str = ""

    def process_message(self) -> None:
        """Record the value."""
        with _lock:
            _processed[self.key].append(self.value)


@attrs.define
class AlwaysFails(Message, type_name="pashq.testing.always_fails"):
    """Raises every time; tried ``max_attempts`` (3) times, then dead-lettered."""

    key: str
    max_attempts = 3
    retry_delay = 0.05
    retry_delay_max = 0.2

    def process_message(self) -> None:
        """Record the attempt and fail."""
        with _lock:
            _processed[self.key].append(1)
        raise RuntimeError(f"always fails ({self.key})")


@attrs.define
class Rejected(Message, type_name="pashq.testing.rejected"):
    """Invalid: ``validate_message`` returns False, so it must never be processed."""

    key: str

    def validate_message(self) -> bool:
        """Reject."""
        return False

    def process_message(self) -> None:
        """Must never run."""
        with _lock:
            _processed[self.key].append(1)


@attrs.define
class AppendToFile(Message, type_name="pashq.testing.append_to_file"):
    """Appends ``value`` as a line to the file at ``path`` when processed.

    Used where the processing happens in another process (a forked worker), so the
    in-memory record of :class:`Recorded` cannot be read back.
    """

    path: str
    value: int

    def process_message(self) -> None:
        """Append the value (one ``write`` on an ``O_APPEND`` file, so lines never mix)."""
        with open(self.path, "a", encoding="ascii") as out:
            out.write(f"{self.value}\n")
