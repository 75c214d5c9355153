"""Dispatch 100 welcome e-mails (run `pashq work demo` to process them)."""

from __future__ import annotations

from pathlib import Path

from messages import SendWelcomeEmail

import pashq

Path("sent.log").unlink(missing_ok=True)
first = SendWelcomeEmail(0, "user0@example.com").dispatch()
rest = pashq.queue().dispatch_many(
    "demo", [SendWelcomeEmail(i, f"user{i}@example.com") for i in range(1, 100)]
)
print(f"dispatched {1 + len(rest)} messages (first id {first}); now run: pashq work demo")
