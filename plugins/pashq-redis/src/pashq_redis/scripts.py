"""The Lua scripts that move messages between a queue's keys, atomically on the server.

Every script gets all the queue's keys (:data:`pashq_redis.keys.PARTS`, in order) as
``KEYS`` and reads the time with ``TIME`` (the server's clock, in milliseconds): no worker
clock ever decides a lease or a delay.

A message pushed ready at priority 0 (most of them) is one value ``<id> NUL <envelope>``
(message ids hold no NUL) appended to the list ``fresh``: the driver pushes such a batch
with a plain ``RPUSH`` (and a few wake-up tokens), no script at all. Every other message
is a *number* (``10**13 + n``: fourteen digits, so members sort in number order) whose
value is in the hash ``body`` and whose counts are one integer in ``meta``, the
*stamp*::

    stamp = claims * 10,000,000 + attempts * 10 + priority

A message from ``fresh`` gets its number when it is first claimed (its value moves to
``body``), and no stamp: its stamp is implied, ``10000010`` (first claim, first attempt,
priority 0), until it leaves ``leased``. A claim adds 10,000,010 to a stamp (one claim,
one attempt); every way out of ``leased`` but the ack (nack, defer, dead letter, a lease
that ended) writes the stamp plus 10,000,000, and a defer takes 10 off (the attempt is
given back). So no per-message string is parsed on the hot path. A message pushed ready
with a priority has no stamp yet (its priority is its score in ``ready``, ``9 -
priority``); a delayed one gets its priority as its stamp. A message is in exactly one of
``fresh``, ``ready``, ``delayed``, ``leased`` or ``failed``. A claim takes from ``ready``
first (higher priorities; messages that came back, which are older than anything in
``fresh``), then from ``fresh``.

A settle (ack, nack, defer, extend, dead letter) applies only while the message's stamp is
the one the delivery was pulled with (no stamp stored: the implied first one, and the
message still in ``leased``): the claim count in it grows on every claim and on every
release and never goes back, so a stamp matches only while the message is still leased
under that claim, and the receipt of an earlier claim never matches the current holder's
(the fence; an ack needs no ``leased`` lookup). A dead letter retried gets a new number,
so no receipt from before can match it either. Numbers and stamps go back to the client
as text, which it sends back as they came.

Hot-path scripts fill their tables with a local counter (``#t + 1`` is a binary search in
Lua 5.1) and make one command per batch per key.
"""

from __future__ import annotations

__all__ = [
    "ACK",
    "CLAIM_STEP",
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
    "attempts_of",
]

#: What one claim adds to a stamp: one claim (10,000,000) and one attempt (10).
CLAIM_STEP = 10_000_010


def attempts_of(stamp: int | bytes) -> int:
    """The attempt count held in a stamp (see the module docstring)."""
    return int(stamp) // 10 % 1_000_000


