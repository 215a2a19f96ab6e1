//! A session's room bans for its agency (and admins), over HTTP: the bans in
//! force, a page at a time, and lifting one. The bans themselves are the
//! hub's (`Hub::bans`, `Hub::unban`); this is who may see and lift them.

use chrono::{DateTime, Utc};
use hawker_core::Claims;
use hawker_hub::Hub;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::{require_manager, session_access};
use crate::page::{self, PageQuery};
use hawker_core::error::{Error, Result};

/// A ban in force in a session's room.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct Ban {
    /// The banned user (a token `sub`).
    pub user: String,
    /// When the ban ends by itself.
    pub until: DateTime<Utc>,
}

/// A page of bans, ordered by user.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct BanPage {
    pub items: Vec<Ban>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

/// The longest user id a ban names (a token `sub`).
pub const MAX_USER_BYTES: usize = 64;

fn redis_down(e: hawker_hub::PublishError) -> Error {
    tracing::debug!(error = %e, "room moderation unavailable");
    Error::Unavailable { what: "redis" }
}

/// The bans in force in the session's room, a page at a time in user order
/// (the session's agency, admins).
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub))]
pub async fn bans(
    db: &PgPool,
    hub: &Hub,
    claims: &Claims,
    session_id: Uuid,
    page: &PageQuery,
) -> Result<BanPage> {
    let access = session_access(db, claims, session_id).await?;
    require_manager(access.role)?;
    let limit = page.limit()?;
    let after = page.after_text()?;
    let rows: Vec<Ban> = hub
        .bans(session_id)
        .await
        .map_err(redis_down)?
        .into_iter()
        .filter(|(user, _)| after.as_ref().is_none_or(|a| user > a))
        .take(usize::try_from(limit).unwrap_or(usize::MAX).saturating_add(1))
        .filter_map(|(user, until)| {
            Some(Ban {
                user,
                until: DateTime::from_timestamp_millis(until)?,
            })
        })
        .collect();
    let (items, next_cursor) = page::split(rows, limit, |b| page::text(&b.user));
    Ok(BanPage { items, next_cursor })
}

/// Lifts `user`'s ban in the session's room (the session's agency, admins):
/// published as `moderation.unbanned`, so every node lets the user in again
/// at once. Lifting a ban that is not there is not an error.
#[tracing::instrument(skip_all, fields(%session_id, caller = %claims.sub))]
pub async fn unban(db: &PgPool, hub: &Hub, claims: &Claims, session_id: Uuid, user: &str) -> Result<()> {
    let access = session_access(db, claims, session_id).await?;
    require_manager(access.role)?;
    if user.is_empty() || user.len() > MAX_USER_BYTES {
        return Err(Error::invalid(
            "bad_user",
            format!("the user must be a user id of 1 to {MAX_USER_BYTES} bytes"),
        ));
    }
    hub.unban(session_id, user, &claims.sub)
        .await
        .map_err(redis_down)?;
    Ok(())
}
