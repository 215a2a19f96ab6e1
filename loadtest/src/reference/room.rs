//! A room of the reference server: its offset counter, each event's frame
//! encoded once, and one broadcast channel that every socket of the room reads.
//!
//! Why `tokio::sync::broadcast` rather than a per-room list of per-socket
//! queues: a publish is one write into a shared ring (plus waking the
//! sockets that wait), whatever the number of viewers; each socket holds
//! only a cursor into the ring and clones the frame (a reference count) as
//! it reads it. That is the least a fan-out can do per event and per
//! socket, which is what a reference should measure. A socket that falls a
//! whole ring behind is closed, as hawker closes slow sockets.

use std::collections::HashMap;
use std::sync::{Arc, Mutex, PoisonError};

use tokio::sync::broadcast;
use tokio_tungstenite::tungstenite::Utf8Bytes;
use uuid::Uuid;

/// Ring slots (frames a socket may fall behind before it is closed as too
/// slow) of a room when the server holds one or a few rooms.
pub const RING_FRAMES_MAX: usize = 4096;

/// The smallest ring: a room gets at least this many frames of slack.
pub const RING_FRAMES_MIN: usize = 128;

/// Rooms a server holds at most (`fanout --rooms` goes up to 5,000).
pub const MAX_ROOMS: usize = 5000;

/// Ring slots of all rooms together at most: a ring is allocated in full
/// when its room is created (a slot is a mutex and a frame handle, ~56
/// bytes), so this bounds the rings to ~36 MB, 5,000 rooms of
/// [`RING_FRAMES_MIN`] or 156 rooms of [`RING_FRAMES_MAX`].
const RING_SLOTS: usize = MAX_ROOMS * RING_FRAMES_MIN;

/// The ring of each room when a run uses `rooms` rooms: the largest power
/// of two that keeps all rings within [`RING_SLOTS`], between
/// [`RING_FRAMES_MIN`] and [`RING_FRAMES_MAX`]. One room (up to 156) keeps
/// 4096 frames; 2,000 rooms get 256, 5,000 rooms 128 (tens of seconds of a
/// room's events at a few events per second per room).
pub fn ring_frames_for(rooms: usize) -> usize {
    let fit = RING_SLOTS / rooms.max(1);
    // The largest power of two ≤ fit (fit ≥ 128 for rooms ≤ 5,000).
    let pow2 = if fit == 0 { 1 } else { 1 << fit.ilog2() };
    pow2.clamp(RING_FRAMES_MIN, RING_FRAMES_MAX)
}

/// Rooms a server with rings of `ring_frames` holds at most: as many as fit
/// in [`RING_SLOTS`], at most [`MAX_ROOMS`].
pub fn max_rooms(ring_frames: usize) -> usize {
    (RING_SLOTS / ring_frames.max(1)).clamp(1, MAX_ROOMS)
}

/// The rooms of this process, by session id.
pub struct Rooms {
    /// Names this process' offsets: a client holding another epoch's offset
    /// was in another server's room.
    epoch: Arc<str>,
    /// Each room's ring (a power of two).
    ring_frames: usize,
    /// Rooms held at most ([`max_rooms`] of the ring).
    max_rooms: usize,
    rooms: Mutex<HashMap<Uuid, Arc<Room>>>,
}

impl Rooms {
    /// Rooms with rings of `ring_frames` frames (rounded up to a power of two).
    pub fn new(ring_frames: usize) -> Rooms {
        let ring_frames = ring_frames.clamp(1, RING_FRAMES_MAX).next_power_of_two();
        Rooms {
            epoch: Uuid::new_v4().simple().to_string()[..8].into(),
            ring_frames,
            max_rooms: max_rooms(ring_frames),
            rooms: Mutex::new(HashMap::new()),
        }
    }

    /// Rooms held at most.
    pub fn max_rooms(&self) -> usize {
        self.max_rooms
    }

    /// The room of `session`, created on first use; `None` past [`Rooms::max_rooms`].
    pub fn get(&self, session: Uuid) -> Option<Arc<Room>> {
        let mut rooms = self.rooms.lock().unwrap_or_else(PoisonError::into_inner);
        if let Some(room) = rooms.get(&session) {
            return Some(room.clone());
        }
        if rooms.len() >= self.max_rooms {
            return None;
        }
        let room = Arc::new(Room::new(self.epoch.clone(), self.ring_frames));
        rooms.insert(session, room.clone());
        Some(room)
    }
}

/// One room: offsets and the broadcast of its frames.
pub struct Room {
    epoch: Arc<str>,
    sender: broadcast::Sender<Utf8Bytes>,
    /// The last offset given out. Held while a frame enters the ring, so
    /// frames enter in offset order and a joining socket sees exactly the
    /// events after the offset of its welcome.
    offset: Mutex<u64>,
}

impl Room {
    fn new(epoch: Arc<str>, ring_frames: usize) -> Room {
        Room {
            epoch,
            sender: broadcast::Sender::new(ring_frames),
            offset: Mutex::new(0),
        }
    }

    pub fn epoch(&self) -> &str {
        &self.epoch
    }

