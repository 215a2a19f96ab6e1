//! Demo rows of the agency side for `hawker seed`: an agency with two hosts
//! on its roster, a brand, and a session. Fixed ids and `on conflict do
//! nothing`, so seeding twice changes nothing.

use chrono::{DateTime, Utc};
use sqlx::PgConnection;
use uuid::Uuid;

/// A host to seed: id, handle, display name and when they joined the roster.
pub struct DemoHost<'a> {
    pub host_id: Uuid,
    pub handle: &'a str,
    pub display_name: &'a str,
    pub joined_at: DateTime<Utc>,
}

/// Whether any agency exists (an empty database has none).
pub async fn has_agencies(db: &sqlx::PgPool) -> sqlx::Result<bool> {
    sqlx::query_scalar("select exists (select 1 from agency)")
        .fetch_one(db)
        .await
}

/// Inserts the agency, its hosts and their roster stays, and the brand.
pub async fn seed_parties(
    conn: &mut PgConnection,
    agency_id: Uuid,
    agency_name: &str,
    hosts: &[DemoHost<'_>],
    brand_id: Uuid,
    brand_name: &str,
) -> sqlx::Result<()> {
    sqlx::query("insert into agency (agency_id, name) values ($1, $2) on conflict do nothing")
        .bind(agency_id)
        .bind(agency_name)
        .execute(&mut *conn)
        .await?;
    for host in hosts {
        sqlx::query(
            "insert into host (host_id, handle, display_name) values ($1, $2, $3) on conflict do nothing",
        )
        .bind(host.host_id)
        .bind(host.handle)
        .bind(host.display_name)
        .execute(&mut *conn)
        .await?;
        sqlx::query(
            "insert into agency_host (agency_id, host_id, joined_at) values ($1, $2, $3)
             on conflict do nothing",
        )
        .bind(agency_id)
        .bind(host.host_id)
        .bind(host.joined_at)
        .execute(&mut *conn)
        .await?;
    }
    sqlx::query("insert into brand (brand_id, name) values ($1, $2) on conflict do nothing")
        .bind(brand_id)
        .bind(brand_name)
        .execute(&mut *conn)
        .await?;
    Ok(())
}

/// Inserts the session, or moves a session that is still only scheduled to
/// the given times (one that went live keeps its history).
pub async fn seed_session(
    conn: &mut PgConnection,
    session_id: Uuid,
    agency_id: Uuid,
    brand_id: Uuid,
    title: &str,
    planned: (DateTime<Utc>, DateTime<Utc>),
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into live_session (session_id, agency_id, brand_id, title, planned_start, planned_end)
         values ($1, $2, $3, $4, $5, $6)
         on conflict (session_id) do update
            set planned_start = excluded.planned_start, planned_end = excluded.planned_end
          where live_session.status = $7",
    )
    .bind(session_id)
    .bind(agency_id)
    .bind(brand_id)
    .bind(title)
    .bind(planned.0)
    .bind(planned.1)
    .bind(crate::access::SessionStatus::Scheduled)
    .execute(conn)
    .await?;
    Ok(())
}

/// Inserts an accepted, open-ended campaign between the agency and the brand.
pub async fn seed_campaign(
    conn: &mut PgConnection,
    campaign_id: Uuid,
    brand_id: Uuid,
    agency_id: Uuid,
    name: &str,
    starts_at: DateTime<Utc>,
) -> sqlx::Result<()> {
    sqlx::query(
        "insert into campaign (campaign_id, brand_id, agency_id, name, status, proposed_by, starts_at,
                created_by, decided_by, decided_at)
         values ($1, $2, $3, $4, 'accepted', 'admin', $5, 'seed', 'seed', now())
         on conflict do nothing",
    )
    .bind(campaign_id)
    .bind(brand_id)
    .bind(agency_id)
    .bind(name)
    .bind(starts_at)
    .execute(conn)
    .await?;
    Ok(())
}
