//! The scripts of results and key-value entries.

/// result. ARGV: prefix, id, take (0/1), wake others (0/1), wait ms (0: not waiting). Returns
/// the value or nil. A caller about to wait for a result not there yet is registered as a
/// waiter (`wt:<id>`, for the wait and a margin), in the same step as its read, so the write of
/// the result knows to wake it.
pub(super) const RESULT: &str = r#"
local id = ARGV[2]
local key = prefix .. 'r:' .. id
local v = redis.call('GET', key)
if not v and tonumber(ARGV[5]) > 0 then
  -- Never shortened: another waiter may wait longer.
  local waiter = prefix .. 'wt:' .. id
  if redis.call('PTTL', waiter) < tonumber(ARGV[5]) then
    redis.call('SET', waiter, '1', 'PX', ARGV[5])
  end
end
if ARGV[3] == '1' then
  redis.call('DEL', key)
  redis.call('ZREM', K_RESULTS, id)
  redis.call('ZREM', K_RESULT_IDS, id)
elseif v and ARGV[4] == '1' then
  -- Other waiters on the same result: pass the wake-up on.
  local wake = prefix .. 'w:' .. id
  redis.call('LPUSH', wake, '1')
  redis.call('PEXPIRE', wake, 10000)
end
return v
"#;

/// delete_result. ARGV: prefix, id. Returns 1 when there was a result.
pub(super) const DELETE_RESULT: &str = r#"
redis.call('ZREM', K_RESULTS, ARGV[2])
redis.call('ZREM', K_RESULT_IDS, ARGV[2])
return redis.call('DEL', prefix .. 'r:' .. ARGV[2])
"#;

/// put / put_if_empty. ARGV: prefix, ns, key, value, ttl ms or "", only if empty (0/1).
/// Returns 1 when written.
pub(super) const KV_PUT: &str = r#"
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
pub(super) const KV_TAKE: &str = r#"
local key = prefix .. 'kv:' .. ARGV[2] .. ':' .. ARGV[3]
local v = redis.call('GET', key)
redis.call('DEL', key)
redis.call('ZREM', prefix .. 'kvi:' .. ARGV[2], ARGV[3])
return v
"#;

/// delete_if. ARGV: prefix, ns, key, value. Returns 1 when it held the value and was deleted.
pub(super) const KV_DELETE_IF: &str = r#"
local key = prefix .. 'kv:' .. ARGV[2] .. ':' .. ARGV[3]
if redis.call('GET', key) ~= ARGV[4] then return 0 end
redis.call('DEL', key)
redis.call('ZREM', prefix .. 'kvi:' .. ARGV[2], ARGV[3])
return 1
"#;

/// renew_if. ARGV: prefix, ns, key, value, ttl ms. Returns 1 when it held the value and was
/// given the new TTL.
pub(super) const KV_RENEW_IF: &str = r#"
local key = prefix .. 'kv:' .. ARGV[2] .. ':' .. ARGV[3]
if redis.call('GET', key) ~= ARGV[4] then return 0 end
redis.call('PEXPIRE', key, ARGV[5])
redis.call('ZADD', prefix .. 'kvi:' .. ARGV[2], int(now_ms() + tonumber(ARGV[5])), ARGV[3])
return 1
"#;

/// list_results. ARGV: prefix, after (exclusive; "" from the start), limit, scan. Returns
/// {next, id, value, id, value, ...}: up to `limit` stored results whose ids sort after
/// `after`, in id order, read from at most `scan` ids of the id index; `next` is where to go on
/// when that scan ended before the page was full and more ids may follow ("" otherwise).
/// Ids whose result is gone are dropped from the index on the way. The index is built from
/// `results` the first time (for results stored before it existed).
pub(super) const LIST_RESULTS: &str = r#"
local built = prefix .. 'rids:built'
if redis.call('EXISTS', built) == 0 then
  local z = {}
  for _, id in ipairs(redis.call('ZRANGE', K_RESULTS, 0, -1)) do
    z[#z + 1] = '0'; z[#z + 1] = id
  end
  chunked('ZADD', K_RESULT_IDS, z)
  redis.call('SET', built, '1')
end
local limit, scan = tonumber(ARGV[3]), tonumber(ARGV[4])
local from = '-'
if ARGV[2] ~= '' then from = '(' .. ARGV[2] end
local ids = redis.call('ZRANGEBYLEX', K_RESULT_IDS, from, '+', 'LIMIT', 0, scan)
local out, stale = {''}, {}
local n = 0
for _, id in ipairs(ids) do
  local v = redis.call('GET', prefix .. 'r:' .. id)
  if v then
    out[#out + 1] = id; out[#out + 1] = v
    n = n + 1
    if n >= limit then break end
  else
    stale[#stale + 1] = id
  end
end
chunked('ZREM', K_RESULT_IDS, stale)
if n < limit and #ids == scan then out[1] = ids[#ids] end
return out
"#;

/// incr_expiring. ARGV: prefix, key, by, ttl ms. Returns the new value.
pub(super) const INCR_EXPIRING: &str = r#"
local key = prefix .. 'ctr:' .. ARGV[2]
local v = redis.call('INCRBY', key, ARGV[3])
if redis.call('PTTL', key) < 0 then redis.call('PEXPIRE', key, ARGV[4]) end
return v
"#;

/// list. ARGV: prefix, ns. Returns {key, value, ...} (unsorted).
pub(super) const KV_LIST: &str = r#"
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

/// purge. ARGV: prefix, now ms, max, then kv namespaces. Trims expired members from the
/// indexes (results, chords, each namespace's `kvi:`): the keys themselves carry Redis TTLs
/// and are gone already. Time is the earlier of the caller's and the server's (index scores
/// are server times). Returns how many members were removed, at most `max`.
pub(super) const PURGE: &str = r#"
local now = math.min(tonumber(ARGV[2]), now_ms())
local max = tonumber(ARGV[3])
local indexes = {K_RESULTS, K_CHORDS}
for k = 4, #ARGV do indexes[#indexes + 1] = prefix .. 'kvi:' .. ARGV[k] end
local n = 0
for _, index in ipairs(indexes) do
  if n >= max then break end
  local gone = redis.call('ZRANGEBYSCORE', index, '-inf', int(now), 'LIMIT', 0, max - n)
  chunked('ZREM', index, gone)
  if index == K_RESULTS then chunked('ZREM', K_RESULT_IDS, gone) end
  n = n + #gone
end
return n
"#;
