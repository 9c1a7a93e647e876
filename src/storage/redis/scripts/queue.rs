//! The scripts of the queue, schedule and chord counts: apply (a whole batch), dequeue,
//! extend, release and promote.

/// apply(batches). ARGV after the prefix: this call's token, the number of checks then each
/// (batch number, token of an earlier call, position in it), the number of batches, every
/// batch's lease ("" for none: a producer's write), one string with a character per batch (`0`
/// when it is only an ack, else `1`), then for each `1` batch its claim key ("" for none) and
/// claim TTL ms, and its sections, each a count then its items: enqueues (queue,
/// score = -priority, packed message), schedule (eta, packed message), results (id, ttl ms or
/// "", value), dead (id, queue, error, payload), chord counts (chord, index, size, ttl ms,
/// outcome, then the callback's id, queue, priority, payload head, payload tail, args head,
/// args tail and missing item), claims released (key). Returns one string with a `1` or `0` per batch: written, or fenced off because its
/// lease was no longer held (then nothing of it is written). A batch whose lease is gone but
/// that a check names, in an earlier call whose record says it was written there, is reported
/// written (and writes nothing again): that call's reply was lost, and this is the same
/// outcome sent again.
///
/// The answers of a call that carries a lease are recorded as `call:<token>` (that same
/// string) for [`CALL_RECORD_MS`], so that a resend after a lost reply can learn what the
/// first send wrote.
///
/// A chord's bookkeeping is one key per entry, each with a Redis TTL: `ch:<chord>:m:<index>`
/// marks a counted member, `ch:<chord>:i:<index>` holds its item, `ch:<chord>:n` the count.
/// They are indexed in `chords` (by expiry) so a flush finds them. The callback is packed and
/// made ready exactly as an enqueue is.
/// How long the answers of an apply call are kept on the server (`call:<token>`): longer than
/// a reply can take to be given up for lost (the command timeout) plus the outbox's backoff
/// before it sends again.
pub(crate) const CALL_RECORD_MS: u64 = 120_000;

