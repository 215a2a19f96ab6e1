//! Private notices: something said to one user (their order was paid, their
//! order expired), optionally only in one session's room, on whatever node
//! and socket they are.
//!
//! The path of a notice (publish → relay → subscriber → router → socket):
//! 1. A crate calls [`Hub::enqueue_notice`] inside its own transaction (or
//!    [`Hub::publish_notice`], which opens one). The notice is a row of the
//!    hub's `user_notice` table, so it exists only if that transaction
//!    commits. A per-user lock held until the commit makes each user's ids
//!    grow in commit order.
//! 2. The relay ([`relay`]), run by every node every `hub.durable_relay_ms`
//!    but by one node at a time, PUBLISHes unpublished rows in id order on
//!    the channel `<prefix>:notices` and marks them published (each tick
//!    first asks whether any row waits: an idle tick is one query). A node
//!    that dies before relaying leaves the rows to another node.
//! 3. Every node's one subscriber receives the channel and hands each frame
//!    to this node's [`router`]: the user's sockets in scope get it, once
//!    per notice id per socket (a relay repeated after a failure is skipped).
//! 4. A socket that joins gets, after its `welcome`, its user's unexpired,
//!    unread notices that no socket got yet (and with `notices_after`, every
//!    one after that id); live notices arriving meanwhile wait and are
//!    merged in id order.
//!
//! Notices expire after `hub.notice_ttl_secs`; a user keeps at most
//! `hub.notice_max_per_user` (the oldest go first).

pub(crate) mod relay;
pub(crate) mod router;
pub mod store;

use std::borrow::Cow;
use std::sync::Arc;

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use serde_json::Value;
use sqlx::PgConnection;
use uuid::Uuid;

use crate::event::{Frame, Lane};
use crate::store::bounded;
use crate::Hub;
pub use store::StoredNotice;

/// Notices a join delivers at most (the per-user cap bounds it anyway).
const JOIN_BACKLOG_MAX: i64 = 1000;

/// A notice for one user.
#[derive(Debug, Clone)]
pub struct Notice {
    /// The user (the token's `sub`).
    pub user: String,
    /// Only in this session's room; `None`: in any room.
    pub session: Option<Uuid>,
    /// What happened, e.g. `order.paid` (1 to 64 characters).
    pub kind: String,
    pub data: Value,
}

impl Notice {
    pub fn new(user: impl Into<String>, kind: impl Into<String>, data: Value) -> Self {
        Notice {
            user: user.into(),
            session: None,
            kind: kind.into(),
            data,
        }
    }

    /// Shown only in `session`'s room.
    pub fn in_session(mut self, session: Uuid) -> Self {
        self.session = Some(session);
        self
    }
}

/// The socket frame of a notice.
#[derive(Serialize)]
struct Wire<'a> {
    #[serde(rename = "type")]
    frame_type: &'static str,
    id: i64,
    kind: &'a str,
    user: &'a str,
    session_id: Option<Uuid>,
    created_at: DateTime<Utc>,
    expires_at: DateTime<Utc>,
    data: &'a Value,
}

/// What a node reads of a notice frame to route it.
#[derive(Deserialize)]
struct Header<'a> {
    id: i64,
    #[serde(borrow)]
    user: Cow<'a, str>,
    session_id: Option<Uuid>,
}

/// The frame text, the same whether a notice is relayed or read at a join.
fn encode(user: &str, notice: &StoredNotice) -> String {
    serde_json::to_string(&Wire {
        frame_type: "notice",
        id: notice.notice_id,
        kind: &notice.kind,
        user,
        session_id: notice.session_id,
        created_at: notice.created_at,
        expires_at: notice.expires_at,
        data: &notice.data,
    })
    .unwrap_or_default()
}

fn frame(text: String) -> Arc<Frame> {
    Arc::new(Frame {
        offset: 0,
        lane: Lane::Control,
        from: None,
        ts_ms: 0,
        text: text.into(),
    })
}

