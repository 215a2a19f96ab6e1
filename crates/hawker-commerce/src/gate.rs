//! The admission gate: one Redis Lua script per purchase attempt that
//! rejects sold-out, over-cap, early, late and repeated requests without
//! touching Postgres, and reserves units for the rest.
//!
//! Keys (the `{deal}` hash tag keeps a deal's keys in one cluster slot):
//! - `hawker:deal:{id}:meta`   hash: `ready`, `starts_ms`, `ends_ms`, `cap`, `status`
//! - `hawker:deal:{id}:stock`  units the gate may still hand out
//! - `hawker:deal:{id}:buyers` hash: buyer → units reserved or bought
//! - `hawker:deal:{id}:pending` sorted set: fields still reserved, scored by reservation time (ms)
//! - `hawker:deal:{id}:keys`   hash: `buyer\nkey` → `o:<order id>` (settled) or
//!   `p:<qty>:<ms>:<hash>` (reserved, settlement pending)
//!
//! The gate may be wrong (Redis flushed, restarted, a node died between the
//! reservation and the commit); it is rebuilt from Postgres when its keys are
//! missing, clamped to Postgres after every batch, and stale reservations are
//! released by the reconciler. Postgres constraints decide in the end.

use std::collections::HashMap;
use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::Script;
use sqlx::PgPool;
use uuid::Uuid;

use hawker_core::error::{Error, Result};

const ADMIT_LUA: &str = r#"
if redis.call('HGET', KEYS[1], 'ready') ~= '1' then return {'rebuild'} end
local existing = redis.call('HGET', KEYS[4], ARGV[3])
if existing then return {'dup', existing} end
local now = tonumber(ARGV[5])
if redis.call('HGET', KEYS[1], 'status') == 'ended' then
  if redis.call('HGET', KEYS[1], 'reason') == 'sold_out' then return {'sold_out'} end
  return {'ended'}
end
if now >= tonumber(redis.call('HGET', KEYS[1], 'ends_ms')) then return {'ended'} end
if now < tonumber(redis.call('HGET', KEYS[1], 'starts_ms')) then return {'not_started'} end
local q = tonumber(ARGV[2])
local units = tonumber(redis.call('HGET', KEYS[3], ARGV[1]) or '0')
if units + q > tonumber(redis.call('HGET', KEYS[1], 'cap')) then return {'cap_exceeded', tostring(units)} end
if tonumber(redis.call('GET', KEYS[2]) or '0') < q then return {'sold_out'} end
redis.call('DECRBY', KEYS[2], q)
redis.call('HINCRBY', KEYS[3], ARGV[1], q)
redis.call('HSET', KEYS[4], ARGV[3], 'p:' .. q .. ':' .. ARGV[5] .. ':' .. ARGV[4])
redis.call('ZADD', KEYS[5], ARGV[5], ARGV[3])
return {'ok'}
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

/// What the gate said.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Admission {
    Admitted,
    /// This (buyer, key) was seen before: `o:<order>` or `p:<qty>:<ms>:<hash>`.
    Repeat(String),
    NotStarted,
    Ended,
    CapExceeded {
        held: i64,
    },
    SoldOut,
    /// The gate's keys are missing (never built, flushed): rebuild from Postgres.
    Missing,
}

#[derive(Clone)]
pub struct Gate {
    redis: ConnectionManager,
    db: PgPool,
    admit: Script,
    release: Script,
    give_back: Script,
    clamp: Script,
}

fn key(deal: Uuid, what: &str) -> String {
    format!("hawker:deal:{{{deal}}}:{what}")
}

/// The field of a (buyer, idempotency key) pair.
pub fn key_field(buyer: &str, idempotency_key: &str) -> String {
    format!("{buyer}\n{idempotency_key}")
}

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

async fn bounded<T>(call: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::Unavailable { what: "redis" }),
    }
}

impl Gate {
    pub fn new(redis: ConnectionManager, db: PgPool) -> Self {
        Gate {
            redis,
            db,
            admit: Script::new(ADMIT_LUA),
            release: Script::new(RELEASE_LUA),
            give_back: Script::new(RETURN_LUA),
            clamp: Script::new(CLAMP_LUA),
        }
    }

    /// The Redis connection, for other shortcuts that share it (coupon flags).
    pub(crate) fn redis(&self) -> &ConnectionManager {
        &self.redis
    }

    pub async fn admit(
        &self,
        deal: Uuid,
        buyer: &str,
        quantity: i32,
        field: &str,
        request_hash: &str,
    ) -> Result<Admission> {
        let mut conn = self.redis.clone();
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(key(deal, "meta"))
            .key(key(deal, "stock"))
            .key(key(deal, "buyers"))
            .key(key(deal, "keys"))
            .key(key(deal, "pending"))
            .arg(buyer)
            .arg(quantity)
            .arg(field)
            .arg(request_hash)
            .arg(chrono::Utc::now().timestamp_millis());
        let reply: Vec<String> = bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(match reply.first().map(String::as_str) {
            Some("ok") => Admission::Admitted,
            Some("dup") => Admission::Repeat(reply.get(1).cloned().unwrap_or_default()),
            Some("not_started") => Admission::NotStarted,
            Some("ended") => Admission::Ended,
            Some("cap_exceeded") => Admission::CapExceeded {
                held: reply.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
            },
            Some("sold_out") => Admission::SoldOut,
            _ => Admission::Missing,
        })
    }

