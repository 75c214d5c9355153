"""Retry policy: how many attempts a message gets and how long it waits between them."""

from __future__ import annotations

import random

from pashq.config import RetryPolicy
from pashq.message import Message

__all__ = ["backoff_delay", "policy_for"]


def policy_for(cls: type[Message] | None, connection_policy: RetryPolicy) -> RetryPolicy:
    """Combine a message class's own settings with the connection's (class wins)."""
    if cls is None:
        return connection_policy
    return RetryPolicy(
        max_attempts=cls.max_attempts
        if cls.max_attempts is not None
        else connection_policy.max_attempts,
        retry_delay=cls.retry_delay
        if cls.retry_delay is not None
        else connection_policy.retry_delay,
        retry_delay_max=cls.retry_delay_max
        if cls.retry_delay_max is not None
        else connection_policy.retry_delay_max,
        time_limit=cls.time_limit if cls.time_limit is not None else connection_policy.time_limit,
    )


def backoff_delay(attempts: int, policy: RetryPolicy, rng: random.Random | None = None) -> float:
    """Return the delay before the next attempt: exponential backoff with full jitter.

    After attempt ``n`` the ceiling is ``min(retry_delay_max, retry_delay * 2 ** (n - 1))``
    and the delay is drawn uniformly from ``[0, ceiling]`` (AWS's "full jitter"), so a burst
    of failures does not retry in lockstep.
    """
    ceiling = min(policy.retry_delay_max, policy.retry_delay * 2.0 ** max(0, attempts - 1))
    return (rng or random).uniform(0.0, ceiling)