pub(super) const APPLY: &str = r#"
-- Lengths as postcard writes them: 7 bits a byte, low first, high bit on all but the last.
local function varint(n)
  local out = {}
  while n >= 128 do
    out[#out + 1] = string.char(n % 128 + 128)
    n = math.floor(n / 128)
  end
  out[#out + 1] = string.char(n)
  return table.concat(out)
end
-- The last member of the chord whose keys start with `base` was counted: make the callback
-- described by ARGV[a..a+7] ready with the items in member order, then delete the items and the
-- count (the marks stay until they expire, so a member that runs again is not counted again).
local function fire_chord(base, size, a)
  local names, keys = {}, {}
  for k = 1, size do
    names[k] = base .. 'i:' .. int(k - 1)
    keys[k] = prefix .. names[k]
  end
  local parts = {ARGV[a + 5]}
  for c = 1, size, CHUNK do
    local got = redis.call('MGET', unpack(keys, c, min(size, c + CHUNK - 1)))
    for k = 1, #got do parts[c + k] = got[k] or ARGV[a + 7] end
  end
  parts[size + 2] = ARGV[a + 6]
  local args = table.concat(parts)
  local payload = ARGV[a + 3] .. varint(#args) .. args .. ARGV[a + 4]
  local prio = tonumber(ARGV[a + 2])
  local seq = fmt_seq(reserve(1))
  redis.call('HSET', K_MSG, seq, pack(prio, ARGV[a + 1], ARGV[a], payload))
  make_ready(seq .. '.0', ARGV[a + 1], int(-prio))
  names[size + 1] = base .. 'n'
  keys[size + 1] = prefix .. names[size + 1]
  for c = 1, size + 1, CHUNK do
    redis.call('DEL', unpack(keys, c, min(size + 1, c + CHUNK - 1)))
  end
  chunked('ZREM', K_CHORDS, names)
end
-- Count one chord member from ARGV[i..i+12].
local function count_chord(i, now)
  local index, size, ttl = ARGV[i + 1], tonumber(ARGV[i + 2]), ARGV[i + 3]
  local base = 'ch:' .. ARGV[i] .. ':'
  local mark, item, counter = base .. 'm:' .. index, base .. 'i:' .. index, base .. 'n'
  if not redis.call('SET', prefix .. mark, '1', 'PX', ttl, 'NX') then return end
  redis.call('SET', prefix .. item, ARGV[i + 4], 'PX', ttl)
  local exp = int(now + tonumber(ttl))
  local index_entries = {exp, mark, exp, item}
  local n = redis.call('INCR', prefix .. counter)
  if redis.call('PTTL', prefix .. counter) < 0 then
    redis.call('PEXPIRE', prefix .. counter, ttl)
    index_entries[5] = exp
    index_entries[6] = counter
  end
  redis.call('ZADD', K_CHORDS, unpack(index_entries))
  if n == size then fire_chord(base, size, i + 5) end
end
local now = now_ms()
local call_token = ARGV[2]
local i = 3
local function count() local n = tonumber(ARGV[i]); i = i + 1; return n end
-- Earlier calls whose replies were lost: batch number -> {{token, position}, ...}.
local earlier, records = {}, {}
for _ = 1, count() do
  local b = tonumber(ARGV[i])
  earlier[b] = earlier[b] or {}
  table.insert(earlier[b], {ARGV[i + 1], tonumber(ARGV[i + 2])})
  i = i + 3
end
local function written_before(b)
  for _, e in ipairs(earlier[b] or {}) do
    local rec = records[e[1]]
    if rec == nil then
      rec = redis.call('GET', prefix .. 'call:' .. e[1]) or false
      records[e[1]] = rec
    end
    if rec and sub(rec, e[2], e[2]) == '1' then return true end
  end
  return false
end
-- A fenced batch is written only while its lease is held; the ack is the test. Which leases
-- are held is asked once for the whole call (ZMSCORE), the acks are made in two variadic calls
-- at the end (`acked`), and a lease seen once in this call is not held for a second batch.
local nb = count()
local leases_at = i
i = i + nb
local held = {}
do
  -- The leases are asked straight from ARGV unless some batch has none.
  local asked, na, first = ARGV, 0, leases_at
  for b = leases_at, leases_at + nb - 1 do
    if ARGV[b] == '' then
      asked, na, first = {}, 0, 1
      for c = leases_at, leases_at + nb - 1 do
        if ARGV[c] ~= '' then na = na + 1; asked[na] = ARGV[c] end
      end
      break
    end
    na = na + 1
  end
  for c = first, first + na - 1, CHUNK do
    local last = min(first + na - 1, c + CHUNK - 1)
    local scores = redis.call('ZMSCORE', K_LEASES, unpack(asked, c, last))
    for k = 1, last - c + 1 do
      if scores[k] then held[asked[c + k - 1]] = true end
    end
  end
end
local acked, acked_msgs, nacked = {}, {}, 0
local function fence(lease)
  if lease == '' then return true end
  if not held[lease] then return false end
  held[lease] = nil
  nacked = nacked + 1
  acked[nacked] = lease
  acked_msgs[nacked] = sub(lease, 1, 16)
  return true
end
local function enqueue(n)
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
end
local function schedule(n)
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
-- Results of the whole call: their index entries (written once, at the end) and their ids.
local result_index, result_ids, nres = {}, {}, 0
local function results(n)
  for _ = 1, n do
    local id, ttl, value = ARGV[i], ARGV[i + 1], ARGV[i + 2]
    local key = prefix .. 'r:' .. id
    local at = 2 * nres
    if ttl == '' then
      redis.call('SET', key, value)
      result_index[at + 1] = 'inf'
    else
      redis.call('SET', key, value, 'PX', ttl)
      result_index[at + 1] = int(now + tonumber(ttl))
    end
    result_index[at + 2] = id
    result_ids[at + 1] = '0'
    result_ids[at + 2] = id
    nres = nres + 1
    i = i + 3
  end
end
local chords_pruned = false
local function chords(n)
  if not chords_pruned then
    redis.call('ZREMRANGEBYSCORE', K_CHORDS, '-inf', int(now))
    chords_pruned = true
  end
  for _ = 1, n do
    count_chord(i, now)
    i = i + 13
  end
end
-- Each section: its count, then its items (this many arguments each); skipped unless live.
-- Claims given up (a unique task's final outcome): deleted with their index entries.
local function release(n)
  for _ = 1, n do
    redis.call('DEL', prefix .. 'kv:claims:' .. ARGV[i])
    redis.call('ZREM', prefix .. 'kvi:claims', ARGV[i])
    i = i + 1
  end
end
local sections = {{enqueue, 3}, {schedule, 2}, {results, 3}, {nil, 4}, {chords, 13},
  {release, 1}}
local written = {}
local any_lease = false
-- One character per batch: '1' (49) when it writes more than its ack.
local kinds = ARGV[i]
i = i + 1
for b = 1, nb do
  local lease = ARGV[leases_at + b - 1]
  local whole = byte(kinds, b) == 49
  local live
  if whole then
    -- A claimed batch: only while the claim is not held, taking it (indexed like any kv entry).
    local claim, claim_ttl = ARGV[i], ARGV[i + 1]
    i = i + 2
    local claim_key = prefix .. 'kv:claims:' .. claim
    live = (claim == '' or redis.call('EXISTS', claim_key) == 0) and fence(lease)
    if live and claim ~= '' then
      redis.call('SET', claim_key, '1', 'PX', claim_ttl)
      redis.call('ZADD', prefix .. 'kvi:claims', int(now + tonumber(claim_ttl)), claim)
    end
  else
    live = fence(lease)
  end
  written[b] = live and '1' or '0'
  if lease ~= '' then
    any_lease = true
    if not live and written_before(b) then written[b] = '1' end
  end
  if whole then
    for s = 1, #sections do
      local sec = sections[s]
      local n = count()
      if n > 0 and live then
        if sec[1] then
          sec[1](n)
        else
          for _ = 1, n do
            add_dead(ARGV[i], ARGV[i + 1], ARGV[i + 3], ARGV[i + 2])
            i = i + 4
          end
        end
      else
        i = i + n * sec[2]
      end
    end
  end
end
if nacked > 0 then
  chunked('ZREM', K_LEASES, acked)
  chunked('HDEL', K_MSG, acked_msgs)
end
if nres > 0 then
  chunked('ZADD', K_RESULTS, result_index)
  chunked('ZADD', K_RESULT_IDS, result_ids)
  -- Wake whoever waits for these results. A waiter registers (`wt:<id>`) in the same script
  -- as its read, so one that read nothing is registered by now; the token outlives the race
  -- between that read and its BLPOP. No waiter, no wake-up: one EXISTS for all of them, and
  -- one per result only when some waiter is registered.
  local waits, waited = {}, 0
  for k = 1, nres do waits[k] = prefix .. 'wt:' .. result_ids[2 * k] end
  for c = 1, nres, CHUNK do
    waited = waited + redis.call('EXISTS', unpack(waits, c, min(nres, c + CHUNK - 1)))
  end
  if waited > 0 then
    for k = 1, nres do
      if redis.call('EXISTS', waits[k]) == 1 then
        local wake = prefix .. 'w:' .. result_ids[2 * k]
        redis.call('DEL', wake)
        redis.call('LPUSH', wake, '1')
        redis.call('PEXPIRE', wake, 10000)
      end
    end
  end
  -- Expired results leave both indexes (a bounded part here; the purge takes the rest).
  local gone = redis.call('ZRANGEBYSCORE', K_RESULTS, '-inf', int(now), 'LIMIT', 0, 100)
  chunked('ZREM', K_RESULTS, gone)
  chunked('ZREM', K_RESULT_IDS, gone)
end
flush_dead(now)
flush_ready()
notify()
written = table.concat(written)
if any_lease then
  redis.call('SET', prefix .. 'call:' .. call_token, written, 'PX', 'CALL_RECORD_MS')
end
return written
"#;

/// dequeue. ARGV: prefix, max, lease ms, max deliveries, queue names...
/// Returns {wait hint ms (-1: no lease to expire), the deliveries, whether any revocation is
/// stored (1 when nothing was leased)}. The deliveries are one string: per delivery its queue
/// index (i32), its lease (`<seq>.<deliveries>.<token>`) and its packed message, each length
/// prefixed (u32), little-endian (see `packed::next_delivery`). A message already delivered
/// `max deliveries` times comes with its queue index negated: it is leased (its count
/// unchanged) for the caller to dead-letter under that lease.
pub(super) const DEQUEUE: &str = r#"
local max, lease_ms, max_deliveries = tonumber(ARGV[2]), tonumber(ARGV[3]), tonumber(ARGV[4])
local now = now_ms()
local expired = redis.call('ZRANGEBYSCORE', K_LEASES, '-inf', int(now), 'LIMIT', 0, 1000)
if #expired > 0 then
  chunked('ZREM', K_LEASES, expired)
  requeue(expired)
end
-- The reply is the hint and one string: per message its queue's number (negative: over the
-- delivery limit), its lease and its packed message, each length-prefixed, so that the client
-- parses one bulk string instead of three values a message.
local hint = 0
local parts = {}
local o = 0
local got = 0
local spack = struct.pack
local until_ms = int(now + lease_ms)
local tail = nil
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
    local z = {}
    local zn = 0
    for k = 1, n do
      local m = msgs[k]
      if m then
        if not tail then tail = '.' .. int(redis.call('INCR', K_SEQ)) end
        -- Most members were never delivered ("<seq>.0"): no number to parse nor format.
        local member = members[k]
        local d, lease = 0, nil
        if #member == 18 and byte(member, 18) == 48 then
          lease = seqs[k] .. '.1' .. tail
        else
          d = deliveries(member)
        end
        if d >= max_deliveries then
          -- Over the limit: leased to this call without counting a delivery, for the caller
          -- to dead-letter (and count in its chord) in a batch fenced by this lease.
          lease = seqs[k] .. '.' .. int(d) .. tail
          parts[o + 1] = spack('<i4I4', -qn, #lease)
        else
          lease = lease or seqs[k] .. '.' .. int(d + 1) .. tail
          parts[o + 1] = spack('<i4I4', qn, #lease)
          got = got + 1
        end
        z[zn + 1] = until_ms
        z[zn + 2] = lease
        zn = zn + 2
        parts[o + 2] = lease
        parts[o + 3] = spack('<I4', #m)
        parts[o + 4] = m
        o = o + 4
      end
    end
    if zn > 0 then redis.call('ZADD', K_LEASES, unpack(z)) end
    if n < want then break end
  end
end
if got == 0 then
  local first = redis.call('ZRANGE', K_LEASES, 0, 0, 'WITHSCORES')
  if #first == 0 then hint = -1 else hint = math.max(0, tonumber(first[2]) - now) end
end
-- Whether any revocation is stored (its namespace's index is not empty; `Ns::Revoked` is
-- "revoked"), read with the lease so the consumer needs no second call to learn that none
-- applies. 1 ("may be") when nothing was leased: not read then.
local revoked = 1
if o > 0 then revoked = redis.call('ZCARD', prefix .. 'kvi:revoked') end
notify()
return {hint, table.concat(parts), revoked}
"#;

/// extend. ARGV: prefix, lease ms, then leases. Only leases still held (members) are updated.
/// Returns 1 per lease still held, 0 per lease lost.
pub(super) const EXTEND: &str = r#"
local until_ms = int(now_ms() + tonumber(ARGV[2]))
local z = {}
local out = {}
local n = 0
for a = 3, #ARGV, CHUNK do
  local b = min(#ARGV, a + CHUNK - 1)
  local scores = redis.call('ZMSCORE', K_LEASES, unpack(ARGV, a, b))
  for k = 1, b - a + 1 do
    if scores[k] then
      z[n + 1] = until_ms
      z[n + 2] = ARGV[a + k - 1]
      n = n + 2
      out[#out + 1] = 1
    else
      out[#out + 1] = 0
    end
  end
end
chunked('ZADD', K_LEASES, z, 'XX')
return out
"#;

/// release. ARGV: prefix, started (0/1), then leases. Unstarted ones go back with the delivery
/// their dequeue counted taken back.
pub(super) const RELEASE: &str = r#"
local leases = held(3, #ARGV)
chunked('ZREM', K_LEASES, leases)
requeue(leases, ARGV[2] == '0')
notify()
return 1
"#;

/// promote_due. ARGV: prefix, now ms, max. Returns how many were promoted. Due means due by
/// the earlier of the caller's clock and the server's: a consumer whose clock runs ahead
/// cannot make tasks ready early.
pub(super) const PROMOTE: &str = r#"
local now = math.min(tonumber(ARGV[2]), now_ms())
local due = redis.call('ZRANGEBYSCORE', K_SCHED, '-inf', int(now), 'LIMIT', 0, ARGV[3])
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
