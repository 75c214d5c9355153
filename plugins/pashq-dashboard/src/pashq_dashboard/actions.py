"""The state-changing actions: parsing a submitted form, describing it, doing it.

Every action is a POST to ``/action``. Without ``confirmed=yes`` it changes nothing and
the dashboard shows a confirmation page that repeats the form with ``confirmed=yes``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Literal

import attrs

from pashq.connection import Connection

__all__ = ["Action", "BadAction", "parse_action"]

Kind = Literal["retry", "purge", "purge-queue"]
Scope = Literal["one", "selected", "all"]
_KINDS: tuple[Kind, ...] = ("retry", "purge", "purge-queue")
_SCOPES: tuple[Scope, ...] = ("one", "selected", "all")
#: The most ids one form may name.
MAX_IDS = 1000


class BadAction(ValueError):
    """A form that does not describe an action (the page answers 400)."""


@attrs.frozen
class Action:
    """What to do to a queue.

    :ivar kind: ``retry`` or ``purge`` dead letters, or ``purge-queue`` (waiting messages).
    :ivar scope: ``one`` or ``selected`` (the ``ids``) or ``all`` dead letters.
    :ivar ids: the dead letters' message ids (empty for ``all`` and ``purge-queue``).
    """

    kind: Kind
    scope: Scope
    ids: tuple[str, ...] = ()

    @property
    def value(self) -> str:
        """The ``action`` form value (``retry:selected``)."""
        return self.kind if self.kind == "purge-queue" else f"{self.kind}:{self.scope}"

    def question(self, connection: str, queue: str) -> str:
        """The confirmation question, in plain text (the page escapes it)."""
        where = f"queue {queue!r} on connection {connection!r}"
        if self.kind == "purge-queue":
            return (
                f"Delete every waiting message of {where}? Dead letters are kept. "
                "This cannot be undone."
            )
        which = (
            "every dead letter"
            if self.scope == "all"
            else "1 dead letter"
            if len(self.ids) == 1
            else f"{len(self.ids)} dead letters"
        )
        if self.kind == "retry":
            return f"Move {which} of {where} back onto the queue, to be processed again?"
        return f"Delete {which} of {where} for good? This cannot be undone."

    def perform(self, connection: Connection, queue: str) -> int:
        """Do it through the core's API; return how many messages it touched."""
        ids = None if self.scope == "all" else list(self.ids)
        if self.kind == "retry":
            return connection.retry_failed(queue, ids)
        if self.kind == "purge":
            return connection.purge_failed(queue, ids)
        return connection.purge(queue)


def parse_action(fields: Mapping[str, Sequence[str]]) -> Action:
    """Read the ``action`` and ``id`` fields of a form.

    :raises BadAction: an unknown action, or ``one``/``selected`` without ids.
    """
    (value,) = fields.get("action", [""])[-1:] or [""]
    kind_text, _, scope_text = value.partition(":")
    if kind_text == "purge-queue" and not scope_text:
        return Action("purge-queue", "all")
    kind = next((k for k in _KINDS if k == kind_text and k != "purge-queue"), None)
    scope = next((s for s in _SCOPES if s == scope_text), None)
    if kind is None or scope is None:
        raise BadAction(f"unknown action {value[:60]!r}")
    if scope == "all":
        return Action(kind, scope)
    ids = tuple(dict.fromkeys(i for i in fields.get("id", []) if i))
    if not ids:
        raise BadAction("no dead letter selected")
    if len(ids) > MAX_IDS:
        raise BadAction(f"at most {MAX_IDS} dead letters at once")
    if scope == "one" and len(ids) != 1:
        raise BadAction("'one' takes exactly one id")
    return Action(kind, scope, ids)
