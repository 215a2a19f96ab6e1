//! Coalesced running figures: `deal.stock` and `coupon.remaining`.
//!
//! Settlement may change a deal's stock thousands of times a second; the
//! room gets at most one figure per `stock_event_interval_ms` per key from
//! each node, and every figure carries a version (the deal's
//! `stock_version`), so the room's publish script drops a figure older than
//! one already published: the last figure the room sees is the final one.

use std::collections::HashMap;
use std::time::Duration;

use hawker_hub::{Hub, Publication};
use serde_json::Value;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

/// One running figure.
#[derive(Debug, Clone)]
pub struct Figure {
    pub session_id: Uuid,
    /// Snapshot state key, e.g. `deal:<id>:stock`.
    pub key: String,
    /// e.g. `deal.stock`.
    pub event_type: &'static str,
    pub data: Value,
    /// Higher is newer.
    pub version: i64,
}

#[derive(Clone)]
pub struct StockAnnouncer {
    tx: mpsc::UnboundedSender<Figure>,
}

pub struct StockTask {
    hub: Hub,
    interval: Duration,
    rx: mpsc::UnboundedReceiver<Figure>,
}

impl StockAnnouncer {
    pub fn new(hub: Hub, interval_ms: u64) -> (StockAnnouncer, StockTask) {
        let (tx, rx) = mpsc::unbounded_channel();
        (
            StockAnnouncer { tx },
            StockTask {
                hub,
                interval: Duration::from_millis(interval_ms),
                rx,
            },
        )
    }

    /// Records the newest figure for its key; it is published on the next tick.
    pub fn announce(&self, figure: Figure) {
        let _ = self.tx.send(figure);
    }
}

impl StockTask {
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut pending: HashMap<String, Figure> = HashMap::new();
        let mut tick = tokio::time::interval(self.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = shutdown.cancelled() => {
                    // Last figures out before stopping, bounded by the publish timeout.
                    self.flush(&mut pending).await;
                    return;
                }
                figure = self.rx.recv() => match figure {
                    Some(figure) => {
                        let newer = pending.get(&figure.key).is_none_or(|old| figure.version > old.version);
                        if newer {
                            pending.insert(figure.key.clone(), figure);
                        }
                    }
                    None => return,
                },
                _ = tick.tick() => self.flush(&mut pending).await,
            }
        }
    }

    async fn flush(&self, pending: &mut HashMap<String, Figure>) {
        let figures: Vec<Figure> = pending.drain().map(|(_, f)| f).collect();
        for figure in figures {
            let publication = Publication::new(figure.event_type, figure.data.clone())
                .set_state(figure.key.clone(), figure.data.clone())
                .versioned(format!("v:{}", figure.key), figure.version);
            if let Err(e) = self.hub.publish(figure.session_id, publication).await {
                tracing::debug!(error = %e, key = %figure.key, "figure deferred");
                // Keep it for the next tick unless a newer one arrived meanwhile.
                pending.entry(figure.key.clone()).or_insert(figure);
            }
        }
    }
}
