"""The Lua scripts that move messages between a queue's keys, atomically on the server.

Every script gets all the queue's keys (:data:`pashq_redis.keys.PARTS`, in order) as
``KEYS`` and reads the time with ``TIME`` (the server's clock, in milliseconds): no worker
clock ever decides a lease or a delay. A message is a number (``%016d``, so members sort in
push order) whose envelope bytes are in ``body`` and whose
``<attempts>:<claims>:<priority>:<id>`` is in ``meta``; it is in exactly one of
``ready``, ``delayed``, ``leased`` or ``failed``.

A settle (ack, nack, defer, extend, dead letter) applies only while the message is in
``leased`` and its claim count is the one the delivery was pulled with: the count grows on
every claim and never goes back (unlike the attempt count, which a defer gives back), so
the receipt of an earlier claim never matches the current holder's (the fence). A dead
letter retried gets a new number, so no receipt from before can match it either.
"""

from __future__ import annotations

__all__ = [
    "ACK",
    "DEAD_LETTER",
    "DEFER",
    "EXTEND",
    "FAILED_LIST",
    "FAILED_PURGE",
    "FAILED_RETRY",
    "NACK",
    "PULL",
    "PURGE",
    "PUSH",
    "PUSH_UNIQUE",
    "READY_COUNT",
    "STATS",
]

# KEYS: 1 seq, 2 body, 3 meta, 4 ready, 5 delayed, 6 leased, 7 failed, 8 reason, 9 trace,
# 10 wake.
_PRELUDE = """
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(x) return string.format('%d', x) end
local function parse(meta)
  local a, c, p, id = string.match(meta, '^(%d+):(%d+):(%d):(.*)$')
  if not a then return 0, 0, 0, '' end  -- written by hand: deliver it, never fail the script
  return tonumber(a), tonumber(c), tonumber(p), id
end
local function pack(a, c, p, id) return a .. ':' .. c .. ':' .. p .. ':' .. id end
local function many(cmd, key, args, group)
  local size = group * 500
  for i = 1, #args, size do
    redis.call(cmd, key, unpack(args, i, math.min(i + size - 1, #args)))
  end
end
local function fenced(members, claims)
  if #members == 0 then return {}, {} end
  local scores = redis.call('ZMSCORE', KEYS[6], unpack(members))
  local metas = redis.call('HMGET', KEYS[3], unpack(members))
  local held, stale = {}, {}
  for i, m in ipairs(members) do
    local ok = false
    if scores[i] and metas[i] then
      local _, c = parse(metas[i])
      ok = c == tonumber(claims[i])
    end
    if ok then held[#held + 1] = m else stale[#stale + 1] = m end
  end
  return held, stale
end
local function wake(n)
  if n > 0 then
    local tokens = {}
    for i = 1, math.min(n, 16) do tokens[i] = '1' end
    redis.call('RPUSH', KEYS[10], unpack(tokens))
    redis.call('LTRIM', KEYS[10], -16, -1)
  end
end
local function holds(m, claim)
  if not redis.call('ZSCORE', KEYS[6], m) then return nil end
  local meta = redis.call('HGET', KEYS[3], m)
  if not meta then return nil end
  local a, c, p, id = parse(meta)
  if c ~= tonumber(claim) then return nil end
  return a, c, p, id
end
local function promote(now, limit)
  for _, set in ipairs({KEYS[5], KEYS[6]}) do
    local due = redis.call('ZRANGEBYSCORE', set, '-inf', fmt(now), 'LIMIT', 0, limit)
    for _, m in ipairs(due) do
      redis.call('ZREM', set, m)
      local meta = redis.call('HGET', KEYS[3], m)
      if meta then
        local _, _, p = parse(meta)
        redis.call('ZADD', KEYS[4], 9 - p, m)
      end
    end
  end
end
"""

