//! Names in Redis: every key and pub/sub channel starts with the
//! deployment's prefix (`redis.key_prefix`, default `hawker`), so
//! deployments sharing one Redis never see each other's rooms. A Redis
//! database number does not separate them: pub/sub channels are global to
//! the server, whatever database a connection selected.

use std::sync::Arc;

use uuid::Uuid;

/// The prefix when none is configured.
pub const DEFAULT_PREFIX: &str = "hawker";

/// Whether `prefix` may be used: 1 to 64 of `A-Z a-z 0-9 _ - .` (no `:`,
/// which separates the parts of a key, and no braces, which make hash tags).
pub fn valid_prefix(prefix: &str) -> bool {
    !prefix.is_empty()
        && prefix.len() <= 64
        && prefix
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'_' | b'-' | b'.'))
}

/// A room's key and channel names under one prefix.
#[derive(Debug, Clone)]
pub struct RoomKeys {
    prefix: Arc<str>,
}

impl RoomKeys {
    pub fn new(prefix: &str) -> Self {
        RoomKeys {
            prefix: prefix.into(),
        }
    }

    pub fn prefix(&self) -> &str {
        &self.prefix
    }

    /// The channel a room's events are published on: `<prefix>:room:{<id>}`.
    pub fn channel(&self, room: Uuid) -> String {
        self.room(room).channel
    }

    /// One room's names, its id written once: a publish names eight of
    /// them, and `format!` of a `Uuid` cost about 1,500 instructions each
    /// (callgrind, docs/benchmarks.md).
    pub fn room(&self, room: Uuid) -> RoomNames {
        let mut id = [0u8; uuid::fmt::Hyphenated::LENGTH];
        let id = room.hyphenated().encode_lower(&mut id);
        let mut channel = String::with_capacity(self.prefix.len() + ":room:{}".len() + id.len());
        channel.push_str(&self.prefix);
        channel.push_str(":room:{");
        channel.push_str(id);
        channel.push('}');
        RoomNames { channel }
    }

    /// The room id of a channel name, if it is one of this prefix's room channels.
    pub fn room_of_channel(&self, channel: &str) -> Option<Uuid> {
        channel
            .strip_prefix(&*self.prefix)?
            .strip_prefix(":room:{")?
            .strip_suffix('}')?
            .parse()
            .ok()
    }

    /// The channel every node's notices travel on: `<prefix>:notices`.
    pub fn notices_channel(&self) -> String {
        format!("{}:notices", self.prefix)
    }

    /// The id of the last notice published for `user` (expires with the
    /// notices): a join with nothing newer reads nothing from Postgres.
    pub fn notices_latest(&self, user: &str) -> String {
        format!("{}:notices:latest:{user}", self.prefix)
    }

    /// Present once the relay has written `notices_latest` for every user
    /// with unexpired notices (gone after a flush: joins then ask Postgres
    /// until the relay has written them again).
    pub fn notices_marked(&self) -> String {
        format!("{}:notices:marked", self.prefix)
    }

    /// One of a room's keys: `<prefix>:room:{<id>}:<what>`.
    pub fn key(&self, room: Uuid, what: &str) -> String {
        self.room(room).key(&[what])
    }
}

/// One room's channel and keys under a prefix ([`RoomKeys::room`]).
#[derive(Debug, Clone)]
pub struct RoomNames {
    /// `<prefix>:room:{<id>}`, which every key of the room starts with.
    channel: String,
}

impl RoomNames {
    /// The room's channel.
    pub fn channel(&self) -> String {
        self.channel.clone()
    }

    /// The room's key `<prefix>:room:{<id>}:<parts, joined as given>`.
    pub fn key(&self, parts: &[&str]) -> String {
        let len = self.channel.len() + 1 + parts.iter().map(|p| p.len()).sum::<usize>();
        let mut name = String::with_capacity(len);
        name.push_str(&self.channel);
        name.push(':');
        parts.iter().for_each(|part| name.push_str(part));
        name
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn channels_round_trip_to_rooms_under_their_own_prefix_only() {
        let room = Uuid::new_v4();
        let a = RoomKeys::new("hawker");
        let b = RoomKeys::new("staging");
        assert_eq!(a.room_of_channel(&a.channel(room)), Some(room));
        assert_eq!(b.room_of_channel(&a.channel(room)), None);
        assert_eq!(a.room_of_channel(&b.channel(room)), None);
        assert_eq!(a.room_of_channel("hawker:room:{nope}"), None);
        assert_eq!(a.room_of_channel(&a.notices_channel()), None);
        assert_eq!(b.notices_channel(), "staging:notices");
        assert_eq!(b.key(room, "meta"), format!("staging:room:{{{room}}}:meta"));
        assert_eq!(b.channel(room), format!("staging:room:{{{room}}}"));
        let names = b.room(room);
        assert_eq!(names.channel(), b.channel(room));
        assert_eq!(
            names.key(&["rate:", "chat", ":", "viewer-1"]),
            format!("staging:room:{{{room}}}:rate:chat:viewer-1")
        );
    }

    #[test]
    fn prefixes_are_checked() {
        for ok in ["hawker", "staging-eu.1", "a_b"] {
            assert!(valid_prefix(ok), "{ok}");
        }
        for bad in ["", "a:b", "a{b}", "with space", &"x".repeat(65)] {
            assert!(!valid_prefix(bad), "{bad}");
        }
    }
}
