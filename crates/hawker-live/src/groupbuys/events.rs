//! `group_buy.progress`: at most one per group buy per
//! `live.bid_event_interval_ms` from each node (the newest view), versioned
//! by the row's `version`, so a view from a slower node never replaces a
//! newer one (the hub's publish script skips it).
//!
//! `group_buy.started` and `group_buy.ended` are durable (queued in the
//! transaction that opens or settles the group buy); the end carries the
//! version `i64::MAX`.

use std::collections::HashMap;
use std::time::Duration;

use hawker_hub::{Hub, Publication};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use super::{state_key, version_key};

struct Progress {
    session_id: Uuid,
    group_buy_id: Uuid,
    view: Value,
    version: i64,
}

/// Hands views to the node's announcer task (never blocks a batch: when the
/// queue is full the view is dropped, the next one supersedes it).
#[derive(Clone)]
pub(crate) struct Announcer(mpsc::Sender<Progress>);

/// The announcer task's end.
pub(crate) struct AnnouncerInbox(mpsc::Receiver<Progress>);

pub(crate) fn announcer() -> (Announcer, AnnouncerInbox) {
    let (tx, rx) = mpsc::channel(4096);
    (Announcer(tx), AnnouncerInbox(rx))
}

impl Announcer {
    pub(crate) fn progress(&self, session_id: Uuid, group_buy_id: Uuid, view: Value, version: i64) {
        let _ = self.0.try_send(Progress {
            session_id,
            group_buy_id,
            view,
            version,
        });
    }
}

/// Runs until `shutdown`: the newest view of each group buy goes out on each tick.
pub(crate) async fn run(hub: Hub, inbox: AnnouncerInbox, every: Duration, shutdown: CancellationToken) {
    let mut inbox = inbox.0;
    let mut pending: HashMap<Uuid, Progress> = HashMap::new();
    let mut tick = hawker_core::ticks::interval(every.max(Duration::from_millis(10)));
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            event = inbox.recv() => match event {
                None => return,
                Some(p) => {
                    if pending.get(&p.group_buy_id).is_none_or(|old| old.version < p.version) {
                        pending.insert(p.group_buy_id, p);
                    }
                }
            },
            _ = tick.tick() => {
                for (_, p) in pending.drain() {
                    let publication = Publication::new("group_buy.progress", p.view.clone())
                        .set_state(state_key(p.group_buy_id), p.view)
                        .versioned(version_key(p.group_buy_id), p.version);
                    if let Err(e) = hub.publish(p.session_id, publication).await {
                        tracing::debug!(error = %e, "group_buy.progress not published");
                    }
                }
            }
        }
    }
}
