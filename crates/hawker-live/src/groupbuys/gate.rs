//! The join gate in Redis: one Lua call per join attempt refuses an ended
//! group buy, a buyer over the cap, a join past the stock and a repeated
//! idempotency key without Postgres, and reserves units for the rest.
//! Postgres decides in the end: each batch checks the stock and the cap
//! again under the group buy's row lock ([`super::joining`]), so a gate that
//! says too much only costs a refusal from the batch, never an oversell.
//!
//! Keys (the `{<id>}` hash tag keeps a group buy's keys in one cluster slot):
//! - `<prefix>:groupbuy:{<id>}:gate` hash: `ready`, `status`, `ends_ms`, `cap`,
//!   `stock` (units left to join), `b:<buyer>` (units reserved or joined),
//!   `k:<buyer>\n<key>` → `p:<qty>:<ms>:<hash>` (reserved, batch pending) or
//!   `s:<qty>:<hash>` (joined);
//! - `<prefix>:groupbuy:{<id>}:pending` sorted set of reserved fields, by time.
//!
//! When the keys are missing (Redis flushed or restarted) the gate is
//! rebuilt from Postgres; reservations a node never settled (it died) are
//! released by [`reconcile`] after [`STALE_AFTER_MS`].

use std::time::Duration;

use redis::Script;
use uuid::Uuid;

use crate::{Error, Live, Result};

const ADMIT_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'ready') ~= '1' then return {'rebuild'} end
local existing = redis.call('HGET', KEYS[1], 'k:' .. ARGV[3])
if existing then return {'dup', existing} end
local now = tonumber(ARGV[5])
if redis.call('HGET', KEYS[1], 'status') ~= 'running' then return {'ended'} end
if now >= tonumber(redis.call('HGET', KEYS[1], 'ends_ms')) then return {'ended'} end
local q = tonumber(ARGV[2])
local units = tonumber(redis.call('HGET', KEYS[1], 'b:' .. ARGV[1]) or '0')
local cap = redis.call('HGET', KEYS[1], 'cap')
if units + q > tonumber(cap) then return {'cap_exceeded', tostring(units), cap} end
if tonumber(redis.call('HGET', KEYS[1], 'stock')) < q then return {'sold_out'} end
redis.call('HINCRBY', KEYS[1], 'stock', -q)
redis.call('HINCRBY', KEYS[1], 'b:' .. ARGV[1], q)
redis.call('HSET', KEYS[1], 'k:' .. ARGV[3], 'p:' .. q .. ':' .. ARGV[5] .. ':' .. ARGV[4])
redis.call('ZADD', KEYS[2], ARGV[5], ARGV[3])
return {'ok'}
"#;

/// A reservation that became a join, or the retry of a join Postgres already
/// held (`replay`): settled.
///
/// The gate's `stock` counts a committed join exactly once, either as its
/// reservation (the `p:` field this script turns into `s:`) or through
/// Postgres' own figure ([`rebuild`], [`clamp`]), never both:
/// - a field the gate no longer holds (rebuilt meanwhile, or released by the
///   reconciler before the commit) takes no units here: the clamp that
///   follows every batch lowers `stock` to what Postgres has left, which
///   counts this join. Taking them here too counted it twice whenever a
///   later batch's clamp came first (the gate then refused buyers for units
///   Postgres still had);
/// - a replay's reservation was made for units an earlier commit already
///   took: they go back to `stock` (the clamp counts that commit), the
///   buyer's units stay (the buyer does hold them).
///
/// A gate that says more than Postgres only costs a refusal from the batch,
/// and the next clamp corrects it; one that says less refuses buyers wrongly.
/// KEYS: gate, pending. ARGV: buyer, qty, field, hash, `join` or `replay`.
const CONFIRM_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'ready') ~= '1' then return 0 end
local v = redis.call('HGET', KEYS[1], 'k:' .. ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[3])
if v and string.sub(v, 1, 2) == 's:' then return 0 end
if not v then
  redis.call('HINCRBY', KEYS[1], 'b:' .. ARGV[1], ARGV[2])
elseif ARGV[5] == 'replay' then
  redis.call('HINCRBY', KEYS[1], 'stock', ARGV[2])
