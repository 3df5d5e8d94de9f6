//! Lua scripts run by the Redis backend. Each runs atomically on the server, so the counters
//! behind [`Stats`](crate::Stats) and the capacity check never drift from the stream, whatever
//! the number of producers and consumers and wherever a process dies.
//!
//! Keys: `KEYS[1]` the stream, `KEYS[2]` the counters hash (`<stream>:stats`: unacknowledged
//! `entries`, `events` and `bytes`), `KEYS[3]` the metadata hash (`<stream>:meta`: entry id to
//! `"<events> <bytes> <oldest time_us>"`, for every unacknowledged entry).

/// Append a batch when it fits. `ARGV`: capacity, event count, bytes, oldest time, framed
/// data, `1` when the batch is replay-free (else `0`). Returns `{1, id}`, or `{0, used
/// bytes}` when full (a batch is always admitted into an empty buffer, so an oversized one
/// cannot wait forever).
pub(super) const APPEND: &str = r#"
local used = tonumber(redis.call('HGET', KEYS[2], 'bytes') or '0')
local size = tonumber(ARGV[3])
if used > 0 and used + size > tonumber(ARGV[1]) then
  return {0, used}
end
local id = redis.call('XADD', KEYS[1], '*', 'n', ARGV[2], 't', ARGV[4], 'd', ARGV[5], 'r', ARGV[6])
redis.call('HINCRBY', KEYS[2], 'entries', 1)
redis.call('HINCRBY', KEYS[2], 'events', ARGV[2])
redis.call('HINCRBY', KEYS[2], 'bytes', ARGV[3])
redis.call('HSET', KEYS[3], id, ARGV[2] .. ' ' .. ARGV[3] .. ' ' .. ARGV[4])
return {1, id}
"#;

/// The most ids one [`ACK`] call takes.
pub(super) const ACK_CHUNK: usize = 1000;

/// Acknowledge ids for group `ARGV[1]` (`ARGV[2..]`), update the counters, then trim what no
/// group needs any more: `XTRIM MINID` to the smallest, across groups, of the oldest pending id
/// (or the last delivered id when nothing is pending). Returns how many were acknowledged.
/// The caller sends at most [`ACK_CHUNK`] ids per call (Lua's `unpack` has a stack limit).
pub(super) const ACK: &str = r#"
local function less(a, b)
  local am, as = string.match(a, '^(%d+)-(%d+)$')
  local bm, bs = string.match(b, '^(%d+)-(%d+)$')
  am, as, bm, bs = tonumber(am), tonumber(as), tonumber(bm), tonumber(bs)
  return am < bm or (am == bm and as < bs)
end
local ids = {}
for i = 2, #ARGV do ids[#ids + 1] = ARGV[i] end
local metas = redis.call('HMGET', KEYS[3], unpack(ids))
local acked, entries, events, bytes = 0, 0, 0, 0
local done = {}
for i, id in ipairs(ids) do
  if redis.call('XACK', KEYS[1], ARGV[1], id) == 1 then
    acked = acked + 1
    local m = metas[i]
    if m then
      local n, b = string.match(m, '^(%d+) (%d+)')
      entries = entries + 1
      events = events + tonumber(n)
      bytes = bytes + tonumber(b)
      done[#done + 1] = id
    end
  end
end
if entries > 0 then
  redis.call('HINCRBY', KEYS[2], 'entries', -entries)
  redis.call('HINCRBY', KEYS[2], 'events', -events)
  redis.call('HINCRBY', KEYS[2], 'bytes', -bytes)
  redis.call('HDEL', KEYS[3], unpack(done))
end
if acked > 0 then
  local min = nil
  for _, g in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
    local f = {}
    for j = 1, #g, 2 do f[g[j]] = g[j + 1] end
    local need = f['last-delivered-id']
    if tonumber(f['pending']) > 0 then
      local summary = redis.call('XPENDING', KEYS[1], f['name'])
      if summary[2] then need = summary[2] end
    end
    if min == nil or less(need, min) then min = need end
  end
  if min ~= nil and min ~= '0-0' then
    redis.call('XTRIM', KEYS[1], 'MINID', min)
  end
end
return acked
"#;

/// Stats for group `ARGV[1]`: `{entries, events, bytes, pending entries, pending events,
/// oldest time_us or false}` (the time as a string: Lua would print a large number in
/// exponent form).
pub(super) const STATS: &str = r#"
local c = redis.call('HMGET', KEYS[2], 'entries', 'events', 'bytes')
local pending_entries, pending_events = 0, 0
local summary = redis.call('XPENDING', KEYS[1], ARGV[1])
if tonumber(summary[1]) > 0 then
  for _, p in ipairs(redis.call('XPENDING', KEYS[1], ARGV[1], '-', '+', summary[1])) do
    local m = redis.call('HGET', KEYS[3], p[1])
    if m then
      pending_entries = pending_entries + 1
      pending_events = pending_events + tonumber(string.match(m, '^(%d+)'))
    end
  end
end
local oldest, oldest_n = false, nil
for _, m in ipairs(redis.call('HVALS', KEYS[3])) do
  local t = string.match(m, ' (%d+)$')
  local tn = tonumber(t)
  if oldest_n == nil or tn < oldest_n then oldest, oldest_n = t, tn end
end
return {tonumber(c[1] or '0'), tonumber(c[2] or '0'), tonumber(c[3] or '0'),
        pending_entries, pending_events, oldest}
"#;

/// Raises hash field ARGV[1] of KEYS[1] to ARGV[2] when it is lower or missing; returns the
/// field's value afterwards.
pub(super) const RAISE: &str = r"
local current = tonumber(redis.call('HGET', KEYS[1], ARGV[1]) or '-1')
local value = tonumber(ARGV[2])
if value > current then
  redis.call('HSET', KEYS[1], ARGV[1], ARGV[2])
  return value
end
return current
";

/// Set field `ARGV[3]` of the state hash `KEYS[2]` to `ARGV[4]`, only if consumer `ARGV[2]` of
/// group `ARGV[1]` of stream `KEYS[1]` still holds every id `ARGV[5..]` (pending for it: neither
/// acknowledged nor claimed by another). Returns the ids it no longer holds; the field is set
/// only when there are none. `XPENDING` does not touch the entries' idle time.
pub(super) const SET_IF_HELD: &str = r"
local lost = {}
for i = 5, #ARGV do
  local p = redis.call('XPENDING', KEYS[1], ARGV[1], ARGV[i], ARGV[i], 1)
  if #p == 0 or p[1][2] ~= ARGV[2] then
    lost[#lost + 1] = ARGV[i]
  end
end
if #lost == 0 then
  redis.call('HSET', KEYS[2], ARGV[3], ARGV[4])
end
return lost
";