# KEYS: 1 seq, 2 body, 3 meta, 4 ready, 5 delayed, 6 leased, 7 failed, 8 reason, 9 trace,
# 10 wake, 11 fresh.
_PRELUDE = """
local FIRST = '10000010'  -- the stamp of a first claim at priority 0
local BASE = 10000000000000  -- numbers are BASE + n: 14 digits, so text order is number order
local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function fmt(x) return string.format('%d', x) end
local function many(cmd, key, args, n, group)
  local size = group * 500
  for i = 1, n, size do
    redis.call(cmd, key, unpack(args, i, math.min(i + size - 1, n)))
  end
end
local function prio(stamp)
  local s = tonumber(stamp)
  if not s then return 0 end  -- none yet (priority 0), or written by hand: deliver it
  return s % 10
end
local function id_of(value)
  if not value then return '' end
  local cut = string.find(value, '\\0', 1, true)
  if not cut then return '' end
  return string.sub(value, 1, cut - 1)
end
local function wake(n)
  if n > 0 then
    local tokens = {}
    for i = 1, math.min(n, 16) do tokens[i] = '1' end
    redis.call('RPUSH', KEYS[10], unpack(tokens))
    redis.call('LTRIM', KEYS[10], -16, -1)
  end
end
local function holds(m, stamp)
  -- The stamp the delivery was pulled with, as a number, while it still holds m; else nil.
  local s = redis.call('HGET', KEYS[3], m)
  if not s then
    -- No stamp: a message from fresh, leased under its first claim (or gone).
    if stamp ~= FIRST or not redis.call('ZSCORE', KEYS[6], m) then return nil end
    return 10000010
  end
  if s ~= stamp then return nil end
  return tonumber(s)
end
local function promote(now, limit)
  for _, set in ipairs({KEYS[5], KEYS[6]}) do
    local due = redis.call('ZRANGEBYSCORE', set, '-inf', fmt(now), 'LIMIT', 0, limit)
    local n = #due
    if n > 0 then
      many('ZREM', set, due, n, 1)
      local stamps = redis.call('HMGET', KEYS[3], unpack(due))
      local ready, bumped, j, b = {}, {}, 0, 0
      for i = 1, n do
        ready[j + 1] = 9 - prio(stamps[i])
        ready[j + 2] = due[i]
        j = j + 2
        if set == KEYS[6] then  -- the lease ended: its receipt no longer matches
          local s = tonumber(stamps[i])
          if not stamps[i] then s = 10000010 end  -- a first claim from fresh
          if s then
            bumped[b + 1] = due[i]
            bumped[b + 2] = s + 10000000
            b = b + 2
          end
        end
      end
      many('ZADD', KEYS[4], ready, j, 2)
      many('HSET', KEYS[3], bumped, b, 2)
    end
  end
end
local function store(count, now, at, spec)
  -- Message i (0-based) has its value (id NUL envelope) at ARGV[at(i)]; spec[i] is the
  -- ARGV index of its delay (ms) and priority, given only when either may not be 0. A
  -- message with neither goes to fresh (no number yet); the others get a number here.
  local plain, bodies, ready, delayed, stamps = {}, {}, {}, {}, {}
  local np, nb, nr, nd = 0, 0, 0, 0
  local numbered = {}
  for i = 0, count - 1 do
    local k = spec[i]
    if k and (tonumber(ARGV[k]) > 0 or tonumber(ARGV[k + 1]) ~= 0) then
      numbered[#numbered + 1] = i
    else
      np = np + 1
      plain[np] = ARGV[at(i)]
    end
  end
  local s = #numbered
  if s > 0 then
    local first = BASE + redis.call('INCRBY', KEYS[1], s) - s + 1
    for j = 1, s do
      local i = numbered[j]
      local k = spec[i]
      local m = fmt(first + j - 1)
      bodies[nb + 1] = m
      bodies[nb + 2] = ARGV[at(i)]
      nb = nb + 2
      local delay = tonumber(ARGV[k])
      if delay > 0 then
        delayed[nd + 1] = now + delay
        delayed[nd + 2] = m
        stamps[nd + 1] = m
        stamps[nd + 2] = ARGV[k + 1]
        nd = nd + 2
      else
        ready[nr + 1] = 9 - tonumber(ARGV[k + 1])
        ready[nr + 2] = m
        nr = nr + 2
      end
    end
  end
  many('RPUSH', KEYS[11], plain, np, 1)
  many('HSET', KEYS[2], bodies, nb, 2)
  many('ZADD', KEYS[4], ready, nr, 2)
  many('ZADD', KEYS[5], delayed, nd, 2)
  many('HSET', KEYS[3], stamps, nd, 2)
  wake(np + nr / 2)
end
"""

#: ARGV: count, s, then s triples (index from 0, delay (ms), priority) for the messages
#: with a delay or a priority, then one value (id, NUL, envelope) per message. Returns
#: the count. A batch with neither is pushed without a script (see :data:`PLAIN_PUSH`).
PUSH = (
    _PRELUDE
    + """
local count, s = tonumber(ARGV[1]), tonumber(ARGV[2])
local spec = {}
for k = 0, s - 1 do spec[tonumber(ARGV[3 + k * 3])] = 4 + k * 3 end
local base = 3 + s * 3
store(count, now_ms(), function(i) return base + i end, spec)
return count
"""
)

#: KEYS: the queue's keys, then one hold key per unique message. ARGV: count, then value
#: (id, NUL, envelope), id, delay (ms), priority, hold key index (0: not unique, else
#: 12, 13 ...), ttl (ms) per message. Takes each unique message's hold (owner: its id,
#: limit 1) and stores the messages whose hold was taken, all in one script. Returns per
#: message its own id when stored, else the id holding its key.
PUSH_UNIQUE = (
    _PRELUDE
    + """
local now = now_ms()
local count = tonumber(ARGV[1])
local answers, stored = {}, {}
for i = 0, count - 1 do
  local b = 2 + i * 6
  local id, k = ARGV[b + 1], tonumber(ARGV[b + 4])
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
  local spec = {}
  for j, b in ipairs(stored) do spec[j - 1] = b + 2 end
  store(#stored, now, function(i) return stored[i + 1] end, spec)
end
return answers
"""
)

