//! Campaigns (a brand engages an agency) and their commission terms.
//!
//! Terms belong to a campaign or to one session; a session's own terms, when
//! a version of them is in force, replace its campaign's. Each change is a
//! new version with an `effective_from` that is never in the past, and no
//! version is ever updated or deleted, so the terms in force at any past
//! moment are what they were then (`terms_in_force()` in SQL).

use chrono::{DateTime, Utc};
use hawker_core::Claims;
use serde::{Deserialize, Serialize};
use sqlx::PgPool;
use uuid::Uuid;

use crate::access::{acts_for_agency, brand_of, session_access};
use crate::page::{self, PageQuery};
use hawker_core::error::{violated_constraint, Error, Result};

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Campaign {
    pub campaign_id: Uuid,
    pub brand_id: Uuid,
    pub agency_id: Uuid,
    pub name: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
    /// The first 100 versions of the campaign's terms, oldest first (all of
    /// them, paged: `GET /v1/campaigns/{campaign_id}/terms`).
    #[sqlx(skip)]
    pub terms: Vec<Terms>,
    /// How many versions the terms have.
    #[sqlx(skip)]
    pub terms_count: i64,
    /// The first 100 sessions scheduled under the campaign, by planned start.
    #[sqlx(skip)]
    pub session_ids: Vec<Uuid>,
    /// How many sessions are scheduled under the campaign.
    #[sqlx(skip)]
    pub session_count: i64,
}

#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewCampaign {
    pub brand_id: Uuid,
    pub agency_id: Uuid,
    /// 1 to 200 characters (Unicode scalar values), not all white space, without control, bidi or zero-width characters.
    #[schema(
        min_length = 1,
        max_length = 200,
        pattern = "^[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*[^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff \\u00a0\\u1680\\u2000-\\u200a\\u2028\\u2029\\u202f\\u205f\\u3000][^\\u0000-\\u001f\\u007f-\\u009f\\u00ad\\u061c\\u180e\\u200b-\\u200f\\u202a-\\u202e\\u2060-\\u2064\\u2066-\\u2069\\ufeff]*$"
    )]
    pub name: String,
}

/// One version of commission terms.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Terms {
    pub terms_id: Uuid,
    pub campaign_id: Option<Uuid>,
    pub session_id: Option<Uuid>,
    /// 1, 2, ... per campaign or session.
    pub version: i32,
    /// In force from this instant until the next version's.
    pub effective_from: DateTime<Utc>,
    /// Commission on net sales, in basis points (1,000 = 10%).
    pub percent_bps: i32,
    /// Paid once per session that ends, in minor units of `currency`.
    pub slot_fee_minor: i64,
    /// Per host per hour on air (pro rata by the second), minor units of `currency`.
    pub hourly_rate_minor: i64,
    /// The hosts' share of every commission, in basis points; the agency keeps the rest.
    pub host_share_bps: i32,
    pub currency: String,
    pub created_by: String,
    pub created_at: DateTime<Utc>,
}

/// New terms: a new version, in force from `effective_from` (now if absent,
/// never in the past). Any mix of percentage, slot fee and hourly rate.
#[derive(Debug, Clone, Deserialize, utoipa::ToSchema)]
#[serde(deny_unknown_fields)]
pub struct NewTerms {
    #[serde(default)]
    pub effective_from: Option<DateTime<Utc>>,
    /// 0 to 10,000.
    #[serde(default)]
    #[schema(minimum = 0, maximum = 10_000)]
    pub percent_bps: i32,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub slot_fee_minor: i64,
    #[serde(default)]
    #[schema(minimum = 0)]
    pub hourly_rate_minor: i64,
    /// 0 to 10,000.
    #[schema(minimum = 0, maximum = 10_000)]
    pub host_share_bps: i32,
    /// ISO 4217, e.g. `USD`: the currency of the slot fee and hourly rate.
    #[schema(pattern = "^[A-Z]{3}$")]
    pub currency: String,
}

const TERMS_COLUMNS: &str = "terms_id, campaign_id, session_id, version, effective_from, percent_bps,
    slot_fee_minor, hourly_rate_minor, host_share_bps, currency::text as currency, created_by, created_at";

