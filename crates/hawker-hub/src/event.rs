//! Room events: what publishers hand in ([`Publication`]) and what travels
//! to sockets ([`Frame`]: the encoded JSON, shared by every receiver).

use std::borrow::Cow;
use std::sync::Arc;

use axum::extract::ws::Utf8Bytes;
use serde::{Deserialize, Serialize};
use serde_json::Value;

/// Delivery priority. Only `Chat` and `Ephemeral` may be dropped for a
/// connected viewer; everything else is delivered or the viewer is closed as
/// slow (and resumes from its offset).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Lane {
    /// Host messages, pins, moderation notices.
    Host,
    /// `deal.*`, `coupon.*`, stock.
    Commerce,
    /// Viewer chat: dropped first, thinned in large rooms.
    Chat,
    /// Running totals superseded by the next one (likes, viewer count, presence).
    Ephemeral,
    /// Settings that nodes apply and viewers never see (`internal.*`).
    Internal,
    /// Replies to one connection (ack, error, welcome, reset): never dropped.
    Control,
}

impl Lane {
    /// Every lane, each at its own index (`lane as usize`).
    pub const ALL: [Lane; 6] = [
        Lane::Host,
        Lane::Commerce,
        Lane::Chat,
        Lane::Ephemeral,
        Lane::Internal,
        Lane::Control,
    ];

    /// The lane of an event type, by its name.
    pub fn of(event_type: &str) -> Lane {
        if event_type == "chat" {
            Lane::Chat
        } else if event_type.starts_with("deal.")
            || event_type.starts_with("coupon.")
            || event_type.starts_with("order.")
        {
            Lane::Commerce
        } else if matches!(
            event_type,
            "likes" | "viewers" | "presence.joined" | "presence.left"
        ) {
            Lane::Ephemeral
        } else if event_type.starts_with("internal.") {
            Lane::Internal
        } else {
            Lane::Host
        }
    }

    pub fn droppable(self) -> bool {
        matches!(self, Lane::Chat | Lane::Ephemeral)
    }

    pub fn as_str(self) -> &'static str {
        match self {
            Lane::Host => "host",
            Lane::Commerce => "commerce",
            Lane::Chat => "chat",
            Lane::Ephemeral => "ephemeral",
            Lane::Internal => "internal",
            Lane::Control => "control",
        }
    }
}

/// A change to the room's snapshot, applied in the same atomic step as the
/// event that causes it, so a snapshot always matches an offset.
#[derive(Debug, Clone, PartialEq)]
pub enum StateChange {
    Set { key: String, value: Value },
    Remove { key: String },
}

/// An event to publish into a room.
#[derive(Debug, Clone)]
pub struct Publication {
    /// e.g. `chat`, `host.announcement`, `deal.started`.
    pub event_type: String,
    /// The user the event is from (chat sender), if any.
    pub from: Option<String>,
    pub data: Value,
    pub state: Vec<StateChange>,
    /// Publishing the same dedupe id twice publishes once (durable outbox relays).
    pub dedupe: Option<String>,
    /// `(key, version)`: skip if this key was already published with a
    /// version at least as new (coalesced figures from several nodes).
    pub version: Option<(String, i64)>,
}

impl Publication {
    pub fn new(event_type: impl Into<String>, data: Value) -> Self {
        Publication {
            event_type: event_type.into(),
            from: None,
            data,
            state: Vec::new(),
            dedupe: None,
            version: None,
        }
    }

    pub fn dedupe(mut self, id: impl Into<String>) -> Self {
        self.dedupe = Some(id.into());
        self
    }

    pub fn versioned(mut self, key: impl Into<String>, version: i64) -> Self {
        self.version = Some((key.into(), version));
        self
    }

    pub fn from_user(mut self, user: impl Into<String>) -> Self {
        self.from = Some(user.into());
        self
    }

    pub fn set_state(mut self, key: impl Into<String>, value: Value) -> Self {
        self.state.push(StateChange::Set {
            key: key.into(),
            value,
        });
        self
    }