#: ARGV: max messages, lease (ms). Returns {hint, k, k triples (number, stamp, value), then
#: pairs (number, value)} (value: id, NUL, envelope; numbers and stamps as text): hint is
#: -1 when messages came back, else the ms until the next delay or lease ends (-1: none).
#: Claims from ``ready`` first (higher priorities, messages that came back): the triples;
#: then from ``fresh``: the pairs, whose messages get their number here and no stamp (a
#: first claim at priority 0: ``FIRST`` is implied).
PULL = (
    _PRELUDE
    + """
local format = string.format
local now = now_ms()
promote(now, 1000)
local want = tonumber(ARGV[1])
local deadline = fmt(now + tonumber(ARGV[2]))
local leased, out = {}, {-1, 0}
local j, o = 0, 2
if want > 0 then
  local popped = redis.call('ZPOPMIN', KEYS[4], want)
  local n = #popped / 2
  if n > 0 then
    local members = {}
    for i = 1, n do members[i] = popped[i * 2 - 1] end
    local stamps = redis.call('HMGET', KEYS[3], unpack(members))
    local bodies = redis.call('HMGET', KEYS[2], unpack(members))
    local newstamps, k = {}, 0
    for i = 1, n do
      local body = bodies[i]
      if body then
        local m = members[i]
        local s = tonumber(stamps[i])
        if s then s = s + 10000010 else s = 10000019 - tonumber(popped[i * 2]) end
        s = format('%d', s)
        newstamps[k + 1] = m
        newstamps[k + 2] = s
        k = k + 2
        leased[j + 1] = deadline
        leased[j + 2] = m
        j = j + 2
        out[o + 1] = m
        out[o + 2] = s
        out[o + 3] = body
        o = o + 3
      end
    end
    want = want - k / 2
    out[2] = k / 2
    many('HSET', KEYS[3], newstamps, k, 2)
  end
end
if want > 0 then
  local values = redis.call('LPOP', KEYS[11], want)
  if values then
    local n = #values
    local first = BASE + redis.call('INCRBY', KEYS[1], n) - n
    local bodies, b = {}, 0
    for i = 1, n do
      local m = format('%d', first + i)
      local value = values[i]
      bodies[b + 1] = m
      bodies[b + 2] = value
      b = b + 2
      leased[j + 1] = deadline
      leased[j + 2] = m
      j = j + 2
      out[o + 1] = m
      out[o + 2] = value
      o = o + 2
    end
    many('HSET', KEYS[2], bodies, b, 2)
  end
end
if j > 0 then
  many('ZADD', KEYS[6], leased, j, 2)
  return out
end
local hint = -1
for _, set in ipairs({KEYS[5], KEYS[6]}) do
  local head = redis.call('ZRANGE', set, 0, 0, 'WITHSCORES')
  if head[2] then
    local d = math.max(0, tonumber(head[2]) - now)
    if hint < 0 or d < hint then hint = d end
  end
end
return {hint}
"""
)

#: ARGV: p, then number, stamp per delivery (p of them), then the number of each delivery
#: pulled with the stamp ``FIRST`` (a first claim at priority 0: from ``fresh``, with no
#: stamp stored while it is leased under that claim, or a delayed message's, stored).
#: Deletes the messages still held; returns the numbers no longer held (stale).
ACK = (
    _PRELUDE
    + """
local p = tonumber(ARGV[1])
local held, stamped, stale, h, t, s = {}, {}, {}, 0, 0, 0
if p > 0 then
  local members = {}
  for i = 1, p do members[i] = ARGV[i * 2] end
  local stamps = redis.call('HMGET', KEYS[3], unpack(members))
  for i = 1, p do
    if stamps[i] == ARGV[i * 2 + 1] then
      h = h + 1
      held[h] = members[i]
      t = t + 1
      stamped[t] = members[i]
    else
      s = s + 1
      stale[s] = members[i]
    end
  end
end
local from = 2 + p * 2
if from <= #ARGV then
  if redis.call('EXISTS', KEYS[3]) == 1 then
    -- Another stamp stored since the claim means the message left that claim (or is
    -- gone); FIRST itself is stored for a delayed message claimed for the first time.
    local stamps = redis.call('HMGET', KEYS[3], unpack(ARGV, from))
    for i = from, #ARGV do
      local stamp = stamps[i - from + 1]
      if stamp and stamp ~= FIRST then
        s = s + 1
        stale[s] = ARGV[i]
      else
        h = h + 1
        held[h] = ARGV[i]
        if stamp then
          t = t + 1
          stamped[t] = ARGV[i]
        end
      end
    end
  elseif h == 0 then
    redis.call('ZREM', KEYS[6], unpack(ARGV, from))
    redis.call('HDEL', KEYS[2], unpack(ARGV, from))
    return stale
  else
    for i = from, #ARGV do
      h = h + 1
      held[h] = ARGV[i]
    end
  end
end
if h > 0 then
  redis.call('ZREM', KEYS[6], unpack(held))
  redis.call('HDEL', KEYS[2], unpack(held))
  if t > 0 then redis.call('HDEL', KEYS[3], unpack(stamped)) end
end
return stale
"""
)

