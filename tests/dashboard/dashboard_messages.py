"""Message classes of the dashboard tests."""

from __future__ import annotations

import threading

import attrs

from pashq import Message

#: Ids of ``Flaky`` messages processed successfully.
processed: set[str] = set()
_lock = threading.Lock()
#: While False, ``Flaky`` raises (so it is dead-lettered); tests set it to True to "fix" it.
fixed = threading.Event()


@attrs.define
class Flaky(Message, type_name="dashboard.flaky"):
    """Fails until :data:`fixed` is set."""

    key: str
    note: str = ""
    max_attempts = 1

    def process_message(self) -> None:
        """Fail with the note as the reason until fixed; then record the key."""
        if not fixed.is_set():
            raise RuntimeError(self.note or "not fixed yet")
        with _lock:
            processed.add(self.key)
