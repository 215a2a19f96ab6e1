//! The room sampler: about once a second, copies each live room's counters
//! from the hub into Postgres — a running tally (chat messages counted from
//! the room's history, peak viewers, likes), a cumulative sample, and the
//! users seen joining or chatting — so figures survive the room.

use std::collections::HashSet;
use std::time::Duration;

use hawker_hub::Hub;
use sqlx::PgPool;
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use hawker_core::error::{Error, Result};

/// History events read per round and session, at most `STREAM_PAGE × STREAM_PAGES`.
const STREAM_PAGE: usize = 1000;
const STREAM_PAGES: usize = 10;
/// Ended sessions are sampled this long after their end, for their final counts.
const AFTER_END: Duration = Duration::from_secs(15);

/// Copies the counters of live rooms into Postgres every `every` until `shutdown`.
pub async fn run(db: PgPool, hub: Hub, every: Duration, shutdown: CancellationToken) {
    let mut tick = hawker_core::ticks::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        let round = tokio::select! {
            _ = shutdown.cancelled() => return,
            round = sample(&db, &hub) => round,
        };
        if let Err(e) = round {
            tracing::debug!(error = %e, "room sampling deferred");
        }
    }
}

/// Deletes up to `batch` samples taken more than `older_than` ago (by the
/// database's clock; `session_sample_sampled_at_idx`). Returns how many.
/// A session's tally (`session_room_tally`: peak viewers, likes, chat
/// messages) is kept; only per-window figures of sessions older than the
/// retention lose their samples.
pub async fn sweep_samples(db: &PgPool, older_than: Duration, batch: i64) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "delete from session_sample where (session_id, sampled_at) in (
            select session_id, sampled_at from session_sample
             where sampled_at < now() - make_interval(secs => $1)
             order by sampled_at limit $2)",
    )
    .bind(older_than.as_secs_f64())
    .bind(batch)
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// One round: every live session, and those that ended in the last 15 s
/// (for their final counts). Returns how many were sampled.
#[tracing::instrument(skip_all)]
pub async fn sample(db: &PgPool, hub: &Hub) -> Result<usize> {
    let sessions = hawker_agency::schedule::live_or_just_ended(db, AFTER_END).await?;
    let mut sampled = 0;
    for session_id in sessions {
        match sample_session(db, hub, session_id).await {
            Ok(true) => sampled += 1,
            Ok(false) => {}
            Err(e) => tracing::debug!(error = %e, %session_id, "room not sampled"),
        }
    }
    Ok(sampled)
}

/// A hub read that failed: Redis is unavailable.
fn unavailable(_: hawker_hub::PublishError) -> Error {
    Error::Unavailable { what: "redis" }
}

/// Samples one room, unless another node did within the last 0.9 s (or is
/// doing it now: the tally row is taken with `skip locked`).
async fn sample_session(db: &PgPool, hub: &Hub, session_id: Uuid) -> Result<bool> {
    sqlx::query("insert into session_room_tally (session_id) values ($1) on conflict do nothing")
        .bind(session_id)
        .execute(db)
        .await?;
    let mut tx = db.begin().await?;
    let tally: Option<(String, i64, i64, bool)> = sqlx::query_as(
        "select epoch, last_offset, chat_messages,
                coalesce(sampled_at > now() - interval '900 milliseconds', false)
           from session_room_tally where session_id = $1
            for update skip locked",
    )
    .bind(session_id)
    .fetch_optional(&mut *tx)
    .await?;
    let Some((epoch, mut last_offset, mut chat, fresh)) = tally else {
        return Ok(false);
    };
    if fresh {
        return Ok(false);
    }
    let counters = hub.room_counters(session_id).await.map_err(unavailable)?;
    let room_epoch = counters.epoch.unwrap_or_default();
    let mut gaps = 0;
    if room_epoch != epoch {
        // A new room (first sample, or Redis lost the old one): read it from the start.
        last_offset = 0;
    }
    let mut users: HashSet<String> = HashSet::new();
    if !room_epoch.is_empty() {
        for _ in 0..STREAM_PAGES {
            let after = u64::try_from(last_offset).unwrap_or(0);
            let page = hub
                .room_events(session_id, after, STREAM_PAGE)
                .await
                .map_err(unavailable)?;
            let count = page.len();
            for event in page {
                let offset = i64::try_from(event.offset).unwrap_or(i64::MAX);
                if offset > last_offset + 1 {
                    gaps += 1;
                }
                last_offset = offset.max(last_offset);
                match event.event_type.as_str() {
                    "chat" => {
                        chat += 1;
                        if let Some(user) = event.from {
                            users.insert(user);
                        }
                    }
                    "presence.joined" => {
                        if let Some(user) = event.data.get("user").and_then(|u| u.as_str()) {
                            users.insert(user.to_string());
                        }
                    }
                    _ => {}
                }
            }
            if count < STREAM_PAGE {
                break;
            }
        }
    }
    sqlx::query(
        "update session_room_tally
            set epoch = $2, last_offset = $3, chat_messages = $4, viewers = $5,
                peak_viewers = greatest(peak_viewers, $5), likes = greatest(likes, $6),
                stream_gaps = stream_gaps + $7, sampled_at = now()
          where session_id = $1",
    )
    .bind(session_id)
    .bind(&room_epoch)
    .bind(last_offset)
    .bind(chat)
    .bind(counters.viewers)
    .bind(counters.likes)
    .bind(gaps)
    .execute(&mut *tx)
    .await?;
    sqlx::query(
        "insert into session_sample (session_id, sampled_at, viewers, likes, chat_messages)
         select session_id, now(), viewers, likes, chat_messages from session_room_tally where session_id = $1
         on conflict do nothing",
    )
    .bind(session_id)
    .execute(&mut *tx)
    .await?;
    if !users.is_empty() {
        let users: Vec<String> = users.into_iter().collect();
        sqlx::query(
            "insert into session_viewer (session_id, user_id)
             select $1, u from unnest($2::text[]) as u on conflict do nothing",
        )
        .bind(session_id)
        .bind(&users)
        .execute(&mut *tx)
        .await?;
    }
    tx.commit().await?;
    Ok(true)
}