/// Creates a campaign: the agency for itself, the brand for itself, or an admin.
#[tracing::instrument(skip_all, fields(brand_id = %new.brand_id, agency_id = %new.agency_id, caller = %claims.sub))]
pub async fn create_campaign(db: &PgPool, claims: &Claims, new: NewCampaign) -> Result<Campaign> {
    if !(acts_for_agency(claims, new.agency_id) || brand_of(claims) == Some(new.brand_id)) {
        return Err(Error::forbidden(
            "a campaign is created by its agency, its brand or an admin",
        ));
    }
    let name = new.name.trim();
    // The bound is on what was sent (as the schema states it), not on the trimmed name.
    if name.is_empty()
        || new.name.chars().count() > 200
        || hawker_core::text::hidden_char(&new.name, false).is_some()
    {
        return Err(Error::invalid(
            "bad_name",
            "name must be 1 to 200 characters, without control, bidi or zero-width characters",
        ));
    }
    let (brand, agency): (bool, bool) = sqlx::query_as(
        "select exists(select 1 from brand where brand_id = $1), exists(select 1 from agency where agency_id = $2)",
    )
    .bind(new.brand_id)
    .bind(new.agency_id)
    .fetch_one(db)
    .await?;
    if !brand {
        return Err(Error::NotFound("brand"));
    }
    if !agency {
        return Err(Error::NotFound("agency"));
    }
    let campaign = sqlx::query_as::<_, Campaign>(
        "insert into campaign (campaign_id, brand_id, agency_id, name, created_by) values ($1, $2, $3, $4, $5)
         returning campaign_id, brand_id, agency_id, name, created_by, created_at",
    )
    .bind(Uuid::now_v7())
    .bind(new.brand_id)
    .bind(new.agency_id)
    .bind(name)
    .bind(&claims.sub)
    .fetch_one(db)
    .await?;
    Ok(campaign)
}

/// A campaign the caller is party to (its agency, its brand, an admin);
/// anyone else is told it does not exist.
async fn campaign_for(db: &PgPool, claims: &Claims, campaign_id: Uuid) -> Result<Campaign> {
    let campaign = sqlx::query_as::<_, Campaign>(
        "select campaign_id, brand_id, agency_id, name, created_by, created_at from campaign where campaign_id = $1",
    )
    .bind(campaign_id)
    .fetch_optional(db)
    .await?
    .ok_or(Error::NotFound("campaign"))?;
    if acts_for_agency(claims, campaign.agency_id) || brand_of(claims) == Some(campaign.brand_id) {
        Ok(campaign)
    } else {
        Err(Error::NotFound("campaign"))
    }
}

/// A campaign with its terms versions and sessions.
#[tracing::instrument(skip_all, fields(%campaign_id, caller = %claims.sub))]
pub async fn get_campaign(db: &PgPool, claims: &Claims, campaign_id: Uuid) -> Result<Campaign> {
    let mut campaign = campaign_for(db, claims, campaign_id).await?;
    campaign.terms = sqlx::query_as::<_, Terms>(&format!(
        "select {TERMS_COLUMNS} from commission_terms where campaign_id = $1 order by version limit $2"
    ))
    .bind(campaign_id)
    .bind(page::MAX_LIMIT)
    .fetch_all(db)
    .await?;
    campaign.session_ids = sqlx::query_scalar(
        "select session_id from live_session where campaign_id = $1 order by planned_start, session_id limit $2",
    )
    .bind(campaign_id)
    .bind(page::MAX_LIMIT)
    .fetch_all(db)
    .await?;
    (campaign.terms_count, campaign.session_count) = sqlx::query_as(
        "select (select count(*) from commission_terms where campaign_id = $1),
                (select count(*) from live_session where campaign_id = $1)",
    )
    .bind(campaign_id)
    .fetch_one(db)
    .await?;
    Ok(campaign)
}

/// Where terms are attached.
#[derive(Debug, Clone, Copy)]
pub enum TermsScope {
    Campaign(Uuid),
    Session(Uuid),
}

/// Checks the caller may read or record terms of `scope`: the campaign's
/// parties, or the session's agency and brand (and admins).
async fn require_terms_party(db: &PgPool, claims: &Claims, scope: TermsScope) -> Result<()> {
    match scope {
        TermsScope::Campaign(id) => campaign_for(db, claims, id).await.map(|_| ()),
        TermsScope::Session(id) => {
            let role = session_access(db, claims, id).await?.role;
            if role.manages() || role.session_brand().is_some() {
                Ok(())
            } else {
                Err(Error::forbidden(
                    "only the session's agency, its brand or an admin may see or set its terms",
                ))
            }
        }
    }
}

