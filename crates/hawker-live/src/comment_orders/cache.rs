//! Each node's copy of the sessions' comment-to-buy settings, read by every
//! viewer's chat line. Postgres is the truth; a copy is trusted for
//! `live.comment_cache_ms`, so a change made on another node applies here
//! within that time (on the node that made it, at once). Lines that miss at
//! the same moment share one read.
//!
//! Two rules keep a chat storm over many sessions from loading Postgres
//! (2,000 busy rooms read 2,000 settings a second with the default 1 s):
//! - **A read is never cut off.** It runs in a task of its own; a line that
//!   gives up waiting (after [`READ_TIMEOUT`]) leaves it to finish. A query
//!   dropped half-way leaves its connection in an unknown state, which the
//!   pool closes: under load every timed-out read cost a new Postgres
//!   backend (a fork), which took the CPU the reads were waiting for.
//! - **The copies in use are read again before they expire, all in one
//!   query.** Every quarter of `live.comment_cache_ms` the node's refresher
//!   ([`run_refresher`]) reads, in one statement, every session whose copy
//!   was used since its last read and has lived half its time: a session
//!   that chats keeps a fresh copy, its lines do not wait for Postgres, and
//!   the node reads four times a second however many rooms chat. A copy is
//!   still never used past its time (a line then reads and waits, as at
//!   first sight).

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::OnceCell;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::CommentToBuy;
use crate::Live;

/// How long a chat line waits for the setting to be read.
const READ_TIMEOUT: Duration = Duration::from_secs(1);

/// Sessions a node keeps at most before dropping the stale ones.
const MAX_SESSIONS: usize = 10_000;

type Cell = Arc<OnceCell<Option<Arc<CommentToBuy>>>>;

/// One session's copy: when its read started, the read (or its result),
/// whether a line used it since, and when the read ahead of its expiry
/// under way (if any) started.
struct Entry {
    at: Instant,
    cell: Cell,
    used: bool,
    refreshing: Option<Instant>,
}

/// The node's copies; a std mutex: nothing awaits while holding it.
#[derive(Default)]
pub struct SettingCache {
    ttl: Duration,
    entries: Mutex<HashMap<Uuid, Entry>>,
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
                // short wait per session per TTL, not one per line. The
                // query runs in a task of its own, so a line that stops
                // waiting does not cut it off (see the module's comment).
                let live = live.clone();
                let reading = tokio::spawn(async move { super::fetch(&live, session).await });
                match tokio::time::timeout(READ_TIMEOUT, reading).await {
                    Ok(Ok(Ok(setting))) => Ok(setting.map(Arc::new)),
                    Ok(Ok(Err(e))) => Err(e.to_string()),
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
        let entry = Entry {
            at: Instant::now(),
            cell: Arc::new(OnceCell::new_with(Some(setting.map(Arc::new)))),
            used: false,
            refreshing: None,
        };
        self.lock().insert(session, entry);
    }

    /// The sessions to read ahead now (copies used since their last read,
    /// at least half their time old, read and not being read), marked as
    /// being read since `now`.
    fn due(&self, now: Instant) -> Vec<Uuid> {
        let mut entries = self.lock();
        let mut due = Vec::new();
        for (session, entry) in entries.iter_mut() {
            let age = now.saturating_duration_since(entry.at);
            if entry.used && entry.refreshing.is_none() && entry.cell.initialized() && age >= self.ttl / 2 {
                entry.used = false;
                entry.refreshing = Some(now);
                due.push(*session);
            }
        }
        due
    }

    /// The read ahead of expiry that `started` then ended: its result
    /// (`None`: it failed) is the new copy, dated from when the read
    /// started, so a copy is never trusted longer than `ttl` after Postgres
    /// could have said otherwise. A write on this node since (`put`) wins.
    /// A failed read leaves the copy to expire: the next line then reads
    /// and waits, as at first sight.
    fn refreshed(&self, session: Uuid, started: Instant, fetched: Option<Option<CommentToBuy>>) {
        let mut entries = self.lock();
        let Some(entry) = entries.get_mut(&session) else {
            return;
        };
        if entry.refreshing != Some(started) {
            return;
        }
        match fetched {
            Some(setting) => {
                *entry = Entry {
                    at: started,
                    cell: Arc::new(OnceCell::new_with(Some(setting.map(Arc::new)))),
                    used: entry.used,
                    refreshing: None,
                };
            }
            None => entry.refreshing = None,
        }
    }

