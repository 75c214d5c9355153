"""Code blocks of the documentation, for the tests that run them as written.

The tests import this module by name (``tests/`` is on ``sys.path`` through the root
``conftest.py``). :class:`InvoicePaid` is the message class docs/envelope.md uses; it is
defined once here so every backend's docs test can process the messages its samples send.
"""

from __future__ import annotations

import re
import threading
from decimal import Decimal
from pathlib import Path

import attrs

import pashq

DOCS = Path(__file__).resolve().parents[1] / "docs"
_FENCE = re.compile(r"^```(\w*)\n(.*?)^```", re.S | re.M)

_lock = threading.Lock()
paid: list[int] = []


def code_blocks(page: str, language: str = "python") -> list[str]:
    """The fenced code blocks of ``docs/<page>`` in ``language``, in page order."""
    text = (DOCS / page).read_text(encoding="utf-8")
    return [body for lang, body in _FENCE.findall(text) if lang == language]


def code_block(page: str, containing: str, language: str = "python") -> str:
    """The one block of ``docs/<page>`` that contains ``containing``."""
    found = [b for b in code_blocks(page, language) if containing in b]
    assert len(found) == 1, f"{page}: {len(found)} {language} blocks contain {containing!r}"
    return found[0]


@attrs.define
class InvoicePaid(pashq.Message, type_name="billing.invoice_paid"):
    """docs/envelope.md's example message; records the invoice ids it processed."""

    invoice_id: int
    amount: Decimal

    def process_message(self) -> None:
        """Record the invoice id."""
        with _lock:
            paid.append(self.invoice_id)


def paid_invoices() -> list[int]:
    """The invoice ids processed so far in this process."""
    with _lock:
        return list(paid)
