//! Shortcuts that turn most of a claim stampede away before Postgres: an
//! in-process exhausted flag, the same flag in Redis for the other nodes, and
//! a Redis count of the claims still allowed through. Each is only a
//! shortcut; Postgres' constraints decide.

use std::collections::HashMap;
use std::sync::{Mutex, OnceLock};
use std::time::{Duration, Instant};

use uuid::Uuid;

use crate::Commerce;

/// Exhausted drops this process knows of, with when to forget them.
pub(super) mod local_flag {
    use super::*;

    /// Bound on remembered drops; past it the expired ones go, then all.
    const MAX_ENTRIES: usize = 10_000;

    fn map() -> &'static Mutex<HashMap<Uuid, Instant>> {
        // A std Mutex: held for a lookup or an insert, never across an await.
        static MAP: OnceLock<Mutex<HashMap<Uuid, Instant>>> = OnceLock::new();
        MAP.get_or_init(|| Mutex::new(HashMap::new()))
    }

    pub(in crate::coupons) fn is_exhausted(id: Uuid) -> bool {
        ttl(id).is_some()
    }

    /// How long the flag still holds, if set.
    pub(in crate::coupons) fn ttl(id: Uuid) -> Option<Duration> {
        let map = map().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        map.get(&id)
            .and_then(|until| until.checked_duration_since(Instant::now()))
            .filter(|left| !left.is_zero())
    }

    pub(in crate::coupons) fn set(id: Uuid, ttl: Duration) {
        let now = Instant::now();
        let mut map = map().lock().unwrap_or_else(|poisoned| poisoned.into_inner());
        if map.len() >= MAX_ENTRIES {
            map.retain(|_, until| *until > now);
            if map.len() >= MAX_ENTRIES {
                map.clear();
            }
        }
        map.insert(id, now + ttl);
    }
}

/// `hawker:coupon:{id}:left`: claims the gate may still let through to
/// Postgres. Built from Postgres when missing; Postgres' constraints decide.
pub(super) mod redis_gate {
    use super::*;

    const TIMEOUT: Duration = Duration::from_millis(250);
    const TAKE_LUA: &str = r"
local v = redis.call('GET', KEYS[1])
if not v then return -2 end
if tonumber(v) <= 0 then return -1 end
redis.call('DECR', KEYS[1])
return 1";

    fn key(prefix: &str, id: Uuid) -> String {
        format!("{prefix}:coupon:{{{id}}}:left")
    }

    /// `Some(true)`: a slot was taken; `Some(false)`: none left; `None`: Redis
    /// could not say (down, slow): ask Postgres.
    pub(in crate::coupons) async fn take(
        c: &Commerce,
        redis: &hawker_redis::Redis,
        id: Uuid,
    ) -> Option<bool> {
        let prefix = c.key_prefix();
        let script = redis::Script::new(TAKE_LUA);
        for _ in 0..2 {
            let mut conn = redis.clone();
            let mut invocation = script.prepare_invoke();
            invocation.key(key(prefix, id));
            let reply: i64 = tokio::time::timeout(TIMEOUT, invocation.invoke_async(&mut conn))
                .await
                .ok()?
                .ok()?;
            match reply {
                1 => return Some(true),
                -1 => return Some(false),
                _ => {
                    let left: Option<i64> = sqlx::query_scalar(
                        "select (total - claimed)::bigint from coupon_drop where coupon_drop_id = $1 and status = 'dropped'",
                    )
                    .bind(id)
                    .fetch_optional(c.db())
                    .await
                    .ok()?;
                    // Not dropped (or unknown): let Postgres give the precise refusal.
                    let left = left?;
                    let mut set = redis::cmd("SET");
                    set.arg(key(prefix, id)).arg(left).arg("NX").arg("EX").arg(86_400);
                    let _: redis::RedisResult<Option<String>> =
                        tokio::time::timeout(TIMEOUT, set.query_async(&mut conn))
                            .await
                            .ok()?;
                }
            }
        }
        None
    }

    pub(in crate::coupons) async fn give_back(redis: &hawker_redis::Redis, prefix: &str, id: Uuid) {
        let mut conn = redis.clone();
        let mut incr = redis::cmd("INCR");
        incr.arg(key(prefix, id));
        let _ = tokio::time::timeout(TIMEOUT, incr.query_async::<i64>(&mut conn)).await;
    }
}

/// `hawker:coupon:{id}:exhausted`, shared by every node.
pub(super) mod redis_flag {
    use super::*;

    /// Redis is a shortcut here: past this, ask Postgres.
    const TIMEOUT: Duration = Duration::from_millis(250);

    fn key(prefix: &str, id: Uuid) -> String {
        format!("{prefix}:coupon:{{{id}}}:exhausted")
    }

    /// The flag's remaining time to live, if it is set.
    pub(in crate::coupons) async fn get(
        redis: &hawker_redis::Redis,
        prefix: &str,
        id: Uuid,
    ) -> Option<Duration> {
        let mut conn = redis.clone();
        let pttl: redis::RedisResult<i64> = match tokio::time::timeout(
            TIMEOUT,
            redis::cmd("PTTL").arg(key(prefix, id)).query_async(&mut conn),
        )
        .await
        {
            Ok(result) => result,
            Err(_) => return None,
        };
        match pttl {
            // -2: no key; -1: no expiry (not written by us; trust it briefly).
            Ok(ms) if ms > 0 => Some(Duration::from_millis(ms.unsigned_abs())),
            Ok(-1) => Some(Duration::from_secs(1)),
            Ok(_) => None,
            Err(e) => {
                tracing::debug!(error = %e, "coupon flag unreadable; asking Postgres");
                None
            }
        }
    }

    pub(in crate::coupons) async fn set(redis: &hawker_redis::Redis, prefix: &str, id: Uuid, ttl: Duration) {
        let mut conn = redis.clone();
        let ms = u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX).max(1);
        let mut command = redis::cmd("SET");
        command.arg(key(prefix, id)).arg(1).arg("PX").arg(ms);
        match tokio::time::timeout(TIMEOUT, command.query_async::<()>(&mut conn)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => tracing::debug!(error = %e, "coupon flag not written"),
            Err(_) => tracing::debug!("coupon flag not written: redis timed out"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_local_flag_expires() {
        let id = Uuid::new_v4();
        assert!(!local_flag::is_exhausted(id));
        local_flag::set(id, Duration::from_millis(30));
        assert!(local_flag::is_exhausted(id));
        std::thread::sleep(Duration::from_millis(40));
        assert!(!local_flag::is_exhausted(id));
    }
}