#: ARGV: count, then id, body, delay (ms), priority per message. Returns the count.
PUSH = (
    _PRELUDE
    + """
local now = now_ms()
local count = tonumber(ARGV[1])
local first = redis.call('INCRBY', KEYS[1], count) - count + 1
local bodies, metas, ready, delayed = {}, {}, {}, {}
for i = 0, count - 1 do
  local b = 2 + i * 4
  local m = string.format('%016d', first + i)
  local delay = tonumber(ARGV[b + 2])
  local p = tonumber(ARGV[b + 3])
  bodies[#bodies + 1] = m
  bodies[#bodies + 1] = ARGV[b + 1]
  metas[#metas + 1] = m
  metas[#metas + 1] = pack(0, 0, p, ARGV[b])
  if delay > 0 then
    delayed[#delayed + 1] = fmt(now + delay)
    delayed[#delayed + 1] = m
  else
    ready[#ready + 1] = 9 - p
    ready[#ready + 1] = m
  end
end
many('HSET', KEYS[2], bodies, 2)
many('HSET', KEYS[3], metas, 2)
many('ZADD', KEYS[4], ready, 2)
many('ZADD', KEYS[5], delayed, 2)
wake(#ready / 2)
return count
"""
)

#: KEYS: the queue's keys, then one hold key per unique message. ARGV: count, then id,
#: body, delay (ms), priority, hold key index (0: not unique, else 11, 12 ...), ttl (ms)
#: per message. Takes each unique message's hold (owner: its id, limit 1) and stores the
#: messages whose hold was taken, all in one script. Returns per message its own id when
#: stored, else the id holding its key.
PUSH_UNIQUE = (
    _PRELUDE
    + """
local now = now_ms()
local count = tonumber(ARGV[1])
local answers, stored = {}, {}
for i = 0, count - 1 do
  local b = 2 + i * 6
  local id, k = ARGV[b], tonumber(ARGV[b + 4])
  local take = true
  if k > 0 then
    local hold = KEYS[k]
    redis.call('ZREMRANGEBYSCORE', hold, '-inf', fmt(now))
    if redis.call('ZSCORE', hold, id) or redis.call('ZCARD', hold) < 1 then
      redis.call('ZADD', hold, fmt(now + tonumber(ARGV[b + 5])), id)
      local last = redis.call('ZRANGE', hold, -1, -1, 'WITHSCORES')
      redis.call('PEXPIREAT', hold, last[2])
    else
      take = false
      answers[#answers + 1] = redis.call('ZRANGE', hold, 0, 0)[1]
    end
  end
  if take then
    answers[#answers + 1] = id
    stored[#stored + 1] = b
  end
end
if #stored > 0 then
  local first = redis.call('INCRBY', KEYS[1], #stored) - #stored + 1
  local bodies, metas, ready, delayed = {}, {}, {}, {}
  for j, b in ipairs(stored) do
    local m = string.format('%016d', first + j - 1)
    local delay, p = tonumber(ARGV[b + 2]), tonumber(ARGV[b + 3])
    bodies[#bodies + 1] = m
    bodies[#bodies + 1] = ARGV[b + 1]
    metas[#metas + 1] = m
    metas[#metas + 1] = pack(0, 0, p, ARGV[b])
    if delay > 0 then
      delayed[#delayed + 1] = fmt(now + delay)
      delayed[#delayed + 1] = m
    else
      ready[#ready + 1] = 9 - p
      ready[#ready + 1] = m
    end
  end
  many('HSET', KEYS[2], bodies, 2)
  many('HSET', KEYS[3], metas, 2)
  many('ZADD', KEYS[4], ready, 2)
  many('ZADD', KEYS[5], delayed, 2)
  wake(#ready / 2)
end
return answers
"""
)

