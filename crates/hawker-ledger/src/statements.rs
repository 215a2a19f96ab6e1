//! Statements: sums over the ledger for a period, per host and per agency.
//! Nothing is stored: a statement is recomputed from the entries every time,
//! so it always agrees with them. An entry falls in the period of its
//! `occurred_at` (a sale when paid, a clawback when refunded, hourly pay and
//! slot fees when the shift or session ended), so a refund after the period
//! reduces the next statement, not a closed one.
//!
//! Entries come a page at a time (`limit`, `cursor`: see
//! [`hawker_agency::page`]), in (`occurred_at`, `commission_entry_id`) order;
//! the totals are always over the whole period, summed by Postgres, so a
//! statement over years costs one bounded page and a few sums. The entries
//! of every page together add up to the totals.

use chrono::{DateTime, Utc};
use hawker_core::Claims;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use hawker_agency::access::{agency_exists, host_exists, require_agency, require_host_reader};
use hawker_agency::page::{self, PageQuery};
use hawker_agency::roster;
use hawker_agency::time::Period;
use hawker_core::error::{Error, Result};

/// One ledger entry.
#[derive(Debug, Clone, Serialize, sqlx::FromRow, utoipa::ToSchema)]
pub struct Entry {
    pub commission_entry_id: i64,
    /// `sale`, `clawback`, `hourly` or `slot_fee`.
    pub kind: String,
    /// `agency` or `host`: who is paid.
    pub party: String,
    pub agency_id: Uuid,
    /// The host paid (party `host`), or whose work earned the agency's entry.
    pub host_id: Option<Uuid>,
    pub session_id: Uuid,
    pub order_id: Option<Uuid>,
    pub refund_id: Option<Uuid>,
    pub shift_id: Option<Uuid>,
    /// The terms version applied.
    pub terms_id: Uuid,
    /// Positive accrues, negative claws back.
    pub amount_minor: i64,
    pub currency: String,
    /// How the amount was computed.
    #[schema(value_type = Object)]
    pub detail: serde_json::Value,
    pub occurred_at: DateTime<Utc>,
    pub recorded_at: DateTime<Utc>,
}

/// Sums by kind, in one currency.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, utoipa::ToSchema)]
pub struct Totals {
    pub currency: String,
    pub sales_minor: i64,
    /// Negative (or zero).
    pub clawbacks_minor: i64,
    pub hourly_minor: i64,
    pub slot_fees_minor: i64,
    /// The sum of all the above: what is owed for the period.
    pub net_payable_minor: i64,
}

/// A host's earnings for a period.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostStatement {
    pub host_id: Uuid,
    /// Set when an agency reads it: only entries from its sessions.
    pub agency_id: Option<Uuid>,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// One page of the period's entries.
    pub entries: Vec<Entry>,
    /// Pass as `cursor` for the next page of entries; absent (null) on the last page.
    pub next_cursor: Option<String>,
    /// Per currency, over the whole period (every page).
    pub totals: Vec<Totals>,
}

/// A host's part of an agency statement.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct HostTotals {
    pub host_id: Uuid,
    pub handle: String,
    pub totals: Vec<Totals>,
}

/// An agency's commissions for a period.
#[derive(Debug, Clone, Serialize, utoipa::ToSchema)]
pub struct AgencyStatement {
    pub agency_id: Uuid,
    pub from: Option<DateTime<Utc>>,
    pub to: Option<DateTime<Utc>>,
    /// One page of both parties' entries of the agency's sessions.
    pub entries: Vec<Entry>,
    /// Pass as `cursor` for the next page of entries; absent (null) on the last page.
    pub next_cursor: Option<String>,
    /// What the agency keeps, per currency (totals are over the whole period).
    pub agency: Vec<Totals>,
    /// What is payable to each host.
    pub hosts: Vec<HostTotals>,
    /// Everything earned (agency and hosts), per currency.
    pub total: Vec<Totals>,
}

