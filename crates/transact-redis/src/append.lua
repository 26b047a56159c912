#!lua
-- transact-redis: one append of one user's batch, atomically (EVALSHA).
-- The layout and encodings are in docs/redis.md and src/codec.rs; the
-- semantics are the embedded store's (transact-seq embedded/history.rs).
--
-- KEYS: 1 realtime, 2 impressions, 3 lifelong (sorted sets, all scores 0,
--       ordered by member bytes: timestamp BE | arrival BE | ...),
--       4 arrival counter, 5 the user counter of this slot, 6 append ids.
-- ARGV: 1 realtime capacity, 2 impression capacity, 3 lifelong capacity,
--       4 append id, 5 the actions, 49 bytes each (codec.rs push_record).
-- Returns 1 when applied, 0 when this append id was applied before (a
-- retried request).
local rt, imp, ll, seq, users, ids = KEYS[1], KEYS[2], KEYS[3], KEYS[4], KEYS[5], KEYS[6]
local rt_cap = tonumber(ARGV[1])
local imp_cap = tonumber(ARGV[2])
local ll_cap = tonumber(ARGV[3])
local id = ARGV[4]
local recs = ARGV[5]
local R = 49
local n = math.floor(#recs / R)

-- Reads first: a key of the wrong type fails here, before anything is written.
local cards = { redis.call('ZCARD', rt), redis.call('ZCARD', imp), redis.call('ZCARD', ll) }
redis.call('GET', seq)
redis.call('GET', users)
if redis.call('LPOS', ids, id) then
    return 0
end

-- Drops the oldest (lowest) members beyond cap.
local function trim(key, card, cap)
    if card > cap then
        redis.call('ZREMRANGEBYRANK', key, 0, card - cap - 1)
    end
end

local function insert(key, member, cap)
    redis.call('ZADD', key, 0, member)
    trim(key, redis.call('ZCARD', key), cap)
end

-- 8 bytes big-endian of a non-negative integer below 2^53.
local function be8(x)
    local b = {}
    for i = 8, 1, -1 do
        local r = x % 256
        b[i] = r
        x = (x - r) / 256
    end
    return string.char(b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8])
end

-- What was written under a larger capacity is cut to this one first.
trim(rt, cards[1], rt_cap)
trim(imp, cards[2], imp_cap)
trim(ll, cards[3], ll_cap)

local last = redis.call('INCRBY', seq, n)
local first = last - n
if first == 0 then
    redis.call('INCR', users)
end

for i = 0, n - 1 do
    local r = string.sub(recs, i * R + 1, i * R + R)
    local ts = string.sub(r, 2, 9)
    local body = string.sub(r, 10, 21) -- item | type | surface
    local arrival = be8(first + i + 1)
    local m = ts .. arrival .. body
    if string.byte(r, 1) == 1 then
        if imp_cap > 0 then
            insert(imp, m, imp_cap)
        end
    elseif ll_cap > 0 then
        -- Fold into the newest token of the same item and surface within
        -- the window (its mask gains the type's bit, its time and place
        -- stay), else a new token.
        local item_surface = string.sub(body, 1, 8) .. string.sub(body, 11, 12)
        local pos = 26 + string.byte(r, 40)
        local bit = string.byte(r, 41)
        local merged = false
        local window = redis.call('ZREVRANGEBYLEX', ll, string.sub(r, 22, 30), string.sub(r, 31, 39))
        for _, tok in ipairs(window) do
            if string.sub(tok, 17, 26) == item_surface then
                local b = string.byte(tok, pos)
                if math.floor(b / bit) % 2 == 0 then
                    redis.call('ZREM', ll, tok)
                    redis.call('ZADD', ll, 0,
                        string.sub(tok, 1, pos - 1) .. string.char(b + bit) .. string.sub(tok, pos + 1))
                end
                merged = true
                break
            end
        end
        if not merged then
            insert(ll, ts .. arrival .. item_surface .. string.sub(r, 42, 49), ll_cap)
        end
    end
    insert(rt, m, rt_cap)
end

redis.call('LPUSH', ids, id)
redis.call('LTRIM', ids, 0, 63)
return 1
