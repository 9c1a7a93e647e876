//! The scripts of inspection: counts, listings, dead letters and flushing.

/// counts. Returns {ready, scheduled, in flight, results, dead}.
pub(super) const COUNTS: &str = r#"
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
pub(super) const PENDING: &str = r#"
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
pub(super) const SCHEDULED: &str = r#"
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
pub(super) const DEAD: &str = r#"
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
pub(super) const RETRY_DEAD: &str = r#"
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
pub(super) const FLUSH: &str = r#"
-- Unique tasks' claims go with their messages (those of the part flushed only).
local function release_claims(hash)
  local index = prefix .. 'kvi:claims'
  for _, m in ipairs(redis.call('HVALS', hash)) do
    local _, _, id = unpack_head(m)
    if id then
      redis.call('DEL', prefix .. 'kv:claims:unique:' .. id)
      redis.call('ZREM', index, 'unique:' .. id)
    end
  end
end
if ARGV[2] == '1' then release_claims(K_MSG) end
if ARGV[3] == '1' then release_claims(K_SMSG) end
if ARGV[2] == '1' then
  for _, q in ipairs(redis.call('SMEMBERS', K_QUEUES)) do
    redis.call('DEL', prefix .. 'q:' .. q, prefix .. 'n:' .. q)
  end
  -- `state` held delivery counts and lease tokens before they moved into the members.
  redis.call('DEL', K_QUEUES, K_LEASES, K_MSG, prefix .. 'state')
end
if ARGV[3] == '1' then redis.call('DEL', K_SCHED, K_SMSG) end
if ARGV[4] == '1' then
  delete_indexed(K_RESULTS, prefix .. 'r:')
  redis.call('DEL', K_RESULT_IDS)
end
if ARGV[5] == '1' then delete_indexed(prefix .. 'kvi:locks', prefix .. 'kv:locks:') end
if ARGV[6] == '1' then redis.call('DEL', K_DEAD, K_DINFO, K_DBODY) end
if ARGV[7] == '1' then
  for _, ns in ipairs({'revoked', 'claims', 'data', 'consumers'}) do
    delete_indexed(prefix .. 'kvi:' .. ns, prefix .. 'kv:' .. ns .. ':')
  end
  redis.call('DEL', K_COUNTERS)
  delete_indexed(K_CHORDS, prefix)
end
return 1
"#;
