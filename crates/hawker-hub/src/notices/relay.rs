//! The notice tasks every node runs: the relay (publishes committed notices
//! on Redis, one node at a time, oldest first), the sweeper (deletes expired
//! ones), and the feed (live frames and gaps from the subscriber, and the
//! record of what reached a socket).

use std::time::Duration;

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use super::{encode, store};
use crate::store::bounded;
use crate::subscriber::RoomFeed;
use crate::Hub;

/// Notices relayed per round at most.
const RELAY_BATCH: i64 = 1000;
/// How often expired notices are deleted.
const SWEEP_EVERY: Duration = Duration::from_secs(1);
/// How often "reached a socket" is written down.
const DELIVERED_EVERY: Duration = Duration::from_millis(250);

impl Hub {
    /// Publishes committed notices not yet published, oldest first; returns
    /// how many (0 when another node is relaying).
    pub async fn relay_notices(&self) -> anyhow::Result<usize> {
        self.relay_notices_round(false).await
    }

    /// One round of the relay: re-marks the users' latest notice ids if a
    /// flush lost them; with `ask_first` (the relay's interval tick) asks
    /// whether any notice waits ([`store::any_unpublished`], one query, no
    /// lock) and stops there if none does (a failed question relays
    /// anyway); then, if Redis answers, publishes under the relay lock.
    async fn relay_notices_round(&self, ask_first: bool) -> anyhow::Result<usize> {
        let Some(db) = self.inner.db.as_ref() else {
            return Ok(0);
        };
        self.mark_latest_notices(db).await?;
        if ask_first {
            match store::any_unpublished(db).await {
                Ok(false) => return Ok(0),
                Ok(true) => {}
                Err(e) => tracing::debug!(error = %e, "notice check failed; relaying anyway"),
            }
        }
        // A node that cannot reach Redis takes no relay lock.
        if !self.inner.store.reachable().await {
            return Ok(0);
        }
        self.relay_unpublished(db).await
    }

    /// One relay round: publishes the oldest unpublished notices (under the
    /// relay lock) and marks them published; returns how many.
    async fn relay_unpublished(&self, db: &sqlx::PgPool) -> anyhow::Result<usize> {
        let store = &self.inner.store;
        let channel = store.keys.notices_channel();
        let ttl = self.inner.config.notice_ttl_secs;
        let published = store::relay_round(db, RELAY_BATCH, |rows| async move {
            // The SETs first, then the publications: a socket that joins
            // after a SET reads its backlog from Postgres; one that joined
            // before it gets the publication. Two pipelines, since on a
            // cluster one pipeline's parts run on several shards at once.
            let mut marks = redis::pipe();
            let mut publications = redis::pipe();
            for row in &rows {
                marks
                    .cmd("SET")
                    .arg(store.keys.notices_latest(&row.user_id))
                    .arg(row.notice.notice_id)
                    .arg("EX")
                    .arg(ttl)
                    .ignore();
                publications
                    .cmd(store.redis.publish_command())
                    .arg(&channel)
                    .arg(encode(&row.user_id, &row.notice))
                    .ignore();
            }
            let mut conn = store.redis.clone();
            bounded(store.timeout, marks.query_async::<()>(&mut conn)).await?;
            bounded(store.timeout, publications.query_async::<()>(&mut conn)).await?;
            Ok(())
        })
        .await?;
        if published > 0 {
            crate::metrics::notices_published(published as u64);
        }
        Ok(published)
    }

    /// After a flush (or on a new Redis): writes `notices_latest` for every
    /// user with unexpired notices, then `notices_marked`. Until then joins
    /// read their backlog from Postgres.
    async fn mark_latest_notices(&self, db: &sqlx::PgPool) -> anyhow::Result<()> {
        let store = &self.inner.store;
        let marked = store.keys.notices_marked();
        let mut conn = store.redis.clone();
        let exists: bool = bounded(
            store.timeout,
            redis::cmd("EXISTS").arg(&marked).query_async(&mut conn),
        )
        .await?;
        if exists {
            return Ok(());
        }
        let latest = store::latest_per_user(db).await?;
        for chunk in latest.chunks(1000) {
            let mut pipe = redis::pipe();
            for (user, id, ttl) in chunk {
                // Never lower a newer id the relay wrote meanwhile.
                pipe.cmd("SET")
                    .arg(store.keys.notices_latest(user))
                    .arg(id)
                    .arg("EX")
                    .arg(ttl)
                    .arg("NX")
                    .ignore();
            }
            bounded(store.timeout, pipe.query_async::<()>(&mut conn)).await?;
        }
        bounded(
            store.timeout,
            redis::cmd("SET").arg(&marked).arg(1).query_async::<()>(&mut conn),
        )
        .await?;
        Ok(())
    }
}

/// The relay and the sweeper: every `every` (or at once when a notice was
/// just committed on this node). An interval tick re-marks after a flush and
/// relays only if some notice waits (an idle tick: one Redis EXISTS and one
/// Postgres query); a wake-up after a commit relays at once.
pub(crate) async fn run_relay(hub: Hub, every: Duration, shutdown: CancellationToken) {
    let mut interval = hawker_core::ticks::interval(every);
    let mut sweep = hawker_core::ticks::interval(SWEEP_EVERY);
    let now = hub.inner.notice_relay_now.clone();
    loop {
        let ticked = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = interval.tick() => true,
            _ = now.notified() => false,
            _ = sweep.tick() => {
                if let Some(db) = hub.inner.db.as_ref() {
                    match store::sweep(db).await {
                        Ok((_, never)) => crate::metrics::notices_expired_undelivered(never),
                        Err(e) => tracing::debug!(error = %e, "notice sweep deferred"),
                    }
                }
                continue;
            }
        };
        let mut relayed = hub.relay_notices_round(ticked).await;
        // A full batch means more may wait: go on at once.
        while matches!(relayed, Ok(n) if n as i64 >= RELAY_BATCH) {
            relayed = hub.relay_notices().await;
        }
        if let Err(e) = relayed {
            tracing::debug!(error = %e, "notice relay deferred");
        }
    }
}

/// The notices feed from the subscriber, and the writer of "delivered".
pub(crate) async fn run_feed(
    hub: Hub,
    mut feed: mpsc::UnboundedReceiver<RoomFeed>,
    shutdown: CancellationToken,
) {
    let mut flush = hawker_core::ticks::interval(DELIVERED_EVERY);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => break,
            item = feed.recv() => match item {
                Some(RoomFeed::Frame(bytes)) => hub.on_notice_frame(&bytes),
                Some(RoomFeed::Resync | RoomFeed::Failover) => hub.catch_up_notices().await,
                None => break,
            },
            _ = flush.tick() => write_delivered(&hub).await,
        }
    }
    write_delivered(&hub).await;
}

async fn write_delivered(hub: &Hub) {
    let Some(db) = hub.inner.db.as_ref() else {
        return;
    };
    let ids: Vec<i64> = std::mem::take(
        &mut *hub
            .inner
            .notices_delivered
            .lock()
            .unwrap_or_else(|p| p.into_inner()),
    );
    if ids.is_empty() {
        return;
    }
    if let Err(e) = store::mark_delivered(db, &ids).await {
        // Not fatal: such a notice may be delivered again at a join.
        tracing::debug!(error = %e, "notice delivery not recorded");
    }
}