end
redis.call('HSET', KEYS[1], 'k:' .. ARGV[3], 's:' .. ARGV[2] .. ':' .. ARGV[4])
return 1
"#;

/// A reservation the batch refused (or that was never settled) gives its units back.
/// KEYS: gate, pending. ARGV: buyer, qty, field.
const RELEASE_LUA: &str = r#"
local v = redis.call('HGET', KEYS[1], 'k:' .. ARGV[3])
if not v or string.sub(v, 1, 2) ~= 'p:' then return 0 end
redis.call('HDEL', KEYS[1], 'k:' .. ARGV[3])
redis.call('ZREM', KEYS[2], ARGV[3])
redis.call('HINCRBY', KEYS[1], 'stock', ARGV[2])
redis.call('HINCRBY', KEYS[1], 'b:' .. ARGV[1], -tonumber(ARGV[2]))
return 1
"#;

/// The gate never offers more than Postgres has left.
const CLAMP_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'ready') ~= '1' then return 0 end
if tonumber(redis.call('HGET', KEYS[1], 'stock')) > tonumber(ARGV[1]) then
  redis.call('HSET', KEYS[1], 'stock', ARGV[1])
end
return 1
"#;

/// Builds the gate from Postgres unless another node did.
/// KEYS: gate, pending. ARGV: ttl, status, ends_ms, cap, stock, buyer count,
/// buyer/units pairs, then field/value pairs of joins.
const REBUILD_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'ready') == '1' then return 0 end
redis.call('DEL', KEYS[1], KEYS[2])
redis.call('HSET', KEYS[1], 'status', ARGV[2], 'ends_ms', ARGV[3], 'cap', ARGV[4], 'stock', ARGV[5])
local i = 7
for _ = 1, tonumber(ARGV[6]) do
  redis.call('HSET', KEYS[1], 'b:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
while i < #ARGV do
  redis.call('HSET', KEYS[1], 'k:' .. ARGV[i], ARGV[i + 1])
  i = i + 2
end
redis.call('HSET', KEYS[1], 'ready', '1')
redis.call('EXPIRE', KEYS[1], ARGV[1])
redis.call('EXPIRE', KEYS[2], ARGV[1])
return 1
"#;

/// Reservations older than this with no join in Postgres are released.
pub const STALE_AFTER_MS: i64 = 10_000;
const REDIS_TIMEOUT: Duration = Duration::from_secs(2);
/// The gate's keys outlive the countdown by a day.
const TTL_AFTER_END_SECS: i64 = 86_400;

/// What the gate answered.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    /// Units reserved: hand the join to the batch.
    Reserved,
    /// The same (buyer, key) was seen: joined (`Some(qty, hash)`) or still pending.
    Repeat {
        joined: Option<(i32, String)>,
    },
    Ended,
    SoldOut,
    /// The buyer already holds this many units (`held`) of `cap`.
    CapExceeded {
        held: i32,
        cap: i32,
    },
}

fn key(live: &Live, id: Uuid, what: &str) -> String {
    format!("{}:groupbuy:{{{id}}}:{what}", live.key_prefix())
}

/// `buyer\nkey`: the gate's name of one join request.
pub(crate) fn field(buyer: &str, idempotency_key: &str) -> String {
    format!("{buyer}\n{idempotency_key}")
}

async fn bounded<T>(f: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, f).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => {
            tracing::debug!(error = %e, "group buy gate");
            Err(Error::Unavailable { what: "redis" })
        }
        Err(_) => Err(Error::Unavailable { what: "redis" }),
    }
}