#: ARGV: max messages, lease (ms). Returns {hint, number, attempts, claim, id, body, ...}:
#: hint is
#: -1 when messages came back, else the ms until the next delay or lease ends (-1: none).
PULL = (
    _PRELUDE
    + """
local now = now_ms()
promote(now, 1000)
local popped = redis.call('ZPOPMIN', KEYS[4], ARGV[1])
local out = {-1}
if #popped > 0 then
  local members = {}
  for i = 1, #popped, 2 do members[#members + 1] = popped[i] end
  local metas = redis.call('HMGET', KEYS[3], unpack(members))
  local bodies = redis.call('HMGET', KEYS[2], unpack(members))
  local deadline = fmt(now + tonumber(ARGV[2]))
  local newmeta, leased = {}, {}
  for i, m in ipairs(members) do
    if metas[i] and bodies[i] then
      local a, c, p, id = parse(metas[i])
      a = a + 1
      c = c + 1
      newmeta[#newmeta + 1] = m
      newmeta[#newmeta + 1] = pack(a, c, p, id)
      leased[#leased + 1] = deadline
      leased[#leased + 1] = m
      out[#out + 1] = m
      out[#out + 1] = a
      out[#out + 1] = c
      out[#out + 1] = id
      out[#out + 1] = bodies[i]
    end
  end
  many('HSET', KEYS[3], newmeta, 2)
  many('ZADD', KEYS[6], leased, 2)
end
if #out == 1 then
  for _, set in ipairs({KEYS[5], KEYS[6]}) do
    local head = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
    if head[2] then
      local d = math.max(0, tonumber(head[2]) - now)
      if out[1] < 0 or d < out[1] then out[1] = d end
    end
  end
end
return out
"""
)

#: ARGV: number, claim per delivery. Returns the numbers no longer held (stale).
ACK = (
    _PRELUDE
    + """
local members, claims = {}, {}
for i = 1, #ARGV, 2 do
  members[#members + 1] = ARGV[i]
  claims[#claims + 1] = ARGV[i + 1]
end
local held, stale = fenced(members, claims)
many('ZREM', KEYS[6], held, 1)
many('HDEL', KEYS[2], held, 1)
many('HDEL', KEYS[3], held, 1)
return stale
"""
)

#: ARGV: lease (ms), then number, claim per delivery. Returns the stale numbers.
EXTEND = (
    _PRELUDE
    + """
local deadline = fmt(now_ms() + tonumber(ARGV[1]))
local stale = {}
for i = 2, #ARGV, 2 do
  local m = ARGV[i]
  if holds(m, ARGV[i + 1]) then
    redis.call('ZADD', KEYS[6], 'XX', deadline, m)
  else
    stale[#stale + 1] = m
  end
end
return stale
"""
)

_RELEASE = """
local now = now_ms()
local uncount = UNCOUNT
local delay = tonumber(ARGV[1])
local stale = {}
local ready = 0
for i = 2, #ARGV, 2 do
  local m = ARGV[i]
  local a, c, p, id = holds(m, ARGV[i + 1])
  if a then
    redis.call('ZREM', KEYS[6], m)
    if uncount and a > 0 then redis.call('HSET', KEYS[3], m, pack(a - 1, c, p, id)) end
    if delay > 0 then
      redis.call('ZADD', KEYS[5], fmt(now + delay), m)
    else
      redis.call('ZADD', KEYS[4], 9 - p, m)
      ready = ready + 1
    end
  else
    stale[#stale + 1] = m
  end
end
wake(ready)
return stale
"""

#: ARGV: delay (ms), then number, claim per delivery. Releases them (the next delivery
#: counts one more attempt). Returns the stale numbers.
NACK = _PRELUDE + _RELEASE.replace("UNCOUNT", "false")

#: The same, but the attempt is not counted (a rate limit or a cap deferred the message).
DEFER = _PRELUDE + _RELEASE.replace("UNCOUNT", "true")

#: ARGV: number, claim, id, reason, traceback, has traceback ('1'/'0'). Returns 1 if
#: moved to the dead letters, 0 if the delivery was no longer held.
DEAD_LETTER = (
    _PRELUDE
    + """
local m = ARGV[1]
local a, c, p = holds(m, ARGV[2])
if not a then return 0 end
redis.call('ZREM', KEYS[6], m)
redis.call('HSET', KEYS[3], m, pack(a, c, p, ARGV[3]))
redis.call('HSET', KEYS[8], m, ARGV[4])
if ARGV[6] == '1' then redis.call('HSET', KEYS[9], m, ARGV[5]) end
redis.call('ZADD', KEYS[7], fmt(now_ms()), m)
return 1
"""
)