/// Sums entries by currency, currencies in alphabetical order.
pub fn totals<'a>(entries: impl IntoIterator<Item = &'a Entry>) -> Vec<Totals> {
    let mut by_currency: Vec<Totals> = Vec::new();
    for e in entries {
        let index = match by_currency.iter().position(|t| t.currency == e.currency) {
            Some(i) => i,
            None => {
                by_currency.push(Totals {
                    currency: e.currency.clone(),
                    ..Totals::default()
                });
                by_currency.len() - 1
            }
        };
        let t = &mut by_currency[index];
        match e.kind.as_str() {
            "sale" => t.sales_minor += e.amount_minor,
            "clawback" => t.clawbacks_minor += e.amount_minor,
            "hourly" => t.hourly_minor += e.amount_minor,
            _ => t.slot_fees_minor += e.amount_minor,
        }
        t.net_payable_minor += e.amount_minor;
    }
    by_currency.sort_by(|a, b| a.currency.cmp(&b.currency));
    by_currency
}

/// One sum of the ledger: a party's (and host's) amounts of one kind and currency.
#[derive(Debug, Clone, sqlx::FromRow)]
struct Sum {
    party: String,
    host_id: Option<Uuid>,
    currency: String,
    kind: String,
    amount_minor: i64,
}

/// Folds sums into per-currency totals, like [`totals`] does with entries.
fn totals_of<'a>(sums: impl IntoIterator<Item = &'a Sum>) -> Vec<Totals> {
    let as_entries: Vec<Entry> = sums
        .into_iter()
        .map(|s| Entry {
            commission_entry_id: 0,
            kind: s.kind.clone(),
            party: s.party.clone(),
            agency_id: Uuid::nil(),
            host_id: s.host_id,
            session_id: Uuid::nil(),
            order_id: None,
            refund_id: None,
            shift_id: None,
            terms_id: Uuid::nil(),
            amount_minor: s.amount_minor,
            currency: s.currency.clone(),
            detail: serde_json::Value::Null,
            occurred_at: DateTime::<Utc>::UNIX_EPOCH,
            recorded_at: DateTime::<Utc>::UNIX_EPOCH,
        })
        .collect();
    totals(&as_entries)
}

/// Sums of the entries matching `filter` (over `$1`..`$4`), by party, host,
/// currency and kind.
const SUM_SQL: &str = "select party, host_id, currency::text as currency, kind,
        sum(amount_minor)::bigint as amount_minor
   from commission_entry";

const ENTRY_COLUMNS: &str =
    "commission_entry_id, kind, party, agency_id, host_id, session_id, order_id, refund_id,
    shift_id, terms_id, amount_minor, currency::text as currency, detail, occurred_at, recorded_at";

/// A host's statement (the host, an admin, or an agency the host has been with).
#[tracing::instrument(skip_all, fields(%host_id, caller = %claims.sub))]
pub async fn host_statement(
    db: &PgPool,
    claims: &Claims,
    host_id: Uuid,
    period: Period,
    page: &PageQuery,
) -> Result<HostStatement> {
    let exists = host_exists(db, host_id).await?;
    let reader = require_host_reader(db, claims, host_id).await?;
    if !exists {
        return Err(Error::NotFound("host"));
    }
    let limit = page.limit()?;
    let after = page.after_time_int()?;
    let filter = "where party = 'host' and host_id = $1 and ($2::uuid is null or agency_id = $2)
            and ($3::timestamptz is null or occurred_at >= $3)
            and ($4::timestamptz is null or occurred_at < $4)";
    let rows = sqlx::query_as::<_, Entry>(&format!(
        "select {ENTRY_COLUMNS} from commission_entry {filter}
            and ($5::timestamptz is null or (occurred_at, commission_entry_id) > ($5, $6))
          order by occurred_at, commission_entry_id
          limit $7"
    ))
    .bind(host_id)
    .bind(reader.agency())
    .bind(period.from)
    .bind(period.to)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let sums = sqlx::query_as::<_, Sum>(&format!(
        "{SUM_SQL} {filter} group by party, host_id, currency, kind"
    ))
    .bind(host_id)
    .bind(reader.agency())
    .bind(period.from)
    .bind(period.to)
    .fetch_all(db)
    .await?;
    let (entries, next_cursor) = page::split(rows, limit, |e| {
        page::time_int(e.occurred_at, e.commission_entry_id)
    });
    Ok(HostStatement {
        host_id,
        agency_id: reader.agency(),
        from: period.from,
        to: period.to,
        totals: totals_of(&sums),
        entries,
        next_cursor,
    })
}

