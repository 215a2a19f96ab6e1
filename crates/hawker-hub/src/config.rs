//! The `[hub]` configuration section.

use std::time::Duration;

use serde::Deserialize;

use crate::ratelimit::Limit;

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HubConfig {
    /// Events kept per room for resume (a capped Redis stream).
    pub history_len: u64,
    /// Seconds a room's keys live in Redis after its last event.
    pub room_ttl_secs: u64,
    /// Bytes a connection's send queue may hold before chat is dropped and,
    /// past that with only must-deliver frames, the connection is closed as
    /// slow. The key is still `hub.outbox_max_bytes` (documented, and set in
    /// deployments), although the queue is now called the send queue.
    #[serde(rename = "outbox_max_bytes")]
    pub send_queue_max_bytes: usize,
    /// Frames written per flush at most.
    pub write_batch: usize,
    /// Commands one socket may have in flight; past this the socket is not
    /// read until one is answered.
    pub commands_in_flight: usize,
    /// tungstenite's read buffer per connection.
    pub read_buffer_bytes: usize,
    /// tungstenite's write buffer per connection (flushes when exceeded).
    pub write_buffer_bytes: usize,
    /// A text frame longer than this gets a `frame_too_large` error frame.
    pub max_frame_bytes: usize,
    /// A frame longer than this closes the connection with 1009.
    pub hard_max_frame_bytes: usize,
    /// Chat text limit in characters.
    pub chat_max_chars: usize,
    /// Per-user chat token bucket: burst size and refill per second.
    pub chat_burst: u32,
    pub chat_per_sec: f64,
    /// Per-user likes token bucket (taps): burst size and refill per second.
    /// Taps beyond it are not counted.
    pub likes_burst: u32,
    pub likes_per_sec: f64,
    /// A host socket's right to host is asked again when it is older than
    /// this: before a command, and on a timer of this period.
    pub host_recheck_secs: u64,
    /// Rooms with more local viewers than this thin chat per viewer.
    pub chat_thin_above: usize,
    /// Chat messages per second each viewer receives in a thinned room (0 = thinning off).
    pub chat_thin_per_sec: f64,
    /// Rooms with fewer viewers than this announce joins and leaves.
    pub presence_below: usize,
    /// Sockets one user may hold on this node.
    pub max_sockets_per_user: usize,
    /// Sockets this node accepts in all.
    pub max_sockets: usize,
    /// Allowed `Origin` values for browser sockets; `*` allows any.
    pub allowed_origins: Vec<String>,
    pub ping_interval_secs: u64,
    /// A connection that sends nothing (not even a pong) for this long is closed.
    pub idle_timeout_secs: u64,
    /// Likes are summed and announced at most this often.
    pub likes_interval_ms: u64,
    /// The viewer count is announced this often.
    pub viewers_interval_ms: u64,
    /// How long an empty room stays subscribed before the node lets it go.
    pub room_linger_ms: u64,
    /// How often each node publishes pending durable room events (`room_outbox`).
    pub durable_relay_ms: u64,
    /// Run the Redis subscriber on the node's second thread (see
    /// `ingest.rs`). Off by default: it raised viewers' median latency when
    /// rooms ran on the main runtime, and changed nothing measurable with
    /// the rooms on the command thread (docs/benchmarks.md).
    pub ingest_thread: bool,
    /// Run the sockets that may host, with a publisher and a Redis
    /// connection of their own, on the node's second thread (see
    /// `ingest.rs`), so a host's frame is read, published and answered
    /// without waiting behind the socket writers of a busy node.
    pub command_thread: bool,
    /// An upgraded socket that has not joined its room within this long
    /// (Redis slow or unreachable) gets `unavailable` and close 4013.
    pub join_timeout_ms: u64,
    /// A socket command not answered within this long gets `unavailable`
    /// (its outcome is unknown), and the socket goes on with the next frame.
    pub command_timeout_ms: u64,
    /// After `session.ended` reaches a room, its sockets are closed (4009)
    /// this long later, so clients read the event and the last figures first.
    pub session_end_grace_ms: u64,
    /// A notice is kept this long (for users who are away), then deleted.
    pub notice_ttl_secs: u64,
    /// Notices kept per user at most; a new one beyond it deletes the oldest.
    pub notice_max_per_user: u64,
    /// The first part of every Redis key and channel name of the hub. Not a
    /// `[hub]` key: the server sets it from `redis.key_prefix`.
    #[serde(skip, default = "default_key_prefix")]
    pub key_prefix: String,
    /// What the hub keeps how long (`room_outbox`, dedupe ids). Not `[hub]`
    /// keys: the server sets it from its `[retention]` section.
    #[serde(skip)]
    pub retention: crate::retention::Retention,
}

fn default_key_prefix() -> String {
    crate::keys::DEFAULT_PREFIX.to_string()
}