/// One page of a user's notices.
#[derive(Debug, Serialize)]
pub struct NoticeList {
    pub items: Vec<StoredNotice>,
}

impl Hub {
    /// Queues `notice` inside the caller's transaction: it is delivered after
    /// (and only if) that transaction commits. Returns its id.
    pub async fn enqueue_notice(&self, conn: &mut PgConnection, notice: &Notice) -> sqlx::Result<i64> {
        let config = &self.inner.config;
        store::insert(conn, notice, config.notice_ttl_secs, config.notice_max_per_user).await
    }

    /// Stores and delivers `notice` on its own (a transaction of one row).
    pub async fn publish_notice(&self, notice: &Notice) -> hawker_core::error::Result<i64> {
        let ids = self.publish_notices(std::slice::from_ref(notice)).await?;
        Ok(ids.first().copied().unwrap_or_default())
    }

    /// Stores `notices` in one transaction (each as [`Hub::enqueue_notice`]
    /// does) and wakes the relay; returns their ids in the same order.
    /// They are stored in user order (stable: one user's keep theirs), so
    /// two batches take their per-user locks in the same order and cannot
    /// deadlock.
    pub async fn publish_notices(&self, notices: &[Notice]) -> hawker_core::error::Result<Vec<i64>> {
        let db = self.db()?;
        let mut order: Vec<usize> = (0..notices.len()).collect();
        order.sort_by(|&a, &b| notices[a].user.cmp(&notices[b].user));
        let mut tx = db.begin().await?;
        let mut ids = vec![0; notices.len()];
        for i in order {
            ids[i] = self.enqueue_notice(&mut tx, &notices[i]).await?;
        }
        tx.commit().await?;
        self.inner.notice_relay_now.notify_one();
        Ok(ids)
    }

    /// The user's unexpired notices after `after`, oldest first; `limit` at most.
    pub async fn list_notices(
        &self,
        user: &str,
        after: Option<i64>,
        limit: i64,
    ) -> hawker_core::error::Result<Vec<StoredNotice>> {
        Ok(store::list(self.db()?, user, after, limit).await?)
    }

    /// Marks the user's notices read (those in `ids`, and all up to `up_to`);
    /// returns how many were not read before. Other users' ids are ignored.
    pub async fn mark_notices_read(
        &self,
        user: &str,
        ids: &[i64],
        up_to: Option<i64>,
    ) -> hawker_core::error::Result<u64> {
        Ok(store::mark_read(self.db()?, user, ids, up_to).await?)
    }

    fn db(&self) -> hawker_core::error::Result<&sqlx::PgPool> {
        self.inner.db.as_ref().ok_or(hawker_core::Error::Unavailable {
            what: "notices (no database)",
        })
    }

    /// Registers a joined socket and queues its backlog (see the module docs).
    pub(crate) async fn join_notices(&self, inbox: Arc<router::Inbox>, user: &str, after: Option<i64>) {
        let Some(db) = self.inner.db.as_ref() else {
            return;
        };
        self.inner.notices.add(user, inbox.clone());
        let backlog = if !self.may_have_notices(user, after).await {
            // Nothing published for this user that the client lacks: no
            // Postgres round trip on a join storm.
            Vec::new()
        } else {
            match store::for_join(db, user, inbox.room, after, JOIN_BACKLOG_MAX).await {
                Ok(rows) => rows
                    .iter()
                    .map(|n| (n.notice_id, frame(encode(user, n))))
                    .collect(),
                Err(e) => {
                    // Kept as they are: the next join, or the HTTP list, has them.
                    tracing::warn!(error = %e, "notices for a join unavailable");
                    Vec::new()
                }
            }
        };
        let (joined, live) = inbox.finish_join(backlog);
        crate::metrics::notices_delivered("join", joined.len() as u64);
        crate::metrics::notices_delivered("live", live.len() as u64);
        self.note_delivered(joined.into_iter().chain(live));
    }

