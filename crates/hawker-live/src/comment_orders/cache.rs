//! Each node's copy of the sessions' comment-to-buy settings, read by every
//! viewer's chat line. Postgres is the truth; a copy is trusted for
//! `live.comment_cache_ms`, so a change made on another node applies here
//! within that time (on the node that made it, at once). Lines that miss at
//! the same moment share one read.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use uuid::Uuid;

use super::CommentToBuy;
use crate::Live;

/// How long a chat line waits for the setting to be read.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Sessions a node keeps at most before dropping the stale ones.
const MAX_SESSIONS: usize = 10_000;

type Cell = Arc<OnceCell<Option<Arc<CommentToBuy>>>>;

/// The node's copies; a std mutex: nothing awaits while holding it.
#[derive(Default)]
pub struct SettingCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, (Instant, Cell)>>,
}

impl SettingCache {
    pub fn new(ttl: Duration) -> SettingCache {
        SettingCache {
            ttl,
            entries: Mutex::default(),
        }
    }

    /// The session's setting (`None`: never set, which reads as off). When
    /// Postgres cannot answer, the last copy holds (off if there is none).
    pub async fn get(&self, live: &Live, session: Uuid) -> Option<Arc<CommentToBuy>> {
        let (cell, previous) = self.cell(session);
        let read = cell
            .get_or_try_init(|| async {
                // Chat waits for this read: bounded, and a failure is kept
                // (as off) for the TTL, so an unreachable database costs one
                // short wait per session per TTL, not one per line.
                let fetched = tokio::time::timeout(READ_TIMEOUT, super::fetch(live, session)).await;
                match fetched {
                    Ok(Ok(setting)) => Ok(setting.map(Arc::new)),
                    Ok(Err(e)) => Err(e.to_string()),
                    Err(_) => Err(format!("no answer within {READ_TIMEOUT:?}")),
                }
            })
            .await;
        match read {
            Ok(setting) => setting.clone(),
            Err(e) => {
                // The last copy, if any, stays in force for another TTL.
                tracing::warn!(%session, error = %e, "comment-to-buy setting unreadable; the last copy (or off) holds");
                self.put(session, previous.as_deref().cloned());
                previous
            }
        }
    }

    /// The setting as just written on this node.
    pub fn put(&self, session: Uuid, setting: Option<CommentToBuy>) {
        let cell = Arc::new(OnceCell::new_with(Some(setting.map(Arc::new))));
        self.lock().insert(session, (Instant::now(), cell));
    }

    /// The session's cell to read, and the expired copy it replaces.
    fn cell(&self, session: Uuid) -> (Cell, Option<Arc<CommentToBuy>>) {
        let now = Instant::now();
        let mut entries = self.lock();
        let mut previous = None;
        if let Some((at, cell)) = entries.get(&session) {
            if now.duration_since(*at) < self.ttl {
                return (cell.clone(), None);
            }
            previous = cell.get().cloned().flatten();
        }
        if entries.len() >= MAX_SESSIONS {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| now.duration_since(*at) < ttl);
        }
        let cell: Cell = Arc::default();
        entries.insert(session, (now, cell.clone()));
        (cell, previous)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (Instant, Cell)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
