//! Labels of the agency side's rows for reports elsewhere (a brand's sales
//! report in `hawker-commerce`): session titles with their agency, host
//! display names and agency names, by id, in one query each.

use std::collections::HashMap;

use sqlx::PgPool;
use uuid::Uuid;

use hawker_core::error::Result;

/// A session's title and the agency that runs it.
#[derive(Debug, Clone, PartialEq, Eq, sqlx::FromRow)]
pub struct SessionLabel {
    pub session_id: Uuid,
    pub agency_id: Uuid,
    pub title: String,
}

/// These sessions' titles and agencies (unknown ids are left out).
pub async fn sessions(db: &PgPool, session_ids: &[Uuid]) -> Result<HashMap<Uuid, SessionLabel>> {
    let rows: Vec<SessionLabel> =
        sqlx::query_as("select session_id, agency_id, title from live_session where session_id = any($1)")
            .bind(session_ids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().map(|s| (s.session_id, s)).collect())
}

/// These hosts' display names.
pub async fn hosts(db: &PgPool, host_ids: &[Uuid]) -> Result<HashMap<Uuid, String>> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("select host_id, display_name from host where host_id = any($1)")
            .bind(host_ids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().collect())
}

/// These agencies' names.
pub async fn agencies(db: &PgPool, agency_ids: &[Uuid]) -> Result<HashMap<Uuid, String>> {
    let rows: Vec<(Uuid, String)> =
        sqlx::query_as("select agency_id, name from agency where agency_id = any($1)")
            .bind(agency_ids)
            .fetch_all(db)
            .await?;
    Ok(rows.into_iter().collect())
}
