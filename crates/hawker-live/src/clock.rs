//! The crate's one timer. Every `live.tick_ms`, one query asks which of the
//! live formats' timed steps have work (an auction to end; a giveaway open,
//! to close or to draw; a group buy to settle or running), and only those
//! steps run, the three formats side by side. An idle tick is that one
//! round trip. If the question fails, every step runs, so a failed check
//! never hides work; a row that becomes due after the check is handled at
//! the next tick.

use std::time::Duration;

use tokio_util::sync::CancellationToken;

use crate::giveaways::ticker::DRAW_AFTER_CLOSE_MS;
use crate::{auctions, giveaways, groupbuys, Live};

/// Runs every `live.tick_ms` until `shutdown`.
pub(crate) async fn run(live: Live, shutdown: CancellationToken) {
    let mut interval = hawker_core::ticks::interval(Duration::from_millis(live.config().tick_ms.max(10)));
    let mut n: u64 = 0;
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => {}
        }
        n += 1;
        let due = due_now(&live).await.unwrap_or_else(|e| {
            tracing::debug!(error = %e, "live due check failed; running every step");
            DueNow::all()
        });
        let live = &live;
        tokio::join!(
            async {
                if due.auctions_to_end {
                    auctions::ticker::tick(live).await;
                }
            },
            giveaways::ticker::tick(
                live,
                due.giveaways_open,
                due.giveaways_to_close,
                due.giveaways_to_draw
            ),
            groupbuys::ticker::tick(live, n, due.group_buys_to_settle, due.group_buys_running),
        );
    }
}

/// Which timed steps have work, by Postgres' clock.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
struct DueNow {
    /// A running auction's end has passed.
    auctions_to_end: bool,
    /// Some giveaway is open: its entry count may have to be announced.
    giveaways_open: bool,
    /// Some open giveaway's window has closed.
    giveaways_to_close: bool,
    /// Some giveaway was closed at least [`DRAW_AFTER_CLOSE_MS`] ago.
    giveaways_to_draw: bool,
    /// A running group buy's countdown has ended.
    group_buys_to_settle: bool,
    /// Some group buy runs (its gate is reconciled now and then).
    group_buys_running: bool,
}

impl DueNow {
    /// Every step runs (the check failed).
    fn all() -> DueNow {
        DueNow {
            auctions_to_end: true,
            giveaways_open: true,
            giveaways_to_close: true,
            giveaways_to_draw: true,
            group_buys_to_settle: true,
            group_buys_running: true,
        }
    }
}

/// Asks, in one round trip, whether each step has anything to do: the same
/// conditions as the steps' own claims, each read from its partial index
/// (`auction_due_idx`, `giveaway_due_idx`, `group_buy_due_idx`).
async fn due_now(live: &Live) -> sqlx::Result<DueNow> {
    sqlx::query_as(
        "select exists(select 1 from auction where status = 'running' and ends_at <= clock_timestamp())
                    as auctions_to_end,
                exists(select 1 from giveaway where status = 'open') as giveaways_open,
                exists(select 1 from giveaway where status = 'open' and closes_at <= now()) as giveaways_to_close,
                exists(select 1 from giveaway
                        where status = 'closed' and closed_at <= now() - $1 * interval '1 millisecond')
                    as giveaways_to_draw,
                exists(select 1 from group_buy where status = 'running' and ends_at <= now())
                    as group_buys_to_settle,
                exists(select 1 from group_buy where status = 'running') as group_buys_running",
    )
    .bind(DRAW_AFTER_CLOSE_MS as f64)
    .fetch_one(live.db())
    .await
}
