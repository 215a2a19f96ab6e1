//! Campaigns (a brand engages an agency) and their commission terms.
//!
//! One side proposes a campaign (the brand or the agency) and the other
//! accepts or declines it; an admin's campaign is accepted at once. A
//! campaign is *active* while accepted and within its dates: only then may the
//! agency's sessions sell its SKUs (which SKUs, at what floor, with what
//! allocation is the catalog's part: `hawker_catalog::campaign_skus`).
//!
//! Terms belong to a campaign or to one session; a session's own terms, when
//! a version of them is in force, replace its campaign's. Each change is a
//! new version with an `effective_from` that is never in the past, and no
//! version is ever updated or deleted, so the terms in force at any past
//! moment are what they were then (`terms_in_force()` in SQL).

use chrono::{DateTime, Utc};
use hawker_core::Claims;
use serde::{Deserialize, Serialize};
use sqlx::{PgConnection, PgPool};
use uuid::Uuid;

use crate::access::{acts_for_agency, brand_of, session_access};
use crate::page::{self, PageQuery};
use hawker_core::error::{violated_constraint, Error, Result};

/// A campaign's state: `proposed` → `accepted` or `declined`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum CampaignStatus {
    Proposed,
    Accepted,
    Declined,
}

/// Which side proposed a campaign: `brand`, `agency` or `admin`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize, sqlx::Type, utoipa::ToSchema)]
#[serde(rename_all = "lowercase")]
#[sqlx(type_name = "text", rename_all = "lowercase")]
pub enum Proposer {
    Brand,
    Agency,
    Admin,
}

#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Campaign {
    pub campaign_id: Uuid,
    pub brand_id: Uuid,
    pub agency_id: Uuid,
    pub name: String,
    pub status: CampaignStatus,
    pub proposed_by: Proposer,
    /// Its SKUs may be sold from this instant...
    pub starts_at: DateTime<Utc>,
    /// ...until this one (open-ended if null).
    pub ends_at: Option<DateTime<Utc>>,
    /// The brand allows deals and coupons below the SKUs' price floors.
    pub allow_below_floor: bool,
    /// Who accepted or declined it, and when (null while proposed).
    pub decided_by: Option<String>,
    pub decided_at: Option<DateTime<Utc>>,
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
    /// When its SKUs may first be sold; now if absent.
    #[serde(default)]
    pub starts_at: Option<DateTime<Utc>>,
    /// When selling its SKUs stops (after `starts_at`); open-ended if absent.
    #[serde(default)]
    pub ends_at: Option<DateTime<Utc>>,
    /// The brand allows deals and coupons below the price floors (false if absent).
    #[serde(default)]
    pub allow_below_floor: bool,
}

/// The campaign columns, for `query_as::<_, Campaign>`.
const CAMPAIGN_COLUMNS: &str =
    "campaign_id, brand_id, agency_id, name, status, proposed_by, starts_at, ends_at,
    allow_below_floor, decided_by, decided_at, created_by, created_at";

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

/// Proposes a campaign: the agency for itself or the brand for itself (the
/// other side accepts it), or an admin (accepted at once).
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
    let starts_at = new.starts_at.unwrap_or_else(Utc::now);
    if new.ends_at.is_some_and(|end| end <= starts_at) {
        return Err(Error::invalid("bad_dates", "ends_at must be after starts_at"));
    }
    let proposer = if claims.is_admin() {
        Proposer::Admin
    } else if brand_of(claims) == Some(new.brand_id) {
        Proposer::Brand
    } else {
        Proposer::Agency
    };
    let status = if proposer == Proposer::Admin {
        CampaignStatus::Accepted
    } else {
        CampaignStatus::Proposed
    };
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
    let campaign = sqlx::query_as::<_, Campaign>(&format!(
        "insert into campaign (campaign_id, brand_id, agency_id, name, created_by, status, proposed_by,
                starts_at, ends_at, allow_below_floor, decided_by, decided_at)
         values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10,
                 case when $6 = 'accepted' then $5 end, case when $6 = 'accepted' then now() end)
         returning {CAMPAIGN_COLUMNS}"
    ))
    .bind(Uuid::now_v7())
    .bind(new.brand_id)
    .bind(new.agency_id)
    .bind(name)
    .bind(&claims.sub)
    .bind(status)
    .bind(proposer)
    .bind(starts_at)
    .bind(new.ends_at)
    .bind(new.allow_below_floor)
    .fetch_one(db)
    .await?;
    Ok(campaign)
}

/// The other side's answer to a proposed campaign.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decision {
    Accept,
    Decline,
}

/// Accepts or declines a proposed campaign: the side that did not propose it
/// (the brand for an agency's proposal, the agency for a brand's), or an admin.
#[tracing::instrument(skip_all, fields(%campaign_id, ?decision, caller = %claims.sub))]
pub async fn decide_campaign(
    db: &PgPool,
    claims: &Claims,
    campaign_id: Uuid,
    decision: Decision,
) -> Result<Campaign> {
    let campaign = campaign_party(db, claims, campaign_id).await?;
    let other_side = match campaign.proposed_by {
        Proposer::Agency => brand_of(claims) == Some(campaign.brand_id),
        Proposer::Brand => acts_for_agency(claims, campaign.agency_id) && !claims.is_admin(),
        Proposer::Admin => false,
    };
    if !(other_side || claims.is_admin()) {
        return Err(Error::forbidden(
            "the party that did not propose the campaign accepts or declines it",
        ));
    }
    let status = match decision {
        Decision::Accept => CampaignStatus::Accepted,
        Decision::Decline => CampaignStatus::Declined,
    };
    let decided = sqlx::query_as::<_, Campaign>(&format!(
        "update campaign set status = $2, decided_by = $3, decided_at = now()
          where campaign_id = $1 and status = 'proposed'
      returning {CAMPAIGN_COLUMNS}"
    ))
    .bind(campaign_id)
    .bind(status)
    .bind(&claims.sub)
    .fetch_optional(db)
    .await?;
    decided.ok_or_else(|| {
        Error::conflict(
            "campaign_not_proposed",
            "the campaign has already been accepted or declined",
        )
    })
}

