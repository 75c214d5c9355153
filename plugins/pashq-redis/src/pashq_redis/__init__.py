"""pashq-redis: the Redis driver for pashq, on redis-py.

Registered as ``type = "redis"`` through the ``pashq.drivers`` entry point; see
:mod:`pashq_redis.driver` for the spec sheet and ``docs/redis.md`` for the guide.
"""

from __future__ import annotations

from pashq_redis.driver import Receipt, RedisDriver
from pashq_redis.keys import QueueKeys
from pashq_redis.options import RedisOptions

__all__ = ["QueueKeys", "Receipt", "RedisDriver", "RedisOptions"]