impl Default for HubConfig {
    fn default() -> Self {
        HubConfig {
            history_len: 1000,
            room_ttl_secs: 86_400,
            send_queue_max_bytes: 256 * 1024,
            write_batch: 64,
            commands_in_flight: 32,
            read_buffer_bytes: 1024,
            write_buffer_bytes: 8192,
            max_frame_bytes: 4096,
            hard_max_frame_bytes: 65_536,
            chat_max_chars: 200,
            chat_burst: 5,
            chat_per_sec: 0.5,
            likes_burst: 100,
            likes_per_sec: 10.0,
            host_recheck_secs: 5,
            chat_thin_above: 500,
            chat_thin_per_sec: 5.0,
            presence_below: 200,
            max_sockets_per_user: 5,
            max_sockets: 19_000,
            allowed_origins: vec!["*".to_string()],
            ping_interval_secs: 25,
            idle_timeout_secs: 70,
            likes_interval_ms: 500,
            viewers_interval_ms: 2000,
            room_linger_ms: 5000,
            durable_relay_ms: 200,
            ingest_thread: false,
            command_thread: true,
            join_timeout_ms: 15_000,
            command_timeout_ms: 10_000,
            session_end_grace_ms: 3000,
            notice_ttl_secs: 86_400,
            notice_max_per_user: 100,
            key_prefix: default_key_prefix(),
            retention: crate::retention::Retention::default(),
        }
    }
}

impl HubConfig {
    pub fn validate(&self) -> Result<(), (&'static str, String)> {
        let positive = [
            ("hub.history_len", self.history_len as usize),
            ("hub.outbox_max_bytes", self.send_queue_max_bytes),
            ("hub.write_batch", self.write_batch),
            ("hub.commands_in_flight", self.commands_in_flight),
            ("hub.read_buffer_bytes", self.read_buffer_bytes),
            ("hub.max_frame_bytes", self.max_frame_bytes),
            ("hub.chat_max_chars", self.chat_max_chars),
            ("hub.chat_burst", self.chat_burst as usize),
            ("hub.likes_burst", self.likes_burst as usize),
            ("hub.host_recheck_secs", self.host_recheck_secs as usize),
            ("hub.max_sockets_per_user", self.max_sockets_per_user),
            ("hub.max_sockets", self.max_sockets),
            ("hub.ping_interval_secs", self.ping_interval_secs as usize),
            ("hub.likes_interval_ms", self.likes_interval_ms as usize),
            ("hub.viewers_interval_ms", self.viewers_interval_ms as usize),
            ("hub.durable_relay_ms", self.durable_relay_ms as usize),
            ("hub.join_timeout_ms", self.join_timeout_ms as usize),
            ("hub.command_timeout_ms", self.command_timeout_ms as usize),
        ];
        for (key, value) in positive {
            if value == 0 {
                return Err((key, "must be at least 1".into()));
            }
        }
        if !(1..=30 * 86_400).contains(&self.notice_ttl_secs) {
            return Err((
                "hub.notice_ttl_secs",
                "must be from 1 to 2592000 (30 days)".into(),
            ));
        }
        if !(1..=10_000).contains(&self.notice_max_per_user) {
            return Err(("hub.notice_max_per_user", "must be from 1 to 10000".into()));
        }
        if self.room_ttl_secs < 60 {
            return Err(("hub.room_ttl_secs", "must be at least 60".into()));
        }
        if self.write_buffer_bytes == 0 {
            return Err(("hub.write_buffer_bytes", "must be at least 1".into()));
        }
        if self.hard_max_frame_bytes < self.max_frame_bytes {
            return Err((
                "hub.hard_max_frame_bytes",
                "must be at least hub.max_frame_bytes".into(),
            ));
        }
        if self.idle_timeout_secs <= self.ping_interval_secs {
            return Err((
                "hub.idle_timeout_secs",
                "must be longer than hub.ping_interval_secs".into(),
            ));
        }
        if !self.chat_per_sec.is_finite() || self.chat_per_sec <= 0.0 {
            return Err(("hub.chat_per_sec", "must be above 0".into()));
        }
        if !self.likes_per_sec.is_finite() || self.likes_per_sec <= 0.0 {
            return Err(("hub.likes_per_sec", "must be above 0".into()));
        }
        if self.host_recheck_secs > 300 {
            return Err(("hub.host_recheck_secs", "must be at most 300".into()));
        }
        if !self.chat_thin_per_sec.is_finite() || self.chat_thin_per_sec < 0.0 {
            return Err(("hub.chat_thin_per_sec", "must be 0 (off) or more".into()));
        }
        if !crate::keys::valid_prefix(&self.key_prefix) {
            return Err((
                "redis.key_prefix",
                "must be 1 to 64 of the characters A-Z a-z 0-9 _ - .".into(),
            ));
        }
        Ok(())
    }

    /// The per-user chat bucket.
    pub fn chat_limit(&self) -> Limit {
        Limit {
            burst: f64::from(self.chat_burst),
            per_sec: self.chat_per_sec,
        }
    }

    /// The per-user likes bucket.
    pub fn likes_limit(&self) -> Limit {
        Limit {
            burst: f64::from(self.likes_burst),
            per_sec: self.likes_per_sec,
        }
    }

    pub fn host_recheck(&self) -> Duration {
        Duration::from_secs(self.host_recheck_secs)
    }

    pub fn ping_interval(&self) -> Duration {
        Duration::from_secs(self.ping_interval_secs)
    }

    pub fn idle_timeout(&self) -> Duration {
        Duration::from_secs(self.idle_timeout_secs)
    }

    pub fn join_timeout(&self) -> Duration {
        Duration::from_millis(self.join_timeout_ms)
    }

    pub fn command_timeout(&self) -> Duration {
        Duration::from_millis(self.command_timeout_ms)
    }

    pub fn session_end_grace(&self) -> Duration {
        Duration::from_millis(self.session_end_grace_ms)
    }
}
