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
pub const KEY_NAMES: [&str; 15] = [
    "leases",     // 1 ZSET seq -> lease expiry (ms)
    "tokens",     // 2 HASH seq -> token of the current lease
    "body",       // 3 HASH seq -> payload (ready and leased messages)
    "meta",       // 4 HASH seq -> "priority|#queue|queue id"
    "deliveries", // 5 HASH seq -> delivery count
    "seq",        // 6 STRING counter for sequence numbers and lease tokens
    "queues",     // 7 SET of queue names ever used
    "schedule",   // 8 ZSET seq -> eta (ms)
    "sched:body", // 9 HASH seq -> payload
    "sched:meta", // 10 HASH seq -> meta
    "dead",       // 11 ZSET seq -> time dead-lettered (ms)
    "dead:info",  // 12 HASH seq -> JSON {id, queue, error}
    "dead:body",  // 13 HASH seq -> payload
    "results",    // 14 ZSET id -> expiry (ms, inf when none): the index of r:<id> keys
    "counters",   // 15 HASH name -> integer
];

const PRELUDE: &str = r#"
local prefix = ARGV[1]
local K_LEASES, K_TOKENS, K_BODY, K_META, K_DELIV, K_SEQ, K_QUEUES = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6], KEYS[7]
local K_SCHED, K_SBODY, K_SMETA, K_DEAD, K_DINFO, K_DBODY, K_RESULTS = KEYS[8], KEYS[9], KEYS[10], KEYS[11], KEYS[12], KEYS[13], KEYS[14]
local K_COUNTERS = KEYS[15]

local function now_ms()
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
local function int(n) return string.format('%d', n) end
local function next_seq() return string.format('%016d', redis.call('INCR', K_SEQ)) end
local function meta(prio, queue, id) return int(prio) .. '|' .. int(#queue) .. '|' .. queue .. id end
local function parse_meta(m)
  local p, ql, rest = string.match(m, '^(%-?%d+)|(%d+)|(.*)$')
  ql = tonumber(ql)
  return tonumber(p), string.sub(rest, 1, ql), string.sub(rest, ql + 1)
end
local function parse_lease(l) return string.match(l, '^(%d+):(%d+)$') end
local function holds(seq, token) return seq ~= nil and redis.call('HGET', K_TOKENS, seq) == token end

-- Queues written to by this script, with how many messages, to wake blocked consumers.
local touched = {}
local function make_ready(seq, queue, prio)
  redis.call('ZADD', prefix .. 'q:' .. queue, int(-prio), seq)
  touched[queue] = (touched[queue] or 0) + 1
end
local function push_ready(queue, prio, id, payload)
  local seq = next_seq()
  redis.call('HSET', K_BODY, seq, payload)
  redis.call('HSET', K_META, seq, meta(prio, queue, id))
  make_ready(seq, queue, prio)
end
local function notify()
  for queue, n in pairs(touched) do
    redis.call('SADD', K_QUEUES, queue)
    local key = prefix .. 'n:' .. queue
    for _ = 1, math.min(n, 16) do redis.call('LPUSH', key, '1') end
    redis.call('LTRIM', key, 0, 63)
  end
end
local function forget(seq)
  redis.call('HDEL', K_BODY, seq)
  redis.call('HDEL', K_META, seq)
  redis.call('HDEL', K_DELIV, seq)
end
local function add_dead(id, queue, payload, err, now)
  local seq = next_seq()
  redis.call('ZADD', K_DEAD, int(now), seq)
  redis.call('HSET', K_DINFO, seq, cjson.encode({id = id, queue = queue, error = err}))
  redis.call('HSET', K_DBODY, seq, payload)
end
local function unlease(seq)
  redis.call('ZREM', K_LEASES, seq)
  redis.call('HDEL', K_TOKENS, seq)
  local m = redis.call('HGET', K_META, seq)
  if m then
    local prio, queue = parse_meta(m)
    make_ready(seq, queue, prio)
  end
end
local function delete_indexed(index, key_prefix)
  local members = redis.call('ZRANGE', index, 0, -1)
  for _, m in ipairs(members) do redis.call('DEL', key_prefix .. m) end
  redis.call('DEL', index)
end
"#;

/// apply(batch). ARGV after the prefix: sections, each a count then its items:
/// acks (lease), enqueues (queue, priority, id, payload), schedule (eta, queue, priority, id,
/// payload), results (id, ttl ms or "", value), dead (id, queue, error, payload).
const APPLY: &str = r#"
local now = now_ms()
local i = 2
local function count() local n = tonumber(ARGV[i]); i = i + 1; return n end
for _ = 1, count() do
  local seq, token = parse_lease(ARGV[i])
  if holds(seq, token) then
    redis.call('ZREM', K_LEASES, seq)
    redis.call('HDEL', K_TOKENS, seq)
    forget(seq)
  end
  i = i + 1
end
for _ = 1, count() do
  push_ready(ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3])
  i = i + 4
