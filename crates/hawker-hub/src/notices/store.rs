//! The hub's `user_notice` table: every SQL statement on it lives here.

use chrono::{DateTime, Utc};
use serde::Serialize;
use serde_json::Value;
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use super::Notice;

/// A stored notice, as the HTTP list and the socket frame show it.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct StoredNotice {
    /// Grows per user in commit order; the resume position of a client.
    pub notice_id: i64,
    /// What happened, e.g. `order.paid`.
    pub kind: String,
    /// The session whose room the notice belongs to; null: any room.
    pub session_id: Option<Uuid>,
    #[schema(value_type = Object)]
    pub data: Value,
    pub created_at: DateTime<Utc>,
    /// After this the notice is gone: not delivered, not listed.
    pub expires_at: DateTime<Utc>,
    /// Whether it was queued to one of the user's sockets.
    pub delivered: bool,
    /// When the user marked it read, if they did.
    pub read_at: Option<DateTime<Utc>>,
}

const COLUMNS: &str = "notice_id, kind, session_id, data, created_at, expires_at,
    delivered_at is not null as delivered, read_at";

/// A row the relay publishes: the user is needed for routing.
#[derive(Debug, sqlx::FromRow)]
pub(crate) struct RelayRow {
    pub user_id: String,
    #[sqlx(flatten)]
    pub notice: StoredNotice,
}

/// Inserts `notice` in the caller's transaction, keeping the user's newest
/// `max_per_user`. The per-user lock, held until the caller's commit, makes
/// a user's notice ids grow in commit order. Two round trips: the lock, then
/// the insert and the trim in one statement (its snapshot, taken after the
/// lock, sees every notice of the user committed before; the new row is not
/// in it, hence `offset max − 1`).
pub(crate) async fn insert(
    conn: &mut PgConnection,
    notice: &Notice,
    ttl_secs: u64,
    max_per_user: u64,
) -> sqlx::Result<i64> {
    sqlx::query("select pg_advisory_xact_lock(hashtextextended('hawker.user_notice:' || $1, 0))")
        .bind(&notice.user)
        .execute(&mut *conn)
        .await?;
    sqlx::query_scalar(
        "with inserted as (
           insert into user_notice (user_id, session_id, kind, data, expires_at)
           values ($1, $2, $3, $4, now() + make_interval(secs => $5)) returning notice_id
         ), trimmed as (
           delete from user_notice where notice_id in (
             select notice_id from user_notice where user_id = $1 order by notice_id desc offset $6)
         )
         select notice_id from inserted",
    )
    .bind(&notice.user)
    .bind(notice.session)
    .bind(&notice.kind)
    .bind(&notice.data)
    .bind(ttl_secs as f64)
    .bind(i64::try_from(max_per_user.saturating_sub(1)).unwrap_or(i64::MAX))
    .fetch_one(&mut *conn)
    .await
}

/// What a socket of `user` in `room` gets when it joins: unexpired, unread
/// notices of its scope that no socket got yet, and, with a resume position,
/// every one after it; in id order.
pub(crate) async fn for_join(
    db: &PgPool,
    user: &str,
    room: Uuid,
    after: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<StoredNotice>> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from user_notice
          where user_id = $1 and expires_at > now() and read_at is null
            and (session_id is null or session_id = $2)
            and (delivered_at is null or notice_id > $3)
          order by notice_id limit $4"
    ))
    .bind(user)
    .bind(room)
    .bind(after.unwrap_or(i64::MAX))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// After a gap in the live feed: each user's unexpired, unread notices after
/// the given id (their sockets skip what they already have).
pub(crate) async fn after_ids(db: &PgPool, users: &[String], after: &[i64]) -> sqlx::Result<Vec<RelayRow>> {
    sqlx::query_as(&format!(
        "select user_id, {COLUMNS} from user_notice
           join unnest($1::text[], $2::bigint[]) as t(u, a) on user_id = t.u and notice_id > t.a
          where expires_at > now() and read_at is null
          order by notice_id limit 10000"
    ))
    .bind(users)
    .bind(after)
    .fetch_all(db)
    .await
}