    /// Marks reservations as settled orders.
    pub async fn confirm(&self, deal: Uuid, settled: &[(String, Uuid)]) -> Result<()> {
        if settled.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.clone();
        let mut pipe = redis::pipe();
        let mut settle = redis::cmd("HSET");
        settle.arg(key(deal, "keys"));
        let mut unpend = redis::cmd("ZREM");
        unpend.arg(key(deal, "pending"));
        for (field, order_id) in settled {
            settle.arg(field).arg(format!("o:{order_id}"));
            unpend.arg(field);
        }
        pipe.add_command(settle).ignore().add_command(unpend).ignore();
        bounded(pipe.query_async::<()>(&mut conn)).await?;
        Ok(())
    }

    /// Gives a pending reservation's units back.
    pub async fn release(&self, deal: Uuid, buyer: &str, quantity: i32, field: &str) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut invocation = self.release.prepare_invoke();
        invocation
            .key(key(deal, "stock"))
            .key(key(deal, "buyers"))
            .key(key(deal, "keys"))
            .key(key(deal, "pending"))
            .arg(buyer)
            .arg(quantity)
            .arg(field);
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Gives a cancelled order's units back.
    pub async fn give_back(&self, deal: Uuid, buyer: &str, quantity: i32) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut invocation = self.give_back.prepare_invoke();
        invocation
            .key(key(deal, "meta"))
            .key(key(deal, "stock"))
            .key(key(deal, "buyers"))
            .arg(buyer)
            .arg(quantity);
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Lowers the gate's stock to what Postgres has left, if it is above.
    pub async fn clamp(&self, deal: Uuid, remaining: i32) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut invocation = self.clamp.prepare_invoke();
        invocation.key(key(deal, "stock")).arg(remaining);
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Closes the gate of an ended deal.
    pub async fn mark_ended(&self, deal: Uuid, reason: &str) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut command = redis::cmd("HSET");
        command
            .arg(key(deal, "meta"))
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
        let lock = key(deal, "rebuilding");
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
        let stock = if status == "ended" { 0 } else { quantity - sold };
        let ttl_secs = (ends_at - chrono::Utc::now()).num_seconds().max(0) + 86_400;
        let mut pipe = redis::pipe();
        pipe.atomic();
        pipe.del(&[
            key(deal, "meta"),
            key(deal, "stock"),
            key(deal, "buyers"),
            key(deal, "keys"),
            key(deal, "pending"),
        ]);
        pipe.set(key(deal, "stock"), stock);
        if !buyers.is_empty() {
            let pairs: Vec<(String, i32)> = buyers;
            pipe.hset_multiple(key(deal, "buyers"), &pairs);
        }
        if !orders.is_empty() {
            let pairs: Vec<(String, String)> = orders
                .into_iter()
                .map(|(b, k, o)| (key_field(&b, &k), format!("o:{o}")))
                .collect();
            pipe.hset_multiple(key(deal, "keys"), &pairs);
        }
        let meta: HashMap<&str, String> = HashMap::from([
            ("starts_ms", starts_at.timestamp_millis().to_string()),
            ("ends_ms", ends_at.timestamp_millis().to_string()),
            ("cap", cap.to_string()),
            ("status", status),
            ("reason", reason.unwrap_or_default()),
            ("ready", "1".to_string()),
        ]);
        let meta: Vec<(&str, String)> = meta.into_iter().collect();
        pipe.hset_multiple(key(deal, "meta"), &meta);
        for what in ["meta", "stock", "buyers", "keys", "pending"] {
            pipe.expire(key(deal, what), ttl_secs);
        }
        pipe.del(&lock);
        bounded(pipe.query_async::<()>(&mut conn)).await?;
        tracing::info!(%deal, stock, "admission gate built from postgres");
        Ok(())
    }

    /// Pending reservations older than `older_than_ms`: (field, quantity).
    /// Reads only the pending set (scored by reservation time), never the
    /// whole `keys` hash, which holds one field per order ever placed.
    pub async fn stale_reservations(&self, deal: Uuid, older_than_ms: i64) -> Result<Vec<(String, i32)>> {
        let mut conn = self.redis.clone();
        let cutoff = chrono::Utc::now().timestamp_millis() - older_than_ms;
        let mut range = redis::cmd("ZRANGEBYSCORE");
        range
            .arg(key(deal, "pending"))
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
        get.arg(key(deal, "keys")).arg(&fields);
        let values: Vec<Option<String>> = bounded(get.query_async(&mut conn)).await?;
        let mut stale = Vec::new();
        let mut settled = Vec::new();
        for (field, value) in fields.into_iter().zip(values) {
            match value.as_deref().and_then(|v| v.strip_prefix("p:")) {
                Some(pending) => {
                    if let Some(quantity) = pending.split(':').next().and_then(|q| q.parse().ok()) {
                        stale.push((field, quantity));
                    }
                }
                // Settled or released without leaving the set: drop it.
                None => settled.push(field),
            }
        }
        if !settled.is_empty() {
            let mut drop = redis::cmd("ZREM");
            drop.arg(key(deal, "pending")).arg(&settled);
            bounded(drop.query_async::<i64>(&mut conn)).await?;
        }
        Ok(stale)
    }

    /// Takes a short per-deal lock so one node reconciles at a time.
    pub async fn try_lock(&self, deal: Uuid, what: &str, ms: u64) -> Result<bool> {
        let mut conn = self.redis.clone();
        let mut take = redis::cmd("SET");
        take.arg(key(deal, what)).arg("1").arg("NX").arg("PX").arg(ms);
        let acquired: Option<String> = bounded(take.query_async(&mut conn)).await?;
        Ok(acquired.is_some())
    }
}