end
for _ = 1, count() do
  local seq = next_seq()
  redis.call('ZADD', K_SCHED, ARGV[i], seq)
  redis.call('HSET', K_SMETA, seq, meta(tonumber(ARGV[i + 2]), ARGV[i + 1], ARGV[i + 3]))
  redis.call('HSET', K_SBODY, seq, ARGV[i + 4])
  i = i + 5
end
local results = count()
for _ = 1, results do
  local id, ttl, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
  local key = prefix .. 'r:' .. id
  if ttl == '' then
    redis.call('SET', key, value)
    redis.call('ZADD', K_RESULTS, 'inf', id)
  else
    redis.call('SET', key, value, 'PX', ttl)
    redis.call('ZADD', K_RESULTS, int(now + tonumber(ttl)), id)
  end
  -- Wake whoever waits for this result; the token outlives the race between a waiter's
  -- first read and its BLPOP.
  local wake = prefix .. 'w:' .. id
  redis.call('DEL', wake)
  redis.call('LPUSH', wake, '1')
  redis.call('PEXPIRE', wake, 10000)
  i = i + 3
end
if results > 0 then redis.call('ZREMRANGEBYSCORE', K_RESULTS, '-inf', int(now)) end
for _ = 1, count() do
  add_dead(ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 2], now)
  i = i + 4
end
notify()
return 1
"#;

