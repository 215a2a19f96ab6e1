//! The room events a node's bids cause: `auction.bid`, at most one per
//! auction per `live.bid_event_interval_ms` (the newest view), and
//! `auction.extended` at once. Both are versioned by `bid_seq`, so a view
//! from a slower node never replaces a newer one (the hub's publish script
//! skips it), and nothing goes backwards in any room.
//!
//! `auction.started`, `auction.ended` and `auction.voided` are durable
//! (queued in the transaction that changes the auction: see `mod.rs` and
//! `ticker.rs`); the end events carry the version `i64::MAX`.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use hawker_hub::{Hub, Publication};
use serde_json::{json, Value};
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{state_key, version_key};

enum Event {
    Bid {
        session_id: Uuid,
        auction_id: Uuid,
        view: Value,
        version: i64,
    },
    Extended {
        session_id: Uuid,
        auction_id: Uuid,
        ends_at: DateTime<Utc>,
        version: i64,
    },
}

/// Hands views to the node's announcer task (never blocks a batch: when the
/// queue is full the view is dropped, the next one supersedes it).
#[derive(Clone)]
pub(crate) struct Announcer(mpsc::Sender<Event>);

/// The announcer task's end.
pub(crate) struct AnnouncerInbox(mpsc::Receiver<Event>);

pub(crate) fn announcer() -> (Announcer, AnnouncerInbox) {
    let (tx, rx) = mpsc::channel(4096);
    (Announcer(tx), AnnouncerInbox(rx))
}

impl Announcer {
    pub(crate) fn bid(&self, session_id: Uuid, auction_id: Uuid, view: Value, version: i64) {
        let _ = self.0.try_send(Event::Bid {
            session_id,
            auction_id,
            view,
            version,
        });
    }

    pub(crate) fn extended(&self, session_id: Uuid, auction_id: Uuid, ends_at: DateTime<Utc>, version: i64) {
        let _ = self.0.try_send(Event::Extended {
            session_id,
            auction_id,
            ends_at,
            version,
        });
    }
}

/// Runs until `shutdown`: extensions go out at once, bid views on each tick.
pub(crate) async fn run(hub: Hub, inbox: AnnouncerInbox, every: Duration, shutdown: CancellationToken) {
    let mut inbox = inbox.0;
    let mut pending: HashMap<Uuid, (Uuid, Value, i64)> = HashMap::new();
    let mut tick = hawker_core::ticks::interval(every.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = inbox.recv() => match event {
                None => return,
                Some(Event::Bid { session_id, auction_id, view, version }) => {
                    let newer = pending.get(&auction_id).is_none_or(|(_, _, v)| *v < version);
                    if newer {
                        pending.insert(auction_id, (session_id, view, version));
                    }
                }
                Some(Event::Extended { session_id, auction_id, ends_at, version }) => {
                    let publication = Publication::new(
                        "auction.extended",
                        json!({ "auction_id": auction_id, "ends_at": ends_at, "version": version }),
                    )
                    .versioned(format!("{}:extended", version_key(auction_id)), version);
                    if let Err(e) = hub.publish(session_id, publication).await {
                        tracing::debug!(error = %e, "auction.extended not published");
                    }
                }
            },
            _ = tick.tick() => {
                for (auction_id, (session_id, view, version)) in pending.drain() {
                    let publication = Publication::new("auction.bid", view.clone())
                        .set_state(state_key(auction_id), view)
                        .versioned(version_key(auction_id), version);
                    if let Err(e) = hub.publish(session_id, publication).await {
                        tracing::debug!(error = %e, "auction.bid not published");
                    }
                }
            }
        }
    }
}
