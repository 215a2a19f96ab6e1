//! The admission gate: one Redis Lua script per purchase attempt that
//! rejects sold-out, over-cap, early, late and repeated requests without
//! touching Postgres, and reserves units for the rest.
//!
//! This module is the only code that knows the gate's keys and the format of
//! its values; the rest of the crate sees [`Admission`], [`Reservation`] and
//! [`ReservationKey`].
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
//! released by the reconciler ([`Gate::reconcile`]). Postgres constraints
//! decide in the end.

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
        format!("{}\n{}", self.buyer, self.idempotency_key)
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
    /// Reads `ADMIT_LUA`'s reply.
    fn from_reply(reply: &[String]) -> Admission {
        match reply.first().map(String::as_str) {
            Some("ok") => Admission::Admitted,
            // An unreadable value: the order store decides, as for a settled key.
            Some("dup") => Admission::Repeat(
                reply
                    .get(1)
                    .and_then(|v| Reservation::parse(v))
                    .unwrap_or(Reservation::Settled { order_id: None }),
            ),
            Some("not_started") => Admission::NotStarted,
            Some("ended") => Admission::Ended,
            Some("cap_exceeded") => Admission::CapExceeded {
                held: reply.get(1).and_then(|v| v.parse().ok()).unwrap_or(0),
            },
            Some("sold_out") => Admission::SoldOut,
            _ => Admission::Missing,
        }
    }
}

/// The gate's scripts on the node's Redis connection. Cheap to clone.
#[derive(Clone)]
pub struct Gate {
    redis: ConnectionManager,
    db: PgPool,
    admit: Script,
    release: Script,
    give_back: Script,
    clamp: Script,
}

fn deal_key(deal: Uuid, what: &str) -> String {
    format!("{}:deal:{{{deal}}}:{what}", hawker_hub::keys::process_prefix())
}

const REDIS_TIMEOUT: Duration = Duration::from_secs(2);

async fn bounded<T>(call: impl std::future::Future<Output = redis::RedisResult<T>>) -> Result<T> {
    match tokio::time::timeout(REDIS_TIMEOUT, call).await {
        Ok(result) => Ok(result?),
        Err(_) => Err(Error::Unavailable { what: "redis" }),
    }
}

impl Gate {
    /// The gate over `redis`, rebuilt from `db` when its keys are missing.
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

    /// Reserves `quantity` units for `key`, or says why not. The request's
    /// hash is kept with the reservation so a replay can tell a retry from a
    /// reused key.
    pub async fn admit(
        &self,
        deal: Uuid,
        key: &ReservationKey,
        quantity: i32,
        request_hash: &str,
    ) -> Result<Admission> {
        let mut conn = self.redis.clone();
        let mut invocation = self.admit.prepare_invoke();
        invocation
            .key(deal_key(deal, "meta"))
            .key(deal_key(deal, "stock"))
            .key(deal_key(deal, "buyers"))
            .key(deal_key(deal, "keys"))
            .key(deal_key(deal, "pending"))
            .arg(&key.buyer)
            .arg(quantity)
            .arg(key.field())
            .arg(request_hash)
            .arg(chrono::Utc::now().timestamp_millis());
        let reply: Vec<String> = bounded(invocation.invoke_async(&mut conn)).await?;
        Ok(Admission::from_reply(&reply))
    }

    /// Marks reservations as settled orders.
    pub async fn confirm(&self, deal: Uuid, settled: &[(ReservationKey, Uuid)]) -> Result<()> {
        if settled.is_empty() {
            return Ok(());
        }
        let mut conn = self.redis.clone();
        let mut pipe = redis::pipe();
        let mut settle = redis::cmd("HSET");
        settle.arg(deal_key(deal, "keys"));
        let mut unpend = redis::cmd("ZREM");
        unpend.arg(deal_key(deal, "pending"));
        for (key, order_id) in settled {
            let field = key.field();
            settle.arg(&field).arg(Reservation::settled(*order_id));
            unpend.arg(field);
        }
        pipe.add_command(settle).ignore().add_command(unpend).ignore();
        bounded(pipe.query_async::<()>(&mut conn)).await?;
        Ok(())
    }

