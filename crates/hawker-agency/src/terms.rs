//! Which commission terms were in force, for the commission ledger
//! (`hawker-ledger`), in batches: many (session, moment) questions in one
//! query. No rights checks: callers are workers, not requests.
//!
//! The rule is `terms_in_force()` (`migrations/0003_agency.sql`): the
//! session's own terms if a version of them is in force, otherwise its
//! campaign's. Versions are never updated or backdated, so the answer for a
//! past moment does not change.

use chrono::{DateTime, Utc};
use sqlx::PgExecutor;
use uuid::Uuid;

use crate::campaigns::Terms;
use hawker_core::error::{Error, Result};

/// A question: the terms of `session_id` at `at`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TermsAt {
    pub session_id: Uuid,
    pub at: DateTime<Utc>,
}

/// An answer: the session's agency (who the terms are with) and the terms
/// version in force, if any.
#[derive(Debug, Clone, Copy, PartialEq, Eq, sqlx::FromRow)]
pub struct InForce {
    pub agency_id: Uuid,
    pub terms_id: Option<Uuid>,
}

/// One answer per question, in the questions' order. A session that does
/// not exist is `NotFound("session")`.
pub async fn in_force<'e>(db: impl PgExecutor<'e>, asks: &[TermsAt]) -> Result<Vec<InForce>> {
    if asks.is_empty() {
        return Ok(Vec::new());
    }
    let sessions: Vec<Uuid> = asks.iter().map(|a| a.session_id).collect();
    let moments: Vec<DateTime<Utc>> = asks.iter().map(|a| a.at).collect();
    let answers: Vec<InForce> = sqlx::query_as(
        "select s.agency_id, terms_in_force(a.session_id, a.at) as terms_id
           from unnest($1::uuid[], $2::timestamptz[]) with ordinality as a(session_id, at, n)
           join live_session s on s.session_id = a.session_id
          order by a.n",
    )
    .bind(&sessions)
    .bind(&moments)
    .fetch_all(db)
    .await?;
    if answers.len() != asks.len() {
        return Err(Error::NotFound("session"));
    }
    Ok(answers)
}

/// These versions of terms (any order; unknown ids are left out).
pub async fn versions<'e>(db: impl PgExecutor<'e>, terms_ids: &[Uuid]) -> Result<Vec<Terms>> {
    if terms_ids.is_empty() {
        return Ok(Vec::new());
    }
    Ok(sqlx::query_as(
        "select terms_id, campaign_id, session_id, version, effective_from, percent_bps, slot_fee_minor,
                hourly_rate_minor, host_share_bps, currency::text as currency, created_by, created_at
           from commission_terms where terms_id = any($1)",
    )
    .bind(terms_ids)
    .fetch_all(db)
    .await?)
}
