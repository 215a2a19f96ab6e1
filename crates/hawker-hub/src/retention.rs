//! How long the hub keeps what it no longer needs: `room_outbox` rows once
//! published, and each room's dedupe ids in Redis.
//!
//! - A published outbox row is only history (the room's stream carries the
//!   event); a sweeper deletes rows published more than
//!   `retention.outbox_published_hours` ago, a bounded batch at a time
//!   (`room_outbox_published_idx`). Pending rows are never deleted.
//! - A room's dedupe hash remembers which outbox ids it published, so a
//!   relay repeated after a node died mid-commit publishes once. A repeat can
//!   only come while the first relay's transaction was open (seconds), so ids
//!   are forgotten after `retention.room_dedupe_secs`, and at most
//!   `retention.room_dedupe_max` are kept per room: the publish script trims
//!   its oldest entries (a log beside the hash, `dedupe_log`) on every publish
//!   that adds one, so the hash stays bounded however long the room lives.
//!   The version guards in the same hash (one per deal or coupon figure) are
//!   not dedupe ids and stay for the room's life.

use std::future::Future;
use std::time::Duration;

use sqlx::PgPool;
use tokio_util::sync::CancellationToken;

/// The hub's retention periods and the sweeper's pace.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Retention {
    /// Published `room_outbox` rows older than this are deleted.
    pub outbox_published: Duration,
    /// A room forgets a dedupe id this long after publishing it…
    pub dedupe_max_age: Duration,
    /// …and keeps at most this many.
    pub dedupe_max_entries: u64,
    /// How often the sweeper runs.
    pub sweep_every: Duration,
    /// Rows deleted per statement; a round runs at most [`MAX_BATCHES`] of them.
    pub sweep_batch: i64,
}

impl Default for Retention {
    fn default() -> Self {
        Retention {
            outbox_published: Duration::from_secs(7 * 86_400),
            dedupe_max_age: Duration::from_secs(3600),
            dedupe_max_entries: 10_000,
            sweep_every: Duration::from_secs(60),
            sweep_batch: 1000,
        }
    }
}

/// Statements per sweeper round at most, so a backlog is worked off over
/// several rounds instead of in one long burst.
pub const MAX_BATCHES: usize = 10;

/// Deletes up to `batch` `room_outbox` rows published more than
/// `older_than` ago (by the database's clock). Returns how many.
pub async fn sweep_outbox(db: &PgPool, older_than: Duration, batch: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "delete from room_outbox where outbox_id in (
            select outbox_id from room_outbox
             where published_at is not null and published_at < now() - make_interval(secs => $1)
             order by published_at limit $2)",
    )
    .bind(older_than.as_secs_f64())
    .bind(batch)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Runs `sweep` every `every` until `shutdown`: each round calls it while it
/// deletes a full `batch`, at most [`MAX_BATCHES`] times. Failures are logged
/// at debug and retried next round (the data only waits longer). Used for
/// the hub's outbox and by other crates for their own tables.
pub async fn run_sweeper<F, Fut>(
    name: &'static str,
    every: Duration,
    batch: i64,
    shutdown: CancellationToken,
    mut sweep: F,
) where
    F: FnMut() -> Fut,
    Fut: Future<Output = anyhow::Result<u64>>,
{
    let mut tick = hawker_core::ticks::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        for _ in 0..MAX_BATCHES {
            let round = tokio::select! {
                _ = shutdown.cancelled() => return,
                round = sweep() => round,
            };
            match round {
                Ok(deleted) => {
                    metrics::counter!("hawker_retention_deleted_total", "what" => name).increment(deleted);
                    if i64::try_from(deleted).unwrap_or(i64::MAX) < batch {
                        break;
                    }
                }
                Err(e) => {
                    tracing::debug!(error = %e, what = name, "retention sweep deferred");
                    break;
                }
            }
        }
    }
}

/// The outbox sweeper of a node (every node runs one; their deletes are
/// idempotent).
pub(crate) async fn run_outbox_sweeper(db: PgPool, retention: Retention, shutdown: CancellationToken) {
    let (older_than, batch) = (retention.outbox_published, retention.sweep_batch);
    run_sweeper("room_outbox", retention.sweep_every, batch, shutdown, || {
        let db = db.clone();
        async move { Ok(sweep_outbox(&db, older_than, batch).await?) }
    })
    .await
}
