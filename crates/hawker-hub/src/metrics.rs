//! The hub's metrics (Prometheus names under `hawker_hub_`).

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::OnceLock;

use metrics::{counter, gauge, histogram, Counter, Histogram};

use crate::event::Lane;

pub fn socket_opened() {
    gauge!("hawker_hub_sockets").increment(1.0);
}

pub fn socket_closed() {
    gauge!("hawker_hub_sockets").decrement(1.0);
}

pub fn rooms(n: usize) {
    gauge!("hawker_hub_rooms").set(n as f64);
}

/// A room event taken in, on its lane. The handles are looked up once, as
/// [`Writes`]' are: a lookup with a label cost ~1,000 instructions per
/// event (callgrind, many small rooms).
pub fn event_in(lane: Lane) {
    static LANES: OnceLock<[Counter; Lane::ALL.len()]> = OnceLock::new();
    let lanes =
        LANES.get_or_init(|| Lane::ALL.map(|l| counter!("hawker_hub_events_in_total", "lane" => l.as_str())));
    lanes[lane as usize].increment(1);
}

/// The handles a socket write updates, looked up once (a lookup per write
/// was ≈ 1 % of the hub's CPU at 100,000 writes/s). The process's recorder
/// is installed before any socket opens.
struct Writes {
    writes: Counter,
    events: Counter,
    bytes: Counter,
    latency: Histogram,
    /// Written batches so far, to sample their latency.
    batches: AtomicU64,
}

fn writes() -> &'static Writes {
    static WRITES: OnceLock<Writes> = OnceLock::new();
    WRITES.get_or_init(|| Writes {
        writes: counter!("hawker_hub_socket_writes_total"),
        events: counter!("hawker_hub_events_out_total"),
        bytes: counter!("hawker_hub_bytes_out_total"),
        latency: histogram!("hawker_hub_fanout_latency_seconds"),
        batches: AtomicU64::new(0),
    })
}

/// One batch of `frames` frames (`bytes` bytes) written to a socket.
pub fn delivered(frames: u64, bytes: u64) {
    let w = writes();
    w.writes.increment(1);
    w.events.increment(frames);
    w.bytes.increment(bytes);
}

/// Written batches whose latency is sampled: one in this many.
pub const WRITE_LATENCY_SAMPLE: u64 = 16;

/// The fan-out latency of a written batch, for one batch in
/// [`WRITE_LATENCY_SAMPLE`] (`seconds` is only asked for those).
pub fn written_latency(seconds: impl FnOnce() -> Option<f64>) {
    let w = writes();
    if w.batches.fetch_add(1, Ordering::Relaxed) % WRITE_LATENCY_SAMPLE == 0 {
        if let Some(seconds) = seconds() {
            w.latency.record(seconds);
        }
    }
}

/// reason: `queue_full`, `thinned`, `rate_limited`, `slow_mode`, `muted`, `blocked_word`.
pub fn chat_dropped(reason: &'static str, n: u64) {
    counter!("hawker_hub_chat_dropped_total", "reason" => reason).increment(n);
}

pub fn slow_close() {
    counter!("hawker_hub_slow_closes_total").increment(1);
}

pub fn redis_reconnect() {
    counter!("hawker_hub_redis_reconnects_total").increment(1);
}

/// outcome: `recovered` (filled from history) or `reset` (snapshot sent).
pub fn recovery_gap(outcome: &'static str) {
    counter!("hawker_hub_recovery_gaps_total", "outcome" => outcome).increment(1);
}

/// From the publisher's timestamp to the moment the frame was written to a socket.
pub fn fanout_latency(seconds: f64) {
    writes().latency.record(seconds);
}

/// Like taps over the sender's likes rate limit, not counted.
pub fn likes_not_counted(n: u64) {
    counter!("hawker_hub_likes_not_counted_total").increment(n);
}

/// Host sockets demoted to viewers after their user lost the right to host.
pub fn host_demoted() {
    counter!("hawker_hub_host_demotions_total").increment(1);
}

/// Notices published on Redis by this node's relay.
pub fn notices_published(n: u64) {
    counter!("hawker_hub_notices_published_total").increment(n);
}

/// Notices queued to sockets; `how`: `live` (as published) or `join` (a
/// socket's backlog when it joined or resumed). One per socket.
pub fn notices_delivered(how: &'static str, n: u64) {
    if n > 0 {
        counter!("hawker_hub_notices_delivered_total", "how" => how).increment(n);
    }
}

/// Notices deleted at expiry that no socket got and nobody read.
pub fn notices_expired_undelivered(n: u64) {
    if n > 0 {
        counter!("hawker_hub_notices_expired_undelivered_total").increment(n);
    }
}

/// One pipeline of the node's room publisher, and the publications it held
/// (their ratio is the mean batch).
pub fn publish_batch(publications: usize) {
    static HANDLES: OnceLock<(Counter, Counter)> = OnceLock::new();
    let (pipelines, published) = HANDLES.get_or_init(|| {
        (
            counter!("hawker_hub_publish_pipelines_total"),
            counter!("hawker_hub_publications_total"),
        )
    });
    pipelines.increment(1);
    published.increment(publications as u64);
}