/// The user's unexpired notices after `after`, oldest first, `limit` at most.
pub(crate) async fn list(
    db: &PgPool,
    user: &str,
    after: Option<i64>,
    limit: i64,
) -> sqlx::Result<Vec<StoredNotice>> {
    sqlx::query_as(&format!(
        "select {COLUMNS} from user_notice
          where user_id = $1 and expires_at > now() and notice_id > $2
          order by notice_id limit $3"
    ))
    .bind(user)
    .bind(after.unwrap_or(0))
    .bind(limit)
    .fetch_all(db)
    .await
}

/// Marks the user's notices read: those in `ids`, and every one up to
/// `up_to`. Returns how many were newly marked.
pub(crate) async fn mark_read(db: &PgPool, user: &str, ids: &[i64], up_to: Option<i64>) -> sqlx::Result<u64> {
    let done = sqlx::query(
        "update user_notice set read_at = now()
          where user_id = $1 and read_at is null and expires_at > now()
            and (notice_id = any($2) or notice_id <= $3)",
    )
    .bind(user)
    .bind(ids)
    .bind(up_to.unwrap_or(0))
    .execute(db)
    .await?;
    Ok(done.rows_affected())
}

/// Records that these notices reached a socket.
pub(crate) async fn mark_delivered(db: &PgPool, ids: &[i64]) -> sqlx::Result<()> {
    sqlx::query(
        "update user_notice set delivered_at = now() where notice_id = any($1) and delivered_at is null",
    )
    .bind(ids)
    .execute(db)
    .await?;
    Ok(())
}

/// Deletes expired notices (a bounded batch); returns how many of them no
/// socket ever got and nobody read.
pub(crate) async fn sweep(db: &PgPool) -> sqlx::Result<(u64, u64)> {
    let undelivered: Vec<bool> = sqlx::query_scalar(
        "delete from user_notice where notice_id in (
           select notice_id from user_notice where expires_at <= now()
            order by expires_at limit 1000 for update skip locked)
         returning delivered_at is null and read_at is null",
    )
    .fetch_all(db)
    .await?;
    let never = undelivered.iter().filter(|u| **u).count() as u64;
    Ok((undelivered.len() as u64, never))
}

/// Only one node relays at a time, so a user's notices reach Redis in id order.
const RELAY_LOCK: i64 = 0x6861_776b_6e6f_7469;

/// Whether any unexpired notice waits to be published (what [`relay_round`]
/// would read): one query on `user_notice_unpublished_idx`, no transaction,
/// no lock.
pub(crate) async fn any_unpublished(db: &PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar(
        "select exists(select 1 from user_notice where published_at is null and expires_at > now())",
    )
    .fetch_one(db)
    .await
}

/// One relay round: under the relay lock, the oldest unpublished notices are
/// handed to `publish` (in id order); if it succeeds they are marked
/// published. Returns how many were published (0 if another node relays).
pub(crate) async fn relay_round<F, Fut>(db: &PgPool, batch: i64, publish: F) -> anyhow::Result<usize>
where
    F: FnOnce(Vec<RelayRow>) -> Fut,
    Fut: std::future::Future<Output = anyhow::Result<()>>,
{
    let mut tx = db.begin().await?;
    let locked: bool = sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(RELAY_LOCK)
        .fetch_one(&mut *tx)
        .await?;
    if !locked {
        return Ok(0);
    }
    let rows: Vec<RelayRow> = sqlx::query_as(&format!(
        "select user_id, {COLUMNS} from user_notice
          where published_at is null and expires_at > now()
          order by notice_id limit $1"
    ))
    .bind(batch)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<i64> = rows.iter().map(|r| r.notice.notice_id).collect();
    publish(rows).await?;
    sqlx::query("update user_notice set published_at = now() where notice_id = any($1)")
        .bind(&ids)
        .execute(&mut *tx)
        .await?;
    tx.commit().await?;
    Ok(ids.len())
}

/// The last unexpired notice of every user who has one, with the seconds it
/// has left (the relay writes them to Redis after a flush).
pub(crate) async fn latest_per_user(db: &PgPool) -> sqlx::Result<Vec<(String, i64, i64)>> {
    sqlx::query_as(
        "select user_id, max(notice_id),
                greatest(1, ceil(extract(epoch from max(expires_at) - now())))::bigint
           from user_notice where expires_at > now() group by user_id",
    )
    .fetch_all(db)
    .await
}
