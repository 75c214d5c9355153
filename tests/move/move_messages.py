"""The message class the move tests dispatch."""

from __future__ import annotations

import attrs

from pashq import Message


@attrs.define
class Parcel(Message, type_name="tests.move.parcel"):
    """A numbered message."""

    n: int

    def process_message(self) -> None:
        """Nothing to do: the move tests never run handlers."""
