//! The Lua scripts that make each Redis operation one atomic round trip.
//!
//! Every script gets the same fixed `KEYS` (see [`KEY_NAMES`]) and the app's key prefix as
//! `ARGV[1]`. Keys named after a queue, a result id or a kv key are built from the prefix inside
//! the script; they carry the same `{app}` hash tag, so they live in the same cluster slot as the
//! declared keys.
//!
//! Numbers are formatted with `%d` before they are handed to Redis: Lua's default number to
//! string conversion keeps only 14 significant digits.

mod inspect;
mod kv;
mod queue;

use ::redis::Script;

use self::inspect::*;
use self::kv::*;
pub(crate) use self::queue::CALL_RECORD_MS;
use self::queue::*;

/// The fixed keys, in `KEYS` order, without the prefix.
///
/// A message is one `msg` hash field under its zero-padded 16-digit sequence number (its packed
/// metadata and payload, written once) and one sorted-set member that carries its delivery
/// count: `<seq>.<deliveries>` in `q:<queue>` while ready, `<seq>.<deliveries>.<token>` in
/// `leases` while leased. That lease member is the lease handed out, so an ack or extend is a
/// membership test and a stale one (the message was redelivered since) matches nothing.
pub const KEY_NAMES: [&str; 12] = [
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
    "chords",    // 12 ZSET "ch:<chord>:…" key -> expiry (ms): the index of chord keys
];

/// Index of the `dead:body` key in [`KEY_NAMES`].
pub const DEAD_BODY: usize = 8;
/// Index of the `counters` key in [`KEY_NAMES`].
pub const COUNTERS: usize = 10;

const PRELUDE: &str = r#"
local prefix = ARGV[1]
local K_LEASES, K_MSG, K_SEQ, K_QUEUES = KEYS[1], KEYS[2], KEYS[3], KEYS[4]
local K_SCHED, K_SMSG, K_DEAD, K_DINFO, K_DBODY, K_RESULTS = KEYS[5], KEYS[6], KEYS[7], KEYS[8], KEYS[9], KEYS[10]
local K_COUNTERS, K_CHORDS = KEYS[11], KEYS[12]
-- ZSET id -> 0: the ids of stored results, for pages in id order (ZRANGEBYLEX). Kept with
-- `results`; an id whose result is gone is dropped by whoever meets it (purge, listing).
local K_RESULT_IDS = prefix .. 'rids'
local sub, find, byte, unpack, min = string.sub, string.find, string.byte, unpack, math.min

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
-- Messages whose lease (member) was just removed go back to their queue, at their old place
-- (with one delivery fewer when `uncount`: they were handed back unstarted).
local function requeue(leases, uncount)
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
      local member = unleased(leases[k])
      if uncount then
        member = seqs[k] .. '.' .. int(math.max(0, deliveries(member) - 1))
      end
      make_ready(member, queue, int(-prio))
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
    pub kv_renew_if: Lua,
    pub list_results: Lua,
    pub incr_expiring: Lua,
    pub purge: Lua,
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
            apply: script(&APPLY.replace("CALL_RECORD_MS", &CALL_RECORD_MS.to_string())),
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
            kv_renew_if: script(KV_RENEW_IF),
            list_results: script(LIST_RESULTS),
            incr_expiring: script(INCR_EXPIRING),
            purge: script(PURGE),
            counts: script(COUNTS),
            pending: script(PENDING),
            scheduled: script(SCHEDULED),
            dead: script(DEAD),
            retry_dead: script(RETRY_DEAD),
            flush: script(FLUSH),
        }
    }
}