#: ARGV: limit. Returns {number, failed_at (ms), meta, body, reason, traceback, ...}.
FAILED_LIST = """
local rows = redis.call('ZRANGE', KEYS[7], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
local out = {}
for i = 1, #rows, 2 do
  local m = rows[i]
  out[#out + 1] = m
  out[#out + 1] = rows[i + 1]
  out[#out + 1] = redis.call('HGET', KEYS[3], m)
  out[#out + 1] = redis.call('HGET', KEYS[2], m)
  out[#out + 1] = redis.call('HGET', KEYS[8], m)
  out[#out + 1] = redis.call('HGET', KEYS[9], m)
end
return out
"""

_FAILED_SELECT = """
local want = {}
for i = 2, #ARGV do want[ARGV[i]] = true end
local everything = ARGV[1] == '1'
local n = 0
local moved = 0
for _, m in ipairs(redis.call('ZRANGE', KEYS[7], 0, -1)) do
  local meta = redis.call('HGET', KEYS[3], m)
  local p, id = 0, ''
  if meta then
    local _
    _, _, p, id = parse(meta)
  end
  if everything or want[id] then
    local body = redis.call('HGET', KEYS[2], m)
    redis.call('ZREM', KEYS[7], m)
    redis.call('HDEL', KEYS[8], m)
    redis.call('HDEL', KEYS[9], m)
    redis.call('HDEL', KEYS[2], m)
    redis.call('HDEL', KEYS[3], m)
    n = n + 1
    SETTLE
  end
end
"""

#: ARGV: '1' for every dead letter or '0', then ids. Moves them back as fresh messages
#: (attempts 0, a new number). Returns how many.
FAILED_RETRY = (
    _PRELUDE
    + _FAILED_SELECT.replace(
        "SETTLE",
        """if body and meta then
      local new = string.format('%016d', redis.call('INCR', KEYS[1]))
      redis.call('HSET', KEYS[2], new, body)
      redis.call('HSET', KEYS[3], new, pack(0, 0, p, id))
      redis.call('ZADD', KEYS[4], 9 - p, new)
      moved = moved + 1
    end""",
    )
    + """
wake(moved)
return n
"""
)

#: ARGV: '1' for every dead letter or '0', then ids. Deletes them; returns how many.
FAILED_PURGE = _PRELUDE + _FAILED_SELECT.replace("SETTLE", "") + "\nreturn n\n"

#: ARGV: most messages to delete in this call. Deletes ready, delayed and expired-lease
#: messages; returns how many (call again while it returns the limit).
PURGE = (
    _PRELUDE
    + """
local now = now_ms()
local room = tonumber(ARGV[1])
local n = 0
for _, range in ipairs({{KEYS[4], '-inf', '+inf'}, {KEYS[5], '-inf', '+inf'},
                        {KEYS[6], '-inf', fmt(now)}}) do
  if room > n then
    local members = redis.call('ZRANGEBYSCORE', range[1], range[2], range[3], 'LIMIT', 0, room - n)
    for _, m in ipairs(members) do
      redis.call('ZREM', range[1], m)
      redis.call('HDEL', KEYS[2], m)
      redis.call('HDEL', KEYS[3], m)
      n = n + 1
    end
  end
end
return n
"""
)

#: Returns {ready, delayed, in flight, failed}; due delays and ended leases count as ready.
STATS = (
    _PRELUDE
    + """
local now = fmt(now_ms())
local due = redis.call('ZCOUNT', KEYS[5], '-inf', now)
local ended = redis.call('ZCOUNT', KEYS[6], '-inf', now)
return {redis.call('ZCARD', KEYS[4]) + due + ended,
        redis.call('ZCARD', KEYS[5]) - due,
        redis.call('ZCARD', KEYS[6]) - ended,
        redis.call('ZCARD', KEYS[7])}
"""
)

#: Returns how many messages are deliverable now (ready, due, or with an ended lease).
READY_COUNT = (
    _PRELUDE
    + """
local now = fmt(now_ms())
return redis.call('ZCARD', KEYS[4]) + redis.call('ZCOUNT', KEYS[5], '-inf', now)
       + redis.call('ZCOUNT', KEYS[6], '-inf', now)
"""
)