    /// The current offset and a receiver of every event after it.
    pub fn join(&self) -> (u64, broadcast::Receiver<Utf8Bytes>) {
        let offset = self.offset.lock().unwrap_or_else(PoisonError::into_inner);
        (*offset, self.sender.subscribe())
    }

    /// Encodes the event once and hands the same frame to every socket;
    /// returns its offset.
    pub fn publish(&self, event_type: &str, text: &str) -> u64 {
        let mut offset = self.offset.lock().unwrap_or_else(PoisonError::into_inner);
        *offset += 1;
        let frame = event_frame(*offset, &self.epoch, event_type, now_ms(), text);
        // An error only means no socket is listening.
        let _ = self.sender.send(frame.into());
        *offset
    }
}

/// A room event as hawker frames it: `offset` and `epoch` first (the
/// generator reads them without parsing the JSON), then `type`, `ts` and
/// `data`. hawker also writes the sender's user in `from`; the reference
/// checks no token, so it has no user to name (its frames are ~20 B shorter).
pub fn event_frame(offset: u64, epoch: &str, event_type: &str, ts_ms: u64, text: &str) -> String {
    // A `Value` displays as JSON, escaping the text, and cannot fail.
    let text = serde_json::Value::from(text);
    format!(
        "{{\"offset\":{offset},\"epoch\":\"{epoch}\",\"type\":\"{event_type}\",\"ts\":{ts_ms},\"data\":{{\"text\":{text}}}}}"
    )
}

fn now_ms() -> u64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map_or(0, |d| d.as_millis() as u64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::fanout::frame::{event_text, Lane, Parser, Received};

    #[test]
    fn frames_are_json_the_generator_reads_without_parsing() {
        let text = event_text("r1", Lane::Host, 7, 0, 123_456, 60);
        let frame = event_frame(42, "e1", "host.announcement", 1_700_000_000_000, &text);
        let value: serde_json::Value = serde_json::from_str(&frame).unwrap();
        assert_eq!(value["data"]["text"], text.as_str());
        assert_eq!(value["epoch"], "e1");
        assert_eq!(
            Parser::new("r1").parse(frame.as_bytes()),
            Received::Marked {
                offset: 42,
                lane: Lane::Host,
                seq: 7,
                sender: 0,
                scheduled_us: 123_456
            }
        );
        let quoted = event_frame(1, "e1", "chat", 1, "say \"hi\"\n");
        let value: serde_json::Value = serde_json::from_str(&quoted).unwrap();
        assert_eq!(value["data"]["text"], "say \"hi\"\n");
    }

    #[test]
    fn sockets_get_the_events_after_their_join_in_offset_order() {
        let rooms = Rooms::new(RING_FRAMES_MAX);
        let session = Uuid::new_v4();
        let room = rooms.get(session).unwrap();
        assert_eq!(room.publish("chat", "before"), 1);
        let (offset, mut receiver) = room.join();
        assert_eq!(offset, 1);
        assert_eq!(rooms.get(session).unwrap().publish("chat", "after"), 2);
        let frame = receiver.try_recv().unwrap();
        assert!(frame.as_str().starts_with("{\"offset\":2,"), "{}", frame.as_str());
        assert!(receiver.try_recv().is_err());
    }

    #[test]
    fn rooms_are_bounded() {
        // The smallest ring: every room of `fanout --rooms 5000`.
        let rooms = Rooms::new(ring_frames_for(MAX_ROOMS));
        assert_eq!(rooms.max_rooms(), MAX_ROOMS);
        let first = Uuid::new_v4();
        assert!(rooms.get(first).is_some());
        for _ in 1..MAX_ROOMS {
            assert!(rooms.get(Uuid::new_v4()).is_some());
        }
        assert!(rooms.get(Uuid::new_v4()).is_none());
        assert!(rooms.get(first).is_some(), "a room held stays reachable");
        // Full rings hold fewer rooms: the slots stay within the same bound.
        let big = Rooms::new(RING_FRAMES_MAX);
        assert_eq!(big.max_rooms(), 156);
        for _ in 0..big.max_rooms() {
            assert!(big.get(Uuid::new_v4()).is_some());
        }
        assert!(big.get(Uuid::new_v4()).is_none());
    }

    #[test]
    fn rings_shrink_with_the_rooms_and_always_fit() {
        assert_eq!(ring_frames_for(1), RING_FRAMES_MAX);
        assert_eq!(ring_frames_for(100), RING_FRAMES_MAX);
        assert_eq!(ring_frames_for(2000), 256);
        assert_eq!(ring_frames_for(MAX_ROOMS), RING_FRAMES_MIN);
        assert_eq!(ring_frames_for(0), RING_FRAMES_MAX);
        for rooms in 1..=MAX_ROOMS {
            let ring = ring_frames_for(rooms);
            assert!(ring.is_power_of_two(), "{rooms}: {ring}");
            assert!(max_rooms(ring) >= rooms, "{rooms} rooms of {ring} frames");
            assert!(rooms * ring <= RING_SLOTS, "{rooms} rooms of {ring} frames");
        }
        // Rounded up to a power of two, as the broadcast ring does.
        assert_eq!(Rooms::new(100).ring_frames, 128);
        assert_eq!(Rooms::new(1 << 20).ring_frames, RING_FRAMES_MAX);
    }
}
