//! The admission gate: one Redis Lua script, called for a group of attempts
//! (`admission.rs`), that rejects sold-out, over-cap, early, late and repeated
//! requests without touching Postgres, and reserves units for the rest.
//!
//! This module is the only code that knows the gate's keys and the format of
//! its values; the rest of the crate sees [`Admission`], [`Reservation`] and
//! [`ReservationKey`].
//!
//! Keys (the `{deal}` hash tag keeps a deal's keys in one cluster slot):
//! - `hawker:deal:{id}:meta`   hash: `ready`, `starts_ms`, `ends_ms`, `cap`, `status`,
//!   `reason`, `gen` (the build), `ver` (counts the scripts that added a key or
//!   an offer: nodes' copies of a sold-out gate, `mirror.rs`, are checked by it)
//! - `hawker:deal:{id}:stock`  units the gate may still hand out
//! - `hawker:deal:{id}:buyers` hash: buyer → units reserved or bought
//! - `hawker:deal:{id}:pending` sorted set: fields still reserved, scored by reservation time (ms)
//! - `hawker:deal:{id}:keys`   hash: `buyer\nkey` → `o:<order id>` (settled) or
//!   `p:<qty>:<ms>:<hash>` (reserved, settlement pending)
//! - `hawker:deal:{id}:offers` hash: buyer → units the buyer may hold in all
//!   while their waitlist offer is open (`crate::waitlist`): a sold-out deal
//!   admits that buyer, and only that buyer, up to it, without touching `stock`
//!
//! The gate may be wrong (Redis flushed, restarted, a node died between the
//! reservation and the commit); it is rebuilt from Postgres when its keys are
//! missing, clamped to Postgres after every batch, and stale reservations are
//! released by the reconciler ([`Gate::reconcile`]). Postgres constraints
//! decide in the end.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use hawker_redis::Redis;
use redis::Script;
use sqlx::PgPool;
use uuid::Uuid;

use super::admission::Admissions;
use super::mirror::{Mirrors, MOST_FIELDS};
use hawker_core::error::{Error, Result};

/// Admits a batch of attempts on one deal, in order, as if each were a call
/// of its own: every attempt sees the reservations of those before it (kept
/// in the script's tables; the hashes and the sorted set are written once,
/// at the end, with one variadic command each).
/// KEYS: meta, stock, buyers, keys, pending, offers.
/// ARGV: now (ms), then buyer, quantity, field, request hash per attempt.
/// Returns one line per attempt, joined by `\n` into one string: `ok`,
/// `dup\t<value>`, `sold_out`, `ended`, `not_started`, `cap_exceeded\t<held>`
/// or `rebuild` (no value holds a tab or a newline). One string, not a table
/// per attempt: reading 256 nested replies was 15 % of a purchase's
/// instructions in the Redis client's parser.
const ADMIT_LUA: &str = r#"
local out = {}
local m = redis.call('HMGET', KEYS[1], 'ready', 'status', 'reason', 'starts_ms', 'ends_ms', 'cap')
if m[1] ~= '1' then
  for i = 2, #ARGV, 4 do out[#out + 1] = 'rebuild' end
  return table.concat(out, '\n')
