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

    /// The session's setting (`None`: never set, or unreadable just now,
    /// which reads as off).
    pub async fn get(&self, live: &Live, session: Uuid) -> Option<Arc<CommentToBuy>> {
        let cell = self.cell(session);
        let read = cell
            .get_or_try_init(|| async { super::fetch(live, session).await.map(|s| s.map(Arc::new)) })
            .await;
        match read {
            Ok(setting) => setting.clone(),
            Err(e) => {
                tracing::warn!(%session, error = %e, "comment-to-buy setting unreadable; treated as off");
                None
            }
        }
    }

    /// The setting as just written on this node.
    pub fn put(&self, session: Uuid, setting: Option<CommentToBuy>) {
        let cell = Arc::new(OnceCell::new_with(Some(setting.map(Arc::new))));
        self.lock().insert(session, (Instant::now(), cell));
    }

    fn cell(&self, session: Uuid) -> Cell {
        let now = Instant::now();
        let mut entries = self.lock();
        if let Some((at, cell)) = entries.get(&session) {
            // A failed read leaves the cell empty: the next line reads again.
            if now.duration_since(*at) < self.ttl {
                return cell.clone();
            }
        }
        if entries.len() >= MAX_SESSIONS {
            let ttl = self.ttl;
            entries.retain(|_, (at, _)| now.duration_since(*at) < ttl);
        }
        let cell: Cell = Arc::default();
        entries.insert(session, (now, cell.clone()));
        cell
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, (Instant, Cell)>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}
