//! What the sampler stored, read back: the running tally, windowed samples
//! and identified viewers (the ledger crate's own tables).

use std::collections::HashMap;

use chrono::{DateTime, Utc};
use sqlx::PgPool;
use uuid::Uuid;

use super::WindowAudience;
use hawker_core::error::Result;

/// A window figures are counted in, keyed by deal or shift id.
pub(crate) struct Window {
    pub key: Uuid,
    pub from: DateTime<Utc>,
    pub to: DateTime<Utc>,
}

/// The running tally of a session's room.
#[derive(sqlx::FromRow, Default)]
pub(crate) struct TallyRow {
    pub viewers: i64,
    pub peak_viewers: i64,
    pub likes: i64,
    pub chat_messages: i64,
    pub stream_gaps: i32,
    pub sampled_at: Option<DateTime<Utc>>,
}

/// The tally, or zeros if the room was never sampled.
pub(crate) async fn tally(db: &PgPool, session_id: Uuid) -> Result<TallyRow> {
    Ok(sqlx::query_as(
        "select viewers, peak_viewers, likes, chat_messages, stream_gaps, sampled_at
           from session_room_tally where session_id = $1",
    )
    .bind(session_id)
    .fetch_optional(db)
    .await?
    .unwrap_or_default())
}

/// Users seen joining or chatting in the session's room.
pub(crate) async fn seen_viewers(db: &PgPool, session_id: Uuid) -> Result<Vec<String>> {
    Ok(
        sqlx::query_scalar("select user_id from session_viewer where session_id = $1")
            .bind(session_id)
            .fetch_all(db)
            .await?,
    )
}

/// Peak viewers in, and chat and likes added during, each window.
pub(crate) async fn window_audience(
    db: &PgPool,
    session_id: Uuid,
    windows: &[Window],
) -> Result<HashMap<Uuid, WindowAudience>> {
    let keys: Vec<Uuid> = windows.iter().map(|w| w.key).collect();
    let froms: Vec<DateTime<Utc>> = windows.iter().map(|w| w.from).collect();
    let tos: Vec<DateTime<Utc>> = windows.iter().map(|w| w.to).collect();
    let rows: Vec<(Uuid, i64, i64, i64)> = sqlx::query_as(
        "select w.key,
                coalesce((select max(viewers) from session_sample
                           where session_id = $1 and sampled_at >= w.from_at and sampled_at < w.to_at), 0)::bigint,
                (coalesce((select chat_messages from session_sample where session_id = $1 and sampled_at < w.to_at
                            order by sampled_at desc limit 1), 0)
                 - coalesce((select chat_messages from session_sample where session_id = $1 and sampled_at < w.from_at
                              order by sampled_at desc limit 1), 0))::bigint,
                (coalesce((select likes from session_sample where session_id = $1 and sampled_at < w.to_at
                            order by sampled_at desc limit 1), 0)
                 - coalesce((select likes from session_sample where session_id = $1 and sampled_at < w.from_at
                              order by sampled_at desc limit 1), 0))::bigint
           from unnest($2::uuid[], $3::timestamptz[], $4::timestamptz[]) as w(key, from_at, to_at)",
    )
    .bind(session_id)
    .bind(&keys)
    .bind(&froms)
    .bind(&tos)
    .fetch_all(db)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(key, peak, chat, likes)| {
            (
                key,
                WindowAudience {
                    peak_viewers: peak,
                    chat_messages: chat.max(0),
                    likes: likes.max(0),
                },
            )
        })
        .collect())
}
