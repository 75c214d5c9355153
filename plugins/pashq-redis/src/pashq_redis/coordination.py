"""Coordination on Redis: holds (locks, semaphores) and sliding windows, one key each.

A hold key ``<prefix>coord:hold:<key>`` is a sorted set of owners scored by the time
their hold ends (ms, server clock); a window key ``<prefix>coord:window:<key>`` is a
list of the times (ms) of the events counted in the last ``period``. Every operation is
one Lua script on one key (so it works on Redis Cluster as on one server), timed by the
server's ``TIME``, and sets the key to expire when its last hold or event does, so
nothing is left behind.
"""

from __future__ import annotations

__all__ = ["ACQUIRE", "EXTEND_HOLD", "RELEASE", "WINDOW_ADD", "hold_key", "window_key"]


def hold_key(prefix: str, key: str) -> bytes:
    """The Redis key of the holds on coordination key ``key``."""
    return f"{prefix}coord:hold:{key}".encode("utf-8", "surrogatepass")


def window_key(prefix: str, key: str) -> bytes:
    """The Redis key of the sliding window ``key``."""
    return f"{prefix}coord:window:{key}".encode("utf-8", "surrogatepass")


_NOW = """
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
local function fmt(x) return string.format('%d', x) end
local function expire_at_last()
  local last = redis.call('ZRANGE', KEYS[1], -1, -1, 'WITHSCORES')
  if last[2] then redis.call('PEXPIREAT', KEYS[1], last[2]) end
end
"""

#: ARGV: owner, ttl (ms), limit. Returns {1, owner, 0} when taken, else {0, holder, wait
#: ms} for the live hold that ends first.
ACQUIRE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
local owner, ttl, limit = ARGV[1], tonumber(ARGV[2]), tonumber(ARGV[3])
if redis.call('ZSCORE', KEYS[1], owner) or redis.call('ZCARD', KEYS[1]) < limit then
  redis.call('ZADD', KEYS[1], fmt(now + ttl), owner)
  expire_at_last()
  return {1, owner, 0}
end
local first = redis.call('ZRANGE', KEYS[1], 0, 0, 'WITHSCORES')
return {0, first[1], math.max(1, tonumber(first[2]) - now)}
"""
)

#: ARGV: owner. Returns 1 when the owner's live hold was released, else 0.
RELEASE = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
return redis.call('ZREM', KEYS[1], ARGV[1])
"""
)

#: ARGV: owner, ttl (ms). Returns 1 when the owner held it (now for ttl more), else 0.
EXTEND_HOLD = (
    _NOW
    + """
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', fmt(now))
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) then return 0 end
redis.call('ZADD', KEYS[1], 'XX', fmt(now + tonumber(ARGV[2])), ARGV[1])
expire_at_last()
return 1
"""
)

#: ARGV: limit, period (ms). Returns 0 when counted, else the ms until the oldest counted
#: event leaves the window.
WINDOW_ADD = (
    _NOW
    + """
local limit, period = tonumber(ARGV[1]), tonumber(ARGV[2])
while true do
  local head = redis.call('LINDEX', KEYS[1], 0)
  if not head or tonumber(head) > now - period then break end
  redis.call('LPOP', KEYS[1])
end
if redis.call('LLEN', KEYS[1]) < limit then
  redis.call('RPUSH', KEYS[1], fmt(now))
  redis.call('PEXPIRE', KEYS[1], fmt(period))
  return 0
end
-- the event whose leaving makes room (the oldest, unless the limit was lowered)
local nth = tonumber(redis.call('LINDEX', KEYS[1], redis.call('LLEN', KEYS[1]) - limit))
return math.max(1, nth + period - now)
"""
)
