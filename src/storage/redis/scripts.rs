//! The Lua scripts that make each Redis operation one atomic round trip.
//!
//! Every script gets the same fixed `KEYS` (see [`KEY_NAMES`]) and the app's key prefix as
//! `ARGV[1]`. Keys named after a queue, a result id or a kv key are built from the prefix inside
//! the script; they carry the same `{app}` hash tag, so they live in the same cluster slot as the
//! declared keys.
//!
//! Numbers are formatted with `%d` before they are handed to Redis: Lua's default number to
//! string conversion keeps only 14 significant digits.

use ::redis::Script;

/// The fixed keys, in `KEYS` order, without the prefix.
///
/// A message is one `msg` hash field under its zero-padded 16-digit sequence number (its packed
/// metadata and payload, written once) and one sorted-set member that carries its delivery
/// count: `<seq>.<deliveries>` in `q:<queue>` while ready, `<seq>.<deliveries>.<token>` in
/// `leases` while leased. That lease member is the lease handed out, so an ack or extend is a
/// membership test and a stale one (the message was redelivered since) matches nothing.
pub const KEY_NAMES: [&str; 11] = [
    "leases",    // 1 ZSET "<seq>.<deliveries>.<token>" -> lease expiry (ms)
    "msg",       // 2 HASH seq -> packed "<priority>|<#queue>|<#id>|<queue><id><payload>"
    "seq",       // 3 STRING counter for sequence numbers and lease tokens
    "queues",    // 4 SET of queue names ever used
    "schedule",  // 5 ZSET seq -> eta (ms)
    "sched:msg", // 6 HASH seq -> packed message, as in `msg`
    "dead",      // 7 ZSET seq -> time dead-lettered (ms)
    "dead:info", // 8 HASH seq -> JSON {id, queue, error}
    "dead:body", // 9 HASH seq -> payload
    "results",   // 10 ZSET id -> expiry (ms, inf when none): the index of r:<id> keys
    "counters",  // 11 HASH name -> integer
];

/// Index of the `schedule` key in [`KEY_NAMES`].
pub const SCHEDULE: usize = 4;
/// Index of the `dead:body` key in [`KEY_NAMES`].
pub const DEAD_BODY: usize = 8;
/// Index of the `counters` key in [`KEY_NAMES`].
pub const COUNTERS: usize = 10;

const PRELUDE: &str = r#"
local prefix = ARGV[1]
local K_LEASES, K_MSG, K_SEQ, K_QUEUES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_SCHED, K_SMSG, K_DEAD, K_DINFO, K_DBODY, K_RESULTS = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local K_COUNTERS = KEYS[11]
local sub, find, unpack, min = string.sub, string.find, unpack, math.min

-- Variadic commands get at most this many arguments after the key (an even number, so
-- field/value and score/member pairs are never split).
local CHUNK = 800

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n) return string.format('%d', n) end
local function fmt_seq(n) return string.format('%016d', n) end
-- Reserve n sequence numbers; returns the first.
local function reserve(n) return redis.call('INCRBY', K_SEQ, n) - n + 1 end

-- cmd key [flag] args..., in chunks.
local function chunked(cmd, key, args, flag)
  local n = #args
  for i = 1, n, CHUNK do
    local j = math.min(n, i + CHUNK - 1)
    if flag then redis.call(cmd, key, flag, unpack(args, i, j))
    else redis.call(cmd, key, unpack(args, i, j)) end
  end
end
local function hmget(key, fields)
  local n = #fields
  if n == 0 then return {} end
  if n <= CHUNK then return redis.call('HMGET', key, unpack(fields)) end
  local out = {}
  for i = 1, n, CHUNK do
    local part = redis.call('HMGET', key, unpack(fields, i, math.min(n, i + CHUNK - 1)))
    for k = 1, #part do out[#out + 1] = part[k] end
  end
  return out
end