    /// Gives a pending reservation's units back.
    pub async fn release(&self, deal: Uuid, key: &ReservationKey, quantity: i32) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut invocation = self.release.prepare_invoke();
        invocation
            .key(deal_key(deal, "stock"))
            .key(deal_key(deal, "buyers"))
            .key(deal_key(deal, "keys"))
            .key(deal_key(deal, "pending"))
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
            .key(deal_key(deal, "meta"))
            .key(deal_key(deal, "stock"))
            .key(deal_key(deal, "buyers"))
            .arg(buyer)
            .arg(quantity);
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Lowers the gate's stock to what Postgres has left, if it is above.
    pub async fn clamp(&self, deal: Uuid, remaining: i32) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut invocation = self.clamp.prepare_invoke();
        invocation.key(deal_key(deal, "stock")).arg(remaining);
        bounded(invocation.invoke_async::<i64>(&mut conn)).await?;
        Ok(())
    }

    /// Closes the gate of an ended deal.
    pub async fn mark_ended(&self, deal: Uuid, reason: &str) -> Result<()> {
        let mut conn = self.redis.clone();
        let mut command = redis::cmd("HSET");
        command
            .arg(deal_key(deal, "meta"))
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
        let lock = deal_key(deal, "rebuilding");
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
            deal_key(deal, "meta"),
            deal_key(deal, "stock"),
            deal_key(deal, "buyers"),
            deal_key(deal, "keys"),
            deal_key(deal, "pending"),
        ]);
        pipe.set(deal_key(deal, "stock"), stock);
        if !buyers.is_empty() {
            let pairs: Vec<(String, i32)> = buyers;
            pipe.hset_multiple(deal_key(deal, "buyers"), &pairs);
        }
        if !orders.is_empty() {
            let pairs: Vec<(String, String)> = orders
                .into_iter()
                .map(|(b, k, o)| (ReservationKey::new(&b, &k).field(), Reservation::settled(o)))
                .collect();
            pipe.hset_multiple(deal_key(deal, "keys"), &pairs);
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
        pipe.hset_multiple(deal_key(deal, "meta"), &meta);
        for what in ["meta", "stock", "buyers", "keys", "pending"] {
            pipe.expire(deal_key(deal, what), ttl_secs);
        }
        pipe.del(&lock);
        bounded(pipe.query_async::<()>(&mut conn)).await?;
        tracing::info!(%deal, stock, "admission gate built from postgres");
        Ok(())
    }

    /// Reconciles the gate of every live deal with Postgres: a reservation
    /// older than `older_than` whose order exists is confirmed; one with no
    /// order (its node died before the commit, or the commit failed) is
    /// released. One node per deal at a time.
    pub async fn reconcile(&self, older_than: Duration) -> Result<()> {
        let live: Vec<Uuid> =
            sqlx::query_scalar("select deal_id from deal where status <> 'ended' and starts_at <= now()")
                .fetch_all(&self.db)
                .await?;
        let older_than_ms = i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
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
        }
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
            .arg(deal_key(deal, "pending"))
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
        get.arg(deal_key(deal, "keys")).arg(&fields);
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
            drop.arg(deal_key(deal, "pending")).arg(&settled);
            bounded(drop.query_async::<i64>(&mut conn)).await?;
        }
        Ok(stale)
    }

    /// Takes a short per-deal lock so one node reconciles at a time.
    async fn try_lock(&self, deal: Uuid, what: &str, ms: u64) -> Result<bool> {
        let mut conn = self.redis.clone();
        let mut take = redis::cmd("SET");
        take.arg(deal_key(deal, what))
            .arg("1")
            .arg("NX")
            .arg("PX")
            .arg(ms);
        let acquired: Option<String> = bounded(take.query_async(&mut conn)).await?;
        Ok(acquired.is_some())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

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
        assert_eq!(Admission::from_reply(&reply(&["ok"])), Admission::Admitted);
        assert_eq!(Admission::from_reply(&reply(&["sold_out"])), Admission::SoldOut);
        assert_eq!(Admission::from_reply(&reply(&["ended"])), Admission::Ended);
        assert_eq!(
            Admission::from_reply(&reply(&["not_started"])),
            Admission::NotStarted
        );
        assert_eq!(
            Admission::from_reply(&reply(&["cap_exceeded", "4"])),
            Admission::CapExceeded { held: 4 }
        );
        assert_eq!(Admission::from_reply(&reply(&["rebuild"])), Admission::Missing);
        assert_eq!(Admission::from_reply(&[]), Admission::Missing);
        assert_eq!(
            Admission::from_reply(&reply(&["dup", "p:2:5:h"])),
            Admission::Repeat(Reservation::Pending {
                quantity: 2,
                reserved_at_ms: 5,
                request_hash: "h".into(),
            })
        );
        // Unreadable: the order store decides.
        assert_eq!(
            Admission::from_reply(&reply(&["dup", "garbage"])),
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
}