/// Whose campaigns to list.
#[derive(Debug, Clone, Copy)]
pub enum CampaignParty {
    Brand(Uuid),
    Agency(Uuid),
}

/// A page of campaigns, newest first.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct CampaignPage {
    /// Without `terms` and `session_ids` (read one campaign for those).
    pub items: Vec<Campaign>,
    /// The `cursor` of the next page; null on the last page.
    pub next_cursor: Option<String>,
}

/// A brand's or an agency's campaigns (that party's tokens and admins), newest
/// first, optionally of one status.
#[tracing::instrument(skip_all, fields(?party, caller = %claims.sub))]
pub async fn list_campaigns(
    db: &PgPool,
    claims: &Claims,
    party: CampaignParty,
    status: Option<CampaignStatus>,
    page: &crate::page::PageQuery,
) -> Result<CampaignPage> {
    let (column, id) = match party {
        CampaignParty::Brand(id) => {
            if !(claims.is_admin() || brand_of(claims) == Some(id)) {
                return Err(Error::forbidden(
                    "a brand's campaigns are listed by that brand or an admin",
                ));
            }
            ("brand_id", id)
        }
        CampaignParty::Agency(id) => {
            if !acts_for_agency(claims, id) {
                return Err(Error::forbidden("this token does not act for that agency"));
            }
            ("agency_id", id)
        }
    };
    let limit = page.limit()?;
    let after = page.after_time_id()?;
    let rows = sqlx::query_as::<_, Campaign>(&format!(
        "select {CAMPAIGN_COLUMNS} from campaign
          where {column} = $1 and ($2::text is null or status = $2)
            and ($3::timestamptz is null or (created_at, campaign_id) < ($3, $4))
          order by created_at desc, campaign_id desc limit $5"
    ))
    .bind(id)
    .bind(status)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let (items, next_cursor) =
        crate::page::split(rows, limit, |c| crate::page::time_id(c.created_at, c.campaign_id));
    Ok(CampaignPage { items, next_cursor })
}

/// A campaign under which `agency_id` may sell `brand_id`'s SKUs now.
#[derive(Debug, Clone, Copy, sqlx::FromRow)]
pub struct ActiveCampaign {
    pub campaign_id: Uuid,
    pub allow_below_floor: bool,
}

/// The campaigns between `agency_id` and `brand_id` that are active now
/// (accepted, started, not ended), oldest first.
pub async fn active_campaigns(
    conn: &mut PgConnection,
    agency_id: Uuid,
    brand_id: Uuid,
) -> Result<Vec<ActiveCampaign>> {
    Ok(sqlx::query_as::<_, ActiveCampaign>(
        "select campaign_id, allow_below_floor from campaign
          where agency_id = $1 and brand_id = $2 and status = 'accepted'
            and starts_at <= now() and (ends_at is null or ends_at > now())
          order by created_at, campaign_id",
    )
    .bind(agency_id)
    .bind(brand_id)
    .fetch_all(conn)
    .await?)
}

/// The ids of `agency_id`'s campaigns active now, with `brand_id` only when given.
pub async fn active_campaign_ids_of_agency(
    conn: &mut PgConnection,
    agency_id: Uuid,
    brand_id: Option<Uuid>,
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "select campaign_id from campaign
          where agency_id = $1 and ($2::uuid is null or brand_id = $2) and status = 'accepted'
            and starts_at <= now() and (ends_at is null or ends_at > now())
          order by created_at, campaign_id",
    )
    .bind(agency_id)
    .bind(brand_id)
    .fetch_all(conn)
    .await?)
}

/// Whether `campaign_id` is active now, and whether it allows going below its floors.
pub async fn active_campaign(conn: &mut PgConnection, campaign_id: Uuid) -> Result<Option<ActiveCampaign>> {
    Ok(sqlx::query_as::<_, ActiveCampaign>(
        "select campaign_id, allow_below_floor from campaign
          where campaign_id = $1 and status = 'accepted'
            and starts_at <= now() and (ends_at is null or ends_at > now())",
    )
    .bind(campaign_id)
    .fetch_optional(conn)
    .await?)
}

/// The brand's campaigns that hold a claim on stock: accepted and not ended
/// (those not started yet included, so their allocations stay reserved).
pub async fn holding_campaign_ids(conn: &mut PgConnection, brand_id: Uuid) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "select campaign_id from campaign
          where brand_id = $1 and status = 'accepted' and (ends_at is null or ends_at > now())",
    )
    .bind(brand_id)
    .fetch_all(conn)
    .await?)
}

/// A campaign the caller is party to (its agency, its brand, an admin);
/// anyone else is told it does not exist.
pub async fn campaign_party(db: &PgPool, claims: &Claims, campaign_id: Uuid) -> Result<Campaign> {
    let campaign = sqlx::query_as::<_, Campaign>(&format!(
        "select {CAMPAIGN_COLUMNS} from campaign where campaign_id = $1"
    ))
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
    let mut campaign = campaign_party(db, claims, campaign_id).await?;
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
        TermsScope::Campaign(id) => campaign_party(db, claims, id).await.map(|_| ()),
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