    /// Whether a join of `user` (who has every notice up to `after`) must
    /// read its backlog from Postgres: yes unless Redis says the last notice
    /// published for the user is not newer, or that there is none. Unpublished
    /// notices reach the socket through the relay, since it is registered
    /// before this question. When Redis cannot answer, or its marks are not
    /// (re)built yet, Postgres is asked.
    async fn may_have_notices(&self, user: &str, after: Option<i64>) -> bool {
        let store = &self.inner.store;
        // Two GETs, not an MGET: on a cluster the keys live on different slots.
        let mut pipe = redis::pipe();
        pipe.get(store.keys.notices_marked())
            .get(store.keys.notices_latest(user));
        let mut conn = store.redis.clone();
        let answer: redis::RedisResult<(Option<i64>, Option<i64>)> =
            bounded(store.timeout, pipe.query_async(&mut conn)).await;
        match answer {
            Ok((Some(_), None)) => false,
            Ok((Some(_), Some(latest))) => after.is_none_or(|after| latest > after),
            Ok((None, _)) | Err(_) => true,
        }
    }

    pub(crate) fn leave_notices(&self, user: &str, client_id: u64) {
        self.inner.notices.remove(user, client_id);
    }

    /// A frame from the notices channel: to this node's sockets of its user.
    pub(crate) fn on_notice_frame(&self, bytes: &[u8]) {
        let header: Header = match serde_json::from_slice(bytes) {
            Ok(h) => h,
            Err(e) => {
                tracing::warn!(error = %e, "unreadable frame on the notices channel");
                return;
            }
        };
        let Ok(text) = std::str::from_utf8(bytes) else {
            return;
        };
        let frame = frame(text.to_string());
        let n = self
            .inner
            .notices
            .deliver(&header.user, header.session_id, header.id, &frame);
        if n > 0 {
            crate::metrics::notices_delivered("live", n as u64);
            self.note_delivered(std::iter::once(header.id));
        }
    }

    fn note_delivered(&self, ids: impl Iterator<Item = i64>) {
        let mut pending = self
            .inner
            .notices_delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner());
        pending.extend(ids);
    }

    /// After a gap in the live feed (the subscriber reconnected): every local
    /// socket gets what was committed after the last notice it has.
    pub(crate) async fn catch_up_notices(&self) {
        let Some(db) = self.inner.db.as_ref() else {
            return;
        };
        let (users, after) = self.inner.notices.positions();
        if users.is_empty() {
            return;
        }
        match store::after_ids(db, &users, &after).await {
            Ok(rows) => {
                for row in rows {
                    let frame = frame(encode(&row.user_id, &row.notice));
                    let n = self.inner.notices.deliver(
                        &row.user_id,
                        row.notice.session_id,
                        row.notice.notice_id,
                        &frame,
                    );
                    if n > 0 {
                        crate::metrics::notices_delivered("live", n as u64);
                        self.note_delivered(std::iter::once(row.notice.notice_id));
                    }
                }
            }
            Err(e) => {
                tracing::warn!(error = %e, "notice catch-up failed; the next join or the list has them")
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_notice_frame_carries_what_a_node_routes_by() {
        let notice = StoredNotice {
            notice_id: 42,
            kind: "order.paid".into(),
            session_id: Some(Uuid::nil()),
            data: serde_json::json!({"order_id": "x"}),
            created_at: Utc::now(),
            expires_at: Utc::now(),
            delivered: false,
            read_at: None,
        };
        let text = encode("buyer \"1\"", &notice);
        let header: Header = serde_json::from_str(&text).unwrap();
        assert_eq!((header.id, header.user.as_ref()), (42, "buyer \"1\""));
        assert_eq!(header.session_id, Some(Uuid::nil()));
        let value: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(value["type"], "notice");
        assert_eq!(value["kind"], "order.paid");
        assert!(value.get("delivered").is_none() && value.get("offset").is_none());
    }
}
