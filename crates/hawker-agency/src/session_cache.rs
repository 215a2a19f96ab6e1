//! A short-lived, single-flight cache of session rows for the socket route.
//!
//! When a show starts, thousands of viewers open their sockets within a
//! second, and each needs the same session row (does it exist, has it ended,
//! which agency runs it). Without a cache each join takes a pooled Postgres
//! connection: a stampede of joins drains the pool and the late ones are
//! answered 503. Here the first join of a session loads the row and every
//! concurrent or following join within the time to live shares it. An error
//! is not cached: the next join tries again.
//!
//! A session that ends is seen ending by new joins at most one time to live
//! late; the room itself closes open sockets when the end is published.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use sqlx::PgPool;
use tokio::sync::OnceCell;
use uuid::Uuid;

use crate::access::{load_session, session_role, SessionAccess, SessionRow};
use hawker_core::error::Result;
use hawker_core::Claims;

/// Session rows cached for a fixed time to live, loaded once per session at a time.
pub struct SessionCache {
    ttl: Duration,
    entries: Mutex<Entries>,
}

struct Entries {
    by_session: HashMap<Uuid, Entry>,
    /// When expired entries were last dropped: at most once per time to
    /// live, so a node with thousands of small rooms does not scan the map
    /// on every join.
    pruned: Instant,
}

struct Entry {
    created: Instant,
    row: Arc<OnceCell<SessionRow>>,
}

impl SessionCache {
    pub fn new(ttl: Duration) -> Self {
        SessionCache {
            ttl,
            entries: Mutex::new(Entries {
                by_session: HashMap::new(),
                pruned: Instant::now(),
            }),
        }
    }

    /// The session's row, from the cache or (once for all concurrent callers) from `db`.
    pub async fn get(&self, db: &PgPool, session_id: Uuid) -> Result<SessionRow> {
        self.get_or_load(session_id, || load_session(db, session_id))
            .await
    }

    /// The cached row of `session_id`, or `load`'s, run once for all
    /// concurrent callers; an error is returned and not kept.
    pub async fn get_or_load<F, Fut>(&self, session_id: Uuid, load: F) -> Result<SessionRow>
    where
        F: FnOnce() -> Fut,
        Fut: std::future::Future<Output = Result<SessionRow>>,
    {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            if now.duration_since(entries.pruned) >= self.ttl {
                let ttl = self.ttl;
                entries
                    .by_session
                    .retain(|_, e| now.duration_since(e.created) < ttl);
                entries.pruned = now;
            }
            let entry = entries.by_session.entry(session_id).or_insert_with(|| Entry {
                created: now,
                row: Arc::new(OnceCell::new()),
            });
            if now.duration_since(entry.created) >= self.ttl {
                *entry = Entry {
                    created: now,
                    row: Arc::new(OnceCell::new()),
                };
            }
            entry.row.clone()
        };
        let row = cell.get_or_try_init(load).await?;
        Ok(row.clone())
    }
}

/// [`crate::access::session_access`] with the session's row from `cache` (the socket
/// route: joins come in stampedes). A viewer's join then costs no query.
pub async fn session_access(
    cache: &SessionCache,
    db: &PgPool,
    claims: &Claims,
    session_id: Uuid,
) -> Result<SessionAccess> {
    let session = cache.get(db, session_id).await?;
    let role = session_role(db, claims, &session).await?;
    Ok(SessionAccess { session, role })
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering};

    use super::*;
    use crate::access::SessionStatus;
    use hawker_core::Error;

    fn row(id: Uuid) -> SessionRow {
        SessionRow {
            session_id: id,
            agency_id: Uuid::nil(),
            brand_id: None,
            campaign_id: None,
            status: SessionStatus::Live,
        }
    }

    #[tokio::test]
    async fn a_stampede_of_joins_loads_the_session_once() {
        let cache = Arc::new(SessionCache::new(Duration::from_secs(60)));
        let loads = Arc::new(AtomicUsize::new(0));
        let id = Uuid::new_v4();
        let joins: Vec<_> = (0..500)
            .map(|_| {
                let (cache, loads) = (cache.clone(), loads.clone());
                tokio::spawn(async move {
                    cache
                        .get_or_load(id, || async {
                            loads.fetch_add(1, Ordering::SeqCst);
                            tokio::time::sleep(Duration::from_millis(50)).await;
                            Ok(row(id))
                        })
                        .await
                })
            })
            .collect();
        for join in joins {
            assert_eq!(join.await.unwrap().unwrap().session_id, id);
        }
        assert_eq!(loads.load(Ordering::SeqCst), 1);
    }

    #[tokio::test]
    async fn a_row_expires_after_its_time_to_live_and_errors_are_not_kept() {
        let cache = SessionCache::new(Duration::from_millis(100));
        let id = Uuid::new_v4();
        let failed = cache
            .get_or_load(id, || async { Err(Error::Unavailable { what: "the database" }) })
            .await;
        assert!(failed.is_err());
        let loads = AtomicUsize::new(0);
        let load = || async {
            loads.fetch_add(1, Ordering::SeqCst);
            Ok(row(id))
        };
        cache.get_or_load(id, load).await.unwrap();
        cache.get_or_load(id, load).await.unwrap();
        assert_eq!(
            loads.load(Ordering::SeqCst),
            1,
            "the error was not kept; the row was"
        );
        tokio::time::sleep(Duration::from_millis(150)).await;
        cache.get_or_load(id, load).await.unwrap();
        assert_eq!(loads.load(Ordering::SeqCst), 2, "expired after its time to live");
    }
}