/// The versions of the terms of a campaign or session, oldest first, a page at a time.
#[tracing::instrument(skip_all, fields(?scope, caller = %claims.sub))]
pub async fn list_terms(
    db: &PgPool,
    claims: &Claims,
    scope: TermsScope,
    page: &PageQuery,
) -> Result<TermsPage> {
    require_terms_party(db, claims, scope).await?;
    let limit = page.limit()?;
    let after = page.after_int()?;
    let (column, id) = match scope {
        TermsScope::Campaign(id) => ("campaign_id", id),
        TermsScope::Session(id) => ("session_id", id),
    };
    let rows = sqlx::query_as::<_, Terms>(&format!(
        "select {TERMS_COLUMNS} from commission_terms
          where {column} = $1 and ($2::bigint is null or version > $2)
          order by version limit $3"
    ))
    .bind(id)
    .bind(after)
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let (items, next_cursor) = page::split(rows, limit, |t| page::int(i64::from(t.version)));
    Ok(TermsPage { items, next_cursor })
}

/// A page of terms versions.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct TermsPage {
    pub items: Vec<Terms>,
    /// Pass as `cursor` for the next page; absent (null) on the last page.
    pub next_cursor: Option<String>,
}

fn validate(new: &NewTerms) -> Result<()> {
    if !(0..=10_000).contains(&new.percent_bps) {
        return Err(Error::invalid("bad_percent", "percent_bps must be 0 to 10000"));
    }
    if !(0..=10_000).contains(&new.host_share_bps) {
        return Err(Error::invalid(
            "bad_host_share",
            "host_share_bps must be 0 to 10000",
        ));
    }
    if new.slot_fee_minor < 0 || new.hourly_rate_minor < 0 {
        return Err(Error::invalid(
            "bad_amount",
            "slot_fee_minor and hourly_rate_minor must not be negative",
        ));
    }
    if new.percent_bps == 0 && new.slot_fee_minor == 0 && new.hourly_rate_minor == 0 {
        return Err(Error::invalid(
            "empty_terms",
            "terms need a percentage, a slot fee, an hourly rate, or a mix",
        ));
    }
    if new.currency.len() != 3 || !new.currency.bytes().all(|b| b.is_ascii_uppercase()) {
        return Err(Error::invalid(
            "bad_currency",
            "currency must be three capital letters (ISO 4217)",
        ));
    }
    Ok(())
}

/// Records a new version of the terms of a campaign or session.
#[tracing::instrument(skip_all, fields(?scope, caller = %claims.sub))]
pub async fn add_terms(db: &PgPool, claims: &Claims, scope: TermsScope, new: NewTerms) -> Result<Terms> {
    require_terms_party(db, claims, scope).await?;
    validate(&new)?;
    let mut tx = db.begin().await?;
    // The parent row's lock serialises version numbers.
    let (campaign_id, session_id) = match scope {
        TermsScope::Campaign(id) => {
            sqlx::query("select 1 from campaign where campaign_id = $1 for update")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            (Some(id), None)
        }
        TermsScope::Session(id) => {
            sqlx::query("select 1 from live_session where session_id = $1 for update")
                .bind(id)
                .execute(&mut *tx)
                .await?;
            (None, Some(id))
        }
    };
    let terms = sqlx::query_as::<_, Terms>(&format!(
        "insert into commission_terms (terms_id, campaign_id, session_id, version, effective_from, percent_bps,
                slot_fee_minor, hourly_rate_minor, host_share_bps, currency, created_by)
         values ($1, $2, $3,
                 (select coalesce(max(version), 0) + 1 from commission_terms
                   where campaign_id is not distinct from $2 and session_id is not distinct from $3),
                 coalesce($4, now()), $5, $6, $7, $8, $9, $10)
         returning {TERMS_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(campaign_id)
    .bind(session_id)
    .bind(new.effective_from)
    .bind(new.percent_bps)
    .bind(new.slot_fee_minor)
    .bind(new.hourly_rate_minor)
    .bind(new.host_share_bps)
    .bind(&new.currency)
    .bind(&claims.sub)
    .fetch_one(&mut *tx)
    .await
    .map_err(|e| match violated_constraint(&e).as_deref() {
        Some("commission_terms_not_backdated") => Error::invalid(
            "terms_backdated",
            "effective_from is in the past: terms only change from now on, so past sales keep theirs",
        ),
        _ => e.into(),
    })?;
    tx.commit().await?;
    Ok(terms)
}
