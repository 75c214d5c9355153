"""The demo's message: a welcome e-mail, "sent" by appending a line to sent.log."""

from __future__ import annotations

from pathlib import Path

import attrs

import pashq


@attrs.define
class SendWelcomeEmail(pashq.Message, type_name="demo.send_welcome_email", queue="demo"):
    """Send the welcome e-mail to a new user."""

    user_id: int
    email: str

    def validate_message(self) -> bool:
        return "@" in self.email

    def process_message(self) -> None:
        with Path("sent.log").open("a", encoding="utf-8") as log:
            log.write(f"{self.user_id} {self.email}\n")
