//! A room's counters and history for readers outside the hub (live session
//! figures): the viewers and likes the room's state holds, its epoch, and
//! the events after an offset, parsed. Only the hub knows where and how a
//! room keeps them in Redis.

use redis::streams::StreamRangeReply;
use serde_json::Value;
use uuid::Uuid;

use crate::store::bounded;
use crate::{Hub, PublishError};

/// A room's counters now.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RoomCounters {
    /// The room's epoch; `None` if Redis has no room (never opened, or forgotten).
    pub epoch: Option<String>,
    /// Viewers connected on every node, as last announced.
    pub viewers: i64,
    /// Likes, as last announced.
    pub likes: i64,
}

/// One event of a room's history.
#[derive(Debug, Clone, PartialEq)]
pub struct RoomEvent {
    pub offset: u64,
    /// e.g. `chat`, `presence.joined`.
    pub event_type: String,
    /// The user the event is from (chat sender), if any.
    pub from: Option<String>,
    pub data: Value,
}

/// The fields of a stored frame a reader needs.
#[derive(serde::Deserialize)]
struct StoredFrame {
    #[serde(rename = "type")]
    event_type: String,
    #[serde(default)]
    from: Option<String>,
    #[serde(default)]
    data: Value,
}

fn number(value: Option<String>) -> i64 {
    value.and_then(|s| s.trim().parse::<i64>().ok()).unwrap_or(0)
}

impl Hub {
    /// The room's epoch, viewers and likes (zeros if Redis has no room).
    pub async fn room_counters(&self, room: Uuid) -> Result<RoomCounters, PublishError> {
        let store = &self.inner.store;
        let mut conn = store.redis.clone();
        let mut pipe = redis::pipe();
        pipe.cmd("HMGET")
            .arg(store.keys.key(room, "state"))
            .arg("viewers")
            .arg("likes")
            .cmd("HGET")
            .arg(store.keys.key(room, "meta"))
            .arg("epoch");
        let ((viewers, likes), epoch): ((Option<String>, Option<String>), Option<String>) =
            bounded(store.timeout, pipe.query_async(&mut conn)).await?;
        Ok(RoomCounters {
            epoch: epoch.filter(|e| !e.is_empty()),
            viewers: number(viewers),
            likes: number(likes),
        })
    }

    /// One field of the room's snapshot state (what a publisher set with
    /// `Publication::set_state`), read without opening the room; `None` if
    /// the room or the field is absent.
    pub async fn state_field(&self, room: Uuid, field: &str) -> Result<Option<Value>, PublishError> {
        let store = &self.inner.store;
        let mut conn = store.redis.clone();
        let mut cmd = redis::cmd("HGET");
        cmd.arg(store.keys.key(room, "state")).arg(field);
        let raw: Option<String> = bounded(store.timeout, cmd.query_async(&mut conn)).await?;
        Ok(raw.map(|v| serde_json::from_str(&v).unwrap_or(Value::String(v))))
    }

    /// Up to `limit` events of the room's history after offset `after`, in
    /// order. Events the capped history no longer holds are skipped: the
    /// first offset returned is then more than `after + 1`.
    pub async fn room_events(
        &self,
        room: Uuid,
        after: u64,
        limit: usize,
    ) -> Result<Vec<RoomEvent>, PublishError> {
        let store = &self.inner.store;
        let mut conn = store.redis.clone();
        let mut command = redis::cmd("XRANGE");
        command
            .arg(store.keys.key(room, "stream"))
            .arg(format!("{}-0", after.saturating_add(1)))
            .arg("+")
            .arg("COUNT")
            .arg(limit);
        let page: StreamRangeReply = bounded(store.timeout, command.query_async(&mut conn)).await?;
        let mut events = Vec::with_capacity(page.ids.len());
        for entry in page.ids {
            let Some(offset) = entry.id.split('-').next().and_then(|o| o.parse::<u64>().ok()) else {
                continue;
            };
            let frame: Option<String> = entry.get("f");
            let Some(frame) = frame.and_then(|f| serde_json::from_str::<StoredFrame>(&f).ok()) else {
                // Still an offset the reader has passed.
                events.push(RoomEvent {
                    offset,
                    event_type: String::new(),
                    from: None,
                    data: Value::Null,
                });
                continue;
            };
            events.push(RoomEvent {
                offset,
                event_type: frame.event_type,
                from: frame.from,
                data: frame.data,
            });
        }
        Ok(events)
    }
}