-- Packed messages: "<priority>|<#queue>|<#id>|<queue><id><payload>".
local function pack(prio, queue, id, payload)
  return int(prio) .. '|' .. int(#queue) .. '|' .. int(#id) .. '|' .. queue .. id .. payload
end
-- priority, queue, id, offset of the payload (nil when malformed).
local function unpack_head(m)
  local p, ql, il, off = string.match(m, '^(%-?%d+)|(%d+)|(%d+)|()')
  if not p then return nil end
  ql, il = tonumber(ql), tonumber(il)
  return tonumber(p), string.sub(m, off, off + ql - 1), string.sub(m, off + ql, off + ql + il - 1),
    off + ql + il
end
local function payload_of(m)
  local _, _, _, off = unpack_head(m)
  if not off then return m end
  return string.sub(m, off)
end
-- Queue and lease members start with the 16-digit seq; a queue member is "<seq>.<deliveries>",
-- a lease member "<seq>.<deliveries>.<token>".
local function seq_of(member) return sub(member, 1, 16) end
local function deliveries(member) return tonumber(sub(member, 18)) or 0 end
-- The queue member of a lease member (everything before the token).
local function unleased(lease)
  local dot = find(lease, '.', 18, true)
  if dot then return sub(lease, 1, dot - 1) end
  return lease
end

-- Queues written to by this script, with how many messages, to wake blocked consumers.
local touched = {}
-- queue -> {score, seq, ...} to add in one ZADD.
local ready = {}
local function make_ready(seq, queue, score)
  local t = ready[queue]
  if not t then t = {}; ready[queue] = t end
  t[#t + 1] = score
  t[#t + 1] = seq
end
local function flush_ready()
  for queue, t in pairs(ready) do
    chunked('ZADD', prefix .. 'q:' .. queue, t)
    touched[queue] = (touched[queue] or 0) + #t / 2
  end
  ready = {}
end
local function notify()
  for queue, n in pairs(touched) do
    redis.call('SADD', K_QUEUES, queue)
    local key = prefix .. 'n:' .. queue
    local tokens = {}
    for k = 1, math.min(n, 16) do tokens[k] = '1' end
    if redis.call('LPUSH', key, unpack(tokens)) > 64 then redis.call('LTRIM', key, 0, 63) end
  end
  touched = {}
end
-- New ready messages from packed values (new sequence numbers, in order).
local function push_packed(packed)
  local n = #packed
  if n == 0 then return end
  local first = reserve(n)
  local hset = {}
  for k = 1, n do
    local seq = fmt_seq(first + k - 1)
    local prio, queue = unpack_head(packed[k])
    hset[2 * k - 1] = seq
    hset[2 * k] = packed[k]
    make_ready(seq .. '.0', queue or 'default', int(-(prio or 0)))
  end
  chunked('HSET', K_MSG, hset)
end
-- Dead letters to add: {id, queue, payload, error} each.
local dead = {}
local function add_dead(id, queue, payload, err)
  dead[#dead + 1] = {id, queue, payload, err}
end
local function flush_dead(now)
  local n = #dead
  if n == 0 then return end
  local first = reserve(n)
  local z, info, body = {}, {}, {}
  local at = int(now)
  for k = 1, n do
    local seq = fmt_seq(first + k - 1)
    local d = dead[k]
    z[#z + 1] = at; z[#z + 1] = seq
    info[#info + 1] = seq; info[#info + 1] = cjson.encode({id = d[1], queue = d[2], error = d[4]})
    body[#body + 1] = seq; body[#body + 1] = d[3]
  end
  chunked('ZADD', K_DEAD, z)
  chunked('HSET', K_DINFO, info)
  chunked('HSET', K_DBODY, body)
  dead = {}
end
-- The leases in ARGV[i..j] that are still held (members of `leases`), and their seqs.
local function held(i, j)
  local out, seqs = {}, {}
  local n = 0
  for a = i, j, CHUNK do
    local b = min(j, a + CHUNK - 1)
    local scores = redis.call('ZMSCORE', K_LEASES, unpack(ARGV, a, b))
    for k = 1, b - a + 1 do
      if scores[k] then
        local lease = ARGV[a + k - 1]
        n = n + 1
        out[n] = lease
        seqs[n] = sub(lease, 1, 16)
      end
    end
  end
  return out, seqs
end
-- Messages whose lease (member) was just removed go back to their queue, at their old place.
local function requeue(leases)
  local n = #leases
  if n == 0 then return end
  local seqs = {}
  for k = 1, n do seqs[k] = sub(leases[k], 1, 16) end
  local msgs = hmget(K_MSG, seqs)
  local gone = {}
  for k = 1, n do
    local m = msgs[k]
    local prio, queue
    if m then prio, queue = unpack_head(m) end
    if prio then
      make_ready(unleased(leases[k]), queue, int(-prio))
    else
      gone[#gone + 1] = seqs[k]
    end
  end
  chunked('HDEL', K_MSG, gone)
  flush_ready()
end
local function delete_indexed(index, key_prefix)
  local members = redis.call('ZRANGE', index, 0, -1)
  for _, m in ipairs(members) do redis.call('DEL', key_prefix .. m) end
  redis.call('DEL', index)
end
"#;

/// apply(batch). ARGV after the prefix: sections, each a count then its items:
/// acks (seq, token), enqueues (queue, score = -priority, packed message), schedule (eta,
/// packed message), results (id, ttl ms or "", value), dead (id, queue, error, payload).
const APPLY: &str = r#"
local now = now_ms()
local i = 2
local function count() local n = tonumber(ARGV[i]); i = i + 1; return n end
local n = count()
if n > 0 then
  local acked, seqs = held(i, i + n - 1)
  i = i + n
  if #acked > 0 then
    chunked('ZREM', K_LEASES, acked)
    chunked('HDEL', K_MSG, seqs)
  end
end
n = count()
if n > 0 then
  local first = reserve(n)
  local hset = {}
  for k = 0, n - 1 do
    local seq = fmt_seq(first + k)
    hset[2 * k + 1] = seq
    hset[2 * k + 2] = ARGV[i + 2]
    make_ready(seq .. '.0', ARGV[i], ARGV[i + 1])
    i = i + 3
  end
  chunked('HSET', K_MSG, hset)
  flush_ready()
end
n = count()
if n > 0 then
  local first = reserve(n)
  local z, hset = {}, {}
  for k = 0, n - 1 do
    local seq = fmt_seq(first + k)
    z[#z + 1] = ARGV[i]; z[#z + 1] = seq
    hset[#hset + 1] = seq; hset[#hset + 1] = ARGV[i + 1]
    i = i + 2
  end
  chunked('ZADD', K_SCHED, z)
  chunked('HSET', K_SMSG, hset)
end
n = count()
if n > 0 then
  local index = {}
  for _ = 1, n do
    local id, ttl, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local key = prefix .. 'r:' .. id
    if ttl == '' then
      redis.call('SET', key, value)
      index[#index + 1] = 'inf'
    else
      redis.call('SET', key, value, 'PX', ttl)
      index[#index + 1] = int(now + tonumber(ttl))
    end
    index[#index + 1] = id
    -- Wake whoever waits for this result; the token outlives the race between a waiter's
    -- first read and its BLPOP.
    local wake = prefix .. 'w:' .. id
    redis.call('DEL', wake)
    redis.call('LPUSH', wake, '1')
    redis.call('PEXPIRE', wake, 10000)
    i = i + 3
  end
  chunked('ZADD', K_RESULTS, index)
  redis.call('ZREMRANGEBYSCORE', K_RESULTS, '-inf', int(now))
end
for _ = 1, count() do
  add_dead(ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 2])
  i = i + 4
end
flush_dead(now)
notify()
return 1
"#;

/// dequeue. ARGV: prefix, max, lease ms, max deliveries, queue names...
/// Returns {wait hint ms (-1: no lease to expire), then lease (`<seq>.<deliveries>.<token>`),
/// queue index, packed message for each delivery}.
const DEQUEUE: &str = r#"
local max, lease_ms, max_deliveries = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', int(now), 'LIMIT', 0, 1000)
if #expired > 0 then
  chunked('ZREM', K_LEASES, expired)
  requeue(expired)
end
local out = {0}
local o = 1
local got = 0
local until_ms = int(now + lease_ms)
local tail = nil
local err_tail = ' times without being acknowledged (its worker or consumer was lost each time)'
for qi = 5, #ARGV do
  local queue = ARGV[qi]
  local qkey = prefix .. 'q:' .. queue
  local qn = qi - 4
  while got < max do
    local want = min(max - got, CHUNK / 2)
    local members = redis.call('ZRANGE', qkey, 0, want - 1)
    local n = #members
    if n == 0 then break end
    redis.call('ZREMRANGEBYRANK', qkey, 0, n - 1)
    local seqs = {}
    for k = 1, n do seqs[k] = sub(members[k], 1, 16) end
    local msgs = redis.call('HMGET', K_MSG, unpack(seqs))
    local z, gone = {}, {}
    local zn = 0
    for k = 1, n do
      local m = msgs[k]
      if m then
        local d = deliveries(members[k])
        if d >= max_deliveries then
          local _, _, id, off = unpack_head(m)
          add_dead(id or '', queue, sub(m, off or 1), 'delivered ' .. int(d) .. err_tail)
          gone[#gone + 1] = seqs[k]
        else
          if not tail then tail = '.' .. int(redis.call('INCR', K_SEQ)) end
          local lease = seqs[k] .. '.' .. (d + 1) .. tail
          z[zn + 1] = until_ms
          z[zn + 2] = lease
          zn = zn + 2
          out[o + 1] = lease
          out[o + 2] = qn
          out[o + 3] = m
          o = o + 3
          got = got + 1
        end
      end
    end
    if zn > 0 then redis.call('ZADD', K_LEASES, unpack(z)) end
    if #gone > 0 then redis.call('HDEL', K_MSG, unpack(gone)) end
    if n < want then break end
  end
end
if got == 0 then
  local first = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
  if #first == 0 then out[1] = -1 else out[1] = math.max(0, tonumber(first[2]) - now) end
end
flush_dead(now)
notify()
return out
"#;

/// extend. ARGV: prefix, lease ms, then leases. Only leases still held (members) are updated.
const EXTEND: &str = r#"
local until_ms = int(now_ms() + tonumber(ARGV[2]))
local z = {}
local n = 0
for k = 3, #ARGV do
  z[n + 1] = until_ms
  z[n + 2] = ARGV[k]
  n = n + 2
end
chunked('ZADD', K_LEASES, z, 'XX')
return 1
"#;

/// release. ARGV: prefix, then leases.
const RELEASE: &str = r#"
local leases = held(2, #ARGV)
chunked('ZREM', K_LEASES, leases)
requeue(leases)
notify()
return 1
"#;

/// promote_due. ARGV: prefix, now ms, max. Returns how many were promoted.
const PROMOTE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', K_SCHED, '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
if #due == 0 then return 0 end
local msgs = hmget(K_SMSG, due)
chunked('ZREM', K_SCHED, due)
chunked('HDEL', K_SMSG, due)
local packed = {}
for k = 1, #due do
  if msgs[k] then packed[#packed + 1] = msgs[k] end
end
push_packed(packed)
flush_ready()
notify()
return #due
"#;

/// result. ARGV: prefix, id, take (0/1), wake others (0/1). Returns the value or nil.
const RESULT: &str = r#"
local id = ARGV[2]
local key = prefix .. 'r:' .. id
local v = redis.call('GET', key)
if ARGV[3] == '1' then
  redis.call('DEL', key)
  redis.call('ZREM', K_RESULTS, id)
elseif v and ARGV[4] == '1' then
  -- Other waiters on the same result: pass the wake-up on.
  local wake = prefix .. 'w:' .. id
  redis.call('LPUSH', wake, '1')
  redis.call('PEXPIRE', wake, 10000)
end
return v
"#;

/// delete_result. ARGV: prefix, id. Returns 1 when there was a result.
const DELETE_RESULT: &str = r#"
redis.call('ZREM', K_RESULTS, ARGV[2])
return redis.call('DEL', prefix .. 'r:' .. ARGV[2])
"#;

/// put / put_if_empty. ARGV: prefix, ns, key, value, ttl ms or "", only if empty (0/1).
/// Returns 1 when written.
const KV_PUT: &str = r#"
local now = now_ms()
local index = prefix .. 'kvi:' .. ARGV[2]
local key = prefix .. 'kv:' .. ARGV[2] .. ':' .. ARGV[3]
local args = {'SET', key, ARGV[4]}
if ARGV[5] ~= '' then args[#args + 1] = 'PX'; args[#args + 1] = ARGV[5] end
if ARGV[6] == '1' then args[#args + 1] = 'NX' end
if not redis.call(unpack(args)) then return 0 end
local score = 'inf'
if ARGV[5] ~= '' then score = int(now + tonumber(ARGV[5])) end
redis.call('ZREMRANGEBYSCORE', index, '-inf', int(now))
redis.call('ZADD', index, score, ARGV[3])
return 1
"#;

/// take. ARGV: prefix, ns, key. Returns the value or nil.
const KV_TAKE: &str = r#"
local key = prefix .. 'kv:' .. ARGV[2] .. ':' .. ARGV[3]
local v = redis.call('GET', key)
redis.call('DEL', key)
redis.call('ZREM', prefix .. 'kvi:' .. ARGV[2], ARGV[3])
return v
"#;

/// delete_if. ARGV: prefix, ns, key, value. Returns 1 when it held the value and was deleted.
const KV_DELETE_IF: &str = r#"
local key = prefix .. 'kv:' .. ARGV[2] .. ':' .. ARGV[3]
if redis.call('GET', key) ~= ARGV[4] then return 0 end
redis.call('DEL', key)
redis.call('ZREM', prefix .. 'kvi:' .. ARGV[2], ARGV[3])
return 1
"#;

/// incr_expiring. ARGV: prefix, key, by, ttl ms. Returns the new value.
const INCR_EXPIRING: &str = r#"
local key = prefix .. 'ctr:' .. ARGV[2]
local v = redis.call('INCRBY', key, ARGV[3])
if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[4]) end
return v
"#;

/// list. ARGV: prefix, ns. Returns {key, value, ...} (unsorted).
const KV_LIST: &str = r#"
local now = now_ms()
local index = prefix .. 'kvi:' .. ARGV[2]
redis.call('ZREMRANGEBYSCORE', index, '-inf', int(now))
local out = {}
for _, k in ipairs(redis.call('ZRANGE', index, 0, -1)) do
  local v = redis.call('GET', prefix .. 'kv:' .. ARGV[2] .. ':' .. k)
  if v then out[#out + 1] = k; out[#out + 1] = v end
end
return out
"#;

/// counts. Returns {ready, scheduled, in flight, results, dead}.
const COUNTS: &str = r#"
local now = int(now_ms())
local expired = redis.call('ZCOUNT', K_LEASES, '-inf', now)
local ready = expired
for _, q in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
  ready = ready + redis.call('ZCARD', prefix .. 'q:' .. q)
end
return {ready, redis.call('ZCARD', K_SCHED), redis.call('ZCARD', K_LEASES) - expired,
  redis.call('ZCOUNT', K_RESULTS, '(' .. now, '+inf'), redis.call('ZCARD', K_DEAD)}
"#;

/// pending. ARGV: prefix, limit. Payloads by queue name, then priority, then FIFO.
const PENDING: &str = r#"
local limit = tonumber(ARGV[2])
local entries = {}
for _, q in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
  local got = redis.call('ZRANGE', prefix .. 'q:' .. q, 0, limit - 1, 'WITHSCORES')
  for j = 1, #got, 2 do
    entries[#entries + 1] = {tonumber(got[j + 1]), seq_of(got[j])}
  end
end
-- Across queues as within one: by priority (score), then age (the zero-padded seq).
table.sort(entries, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
local out = {}
for i = 1, math.min(limit, #entries) do
  local m = redis.call('HGET', K_MSG, entries[i][2])
  if m then out[#out + 1] = payload_of(m) end
end
return out
"#;

/// scheduled. ARGV: prefix, limit. Returns {eta, payload, ...}.
const SCHEDULED: &str = r#"
local out = {}
local entries = redis.call('ZRANGE', K_SCHED, 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
for j = 1, #entries, 2 do
  out[#out + 1] = entries[j + 1]
  local m = redis.call('HGET', K_SMSG, entries[j])
  out[#out + 1] = m and payload_of(m) or ''
end
return out
"#;

/// dead. ARGV: prefix, limit (-1: all). Returns {key, at ms, info, payload, ...}.
const DEAD: &str = r#"
local out = {}
local stop = tonumber(ARGV[2]) - 1
if stop < 0 then stop = -1 end
local entries = redis.call('ZRANGE', K_DEAD, 0, stop, 'WITHSCORES')
for j = 1, #entries, 2 do
  out[#out + 1] = entries[j]
  out[#out + 1] = entries[j + 1]
  out[#out + 1] = redis.call('HGET', K_DINFO, entries[j]) or '{}'
  out[#out + 1] = redis.call('HGET', K_DBODY, entries[j]) or ''
end
return out
"#;

/// retry_dead. ARGV: prefix, then key, priority pairs. Returns how many were requeued.
const RETRY_DEAD: &str = r#"
local packed = {}
for i = 2, #ARGV, 2 do
  local key = ARGV[i]
  local info = redis.call('HGET', K_DINFO, key)
  local body = redis.call('HGET', K_DBODY, key)
  if redis.call('ZREM', K_DEAD, key) == 1 and body then
    local d = cjson.decode(info or '{}')
    packed[#packed + 1] = pack(tonumber(ARGV[i + 1]), d.queue or 'default', d.id or '', body)
  end
  redis.call('HDEL', K_DINFO, key)
  redis.call('HDEL', K_DBODY, key)
end
push_packed(packed)
flush_ready()
notify()
return #packed
"#;

/// flush. ARGV: prefix, then 0/1 for queue, schedule, results, locks, dead, kv.
const FLUSH: &str = r#"
if ARGV[2] == '1' then
  for _, q in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
    redis.call('DEL', prefix .. 'q:' .. q, prefix .. 'n:' .. q)
  end
  -- `state` held delivery counts and lease tokens before they moved into the members.
  redis.call('DEL', K_QUEUES, K_LEASES, K_MSG, prefix .. 'state')
end
if ARGV[3] == '1' then redis.call('DEL', K_SCHED, K_SMSG) end
if ARGV[4] == '1' then delete_indexed(K_RESULTS, prefix .. 'r:') end
if ARGV[5] == '1' then delete_indexed(prefix .. 'kvi:locks', prefix .. 'kv:locks:') end
if ARGV[6] == '1' then redis.call('DEL', K_DEAD, K_DINFO, K_DBODY) end
if ARGV[7] == '1' then
  for _, ns in ipairs({'revoked', 'claims', 'data'}) do
    delete_indexed(prefix .. 'kvi:' .. ns, prefix .. 'kv:' .. ns .. ':')
  end
  redis.call('DEL', K_COUNTERS)
end
return 1
"#;

/// A script: its text and its SHA-1 (sent by `EVALSHA`, the text by `SCRIPT LOAD` only
/// when the server does not know it, e.g. after a restart).
pub struct Lua {
    pub hash: String,
    pub code: String,
}

/// The scripts, one per operation.
pub struct Scripts {
    pub apply: Lua,
    pub dequeue: Lua,
    pub extend: Lua,
    pub release: Lua,
    pub promote: Lua,
    pub result: Lua,
    pub delete_result: Lua,
    pub kv_put: Lua,
    pub kv_take: Lua,
    pub kv_list: Lua,
    pub kv_delete_if: Lua,
    pub incr_expiring: Lua,
    pub counts: Lua,
    pub pending: Lua,
    pub scheduled: Lua,
    pub dead: Lua,
    pub retry_dead: Lua,
    pub flush: Lua,
}

fn script(body: &str) -> Lua {
    let code = format!("{PRELUDE}{body}");
    Lua {
        hash: Script::new(&code).get_hash().to_string(),
        code,
    }
}

impl Scripts {
    pub fn new() -> Scripts {
        Scripts {
            apply: script(APPLY),
            dequeue: script(DEQUEUE),
            extend: script(EXTEND),
            release: script(RELEASE),
            promote: script(PROMOTE),
            result: script(RESULT),
            delete_result: script(DELETE_RESULT),
            kv_put: script(KV_PUT),
            kv_take: script(KV_TAKE),
            kv_list: script(KV_LIST),
            kv_delete_if: script(KV_DELETE_IF),
            incr_expiring: script(INCR_EXPIRING),
            counts: script(COUNTS),
            pending: script(PENDING),
            scheduled: script(SCHEDULED),
            dead: script(DEAD),
            retry_dead: script(RETRY_DEAD),
            flush: script(FLUSH),
        }
    }
}
