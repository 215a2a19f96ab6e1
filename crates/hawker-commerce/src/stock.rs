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
use serde_json::{json, Value};
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

/// The snapshot key of a deal's running stock (`deal.stock`).
pub fn deal_stock_key(deal_id: Uuid) -> String {
    format!("deal:{deal_id}:stock")
}

/// The snapshot key of a coupon drop's running count (`coupon.remaining`).
pub fn coupon_remaining_key(coupon_drop_id: Uuid) -> String {
    format!("coupon:{coupon_drop_id}:remaining")
}

/// The `deal.stock` figure of a deal; `version` is its `stock_version`.
pub fn deal_stock(session_id: Uuid, deal_id: Uuid, remaining: i32, quantity: i32, version: i64) -> Figure {
    Figure {
        session_id,
        key: deal_stock_key(deal_id),
        event_type: "deal.stock",
        data: json!({ "deal_id": deal_id, "remaining": remaining, "quantity": quantity }),
        version,
    }
}

/// The `coupon.remaining` figure of a drop; `claimed` (which only grows) is its version.
pub fn coupon_remaining(session_id: Uuid, coupon_drop_id: Uuid, remaining: i32, claimed: i32) -> Figure {
    Figure {
        session_id,
        key: coupon_remaining_key(coupon_drop_id),
        event_type: "coupon.remaining",
        data: json!({ "coupon_drop_id": coupon_drop_id, "remaining": remaining }),
        version: i64::from(claimed),
    }
}

/// Hands figures to the node's announcer task. Cheap to clone.
#[derive(Clone)]
pub struct StockAnnouncer {
    tx: mpsc::UnboundedSender<Figure>,
}

/// The task that publishes the newest figure per key once per tick.
pub struct StockTask {
    hub: Hub,
    interval: Duration,
    rx: mpsc::UnboundedReceiver<Figure>,
}

impl StockAnnouncer {
    /// An announcer and the task that publishes for it (spawn [`StockTask::run`]).
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
    /// Publishes pending figures every tick until `shutdown`, then once more.
    pub async fn run(mut self, shutdown: CancellationToken) {
        let mut pending: HashMap<String, Figure> = HashMap::new();
        let mut tick = hawker_core::ticks::interval(self.interval);
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