#: ARGV: lease (ms), then number, stamp per delivery. Returns the stale numbers.
EXTEND = (
    _PRELUDE
    + """
local deadline = fmt(now_ms() + tonumber(ARGV[1]))
local stale, s = {}, 0
for i = 2, #ARGV, 2 do
  local m = ARGV[i]
  if holds(m, ARGV[i + 1]) then
    redis.call('ZADD', KEYS[6], 'XX', deadline, m)
  else
    s = s + 1
    stale[s] = m
  end
end
return stale
"""
)

_RELEASE = """
local now = now_ms()
local uncount = UNCOUNT
local delay = tonumber(ARGV[1])
local stale, s = {}, 0
local ready = 0
for i = 2, #ARGV, 2 do
  local m = ARGV[i]
  local stamp = holds(m, ARGV[i + 1])
  if stamp then
    redis.call('ZREM', KEYS[6], m)
    if uncount and math.floor(stamp / 10) % 1000000 > 0 then stamp = stamp - 10 end
    redis.call('HSET', KEYS[3], m, stamp + 10000000)
    if delay > 0 then
      redis.call('ZADD', KEYS[5], fmt(now + delay), m)
    else
      redis.call('ZADD', KEYS[4], 9 - stamp % 10, m)
      ready = ready + 1
    end
  else
    s = s + 1
    stale[s] = m
  end
end
wake(ready)
return stale
"""

#: ARGV: delay (ms), then number, stamp per delivery. Releases them (the next delivery
#: counts one more attempt). Returns the stale numbers.
NACK = _PRELUDE + _RELEASE.replace("UNCOUNT", "false")

#: The same, but the attempt is not counted (a rate limit or a cap deferred the message).
DEFER = _PRELUDE + _RELEASE.replace("UNCOUNT", "true")

#: ARGV: number, stamp, id, reason, traceback, has traceback ('1'/'0'). Returns 1 if
#: moved to the dead letters, 0 if the delivery was no longer held.
DEAD_LETTER = (
    _PRELUDE
    + """
local m = ARGV[1]
local stamp = holds(m, ARGV[2])
if not stamp then return 0 end
redis.call('ZREM', KEYS[6], m)
redis.call('HSET', KEYS[3], m, stamp + 10000000)
local value = redis.call('HGET', KEYS[2], m)
if value and ARGV[3] ~= '' then
  local old = id_of(value)
  if old ~= ARGV[3] then  -- the envelope's id, found by the worker, is the message's id
    redis.call('HSET', KEYS[2], m, ARGV[3] .. '\0' .. string.sub(value, #old + 2))
  end
end
redis.call('HSET', KEYS[8], m, ARGV[4])
if ARGV[6] == '1' then redis.call('HSET', KEYS[9], m, ARGV[5]) end
redis.call('ZADD', KEYS[7], fmt(now_ms()), m)
return 1
"""
)

#: ARGV: limit. Returns {number, failed_at (ms), stamp, value, reason, traceback, ...}.
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
  local stamp = redis.call('HGET', KEYS[3], m)
  local body = redis.call('HGET', KEYS[2], m)
  local id = id_of(body)
  if everything or want[id] then
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
        """if body then
      local new = fmt(BASE + redis.call('INCR', KEYS[1]))
      redis.call('HSET', KEYS[2], new, body)
      redis.call('ZADD', KEYS[4], 9 - prio(stamp), new)
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
local fresh = redis.call('LPOP', KEYS[11], room)
if fresh then n = #fresh end
for _, range in ipairs({{KEYS[4], '-inf', '+inf'}, {KEYS[5], '-inf', '+inf'},
                        {KEYS[6], '-inf', fmt(now)}}) do
  if room > n then
    local members = redis.call('ZRANGEBYSCORE', range[1], range[2], range[3], 'LIMIT', 0, room - n)
    if #members > 0 then
      many('ZREM', range[1], members, #members, 1)
      many('HDEL', KEYS[2], members, #members, 1)
      many('HDEL', KEYS[3], members, #members, 1)
      n = n + #members
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
return {redis.call('ZCARD', KEYS[4]) + redis.call('LLEN', KEYS[11]) + due + ended,
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
return redis.call('ZCARD', KEYS[4]) + redis.call('LLEN', KEYS[11])
       + redis.call('ZCOUNT', KEYS[5], '-inf', now)
       + redis.call('ZCOUNT', KEYS[6], '-inf', now)
"""
)