    pub fn remove_state(mut self, key: impl Into<String>) -> Self {
        self.state.push(StateChange::Remove { key: key.into() });
        self
    }

    /// The frame body after `{"offset":N,"epoch":"E",` — the Lua script
    /// prepends those two once it knows them.
    pub fn encode_tail(&self, ts_ms: i64) -> Result<String, serde_json::Error> {
        #[derive(Serialize)]
        struct Tail<'a> {
            #[serde(rename = "type")]
            event_type: &'a str,
            #[serde(skip_serializing_if = "Option::is_none")]
            from: Option<&'a str>,
            ts: i64,
            data: &'a Value,
        }
        let json = serde_json::to_string(&Tail {
            event_type: &self.event_type,
            from: self.from.as_deref(),
            ts: ts_ms,
            data: &self.data,
        })?;
        // Drop the leading `{`: the script writes `{"offset":..,"epoch":..,` before it.
        Ok(json[1..].to_string())
    }
}

/// The fields of a room event a node needs to route it; parsed once per
/// event, never per receiver.
#[derive(Debug, Deserialize)]
pub struct FrameHeader<'a> {
    /// 0 (absent) for a live-only event: it is in no history and has no place in the room's order.
    #[serde(default)]
    pub offset: u64,
    #[serde(default, borrow)]
    pub epoch: &'a str,
    #[serde(rename = "type", borrow)]
    pub event_type: &'a str,
    #[serde(default, borrow)]
    pub from: Option<Cow<'a, str>>,
    #[serde(default)]
    pub ts: i64,
    #[serde(default)]
    pub data: Option<&'a serde_json::value::RawValue>,
}

/// One encoded frame, shared by every connection that receives it.
#[derive(Debug)]
pub struct Frame {
    /// Room offset; 0 for frames that are not room events.
    pub offset: u64,
    pub lane: Lane,
    /// The chat sender, so thinning never hides a viewer's own message.
    pub from: Option<String>,
    /// Publisher's clock, milliseconds since the epoch (fan-out latency).
    pub ts_ms: i64,
    pub text: Utf8Bytes,
}

impl Frame {
    pub fn control(text: String) -> Arc<Frame> {
        Arc::new(Frame {
            offset: 0,
            lane: Lane::Control,
            from: None,
            ts_ms: 0,
            text: text.into(),
        })
    }

    pub fn len(&self) -> usize {
        self.text.len()
    }

    pub fn is_empty(&self) -> bool {
        self.text.is_empty()
    }
}

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn each_lane_sits_at_its_own_index_in_all() {
        for (i, lane) in Lane::ALL.iter().enumerate() {
            assert_eq!(*lane as usize, i, "{lane:?}");
        }
    }

    #[test]
    fn lanes_follow_the_event_type() {
        assert_eq!(Lane::of("chat"), Lane::Chat);
        assert_eq!(Lane::of("deal.stock"), Lane::Commerce);
        assert_eq!(Lane::of("coupon.dropped"), Lane::Commerce);
        assert_eq!(Lane::of("host.announcement"), Lane::Host);
        assert_eq!(Lane::of("likes"), Lane::Ephemeral);
        assert_eq!(Lane::of("internal.moderation"), Lane::Internal);
        assert!(!Lane::Commerce.droppable() && Lane::Chat.droppable());
    }

    #[test]
    fn a_tail_completes_into_a_frame_whose_header_parses() {
        let publication = Publication::new("chat", json!({"text": "hi \"there\""})).from_user("u1");
        let frame = format!(
            "{{\"offset\":7,\"epoch\":\"e1\",{}",
            publication.encode_tail(123).unwrap()
        );
        let header: FrameHeader = serde_json::from_str(&frame).unwrap();
        assert_eq!(
            (header.offset, header.epoch, header.event_type),
            (7, "e1", "chat")
        );
        assert_eq!(header.from.as_deref(), Some("u1"));
        let value: Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["data"]["text"], "hi \"there\"");
    }
}