    /// The session's cell to read (the copy is marked used), and the
    /// expired copy it replaces.
    fn cell(&self, session: Uuid) -> (Cell, Option<Arc<CommentToBuy>>) {
        let now = Instant::now();
        let mut entries = self.lock();
        let mut previous = None;
        if let Some(entry) = entries.get_mut(&session) {
            if now.saturating_duration_since(entry.at) < self.ttl {
                entry.used = true;
                return (entry.cell.clone(), None);
            }
            previous = entry.cell.get().cloned().flatten();
        }
        if entries.len() >= MAX_SESSIONS {
            let ttl = self.ttl;
            entries.retain(|_, entry| now.saturating_duration_since(entry.at) < ttl);
        }
        let cell: Cell = Arc::default();
        let entry = Entry {
            at: now,
            cell: cell.clone(),
            used: true,
            refreshing: None,
        };
        entries.insert(session, entry);
        (cell, previous)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<Uuid, Entry>> {
        self.entries.lock().unwrap_or_else(|p| p.into_inner())
    }
}

/// The node's refresher: every quarter of `live.comment_cache_ms`, one
/// read of every copy in use that is due ([`SettingCache::due`]). Ends with
/// `shutdown`. With a TTL under 4 ms (0: no copies) there is nothing to do.
pub async fn run_refresher(live: Live, shutdown: CancellationToken) {
    let cache = &live.inner.comment_cache;
    let every = cache.ttl / 4;
    if every < Duration::from_millis(1) {
        return;
    }
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let started = Instant::now();
        let due = cache.due(started);
        if due.is_empty() {
            continue;
        }
        match super::fetch_many(&live, &due).await {
            Ok(mut read) => {
                for session in due {
                    cache.refreshed(session, started, Some(read.remove(&session)));
                }
            }
            Err(e) => {
                tracing::warn!(sessions = due.len(), error = %e, "comment-to-buy settings not read ahead; the copies expire");
                for session in due {
                    cache.refreshed(session, started, None);
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn setting(session: Uuid, enabled: bool) -> CommentToBuy {
        CommentToBuy {
            enabled,
            ..CommentToBuy::off(session)
        }
    }

    fn enabled(cell: &Cell) -> Option<bool> {
        cell.get().cloned().flatten().map(|s| s.enabled)
    }

    #[test]
    fn only_a_copy_used_since_its_read_and_half_its_time_old_is_read_ahead_once() {
        let cache = SettingCache::new(Duration::from_millis(1000));
        let (used, unused) = (Uuid::new_v4(), Uuid::new_v4());
        cache.put(used, Some(setting(used, false)));
        cache.put(unused, Some(setting(unused, false)));
        cache.cell(used);
        assert!(
            cache.due(Instant::now()).is_empty(),
            "fresh copies are not read again"
        );
        let later = Instant::now() + Duration::from_millis(600);
        assert_eq!(
            cache.due(later),
            vec![used],
            "the copy nobody used is left to expire"
        );
        assert!(cache.due(later).is_empty(), "one read ahead at a time");
        cache.refreshed(used, later, Some(Some(setting(used, true))));
        let (cell, _) = cache.cell(used);
        assert_eq!(enabled(&cell), Some(true));
        // Dated from when the read started, not when it ended.
        assert_eq!(cache.lock()[&used].at, later);
        // A session with no row reads as never set.
        cache.cell(unused);
        let again = later + Duration::from_millis(600);
        let mut due = cache.due(again);
        due.sort();
        let mut both = vec![used, unused];
        both.sort();
        assert_eq!(due, both);
        cache.refreshed(unused, again, Some(None));
        assert_eq!(cache.cell(unused).0.get().cloned(), Some(None));
    }

    #[test]
    fn a_write_on_this_node_wins_over_a_read_ahead_that_began_before_it() {
        let cache = SettingCache::new(Duration::from_millis(1000));
        let session = Uuid::new_v4();
        cache.put(session, Some(setting(session, false)));
        cache.cell(session);
        let started = Instant::now() + Duration::from_millis(600);
        assert_eq!(cache.due(started), vec![session]);
        cache.put(session, Some(setting(session, true)));
        // The read ahead saw the old row.
        cache.refreshed(session, started, Some(Some(setting(session, false))));
        assert_eq!(enabled(&cache.cell(session).0), Some(true));
    }

    #[test]
    fn a_failed_read_ahead_leaves_the_copy_to_expire_and_then_a_line_reads_again() {
        let cache = SettingCache::new(Duration::from_millis(300));
        let session = Uuid::new_v4();
        cache.put(session, Some(setting(session, true)));
        cache.cell(session);
        let started = Instant::now();
        cache.lock().get_mut(&session).unwrap().at = started - Duration::from_millis(200);
        assert_eq!(cache.due(started), vec![session]);
        cache.refreshed(session, started, None);
        assert_eq!(
            enabled(&cache.cell(session).0),
            Some(true),
            "the copy holds until its time"
        );
        std::thread::sleep(Duration::from_millis(150));
        let (cell, previous) = cache.cell(session);
        assert!(cell.get().is_none(), "expired: the next line reads and waits");
        assert_eq!(
            previous.map(|s| s.enabled),
            Some(true),
            "the last copy if that read fails"
        );
    }
}
