//! The hub's metrics (Prometheus names under `hawker_hub_`).

use metrics::{counter, gauge, histogram};

pub fn socket_opened() {
    gauge!("hawker_hub_sockets").increment(1.0);
}

pub fn socket_closed() {
    gauge!("hawker_hub_sockets").decrement(1.0);
}

pub fn rooms(n: usize) {
    gauge!("hawker_hub_rooms").set(n as f64);
}

pub fn event_in(lane: &'static str) {
    counter!("hawker_hub_events_in_total", "lane" => lane).increment(1);
}

pub fn delivered(frames: u64, bytes: u64) {
    counter!("hawker_hub_events_out_total").increment(frames);
    counter!("hawker_hub_bytes_out_total").increment(bytes);
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
    histogram!("hawker_hub_fanout_latency_seconds").record(seconds);
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
    counter!("hawker_hub_publish_pipelines_total").increment(1);
    counter!("hawker_hub_publications_total").increment(publications as u64);
}
