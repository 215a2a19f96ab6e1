//! Statements: sums over the ledger for a period, per host and per agency.
//! Nothing is stored: a statement is recomputed from the entries every time,
//! so it always agrees with them. An entry falls in the period of its
//! `occurred_at` (a sale when paid, a clawback when refunded, hourly pay and
//! slot fees when the shift or session ended), so a refund after the period
//! reduces the next statement, not a closed one.

use chrono::{DateTime, Utc};
use hawker_core::Claims;
use serde::Serialize;
use sqlx::PgPool;
use uuid::Uuid;

use hawker_agency::access::{agency_exists, host_exists, require_agency, require_host_reader};
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
    pub entries: Vec<Entry>,
    /// Per currency.
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
    /// Both parties' entries of the agency's sessions.
    pub entries: Vec<Entry>,
    /// What the agency keeps, per currency.
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

const ENTRY_COLUMNS: &str =
    "commission_entry_id, kind, party, agency_id, host_id, session_id, order_id, refund_id,
    shift_id, terms_id, amount_minor, currency::text as currency, detail, occurred_at, recorded_at";

/// A host's statement (the host, an admin, or an agency the host has been with).
#[tracing::instrument(skip_all, fields(%host_id, caller = %claims.sub), err)]
pub async fn host_statement(
    db: &PgPool,
    claims: &Claims,
    host_id: Uuid,
    period: Period,
) -> Result<HostStatement> {
    let exists = host_exists(db, host_id).await?;
    let reader = require_host_reader(db, claims, host_id).await?;
    if !exists {
        return Err(Error::NotFound("host"));
    }
    let entries = sqlx::query_as::<_, Entry>(&format!(
        "select {ENTRY_COLUMNS} from commission_entry
          where party = 'host' and host_id = $1 and ($2::uuid is null or agency_id = $2)
            and ($3::timestamptz is null or occurred_at >= $3)
            and ($4::timestamptz is null or occurred_at < $4)
          order by occurred_at, commission_entry_id"
    ))
    .bind(host_id)
    .bind(reader.agency())
    .bind(period.from)
    .bind(period.to)
    .fetch_all(db)
    .await?;
    Ok(HostStatement {
        host_id,
        agency_id: reader.agency(),
        from: period.from,
        to: period.to,
        totals: totals(&entries),
        entries,
    })
}

/// An agency's statement (the agency or an admin).
#[tracing::instrument(skip_all, fields(%agency_id, caller = %claims.sub), err)]
pub async fn agency_statement(
    db: &PgPool,
    claims: &Claims,
    agency_id: Uuid,
    period: Period,
) -> Result<AgencyStatement> {
    require_agency(claims, agency_id)?;
    if !agency_exists(db, agency_id).await? {
        return Err(Error::NotFound("agency"));
    }
    let entries = sqlx::query_as::<_, Entry>(&format!(
        "select {ENTRY_COLUMNS} from commission_entry
          where agency_id = $1
            and ($2::timestamptz is null or occurred_at >= $2)
            and ($3::timestamptz is null or occurred_at < $3)
          order by occurred_at, commission_entry_id"
    ))
    .bind(agency_id)
    .bind(period.from)
    .bind(period.to)
    .fetch_all(db)
    .await?;
    let mut host_ids: Vec<Uuid> = entries
        .iter()
        .filter(|e| e.party == "host")
        .filter_map(|e| e.host_id)
        .collect();
    host_ids.sort();
    host_ids.dedup();
    let handles = roster::handles(db, &host_ids).await?;
    let hosts = handles
        .into_iter()
        .map(|(host_id, handle)| HostTotals {
            host_id,
            handle,
            totals: totals(
                entries
                    .iter()
                    .filter(|e| e.party == "host" && e.host_id == Some(host_id)),
            ),
        })
        .collect();
    Ok(AgencyStatement {
        agency_id,
        from: period.from,
        to: period.to,
        agency: totals(entries.iter().filter(|e| e.party == "agency")),
        hosts,
        total: totals(&entries),
        entries,
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