/// An agency's statement (the agency or an admin).
#[tracing::instrument(skip_all, fields(%agency_id, caller = %claims.sub))]
pub async fn agency_statement(
    db: &PgPool,
    claims: &Claims,
    agency_id: Uuid,
    period: Period,
    page: &PageQuery,
) -> Result<AgencyStatement> {
    require_agency(claims, agency_id)?;
    let limit = page.limit()?;
    let after = page.after_time_int()?;
    if !agency_exists(db, agency_id).await? {
        return Err(Error::NotFound("agency"));
    }
    let filter = "where agency_id = $1
            and ($2::timestamptz is null or occurred_at >= $2)
            and ($3::timestamptz is null or occurred_at < $3)";
    let rows = sqlx::query_as::<_, Entry>(&format!(
        "select {ENTRY_COLUMNS} from commission_entry {filter}
            and ($4::timestamptz is null or (occurred_at, commission_entry_id) > ($4, $5))
          order by occurred_at, commission_entry_id
          limit $6"
    ))
    .bind(agency_id)
    .bind(period.from)
    .bind(period.to)
    .bind(after.map(|a| a.0))
    .bind(after.map(|a| a.1))
    .bind(limit + 1)
    .fetch_all(db)
    .await?;
    let sums = sqlx::query_as::<_, Sum>(&format!(
        "{SUM_SQL} {filter} group by party, host_id, currency, kind"
    ))
    .bind(agency_id)
    .bind(period.from)
    .bind(period.to)
    .fetch_all(db)
    .await?;
    let (entries, next_cursor) = page::split(rows, limit, |e| {
        page::time_int(e.occurred_at, e.commission_entry_id)
    });
    let mut host_ids: Vec<Uuid> = sums
        .iter()
        .filter(|s| s.party == "host")
        .filter_map(|s| s.host_id)
        .collect();
    host_ids.sort();
    host_ids.dedup();
    let handles = roster::handles(db, &host_ids).await?;
    let hosts = handles
        .into_iter()
        .map(|(host_id, handle)| HostTotals {
            host_id,
            handle,
            totals: totals_of(
                sums.iter()
                    .filter(|s| s.party == "host" && s.host_id == Some(host_id)),
            ),
        })
        .collect();
    Ok(AgencyStatement {
        agency_id,
        from: period.from,
        to: period.to,
        agency: totals_of(sums.iter().filter(|s| s.party == "agency")),
        hosts,
        total: totals_of(&sums),
        entries,
        next_cursor,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(kind: &str, amount: i64, currency: &str) -> Entry {
        Entry {
            commission_entry_id: 1,
            kind: kind.into(),
            party: "host".into(),
            agency_id: Uuid::nil(),
            host_id: Some(Uuid::nil()),
            session_id: Uuid::nil(),
            order_id: None,
            refund_id: None,
            shift_id: None,
            terms_id: Uuid::nil(),
            amount_minor: amount,
            currency: currency.into(),
            detail: serde_json::Value::Null,
            occurred_at: Utc::now(),
            recorded_at: Utc::now(),
        }
    }

    #[test]
    fn totals_sum_by_kind_and_currency() {
        let entries = [
            entry("sale", 500, "USD"),
            entry("clawback", -120, "USD"),
            entry("hourly", 3000, "USD"),
            entry("slot_fee", 2500, "USD"),
            entry("sale", 70, "EUR"),
        ];
        let t = totals(&entries);
        assert_eq!(t.len(), 2);
        assert_eq!(t[0].currency, "EUR");
        assert_eq!(
            t[1],
            Totals {
                currency: "USD".into(),
                sales_minor: 500,
                clawbacks_minor: -120,
                hourly_minor: 3000,
                slot_fees_minor: 2500,
                net_payable_minor: 5880,
            }
        );
    }
}