end
local now = tonumber(ARGV[1])
local stock = tonumber(redis.call('GET', KEYS[2]) or '0')
local any_offer = redis.call('EXISTS', KEYS[6]) == 1
-- The attempts' keys, and while the deal sells their buyers' units, read in
-- one command each (at most 256 attempts a call): a command per attempt was
-- a third of the script's time.
local asked, buyers = {}, {}
for i = 2, #ARGV, 4 do
  buyers[#buyers + 1] = ARGV[i]
  asked[#asked + 1] = ARGV[i + 2]
end
local stored = redis.call('HMGET', KEYS[4], unpack(asked))
local read = {}
if m[2] ~= 'ended' then
  local got = redis.call('HMGET', KEYS[3], unpack(buyers))
  for j, buyer in ipairs(buyers) do read[buyer] = tonumber(got[j] or '0') end
end
-- What this call has reserved, written once at the end: the keys' values and
-- pending fields, each buyer's units (read once, then counted here).
local taken, added, values, pending, held = 0, {}, {}, {}, {}
local function units(buyer)
  if held[buyer] == nil then
    held[buyer] = read[buyer] or tonumber(redis.call('HGET', KEYS[3], buyer) or '0')
  end
  return held[buyer]
end
local function reserve(buyer, q, field, hash)
  held[buyer] = units(buyer) + q
  added[buyer] = true
  values[field] = 'p:' .. q .. ':' .. ARGV[1] .. ':' .. hash
  pending[#pending + 1] = ARGV[1]
  pending[#pending + 1] = field
  return 'ok'
end
for i = 2, #ARGV, 4 do
  local buyer, q, field, hash = ARGV[i], tonumber(ARGV[i + 1]), ARGV[i + 2], ARGV[i + 3]
  local existing = values[field] or stored[(i + 2) / 4]
  local reply
  if existing then
    reply = 'dup\t' .. existing
  elseif m[2] == 'ended' then
    -- Sold out: only a buyer with an open waitlist offer, up to its ceiling.
    local ceiling = m[3] == 'sold_out' and any_offer and redis.call('HGET', KEYS[6], buyer)
    if ceiling and now < tonumber(m[5]) and units(buyer) + q <= tonumber(ceiling) then
      reply = reserve(buyer, q, field, hash)
    elseif m[3] == 'sold_out' then
      reply = 'sold_out'
    else
      reply = 'ended'
    end
  elseif now >= tonumber(m[5]) then
    reply = 'ended'
  elseif now < tonumber(m[4]) then
    reply = 'not_started'
  elseif units(buyer) + q > tonumber(m[6]) then
    reply = 'cap_exceeded\t' .. tostring(units(buyer))
  elseif stock < q then
    reply = 'sold_out'
  else
    stock = stock - q
    taken = taken + q
    reply = reserve(buyer, q, field, hash)
  end
  out[#out + 1] = reply
end
if taken > 0 then redis.call('DECRBY', KEYS[2], taken) end
if #pending > 0 then
  local fields = {}
  for field, value in pairs(values) do
    fields[#fields + 1] = field
    fields[#fields + 1] = value
  end
  redis.call('HSET', KEYS[4], unpack(fields))
  redis.call('ZADD', KEYS[5], unpack(pending))
  -- Each buyer's new total (read once above, counted here), in one command:
  -- an HINCRBY per buyer was a tenth of the script's time.
  local totals = {}
  for buyer in pairs(added) do
    totals[#totals + 1] = buyer
    totals[#totals + 1] = held[buyer]
  end
  redis.call('HSET', KEYS[3], unpack(totals))
  -- A key was added: nodes' copies of a sold-out gate (mirror.rs) are stale.
  redis.call('HINCRBY', KEYS[1], 'ver', 1)
end
return table.concat(out, '\n')
"#;

/// Releases a reservation that did not become an order (only if still pending).
const RELEASE_LUA: &str = r#"
local v = redis.call('HGET', KEYS[3], ARGV[3])
if not v or string.sub(v, 1, 2) ~= 'p:' then return 0 end
redis.call('HDEL', KEYS[3], ARGV[3])
redis.call('ZREM', KEYS[4], ARGV[3])
redis.call('INCRBY', KEYS[1], ARGV[2])
redis.call('HINCRBY', KEYS[2], ARGV[1], -tonumber(ARGV[2]))
return 1
"#;

/// Units of a cancelled order go back to the gate (if the gate is built).
const RETURN_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'ready') ~= '1' then return 0 end
redis.call('INCRBY', KEYS[2], ARGV[2])
redis.call('HINCRBY', KEYS[3], ARGV[1], -tonumber(ARGV[2]))
return 1
"#;

/// The gate never hands out more than Postgres has left.
const CLAMP_LUA: &str = r#"
local stock = tonumber(redis.call('GET', KEYS[1]) or '-1')
if stock > tonumber(ARGV[1]) then redis.call('SET', KEYS[1], ARGV[1], 'KEEPTTL') end
return 1
"#;

/// Applies a rebuild from Postgres, unless another node already rebuilt the
/// gate. Settled keys a `confirm` wrote since the Postgres read are kept (the
/// read may predate their commit); reservations are dropped, since the new
/// stock does not count them.
/// KEYS: meta, stock, buyers, keys, pending, rebuilding lock, offers.
/// ARGV: ttl, stock, gen, starts_ms, ends_ms, cap, status, reason, buyer count,
/// offer count, buyer/units pairs, buyer/ceiling pairs of open waitlist
/// offers, then field/value pairs of settled keys.
const REBUILD_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'ready') == '1' then redis.call('DEL', KEYS[6]) return 0 end
redis.call('DEL', KEYS[1], KEYS[2], KEYS[3], KEYS[5], KEYS[7])
local kept = redis.call('HGETALL', KEYS[4])
for i = 1, #kept, 2 do
  if string.sub(kept[i + 1], 1, 2) ~= 'o:' then redis.call('HDEL', KEYS[4], kept[i]) end
end
redis.call('SET', KEYS[2], ARGV[2])
local i = 11
for _ = 1, tonumber(ARGV[9]) do
  redis.call('HSET', KEYS[3], ARGV[i], ARGV[i + 1])
  i = i + 2
end
for _ = 1, tonumber(ARGV[10]) do
  redis.call('HSET', KEYS[7], ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i < #ARGV do
  redis.call('HSET', KEYS[4], ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], 'starts_ms', ARGV[4], 'ends_ms', ARGV[5], 'cap', ARGV[6],
  'status', ARGV[7], 'reason', ARGV[8], 'gen', ARGV[3], 'ready', '1')
for k = 1, 5 do redis.call('EXPIRE', KEYS[k], ARGV[1]) end
redis.call('EXPIRE', KEYS[7], ARGV[1])
redis.call('DEL', KEYS[6])
return 1
"#;

/// A fresh reservation whose key already had an order: the order counts in
/// Postgres, so the reservation's units go back and the key is settled.
/// KEYS: stock, buyers, keys, pending, meta. ARGV: buyer, quantity, field, settled value.
const SETTLE_EXISTING_LUA: &str = r#"
if redis.call('HEXISTS', KEYS[3], ARGV[3]) == 1 then
  redis.call('INCRBY', KEYS[1], ARGV[2])
  redis.call('HINCRBY', KEYS[2], ARGV[1], -tonumber(ARGV[2]))
elseif redis.call('EXISTS', KEYS[5]) == 1 then
  -- The key comes back: nodes' copies of a sold-out gate are stale.
  redis.call('HINCRBY', KEYS[5], 'ver', 1)
end
redis.call('HSET', KEYS[3], ARGV[3], ARGV[4])
redis.call('ZREM', KEYS[4], ARGV[3])
return 1
"#;

/// Opens waitlist offers; counts the buyers who had none, and if there are
/// any tells nodes' copies of the sold-out gate (mirror.rs) by `ver`.
/// KEYS: offers, meta. ARGV: ttl, then buyer/ceiling pairs.
const GRANT_LUA: &str = r#"
local added = 0
for i = 2, #ARGV, 2 do added = added + redis.call('HSET', KEYS[1], ARGV[i], ARGV[i + 1]) end
redis.call('EXPIRE', KEYS[1], ARGV[1])
if added > 0 and redis.call('EXISTS', KEYS[2]) == 1 then redis.call('HINCRBY', KEYS[2], 'ver', 1) end
return added
"#;

/// What a node copies of an ended, sold-out gate (mirror.rs): `{'no'}` if
/// it is not one (or holds more than ARGV[1] keys or offers), else
/// `{'yes', gen, ver, key count, keys' fields..., offered buyers...}`.
/// KEYS: meta, keys, offers. ARGV: most fields.
const MIRROR_LUA: &str = r#"
local m = redis.call('HMGET', KEYS[1], 'ready', 'status', 'reason', 'gen', 'ver')
if m[1] ~= '1' or m[2] ~= 'ended' or m[3] ~= 'sold_out' then return {'no'} end
local most = tonumber(ARGV[1])
if redis.call('HLEN', KEYS[2]) > most or redis.call('HLEN', KEYS[3]) > most then return {'no'} end
local keys = redis.call('HKEYS', KEYS[2])
local out = {'yes', m[4] or '', m[5] or '', tostring(#keys)}
for _, f in ipairs(keys) do out[#out + 1] = f end
for _, b in ipairs(redis.call('HKEYS', KEYS[3])) do out[#out + 1] = b end
return out
"#;

/// The gate's state for `converge`, read at one instant: generation, stock,
/// the number of pending reservations, the buyers hash's next scan cursor,
/// the pending reservations (field/value pairs) and some buyers' units
/// (name/units pairs): the next `HSCAN` step of the buyers hash, the buyers
/// named in ARGV and every buyer with a pending reservation. Never the whole
/// buyers hash: a deal with a million buyers would hold Redis for a second.
/// Empty if the gate is not built.
/// KEYS: meta, stock, buyers, keys, pending. ARGV: most pending reservations
/// read, the buyers hash's scan cursor, how many to scan, then buyers to read.
const SNAPSHOT_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'ready') ~= '1' then return {} end
local fields = redis.call('ZRANGE', KEYS[5], 0, -1)
if #fields > tonumber(ARGV[1]) then return {'busy'} end
local scan = redis.call('HSCAN', KEYS[3], ARGV[2], 'COUNT', ARGV[3])
local out = {redis.call('HGET', KEYS[1], 'gen') or '', redis.call('GET', KEYS[2]) or '0', tostring(#fields), scan[1]}
for _, f in ipairs(fields) do
  out[#out + 1] = f
  out[#out + 1] = redis.call('HGET', KEYS[4], f) or ''
end
local seen = {}
local found = scan[2]
for i = 1, #found, 2 do
  seen[found[i]] = true
  out[#out + 1] = found[i]
  out[#out + 1] = found[i + 1]
end
local function add(buyer)
  if buyer and not seen[buyer] then
    seen[buyer] = true
    out[#out + 1] = buyer
    out[#out + 1] = redis.call('HGET', KEYS[3], buyer) or '0'
  end
end
for i = 4, #ARGV do add(ARGV[i]) end
for _, f in ipairs(fields) do add(string.match(f, '^(.*)\n')) end
return out
"#;

/// Corrects the gate by what `converge` found, if it is still the same gate.
/// KEYS: meta, stock, buyers. ARGV: gen, stock delta, buyer/delta pairs.
const CORRECT_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'ready') ~= '1' or (redis.call('HGET', KEYS[1], 'gen') or '') ~= ARGV[1] then
  return 0
end
if tonumber(ARGV[2]) ~= 0 then redis.call('INCRBY', KEYS[2], ARGV[2]) end
for i = 3, #ARGV, 2 do
  if tonumber(redis.call('HINCRBY', KEYS[3], ARGV[i], ARGV[i + 1])) <= 0 then
    redis.call('HDEL', KEYS[3], ARGV[i])
  end
end
return 1
"#;

/// One purchase attempt as the admission script reads it.
#[derive(Debug)]
pub(super) struct Attempt {
    pub buyer: String,
    pub quantity: i32,
    /// The `keys` hash field of the attempt's [`ReservationKey`].
    pub field: String,
    pub request_hash: String,
}

/// Who holds a reservation: a buyer and the idempotency key of their request.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ReservationKey {
    pub buyer: String,
    pub idempotency_key: String,
}

impl ReservationKey {
    pub fn new(buyer: &str, idempotency_key: &str) -> Self {
        ReservationKey {
            buyer: buyer.to_string(),
            idempotency_key: idempotency_key.to_string(),
        }
    }

    /// The field of the `keys` hash and the `pending` set.
    fn field(&self) -> String {
        let mut field = String::with_capacity(self.buyer.len() + 1 + self.idempotency_key.len());
        field.push_str(&self.buyer);
        field.push('\n');
        field.push_str(&self.idempotency_key);
        field
    }

    /// An idempotency key has no newline (see `validate_idempotency_key`), so
    /// the last one separates the two.
    fn from_field(field: &str) -> Option<Self> {
        let (buyer, idempotency_key) = field.rsplit_once('\n')?;
        Some(ReservationKey::new(buyer, idempotency_key))
    }
}

/// What the gate holds for a (buyer, key) it has seen.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reservation {
    /// Units reserved and not yet settled: in flight, or its node died before
    /// the commit (the reconciler releases it after `reservation_timeout_secs`).
    Pending {
        quantity: i32,
        /// When the gate reserved them (ms since the epoch).
        reserved_at_ms: i64,
        /// The hash of the request that reserved them.
        request_hash: String,
    },
    /// Settled as an order. `None` when the gate's value is unreadable: the
    /// order store answers.
    Settled { order_id: Option<Uuid> },
}

impl Reservation {
    /// Reads a value of the `keys` hash: `o:<order id>` or `p:<qty>:<ms>:<hash>`
    /// (written by `ADMIT_LUA`).
    fn parse(value: &str) -> Option<Reservation> {
        if let Some(order) = value.strip_prefix("o:") {
            return Some(Reservation::Settled {
                order_id: order.parse().ok(),
            });
        }
        let mut parts = value.strip_prefix("p:")?.splitn(3, ':');
        let quantity = parts.next()?.parse().ok()?;
        let reserved_at_ms = parts.next()?.parse().ok()?;
        let request_hash = parts.next()?.to_string();
        Some(Reservation::Pending {
            quantity,
            reserved_at_ms,
            request_hash,
        })
    }

    /// The value of a settled key.
    fn settled(order_id: Uuid) -> String {
        format!("o:{order_id}")
    }
}

/// What a node copies of an ended, sold-out gate (`mirror.rs`).
pub(super) struct MirrorRead {
    pub stamp: Stamp,
    /// The (buyer, key) of every field of the `keys` hash.
    pub keys: Vec<ReservationKey>,
    /// Buyers with a waitlist offer.
    pub offered: Vec<String>,
}

/// What a copy of an ended, sold-out gate is checked by: the build a
/// rebuild writes (`gen`) and the count of scripts that added a key or an
/// offer since (`ver`). A gate that is no longer sold out has none.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct Stamp {
    gen: String,
    ver: String,
}

/// What the gate said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Units reserved: settle them.
    Admitted,
    /// This (buyer, key) was seen before.
    Repeat(Reservation),
    NotStarted,
    Ended,
    CapExceeded {
        held: i64,
    },
    SoldOut,
    /// The gate's keys are missing (never built, flushed): rebuild from Postgres.
    Missing,
}

impl Admission {
    /// Reads one attempt's line of `ADMIT_LUA`'s reply.
    fn from_line(line: &str) -> Admission {
        let mut parts = line.splitn(2, '\t');
        let (kind, value) = (parts.next(), parts.next());
        match kind {
            Some("ok") => Admission::Admitted,
            // An unreadable value: the order store decides, as for a settled key.
            Some("dup") => Admission::Repeat(
                value
                    .and_then(Reservation::parse)
                    .unwrap_or(Reservation::Settled { order_id: None }),
            ),
            Some("not_started") => Admission::NotStarted,
            Some("ended") => Admission::Ended,
            Some("cap_exceeded") => Admission::CapExceeded {
                held: value.and_then(|v| v.parse().ok()).unwrap_or(0),
            },
            Some("sold_out") => Admission::SoldOut,
            _ => Admission::Missing,
        }
    }
}

/// The gate's scripts on the node's Redis connection. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    /// The deployment's key prefix: keys are `<prefix>:deal:{<id>}:<what>`.
    prefix: String,
    redis: Redis,
    db: PgPool,
    admit: Script,
    release: Script,
    give_back: Script,
    clamp: Script,
    rebuild: Script,
    settle_existing: Script,
    snapshot: Script,
    correct: Script,
    grant: Script,
    mirror: Script,
    /// This node's copies of sold-out gates (`mirror.rs`).
    mirrors: Arc<Mirrors>,
    /// Test hook: extra time between a rebuild's Postgres read and its write.
    rebuild_delay: Duration,
    /// Attempts waiting for the admission script, sent together.
    admissions: Arc<Admissions>,
    /// Where `converge` goes on comparing each deal's buyers.
    cursors: Arc<std::sync::Mutex<HashMap<Uuid, BuyerCursor>>>,
}

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

async fn bounded<T>(call: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::Unavailable { what: "redis" }),
    }
}

/// `{prefix}:deal:{{{deal}}}:{what}`, written piece by piece: `format!` of
/// a UUID is a measurable share of a refusal's cost, and every attempt
/// names six keys.
fn deal_key(prefix: &str, deal: Uuid, what: &str) -> String {
    let mut buf = Uuid::encode_buffer();
    let deal = deal.hyphenated().encode_lower(&mut buf);
    let mut key = String::with_capacity(prefix.len() + deal.len() + what.len() + 9);
    key.push_str(prefix);
    key.push_str(":deal:{");
    key.push_str(deal);
    key.push_str("}:");
    key.push_str(what);
    key
}

impl Gate {
    /// One of the gate's keys of `deal`; the braces keep a deal's keys in one
    /// Redis Cluster slot.
    fn deal_key(&self, deal: Uuid, what: &str) -> String {
        deal_key(&self.prefix, deal, what)
    }

    /// The gate over `redis`, rebuilt from `db` when its keys are missing.
    /// `prefix` is the deployment's Redis key prefix (`redis.key_prefix`).
    pub fn new(redis: Redis, db: PgPool, prefix: &str) -> Self {
        Gate {
            prefix: prefix.to_string(),
            redis,
            db,
            admit: Script::new(ADMIT_LUA),
            release: Script::new(RELEASE_LUA),
            give_back: Script::new(RETURN_LUA),
            clamp: Script::new(CLAMP_LUA),
            rebuild: Script::new(REBUILD_LUA),
            settle_existing: Script::new(SETTLE_EXISTING_LUA),
            snapshot: Script::new(SNAPSHOT_LUA),
            correct: Script::new(CORRECT_LUA),
            grant: Script::new(GRANT_LUA),
            mirror: Script::new(MIRROR_LUA),
            mirrors: Arc::new(Mirrors::new(Duration::ZERO)),
            rebuild_delay: Duration::ZERO,
            admissions: Arc::new(Admissions::default()),
            cursors: Arc::default(),
        }
    }

    /// With a test hook: every rebuild waits `delay` between its Postgres
    /// read and its write (`commerce.test_rebuild_delay_ms`).
    pub fn with_rebuild_delay(mut self, delay: Duration) -> Self {
        self.rebuild_delay = delay;
        self
    }

    /// With copies of sold-out gates on this node, each trusted for `life`
    /// after a check (`commerce.sold_out_mirror_ms`; zero: none).
    pub fn with_sold_out_mirror(mut self, life: Duration) -> Self {
        self.mirrors = Arc::new(Mirrors::new(life));
        self
    }

    /// The attempts waiting for the admission script.
    pub(super) fn admissions(&self) -> &Admissions {
        &self.admissions
    }

    /// `SoldOut` if this node's copy of the gate of `deal` (it sold out)
    /// answers this attempt without Redis; `None`: ask [`Gate::admit`].
    pub(super) fn answer_from_copy(
        &self,
        deal: Uuid,
        buyer: &str,
        idempotency_key: &str,
    ) -> Option<Admission> {
        self.mirrors.answer(deal, buyer, idempotency_key)
    }

    /// This node's copies of sold-out gates.
    pub(super) fn mirrors(&self) -> &Mirrors {
        &self.mirrors
    }

    /// Attempts this node refused from its copy of a sold-out gate, without
    /// a Redis call.
    pub fn answered_by_node(&self) -> u64 {
        self.mirrors.answered()
    }

    /// What a node copies of the gate of `deal`, if it has ended sold out.
    pub(super) async fn mirror_read(&self, deal: Uuid) -> Result<Option<MirrorRead>> {
        let mut conn = self.redis.clone();
        let mut invocation = self.mirror.prepare_invoke();
        invocation
            .key(self.deal_key(deal, "meta"))
            .key(self.deal_key(deal, "keys"))
            .key(self.deal_key(deal, "offers"))
            .arg(MOST_FIELDS);
        let reply: Vec<String> = bounded(invocation.invoke_async(&mut conn)).await?;
        let mut reply = reply.into_iter();
        let (Some(yes), Some(gen), Some(ver), Some(count)) =
            (reply.next(), reply.next(), reply.next(), reply.next())
        else {
            return Ok(None);
        };
        let Ok(count) = count.parse::<usize>() else {
            return Ok(None);
        };
        if yes != "yes" {
            return Ok(None);
        }
        let mut fields: Vec<String> = reply.collect();
        if fields.len() < count {
            return Ok(None);
        }
        let offered = fields.split_off(count);
        Ok(Some(MirrorRead {
            stamp: Stamp { gen, ver },
            keys: fields
                .iter()
                .filter_map(|f| ReservationKey::from_field(f))
                .collect(),
            offered,
        }))
    }

    /// The stamp of the gate of `deal`, `None` unless it is built and has
    /// ended sold out (the only gate a node copies).
    pub(super) async fn mirror_stamp(&self, deal: Uuid) -> Result<Option<Stamp>> {
        let mut conn = self.redis.clone();
        let mut command = redis::cmd("HMGET");
        command
            .arg(self.deal_key(deal, "meta"))
            .arg(&["ready", "status", "reason", "gen", "ver"]);
        let m: Vec<Option<String>> = bounded(command.query_async(&mut conn)).await?;
        let mut m = m.into_iter();
        let (Some(ready), Some(status), Some(reason), Some(gen), Some(ver)) =
            (m.next(), m.next(), m.next(), m.next(), m.next())
        else {
            return Ok(None);
        };
        let sold_out = ready.as_deref() == Some("1")
            && status.as_deref() == Some("ended")
            && reason.as_deref() == Some("sold_out");
        Ok(sold_out.then(|| Stamp {
            gen: gen.unwrap_or_default(),
            ver: ver.unwrap_or_default(),
        }))
    }

    /// The Redis connection, for other shortcuts that share it (coupon flags).
    pub(crate) fn redis(&self) -> &Redis {
        &self.redis
    }

    /// Reserves `quantity` units for `key`, or says why not. The request's
    /// hash is kept with the reservation so a replay can tell a retry from a
    /// reused key.
    ///
    /// The attempts a node makes while its previous call is under way go to
    /// Redis together, one script call per deal ([`super::admission`]): one
    /// round trip and one script run for many buyers, each admitted as if
    /// alone, in arrival order.
    pub async fn admit(
        &self,
        deal: Uuid,
        key: &ReservationKey,
        quantity: i32,
        request_hash: &str,
    ) -> Result<Admission> {
        let attempt = Attempt {
            buyer: key.buyer.clone(),
            quantity,
            field: key.field(),
            request_hash: request_hash.to_string(),
        };
        let admission = self.admissions.admit(self, deal, attempt).await?;
        if admission == Admission::SoldOut {
            self.mirrors.saw_sold_out(self, deal);
        }
        Ok(admission)
    }

    /// Runs the admission script for attempts on one deal, in their order.
    pub(super) async fn admit_batch(
        &self,
        deal: Uuid,
        attempts: &[&Attempt],
        now_ms: i64,
    ) -> Result<Vec<Admission>> {
        let mut conn = self.redis.clone();
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(self.deal_key(deal, "meta"))
            .key(self.deal_key(deal, "stock"))
            .key(self.deal_key(deal, "buyers"))
            .key(self.deal_key(deal, "keys"))
            .key(self.deal_key(deal, "pending"))
            .key(self.deal_key(deal, "offers"))
            .arg(now_ms);
        for attempt in attempts {
            invocation
                .arg(&attempt.buyer)
                .arg(attempt.quantity)
                .arg(&attempt.field)
                .arg(&attempt.request_hash);
        }
        let reply: String = bounded(invocation.invoke_async(&mut conn)).await?;
        let replies: Vec<&str> = reply.split('\n').collect();
        if replies.len() != attempts.len() {
            return Err(Error::Internal(anyhow::anyhow!(
                "the admission script answered {} of {} attempts",
                replies.len(),
                attempts.len()
            )));
        }
        Ok(replies.into_iter().map(Admission::from_line).collect())
    }

    /// Marks reservations as settled orders.
    pub async fn confirm(&self, deal: Uuid, settled: &[(ReservationKey, Uuid)]) -> Result<()> {
        if settled.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.clone();
        let mut pipe = redis::pipe();
        let mut settle = redis::cmd("HSET");
        settle.arg(self.deal_key(deal, "keys"));
        let mut unpend = redis::cmd("ZREM");
        unpend.arg(self.deal_key(deal, "pending"));
        for (key, order_id) in settled {
            let field = key.field();
            settle.arg(&field).arg(Reservation::settled(*order_id));
            unpend.arg(field);
        }
        pipe.add_command(settle).ignore().add_command(unpend).ignore();
        bounded(pipe.query_async::<()>(&mut conn)).await?;
        Ok(())
    }

    /// Settles a key whose order already existed when this request's
    /// admission reserved units for it: those units go back.
    pub async fn settle_existing(
        &self,
        deal: Uuid,
        key: &ReservationKey,
        quantity: i32,
        order_id: Uuid,
    ) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut invocation = self.settle_existing.prepare_invoke();
        invocation
            .key(self.deal_key(deal, "stock"))
            .key(self.deal_key(deal, "buyers"))
            .key(self.deal_key(deal, "keys"))
            .key(self.deal_key(deal, "pending"))
            .key(self.deal_key(deal, "meta"))
            .arg(&key.buyer)
            .arg(quantity)
            .arg(key.field())
            .arg(Reservation::settled(order_id));
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Gives a pending reservation's units back.
    pub async fn release(&self, deal: Uuid, key: &ReservationKey, quantity: i32) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut invocation = self.release.prepare_invoke();
        invocation
            .key(self.deal_key(deal, "stock"))
            .key(self.deal_key(deal, "buyers"))
            .key(self.deal_key(deal, "keys"))
            .key(self.deal_key(deal, "pending"))
            .arg(&key.buyer)
            .arg(quantity)
            .arg(key.field());
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Gives a cancelled order's units back.
    pub async fn give_back(&self, deal: Uuid, buyer: &str, quantity: i32) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut invocation = self.give_back.prepare_invoke();
        invocation
            .key(self.deal_key(deal, "meta"))
            .key(self.deal_key(deal, "stock"))
            .key(self.deal_key(deal, "buyers"))
            .arg(buyer)
            .arg(quantity);
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Opens waitlist offers in the gate, in one round trip: each buyer may
    /// hold up to their ceiling of units of the sold-out deal (their units +
    /// the offer's). Postgres decides in the end; the rebuild restores open
    /// offers from it.
    ///
    /// If a buyer had no offer in the gate before, this returns only after
    /// the nodes' copies of the sold-out gate (`mirror.rs`) are past trusting
    /// a check made before the grant: the caller tells the buyer after it
    /// returns, so a buyer who heard of an offer is never refused from a copy.
    pub async fn grant_offers(&self, deal: Uuid, offers: &[(String, i32)]) -> Result<()> {
        if offers.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.clone();
        let mut invocation = self.grant.prepare_invoke();
        invocation
            .key(self.deal_key(deal, "offers"))
            .key(self.deal_key(deal, "meta"))
            .arg(86_400 * 2);
        for (buyer, ceiling) in offers {
            invocation.arg(buyer).arg(ceiling);
        }
        let added: i64 = bounded(invocation.invoke_async(&mut conn)).await?;
        if added > 0 && !self.mirrors.life().is_zero() {
            tokio::time::sleep(self.mirrors.life()).await;
        }
        Ok(())
    }

    /// Closes a waitlist offer in the gate (bought, passed, left, closed).
    pub async fn revoke_offer(&self, deal: Uuid, buyer: &str) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut command = redis::cmd("HDEL");
        command.arg(self.deal_key(deal, "offers")).arg(buyer);
        bounded(command.query_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Lowers the gate's stock to what Postgres has left, if it is above.
    pub async fn clamp(&self, deal: Uuid, remaining: i32) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut invocation = self.clamp.prepare_invoke();
        invocation.key(self.deal_key(deal, "stock")).arg(remaining);
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Closes the gate of an ended deal.
    pub async fn mark_ended(&self, deal: Uuid, reason: &str) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut command = redis::cmd("HSET");
        command
            .arg(self.deal_key(deal, "meta"))
            .arg("status")
            .arg("ended")
            .arg("reason")
            .arg(reason);
        bounded(command.query_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Builds the gate from Postgres: stock = quantity − sold, each buyer's
    /// units, each order's idempotency key. One node at a time per deal.
    #[tracing::instrument(skip(self))]
    pub async fn rebuild(&self, deal: Uuid) -> Result<()> {
        let mut conn = self.redis.clone();
        let lock = self.deal_key(deal, "rebuilding");
        let mut take = redis::cmd("SET");
        take.arg(&lock).arg("1").arg("NX").arg("PX").arg(5000);
        let acquired: Option<String> = bounded(take.query_async(&mut conn)).await?;
        if acquired.is_none() {
            // Another node is rebuilding; let it finish.
            tokio::time::sleep(Duration::from_millis(50)).await;
            return Ok(());
        }
        type Row = (
            i32,
            i32,
            i32,
            String,
            Option<String>,
            chrono::DateTime<chrono::Utc>,
            chrono::DateTime<chrono::Utc>,
        );
        let row: Option<Row> =
            sqlx::query_as(
                "select quantity, sold, per_buyer_cap, status, end_reason, starts_at, ends_at from deal where deal_id = $1",
            )
            .bind(deal)
            .fetch_optional(&self.db)
            .await?;
        let Some((quantity, sold, cap, status, reason, starts_at, ends_at)) = row else {
            let mut unlock = redis::cmd("DEL");
            unlock.arg(&lock);
            let _ = bounded(unlock.query_async::<i64>(&mut conn)).await;
            return Err(Error::NotFound("deal"));
        };
        let buyers: Vec<(String, i32)> =
            sqlx::query_as("select buyer_id, units from deal_buyer where deal_id = $1 and units > 0")
                .bind(deal)
                .fetch_all(&self.db)
                .await?;
        let orders: Vec<(String, String, Uuid)> = sqlx::query_as(
            "select buyer_id, idempotency_key, order_id from customer_order where deal_id = $1",
        )
        .bind(deal)
        .fetch_all(&self.db)
        .await?;
        let offers = {
            let mut conn = self.db.acquire().await?;
            crate::waitlist::gate_offers(&mut conn, deal).await?
        };
        let stock = if status == "ended" { 0 } else { quantity - sold };
        let ttl_secs = (ends_at - chrono::Utc::now()).num_seconds().max(0) + 86_400;
        if !self.rebuild_delay.is_zero() {
            tokio::time::sleep(self.rebuild_delay).await;
        }
        let mut invocation = self.rebuild.prepare_invoke();
        for what in [
            "meta",
            "stock",
            "buyers",
            "keys",
            "pending",
            "rebuilding",
            "offers",
        ] {
            invocation.key(self.deal_key(deal, what));
        }
        invocation
            .arg(ttl_secs)
            .arg(stock)
            .arg(Uuid::new_v4().simple().to_string())
            .arg(starts_at.timestamp_millis())
            .arg(ends_at.timestamp_millis())
            .arg(cap)
            .arg(status)
            .arg(reason.unwrap_or_default())
            .arg(buyers.len())
            .arg(offers.len());
        for (buyer, units) in &buyers {
            invocation.arg(buyer).arg(units);
        }
        for (buyer, ceiling) in &offers {
            invocation.arg(buyer).arg(ceiling);
        }
        for (buyer, key, order_id) in &orders {
            invocation
                .arg(ReservationKey::new(buyer, key).field())
                .arg(Reservation::settled(*order_id));
        }
        let applied: i64 = bounded(invocation.invoke_async(&mut conn)).await?;
        if applied == 0 {
            return Ok(());
        }
        tracing::info!(%deal, stock, "admission gate built from postgres");
        Ok(())
    }

    /// Reconciles the gate of every live deal with Postgres: a reservation
    /// older than `older_than` whose order exists is confirmed; one with no
    /// order (its node died before the commit, or the commit failed) is
    /// released; then the gate's units are brought to Postgres' truth
    /// ([`Gate::converge`]). One node per deal at a time.
    pub async fn reconcile(&self, older_than: Duration) -> Result<()> {
        let live: Vec<Uuid> =
            sqlx::query_scalar("select deal_id from deal where status <> 'ended' and starts_at <= now()")
                .fetch_all(&self.db)
                .await?;
        let older_than_ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
        // A deal that ended is no longer compared: forget where its buyers' comparison was.
        if let Ok(mut cursors) = self.cursors.lock() {
            cursors.retain(|deal, _| live.contains(deal));
        }
        for deal_id in live {
            if !self.try_lock(deal_id, "reconciling", 4000).await? {
                continue;
            }
            for (key, quantity) in self.stale_reservations(deal_id, older_than_ms).await? {
                let order: Option<Uuid> = sqlx::query_scalar(
                    "select order_id from customer_order where buyer_id = $1 and idempotency_key = $2",
                )
                .bind(&key.buyer)
                .bind(&key.idempotency_key)
                .fetch_optional(&self.db)
                .await?;
                match order {
                    Some(order_id) => self.confirm(deal_id, &[(key, order_id)]).await?,
                    None => {
                        tracing::info!(%deal_id, buyer = key.buyer, "releasing a reservation that was never settled");
                        self.release(deal_id, &key, quantity).await?;
                    }
                }
            }
            if let Err(e) = self.converge(deal_id).await {
                tracing::debug!(%deal_id, error = %e, "gate convergence deferred");
            }
        }
        Ok(())
    }

    /// Brings the gate of one deal to Postgres' truth, both ways: available
    /// units = quantity − sold − units of reservations not yet committed, and
    /// each buyer's units likewise. A gate that is not built is rebuilt.
    ///
    /// The gate's error is unchanged by correct operations (an admission
    /// moves units from stock to a reservation, a commit from a reservation
    /// to `sold`, a release back), so it is measured on one Redis snapshot
    /// and one Postgres snapshot taken after it, and corrected by a delta.
    /// If a commit landed between the two (the deal's `stock_version`
    /// moved), only the corrections that cannot oversell or refuse wrongly
    /// are applied (raise the stock, lower a buyer's units); the next tick
    /// finishes.
    ///
    /// The buyers are compared a slice per tick ([`CONVERGE_BUYERS_PER_TICK`]
    /// from the gate's hash and as many from `deal_buyer`, plus every buyer
    /// with a reservation in flight), so a tick costs Redis the same for a
    /// deal of ten buyers or of a million; the stock is compared every tick.
    pub async fn converge(&self, deal: Uuid) -> Result<()> {
        let before: Option<i64> = sqlx::query_scalar("select stock_version from deal where deal_id = $1")
            .bind(deal)
            .fetch_optional(&self.db)
            .await?;
        if before.is_none() {
            return Ok(());
        }
        let cursor = self
            .cursors
            .lock()
            .map(|c| c.get(&deal).cloned().unwrap_or_default())
            .unwrap_or_default();
        // The next buyers by name from Postgres, so that a buyer the gate
        // lost is found too (the hash scan only finds those it has).
        let from_postgres: Vec<String> = sqlx::query_scalar(
            "select buyer_id from deal_buyer where deal_id = $1 and buyer_id > $2 order by buyer_id limit $3",
        )
        .bind(deal)
        .bind(&cursor.postgres)
        .bind(CONVERGE_BUYERS_PER_TICK as i64)
        .fetch_all(&self.db)
        .await?;
        let mut conn = self.redis.clone();
        let mut invocation = self.snapshot.prepare_invoke();
        for what in ["meta", "stock", "buyers", "keys", "pending"] {
            invocation.key(self.deal_key(deal, what));
        }
        invocation
            .arg(CONVERGE_MAX_PENDING)
            .arg(&cursor.gate)
            .arg(CONVERGE_BUYERS_PER_TICK)
            .arg(&from_postgres);
        let reply: Vec<String> = bounded(invocation.invoke_async(&mut conn)).await?;
        let Some(snapshot) = Snapshot::parse(&reply) else {
            if reply.is_empty() {
                return self.rebuild(deal).await;
            }
            return Ok(()); // Too many reservations in flight: a quieter tick.
        };
        if let Ok(mut cursors) = self.cursors.lock() {
            let postgres = match from_postgres.last() {
                Some(last) if from_postgres.len() == CONVERGE_BUYERS_PER_TICK => last.clone(),
                _ => String::new(),
            };
            cursors.insert(
                deal,
                BuyerCursor {
                    gate: snapshot.next_scan.clone(),
                    postgres,
                },
            );
        }
        let (buyers, keys): (Vec<&str>, Vec<&str>) = snapshot
            .pending
            .iter()
            .map(|(k, _)| (k.buyer.as_str(), k.idempotency_key.as_str()))
            .unzip();
        let compared: Vec<&str> = snapshot.buyers.keys().map(String::as_str).collect();
        let mut tx = self.db.begin().await?;
        sqlx::query("set transaction isolation level repeatable read")
            .execute(&mut *tx)
            .await?;
        let Some((quantity, sold, status, version)): Option<(i32, i32, String, i64)> =
            sqlx::query_as("select quantity, sold, status, stock_version from deal where deal_id = $1")
                .bind(deal)
                .fetch_optional(&mut *tx)
                .await?
        else {
            return Ok(());
        };
        let committed: Vec<(String, String)> = sqlx::query_as(
            "select buyer_id, idempotency_key from customer_order
              where (buyer_id, idempotency_key) in (select * from unnest($1::text[], $2::text[]))",
        )
        .bind(&buyers)
        .bind(&keys)
        .fetch_all(&mut *tx)
        .await?;
        // Only the buyers the snapshot read: the drift is measured on them.
        let held: HashMap<String, i64> = sqlx::query_as::<_, (String, i32)>(
            "select buyer_id, units from deal_buyer where deal_id = $1 and buyer_id = any($2)",
        )
        .bind(deal)
        .bind(&compared)
        .fetch_all(&mut *tx)
        .await?
        .into_iter()
        .map(|(b, u)| (b, i64::from(u)))
        .collect();
        tx.commit().await?;
        if status == "ended" {
            return Ok(()); // The gate refuses by its status.
        }
        let committed: std::collections::HashSet<(String, String)> = committed.into_iter().collect();
        let uncommitted: Vec<(String, i64)> = snapshot
            .pending
            .iter()
            .filter(|(k, _)| !committed.contains(&(k.buyer.clone(), k.idempotency_key.clone())))
            .map(|(k, units)| (k.buyer.clone(), i64::from(*units)))
            .collect();
        let truth = Truth {
            quantity: i64::from(quantity),
            sold: i64::from(sold),
            held,
            uncommitted,
        };
        let quiet = before == Some(version);
        let drift = drift(&snapshot, &truth, quiet);
        if drift.is_empty() {
            return Ok(());
        }
        tracing::info!(%deal, stock = drift.stock, buyers = drift.buyers.len(), quiet, "admission gate corrected to postgres");
        metrics::counter!("hawker_gate_corrections_total").increment(1);
        let mut invocation = self.correct.prepare_invoke();
        for what in ["meta", "stock", "buyers"] {
            invocation.key(self.deal_key(deal, what));
        }
        invocation.arg(&snapshot.generation).arg(drift.stock);
        for (buyer, delta) in &drift.buyers {
            invocation.arg(buyer).arg(delta);
        }
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Pending reservations older than `older_than_ms`, with their units.
    /// Reads only the pending set (scored by reservation time), never the
    /// whole `keys` hash, which holds one field per order ever placed.
    async fn stale_reservations(&self, deal: Uuid, older_than_ms: i64) -> Result<Vec<(ReservationKey, i32)>> {
        let mut conn = self.redis.clone();
        let cutoff = chrono::Utc::now()
            .timestamp_millis()
            .saturating_sub(older_than_ms);
        let mut range = redis::cmd("ZRANGEBYSCORE");
        range
            .arg(self.deal_key(deal, "pending"))
            .arg("-inf")
            .arg(cutoff)
            .arg("LIMIT")
            .arg(0)
            .arg(1000);
        let fields: Vec<String> = bounded(range.query_async(&mut conn)).await?;
        if fields.is_empty() {
            return Ok(Vec::new());
        }
        let mut get = redis::cmd("HMGET");
        get.arg(self.deal_key(deal, "keys")).arg(&fields);
        let values: Vec<Option<String>> = bounded(get.query_async(&mut conn)).await?;
        let mut stale = Vec::new();
        let mut settled = Vec::new();
        for (field, value) in fields.into_iter().zip(values) {
            let pending = value.as_deref().is_some_and(|v| v.starts_with("p:"));
            if !pending {
                // Settled or released without leaving the set: drop it.
                settled.push(field);
                continue;
            }
            // An unreadable reservation stays for Postgres and the rebuild to settle.
            if let (Some(key), Some(Reservation::Pending { quantity, .. })) = (
                ReservationKey::from_field(&field),
                value.as_deref().and_then(Reservation::parse),
            ) {
                stale.push((key, quantity));
            }
        }
        if !settled.is_empty() {
            let mut drop = redis::cmd("ZREM");
            drop.arg(self.deal_key(deal, "pending")).arg(&settled);
            bounded(drop.query_async::<i64>(&mut conn)).await?;
        }
        Ok(stale)
    }

    /// Takes a short per-deal lock so one node reconciles at a time.
    async fn try_lock(&self, deal: Uuid, what: &str, ms: u64) -> Result<bool> {
        let mut conn = self.redis.clone();
        let mut take = redis::cmd("SET");
        take.arg(self.deal_key(deal, what))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(ms);
        let acquired: Option<String> = bounded(take.query_async(&mut conn)).await?;
        Ok(acquired.is_some())
    }
}

/// Most reservations in flight `converge` reads; past this it waits for a
/// quieter tick.
const CONVERGE_MAX_PENDING: usize = 5000;

/// Buyers `converge` compares per tick from each side: this many from the
/// gate's buyers hash (the next `HSCAN` step) and this many from Postgres'
/// `deal_buyer` rows (the next by name), besides those with reservations in
/// flight. A deal with more buyers is compared over several ticks, so one
/// tick never holds Redis for long, however popular the deal.
const CONVERGE_BUYERS_PER_TICK: usize = 500;

/// Where `converge` goes on comparing a deal's buyers next tick.
#[derive(Debug, Clone)]
struct BuyerCursor {
    /// The gate's buyers hash `HSCAN` cursor ("0": the start).
    gate: String,
    /// The last `deal_buyer` name compared (empty: the start).
    postgres: String,
}

impl Default for BuyerCursor {
    fn default() -> Self {
        BuyerCursor {
            gate: "0".to_string(),
            postgres: String::new(),
        }
    }
}

/// The gate of one deal at one instant (`SNAPSHOT_LUA`).
#[derive(Debug, Default)]
struct Snapshot {
    generation: String,
    stock: i64,
    /// Where the next scan of the buyers hash starts ("0": from the start).
    next_scan: String,
    /// Pending reservations and their units.
    pending: Vec<(ReservationKey, i32)>,
    /// The units of the buyers this snapshot read (not every buyer).
    buyers: HashMap<String, i64>,
}

impl Snapshot {
    /// `None` for an empty reply (not built) or `busy`.
    fn parse(reply: &[String]) -> Option<Snapshot> {
        let [generation, stock, count, next_scan, rest @ ..] = reply else {
            return None;
        };
        let count: usize = count.parse().ok()?;
        let (pending, buyers) = rest.split_at_checked(count.checked_mul(2)?)?;
        Some(Snapshot {
            generation: generation.clone(),
            stock: stock.parse().ok()?,
            next_scan: next_scan.clone(),
            pending: pending
                .chunks_exact(2)
                .filter_map(|pair| match Reservation::parse(&pair[1])? {
                    Reservation::Pending { quantity, .. } => {
                        Some((ReservationKey::from_field(&pair[0])?, quantity))
                    }
                    Reservation::Settled { .. } => None,
                })
                .collect(),
            buyers: buyers
                .chunks_exact(2)
                .filter_map(|pair| Some((pair[0].clone(), pair[1].parse().ok()?)))
                .collect(),
        })
    }
}

/// What Postgres says, for the same instant or just after the snapshot.
struct Truth {
    quantity: i64,
    sold: i64,
    /// Units each buyer holds in orders (`deal_buyer`).
    held: HashMap<String, i64>,
    /// Reservations of the snapshot with no order yet: (buyer, units).
    uncommitted: Vec<(String, i64)>,
}

/// Corrections to add to the gate.
#[derive(Debug, Default, PartialEq, Eq)]
struct Drift {
    stock: i64,
    /// Sorted by buyer.
    buyers: Vec<(String, i64)>,
}

impl Drift {
    fn is_empty(&self) -> bool {
        self.stock == 0 && self.buyers.is_empty()
    }
}

/// The corrections that bring `gate` to `truth`: available units = quantity
/// − sold − uncommitted reservations; each buyer's units = held +
/// uncommitted. When not `quiet` (a commit may have landed between the two
/// reads, counting units in `sold` that the snapshot still holds as
/// reservations), only the safe direction: raise the stock, lower a buyer.
fn drift(gate: &Snapshot, truth: &Truth, quiet: bool) -> Drift {
    let reserved: i64 = truth.uncommitted.iter().map(|(_, u)| u).sum();
    let available = truth.quantity - truth.sold - reserved;
    let mut stock = available - gate.stock;
    if !quiet && stock < 0 {
        stock = 0;
    }
    let mut want: HashMap<&str, i64> = truth.held.iter().map(|(b, u)| (b.as_str(), *u)).collect();
    for (buyer, units) in &truth.uncommitted {
        *want.entry(buyer.as_str()).or_default() += units;
    }
    let mut names: Vec<&str> = want
        .keys()
        .copied()
        .chain(gate.buyers.keys().map(String::as_str))
        .collect();
    names.sort_unstable();
    names.dedup();
    let buyers = names
        .into_iter()
        .filter_map(|buyer| {
            let delta = want.get(buyer).copied().unwrap_or(0) - gate.buyers.get(buyer).copied().unwrap_or(0);
            (delta < 0 || (quiet && delta > 0)).then(|| (buyer.to_string(), delta))
        })
        .collect();
    Drift { stock, buyers }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// One call of the admission script, against the real Redis: each
    /// attempt sees the stored keys and units (read up front, one command
    /// each) and the reservations of the attempts before it in the call.
    #[tokio::test]
    async fn one_admission_call_sees_stored_keys_and_units_and_its_own_reservations() {
        let target = hawker_redis::Target::from_settings("redis://127.0.0.1:6379", &[]).unwrap();
        let redis = Redis::connect_lazy(&target, Duration::from_secs(5)).unwrap();
        let db = PgPool::connect_lazy("postgres://postgres@127.0.0.1:5432/postgres").unwrap();
        let gate = Gate::new(redis.clone(), db, &format!("gate-test-{}", Uuid::now_v7()));
        let deal = Uuid::now_v7();
        let key = |what| gate.deal_key(deal, what);
        let mut conn = redis.clone();
        let settled = Uuid::now_v7();
        let setup = redis::pipe()
            .cmd("HSET")
            .arg(key("meta"))
            .arg(&["ready", "1", "status", "live", "reason", "", "starts_ms", "0"])
            .arg(&["ends_ms", "99999999999999", "cap", "2"])
            .cmd("SET")
            .arg(key("stock"))
            .arg(10)
            // B already holds one unit; C's key is settled.
            .cmd("HSET")
            .arg(key("buyers"))
            .arg(&["B", "1", "C", "1"])
            .cmd("HSET")
            .arg(key("keys"))
            .arg("C\nc1")
            .arg(Reservation::settled(settled))
            .query_async::<()>(&mut conn)
            .await;
        setup.unwrap();
        let attempt = |buyer: &str, quantity, k: &str, hash: &str| Attempt {
            buyer: buyer.into(),
            quantity,
            field: ReservationKey::new(buyer, k).field(),
            request_hash: hash.into(),
        };
        let attempts = [
            attempt("A", 1, "a1", "h1"),
            attempt("A", 1, "a2", "h2"),
            attempt("A", 1, "a3", "h3"),
            attempt("A", 1, "a1", "h1"),
            attempt("B", 2, "b1", "h4"),
            attempt("B", 1, "b2", "h5"),
            attempt("C", 1, "c1", "h6"),
        ];
        let refs: Vec<&Attempt> = attempts.iter().collect();
        let answers = gate.admit_batch(deal, &refs, 1_000).await.unwrap();
        let repeat_of_a1 = Admission::Repeat(Reservation::Pending {
            quantity: 1,
            reserved_at_ms: 1_000,
            request_hash: "h1".into(),
        });
        assert_eq!(
            answers,
            vec![
                Admission::Admitted,
                Admission::Admitted,
                Admission::CapExceeded { held: 2 },
                repeat_of_a1,
                Admission::CapExceeded { held: 1 },
                Admission::Admitted,
                Admission::Repeat(Reservation::Settled {
                    order_id: Some(settled)
                }),
            ]
        );
        let (stock, units, pending): (i64, HashMap<String, i64>, i64) = redis::pipe()
            .cmd("GET")
            .arg(key("stock"))
            .cmd("HGETALL")
            .arg(key("buyers"))
            .cmd("ZCARD")
            .arg(key("pending"))
            .query_async(&mut conn)
            .await
            .unwrap();
        let mut cleanup = redis::cmd("DEL");
        for what in ["meta", "stock", "buyers", "keys", "pending", "offers"] {
            cleanup.arg(key(what));
        }
        cleanup.query_async::<()>(&mut conn).await.unwrap();
        assert_eq!(stock, 7, "three units reserved");
        assert_eq!(
            units,
            HashMap::from([("A".into(), 2), ("B".into(), 2), ("C".into(), 1)])
        );
        assert_eq!(pending, 3);
    }

    #[test]
    fn a_deal_key_names_the_prefix_the_deal_in_braces_and_the_part() {
        let deal = Uuid::parse_str("01a240df-72d0-7015-9dcf-eb45f9795625").unwrap();
        assert_eq!(
            deal_key("hawker", deal, "stock"),
            format!("hawker:deal:{{{deal}}}:stock")
        );
        assert_eq!(ReservationKey::new("b", "k 1").field(), "b\nk 1");
    }

    fn reply(parts: &[&str]) -> Vec<String> {
        parts.iter().map(|p| p.to_string()).collect()
    }

    #[test]
    fn a_pending_reservation_reads_as_typed_values() {
        assert_eq!(
            Reservation::parse("p:3:1700000000123:abc123"),
            Some(Reservation::Pending {
                quantity: 3,
                reserved_at_ms: 1_700_000_000_123,
                request_hash: "abc123".into(),
            })
        );
        let order = Uuid::now_v7();
        assert_eq!(
            Reservation::parse(&Reservation::settled(order)),
            Some(Reservation::Settled {
                order_id: Some(order)
            })
        );
        assert_eq!(Reservation::parse("p:x:1:h"), None);
        assert_eq!(Reservation::parse("p:1:2"), None);
        assert_eq!(Reservation::parse("z:1"), None);
    }

    #[test]
    fn every_gate_reply_has_its_admission() {
        assert_eq!(Admission::from_line("ok"), Admission::Admitted);
        assert_eq!(Admission::from_line("sold_out"), Admission::SoldOut);
        assert_eq!(Admission::from_line("ended"), Admission::Ended);
        assert_eq!(Admission::from_line("not_started"), Admission::NotStarted);
        assert_eq!(
            Admission::from_line("cap_exceeded\t4"),
            Admission::CapExceeded { held: 4 }
        );
        assert_eq!(Admission::from_line("rebuild"), Admission::Missing);
        assert_eq!(Admission::from_line(""), Admission::Missing);
        assert_eq!(
            Admission::from_line("dup\tp:2:5:h"),
            Admission::Repeat(Reservation::Pending {
                quantity: 2,
                reserved_at_ms: 5,
                request_hash: "h".into(),
            })
        );
        assert_eq!(
            Admission::from_line(&format!("dup\t{}", Reservation::settled(Uuid::nil()))),
            Admission::Repeat(Reservation::Settled {
                order_id: Some(Uuid::nil())
            })
        );
        // Unreadable: the order store decides.
        assert_eq!(
            Admission::from_line("dup\tgarbage"),
            Admission::Repeat(Reservation::Settled { order_id: None })
        );
    }

    #[test]
    fn a_reservation_key_survives_its_field() {
        let key = ReservationKey::new("buyer-1", "key-1");
        assert_eq!(key.field(), "buyer-1\nkey-1");
        assert_eq!(ReservationKey::from_field(&key.field()), Some(key));
        assert_eq!(ReservationKey::from_field("no newline"), None);
    }

    fn snapshot(stock: i64, pending: &[(&str, &str, i32)], buyers: &[(&str, i64)]) -> Snapshot {
        Snapshot {
            generation: "g".into(),
            stock,
            next_scan: "0".into(),
            pending: pending
                .iter()
                .map(|(b, k, q)| (ReservationKey::new(b, k), *q))
                .collect(),
            buyers: buyers.iter().map(|(b, u)| (b.to_string(), *u)).collect(),
        }
    }

    fn truth(quantity: i64, sold: i64, held: &[(&str, i64)], uncommitted: &[(&str, i64)]) -> Truth {
        Truth {
            quantity,
            sold,
            held: held.iter().map(|(b, u)| (b.to_string(), *u)).collect(),
            uncommitted: uncommitted.iter().map(|(b, u)| (b.to_string(), *u)).collect(),
        }
    }

    #[test]
    fn a_gate_that_matches_postgres_needs_nothing() {
        let gate = snapshot(7, &[("a", "k", 1)], &[("a", 2), ("b", 1)]);
        let pg = truth(10, 2, &[("a", 1), ("b", 1)], &[("a", 1)]);
        assert!(drift(&gate, &pg, true).is_empty());
        assert!(drift(&gate, &pg, false).is_empty());
    }

    #[test]
    fn stranded_units_come_back_and_a_high_gate_comes_down_when_quiet() {
        // 97 units stranded: the gate says 0 left where Postgres has 97.
        let gate = snapshot(0, &[], &[("a", 3)]);
        let pg = truth(5000, 4903, &[("a", 1)], &[]);
        let fix = drift(&gate, &pg, true);
        assert_eq!(fix.stock, 97);
        assert_eq!(fix.buyers, vec![("a".to_string(), -2)]);
        // Too high (a commit the gate never saw): lowered only when quiet.
        let gate = snapshot(10, &[], &[]);
        let pg = truth(10, 4, &[("b", 4)], &[]);
        assert_eq!(
            drift(&gate, &pg, true),
            Drift {
                stock: -4,
                buyers: vec![("b".into(), 4)]
            }
        );
        assert!(drift(&gate, &pg, false).is_empty());
    }

    #[test]
    fn while_commits_land_only_safe_corrections_are_made() {
        // Not quiet: raise the stock, lower a buyer; never the other way.
        let gate = snapshot(1, &[("a", "k", 2)], &[("a", 5), ("c", 0)]);
        let pg = truth(10, 3, &[("a", 1), ("c", 2)], &[("a", 2)]);
        assert_eq!(
            drift(&gate, &pg, false),
            Drift {
                stock: 4,
                buyers: vec![("a".into(), -2)]
            }
        );
    }

    #[test]
    fn a_snapshot_reads_its_reply() {
        let key = ReservationKey::new("a", "k").field();
        let answer = reply(&["gen", "5", "2", "17", &key, "p:2:1:h", "b\nk", "o:x", "a", "3"]);
        let parsed = Snapshot::parse(&answer).expect("parses");
        assert_eq!(parsed.generation, "gen");
        assert_eq!(parsed.stock, 5);
        assert_eq!(parsed.next_scan, "17");
        assert_eq!(parsed.pending, vec![(ReservationKey::new("a", "k"), 2)]);
        assert_eq!(parsed.buyers.get("a"), Some(&3));
        assert!(Snapshot::parse(&[]).is_none());
        assert!(Snapshot::parse(&reply_of_busy()).is_none());
        assert!(Snapshot::parse(&reply(&["g", "1", "9"])).is_none());
        assert!(Snapshot::parse(&reply(&["g", "1", "9", "0"])).is_none());
    }

    fn reply_of_busy() -> Vec<String> {
        vec!["busy".to_string()]
    }
}