/// Asks the gate to reserve `quantity` for `buyer`; rebuilds it first when missing.
pub(crate) async fn admit(
    live: &Live,
    id: Uuid,
    buyer: &str,
    idempotency_key: &str,
    quantity: i32,
    hash: &str,
) -> Result<Admission> {
    static SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(ADMIT_LUA));
    for _ in 0..3 {
        let mut conn = live.redis();
        let now = chrono::Utc::now().timestamp_millis();
        let mut invocation = SCRIPT.prepare_invoke();
        invocation
            .key(key(live, id, "gate"))
            .key(key(live, id, "pending"))
            .arg(buyer)
            .arg(quantity)
            .arg(field(buyer, idempotency_key))
            .arg(hash)
            .arg(now);
        let reply: Vec<String> = bounded(invocation.invoke_async(&mut conn)).await?;
        match reply.first().map(String::as_str) {
            Some("ok") => return Ok(Admission::Reserved),
            Some("ended") => return Ok(Admission::Ended),
            Some("sold_out") => return Ok(Admission::SoldOut),
            Some("cap_exceeded") => {
                let number = |i: usize| reply.get(i).and_then(|v| v.parse().ok()).unwrap_or(0);
                return Ok(Admission::CapExceeded {
                    held: number(1),
                    cap: number(2),
                });
            }
            Some("dup") => {
                let value = reply.get(1).cloned().unwrap_or_default();
                let joined = value.strip_prefix("s:").and_then(|rest| {
                    let (qty, hash) = rest.split_once(':')?;
                    Some((qty.parse().ok()?, hash.to_string()))
                });
                return Ok(Admission::Repeat { joined });
            }
            _ => rebuild(live, id).await?,
        }
    }
    Err(Error::Unavailable {
        what: "the group buy's gate",
    })
}

/// One Lua call on the gate's two keys.
async fn call(live: &Live, id: Uuid, script: &Script, args: &[String]) -> Result<i64> {
    let mut conn = live.redis();
    let mut invocation = script.prepare_invoke();
    invocation
        .key(key(live, id, "gate"))
        .key(key(live, id, "pending"));
    for a in args {
        invocation.arg(a);
    }
    bounded(invocation.invoke_async(&mut conn)).await
}

/// How a join came to be in Postgres, for [`confirm`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Settled {
    /// This reservation's batch committed the join.
    Joined,
    /// The join was committed before (a retry, or a reservation the
    /// reconciler finds joined): this reservation's units go back to the
    /// stock, which Postgres' figure counts.
    Replay,
}

/// The join is in Postgres.
pub(crate) async fn confirm(
    live: &Live,
    id: Uuid,
    buyer: &str,
    idempotency_key: &str,
    quantity: i32,
    hash: &str,
    settled: Settled,
) -> Result<()> {
    static SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(CONFIRM_LUA));
    let f = field(buyer, idempotency_key);
    let mode = match settled {
        Settled::Joined => "join",
        Settled::Replay => "replay",
    };
    call(
        live,
        id,
        &SCRIPT,
        &[
            buyer.to_string(),
            quantity.to_string(),
            f,
            hash.to_string(),
            mode.to_string(),
        ],
    )
    .await?;
    Ok(())
}

/// The batch refused this join (or it was never settled).
pub(crate) async fn release(
    live: &Live,
    id: Uuid,
    buyer: &str,
    idempotency_key: &str,
    quantity: i32,
) -> Result<()> {
    static SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(RELEASE_LUA));
    let f = field(buyer, idempotency_key);
    call(live, id, &SCRIPT, &[buyer.to_string(), quantity.to_string(), f]).await?;
    Ok(())
}

/// After a batch: the gate offers at most what Postgres has left.
pub(crate) async fn clamp(live: &Live, id: Uuid, left: i32) -> Result<()> {
    static SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(CLAMP_LUA));
    call(live, id, &SCRIPT, &[left.to_string()]).await?;
    Ok(())
}

/// The group buy is over: every later join is refused `group_buy_ended`.
pub(crate) async fn mark_ended(live: &Live, id: Uuid) -> Result<()> {
    let mut conn = live.redis();
    let mut cmd = redis::cmd("HSET");
    cmd.arg(key(live, id, "gate")).arg("status").arg("ended");
    let _: i64 = bounded(cmd.query_async(&mut conn)).await?;
    Ok(())
}

