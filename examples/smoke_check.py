"""Smoke check of an installed pashq wheel (run by `./dev build` in a fresh venv).

Dispatches 10,000 messages to the memory driver and drains them with a Worker: every one
processed once; a message that always raises is tried max_attempts times then
dead-lettered; one whose validate_message returns False is never processed.
"""

from __future__ import annotations

import collections

import attrs

import pashq

seen: collections.Counter[int] = collections.Counter()
failures: list[int] = []
invalid_runs: list[int] = []


@attrs.define
class Count(pashq.Message, type_name="smoke.count"):
    n: int

    def process_message(self) -> None:
        seen[self.n] += 1


@attrs.define
class AlwaysFails(pashq.Message, type_name="smoke.fails"):
    max_attempts = 4
    retry_delay = 0.01

    def process_message(self) -> None:
        failures.append(1)
        raise RuntimeError("nope")


@attrs.define
class Invalid(pashq.Message, type_name="smoke.invalid"):
    def validate_message(self) -> bool:
        return False

    def process_message(self) -> None:
        invalid_runs.append(1)


pashq.configure({"queues": {"default": {"type": "memory"}}})
connection = pashq.queue()
connection.dispatch_many("default", [Count(i) for i in range(10_000)])
AlwaysFails().dispatch()
Invalid().dispatch()
stats = pashq.Worker("default", poll_timeout=0.1).run(until_empty=True)

assert len(seen) == 10_000 and set(seen.values()) == {1}, "every message exactly once"
assert len(failures) == 4, f"failing message tried {len(failures)} times, expected 4"
assert invalid_runs == [], "invalid message must never be processed"
dead = {d.reason for d in connection.failed("default")}
assert "validate_message() returned False" in dead, dead
assert any("RuntimeError: nope" in reason for reason in dead), dead
print(
    f"smoke check OK: {stats.acked} acked, {stats.dead_lettered} dead-lettered, pashq "
    f"{pashq.__version__}"
)
