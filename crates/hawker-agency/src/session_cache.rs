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

use crate::access::{load_session, SessionRow};
use hawker_core::error::Result;

/// Session rows cached for a fixed time to live, loaded once per session at a time.
pub struct SessionCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, Entry>>,
}

struct Entry {
    created: Instant,
    row: Arc<OnceCell<SessionRow>>,
}

impl SessionCache {
    pub fn new(ttl: Duration) -> Self {
        SessionCache {
            ttl,
            entries: Mutex::new(HashMap::new()),
        }
    }

    /// The session's row, from the cache or (once for all concurrent callers) from `db`.
    pub async fn get(&self, db: &PgPool, session_id: Uuid) -> Result<SessionRow> {
        let cell = {
            let mut entries = self.entries.lock().unwrap_or_else(|p| p.into_inner());
            let now = Instant::now();
            // Keep the map small: drop what has expired (cheap: one entry per live session).
            if entries.len() > 1024 {
                entries.retain(|_, e| now.duration_since(e.created) < self.ttl);
            }
            let entry = entries.entry(session_id).or_insert_with(|| Entry {
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
        let row = cell.get_or_try_init(|| load_session(db, session_id)).await?;
        Ok(row.clone())
    }
}