/// Builds the gate from Postgres: stock = stock − units joined, each
/// buyer's units, each join's key.
pub(crate) async fn rebuild(live: &Live, id: Uuid) -> Result<()> {
    static SCRIPT: std::sync::LazyLock<Script> = std::sync::LazyLock::new(|| Script::new(REBUILD_LUA));
    type Row = (String, chrono::DateTime<chrono::Utc>, i32, i32, i32);
    // One snapshot for the three reads: the units left, each buyer's units
    // and the joins' keys then agree (read one by one, a batch committing
    // between them left a buyer's units short of the joins the gate knew).
    let mut tx = live.db().begin().await?;
    sqlx::query("set transaction isolation level repeatable read, read only")
        .execute(&mut *tx)
        .await?;
    let row: Option<Row> = sqlx::query_as(
        "select status, ends_at, per_buyer_cap, stock, units from group_buy where group_buy_id = $1",
    )
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((status, ends_at, cap, stock, units)) = row else {
        return Err(Error::NotFound("group buy"));
    };
    let buyers: Vec<(String, i32)> =
        sqlx::query_as("select buyer_id, units from group_buy_participant where group_buy_id = $1")
            .bind(id)
            .fetch_all(&mut *tx)
            .await?;
    let joins: Vec<(String, String, i32, String)> = sqlx::query_as(
        "select buyer_id, idempotency_key, quantity, request_hash from group_buy_join where group_buy_id = $1",
    )
    .bind(id)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let ttl = (ends_at - chrono::Utc::now()).num_seconds().max(0) + TTL_AFTER_END_SECS;
    let mut conn = live.redis();
    let mut invocation = SCRIPT.prepare_invoke();
    invocation
        .key(key(live, id, "gate"))
        .key(key(live, id, "pending"))
        .arg(ttl)
        .arg(if status == "running" { "running" } else { "ended" })
        .arg(ends_at.timestamp_millis())
        .arg(cap)
        .arg(stock - units)
        .arg(buyers.len());
    for (buyer, units) in &buyers {
        invocation.arg(buyer).arg(units);
    }
    for (buyer, k, qty, hash) in &joins {
        invocation.arg(field(buyer, k)).arg(format!("s:{qty}:{hash}"));
    }
    let built: i64 = bounded(invocation.invoke_async(&mut conn)).await?;
    if built == 1 {
        tracing::info!(group_buy_id = %id, left = stock - units, "group buy gate built from postgres");
    }
    Ok(())
}

/// Releases the reservations of `id` older than [`STALE_AFTER_MS`] that no
/// join in Postgres holds (their node died before the batch), and settles
/// those it does (then lowers the gate to what Postgres has left).
pub(crate) async fn reconcile(live: &Live, id: Uuid) -> Result<()> {
    let mut conn = live.redis();
    let before = chrono::Utc::now().timestamp_millis() - STALE_AFTER_MS;
    let mut cmd = redis::cmd("ZRANGEBYSCORE");
    cmd.arg(key(live, id, "pending"))
        .arg("-inf")
        .arg(before)
        .arg("LIMIT")
        .arg(0)
        .arg(500);
    let stale: Vec<String> = bounded(cmd.query_async(&mut conn)).await?;
    let mut settled_any = false;
    for f in stale {
        let Some((buyer, k)) = f.split_once('\n') else {
            continue;
        };
        let mut get = redis::cmd("HGET");
        get.arg(key(live, id, "gate")).arg(format!("k:{f}"));
        let value: Option<String> = bounded(get.query_async(&mut conn)).await?;
        let Some(quantity) = value
            .as_deref()
            .and_then(|v| v.strip_prefix("p:"))
            .and_then(|v| v.split(':').next())
            .and_then(|q| q.parse::<i32>().ok())
        else {
            continue;
        };
        let joined: Option<(i32, String)> = sqlx::query_as(
            "select quantity, request_hash from group_buy_join
              where group_buy_id = $1 and buyer_id = $2 and idempotency_key = $3",
        )
        .bind(id)
        .bind(buyer)
        .bind(k)
        .fetch_optional(live.db())
        .await?;
        match joined {
            // Whether this reservation is the one that committed (its batch
            // timed out) or a retry's for a join committed before, the
            // reservation's units go back and Postgres' figure below counts
            // the join: the gate can at most say more, never less.
            Some((qty, hash)) => {
                confirm(live, id, buyer, k, qty, &hash, Settled::Replay).await?;
                settled_any = true;
            }
            None => {
                tracing::info!(group_buy_id = %id, buyer, "releasing a join reservation that was never settled");
                release(live, id, buyer, k, quantity).await?;
            }
        }
    }
    if settled_any {
        let left: Option<i32> =
            sqlx::query_scalar("select stock - units from group_buy where group_buy_id = $1")
                .bind(id)
                .fetch_optional(live.db())
                .await?;
        if let Some(left) = left {
            clamp(live, id, left).await?;
        }
    }
    Ok(())
}