/// dequeue. ARGV: prefix, max, lease ms, max deliveries, queue names...
/// Returns {wait hint ms (-1: no lease to expire), then lease, queue index, payload, deliveries
/// for each delivery}.
const DEQUEUE: &str = r#"
local max, lease_ms, max_deliveries = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
for _, seq in ipairs(redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', int(now), 'LIMIT', 0, 1000)) do
  unlease(seq)
end
local out = {0}
local got = 0
local until_ms = int(now + lease_ms)
for qi = 5, #ARGV do
  local queue = ARGV[qi]
  local qkey = prefix .. 'q:' .. queue
  while got < max do
    local popped = redis.call('ZPOPMIN', qkey, max - got)
    if #popped == 0 then break end
    for j = 1, #popped, 2 do
      local seq = popped[j]
      local body = redis.call('HGET', K_BODY, seq)
      if body then
        local d = tonumber(redis.call('HGET', K_DELIV, seq) or '0')
        if d >= max_deliveries then
          local _, _, id = parse_meta(redis.call('HGET', K_META, seq) or '0|0|')
          add_dead(id, queue, body, 'delivered ' .. int(d) ..
            ' times without being acknowledged (its worker or consumer was lost each time)', now)
          forget(seq)
        else
          d = redis.call('HINCRBY', K_DELIV, seq, 1)
          local token = int(redis.call('INCR', K_SEQ))
          redis.call('ZADD', K_LEASES, until_ms, seq)
          redis.call('HSET', K_TOKENS, seq, token)
          out[#out + 1] = seq .. ':' .. token
          out[#out + 1] = qi - 4
          out[#out + 1] = body
          out[#out + 1] = d
          got = got + 1
        end
      end
    end
  end
end
if got == 0 then
  local first = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
  if #first == 0 then out[1] = -1 else out[1] = math.max(0, tonumber(first[2]) - now) end
end
notify()
return out
"#;

/// extend. ARGV: prefix, lease ms, leases...
const EXTEND: &str = r#"
local until_ms = int(now_ms() + tonumber(ARGV[2]))
for i = 3, #ARGV do
  local seq, token = parse_lease(ARGV[i])
  if holds(seq, token) then redis.call('ZADD', K_LEASES, 'XX', until_ms, seq) end
end
return 1
"#;

/// release. ARGV: prefix, leases...
const RELEASE: &str = r#"
for i = 2, #ARGV do
  local seq, token = parse_lease(ARGV[i])
  if holds(seq, token) then unlease(seq) end
end
notify()
return 1
"#;

/// promote_due. ARGV: prefix, now ms, max. Returns how many were promoted.
const PROMOTE: &str = r#"
local due = redis.call('ZRANGEBYSCORE', K_SCHED, '-inf', ARGV[2], 'LIMIT', 0, ARGV[3])
for _, seq in ipairs(due) do
  local m = redis.call('HGET', K_SMETA, seq)
  local body = redis.call('HGET', K_SBODY, seq)
  redis.call('ZREM', K_SCHED, seq)
  redis.call('HDEL', K_SMETA, seq)
  redis.call('HDEL', K_SBODY, seq)
  if m and body then
    local prio, queue, id = parse_meta(m)
    push_ready(queue, prio, id, body)
  end
end
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
    entries[#entries + 1] = {tonumber(got[j + 1]), got[j]}
  end
end
-- Across queues as within one: by priority (score), then age (the zero-padded seq).
table.sort(entries, function(a, b)
  if a[1] ~= b[1] then return a[1] < b[1] end
  return a[2] < b[2]
end)
local out = {}
for i = 1, math.min(limit, #entries) do
  local body = redis.call('HGET', K_BODY, entries[i][2])
  if body then out[#out + 1] = body end
end
return out
"#;

/// scheduled. ARGV: prefix, limit. Returns {eta, payload, ...}.
const SCHEDULED: &str = r#"
local out = {}
local entries = redis.call('ZRANGE', K_SCHED, 0, tonumber(ARGV[2]) - 1, 'WITHSCORES')
for j = 1, #entries, 2 do
  out[#out + 1] = entries[j + 1]
  out[#out + 1] = redis.call('HGET', K_SBODY, entries[j]) or ''
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
local n = 0
for i = 2, #ARGV, 2 do
  local key = ARGV[i]
  local info = redis.call('HGET', K_DINFO, key)
  local body = redis.call('HGET', K_DBODY, key)
  if redis.call('ZREM', K_DEAD, key) == 1 and body then
    local d = cjson.decode(info or '{}')
    push_ready(d.queue or 'default', tonumber(ARGV[i + 1]), d.id or '', body)
    n = n + 1
  end
  redis.call('HDEL', K_DINFO, key)
  redis.call('HDEL', K_DBODY, key)
end
notify()
return n
"#;

/// flush. ARGV: prefix, then 0/1 for queue, schedule, results, locks, dead, kv.
const FLUSH: &str = r#"
if ARGV[2] == '1' then
  for _, q in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
    redis.call('DEL', prefix .. 'q:' .. q, prefix .. 'n:' .. q)
  end
  redis.call('DEL', K_QUEUES, K_LEASES, K_TOKENS, K_BODY, K_META, K_DELIV)
end
if ARGV[3] == '1' then redis.call('DEL', K_SCHED, K_SBODY, K_SMETA) end
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

/// The loaded scripts (hashed once; sent by `EVALSHA`, by `EVAL` only after a server restart).
pub struct Scripts {
    pub apply: Script,
    pub dequeue: Script,
    pub extend: Script,
    pub release: Script,
    pub promote: Script,
    pub result: Script,
    pub delete_result: Script,
    pub kv_put: Script,
    pub kv_take: Script,
    pub kv_list: Script,
    pub kv_delete_if: Script,
    pub incr_expiring: Script,
    pub counts: Script,
    pub pending: Script,
    pub scheduled: Script,
    pub dead: Script,
    pub retry_dead: Script,
    pub flush: Script,
}

fn script(body: &str) -> Script {
    Script::new(&format!("{PRELUDE}{body}"))
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
