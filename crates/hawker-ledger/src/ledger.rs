//! The commission ledger's writer: a worker on every node that, about once a
//! second, finds what has happened without entries yet — paid orders,
//! refunds and returns, shifts that ended, sessions that ended — and appends
//! the entries, with the terms in force at the time.
//!
//! Exactly once, across nodes and restarts: each source event gets one
//! `commission_accrual` row (primary key `(kind, source_id)`) inserted in the
//! same transaction as its entries, and only the transaction whose insert
//! claimed the row writes them; `commission_entry_once` is a second guard. A
//! transaction-scoped advisory lock per kind keeps nodes from doing the same
//! work twice at once (it is an optimisation, not what makes it correct).
//!
//! Which terms: a sale and its refunds use the terms in force when the order
//! was placed; a shift's hourly pay those in force when it went on air; the
//! slot fee those in force when the session went live.

use std::collections::HashMap;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::commission::{self, Split};
use hawker_core::error::Result;

/// Source events handled per kind per pass.
const BATCH: i64 = 500;
/// Advisory lock keys ("hawkagen" + kind).
const LOCK_BASE: i64 = 0x6861_776b_6167_0000;

/// How many source events one pass accrued, by kind.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Accrued {
    pub sales: usize,
    pub clawbacks: usize,
    pub hourly: usize,
    pub slot_fees: usize,
}

impl Accrued {
    pub fn total(&self) -> usize {
        self.sales + self.clawbacks + self.hourly + self.slot_fees
    }
}

/// Runs [`accrue`] every `every` until `shutdown`.
pub async fn run(db: PgPool, every: Duration, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(every);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A pass stuck on an unreachable Postgres must not hold up shutdown.
        let pass = tokio::select! {
            _ = shutdown.cancelled() => return,
            pass = accrue(&db) => pass,
        };
        match pass {
            Ok(done) if done.total() > 0 => tracing::debug!(?done, "commissions accrued"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "commission accrual failed; retrying next tick"),
        }
    }
}

/// One pass over every kind, in dependency order (a clawback needs its sale).
#[tracing::instrument(skip_all, err)]
pub async fn accrue(db: &PgPool) -> Result<Accrued> {
    Ok(Accrued {
        sales: accrue_sales(db).await?,
        clawbacks: accrue_clawbacks(db).await?,
        hourly: accrue_hourly(db).await?,
        slot_fees: accrue_slot_fees(db).await?,
    })
}

async fn try_lock(tx: &mut Transaction<'_, Postgres>, kind: i64) -> Result<bool> {
    Ok(sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(LOCK_BASE + kind)
        .fetch_one(&mut **tx)
        .await?)
}

/// Claims source events; returns those this transaction claimed.
async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    kind: &str,
    sources: &[Uuid],
    terms: &[Option<Uuid>],
) -> Result<Vec<Uuid>> {
    Ok(sqlx::query_scalar(
        "insert into commission_accrual (kind, source_id, terms_id)
         select $1, s, t from unnest($2::uuid[], $3::uuid[]) as u(s, t)
         order by s
         on conflict (kind, source_id) do nothing
         returning source_id",
    )
    .bind(kind)
    .bind(sources)
    .bind(terms)
    .fetch_all(&mut **tx)
    .await?)
}

#[derive(Debug, Clone, sqlx::FromRow)]
struct TermsRow {
    terms_id: Uuid,
    percent_bps: i32,
    slot_fee_minor: i64,
    hourly_rate_minor: i64,
    host_share_bps: i32,
    currency: String,
}

async fn load_terms(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Option<Uuid>],
) -> Result<HashMap<Uuid, TermsRow>> {
    let ids: Vec<Uuid> = ids.iter().flatten().copied().collect();
    Ok(sqlx::query_as::<_, TermsRow>(
        "select terms_id, percent_bps, slot_fee_minor, hourly_rate_minor, host_share_bps, currency::text as currency
           from commission_terms where terms_id = any($1)",
    )
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .map(|t| (t.terms_id, t))
    .collect())
}

/// Entries to append, as column arrays for one insert.
#[derive(Default)]
struct Entries {
    kind: Vec<&'static str>,
    source: Vec<Uuid>,
    party: Vec<&'static str>,
    agency: Vec<Uuid>,
    host: Vec<Option<Uuid>>,
    session: Vec<Uuid>,
    order: Vec<Option<Uuid>>,
    refund: Vec<Option<Uuid>>,
    shift: Vec<Option<Uuid>>,
    terms: Vec<Uuid>,
    amount: Vec<i64>,
    currency: Vec<String>,
    detail: Vec<serde_json::Value>,
    occurred: Vec<DateTime<Utc>>,
}

/// What an entry is about, shared by its agency and host halves.
struct About {
    kind: &'static str,
    source: Uuid,
    agency: Uuid,
    session: Uuid,
    order: Option<Uuid>,
    refund: Option<Uuid>,
    shift: Option<Uuid>,
    terms: Uuid,
    currency: String,
    detail: serde_json::Value,
    occurred: DateTime<Utc>,
}

impl Entries {
    /// One entry; zero amounts are not written.
    fn push(&mut self, about: &About, party: &'static str, host: Option<Uuid>, amount: i64) {
        if amount == 0 {
            return;
        }
        self.kind.push(about.kind);
        self.source.push(about.source);
        self.party.push(party);
        self.agency.push(about.agency);
        self.host.push(host);
        self.session.push(about.session);
        self.order.push(about.order);
        self.refund.push(about.refund);
        self.shift.push(about.shift);
        self.terms.push(about.terms);
        self.amount.push(amount);
        self.currency.push(about.currency.clone());
        self.detail.push(about.detail.clone());
        self.occurred.push(about.occurred);
    }

    /// The agency's and the host's halves of a split. The agency's entry
    /// names the host whose work earned it, for reporting.
    fn push_split(&mut self, about: &About, host: Option<Uuid>, split: Split) {
        self.push(about, "agency", host, split.agency);
        if let Some(host) = host {
            self.push(about, "host", Some(host), split.host);
        }
    }

    async fn insert(self, tx: &mut Transaction<'_, Postgres>) -> Result<()> {
        if self.kind.is_empty() {
            return Ok(());
        }
        let written = self.kind.len() as u64;
        let kinds: Vec<&str> = self.kind.clone();
        sqlx::query(
            "insert into commission_entry (kind, source_id, party, agency_id, host_id, session_id, order_id,
                    refund_id, shift_id, terms_id, amount_minor, currency, detail, occurred_at)
             select * from unnest($1::text[], $2::uuid[], $3::text[], $4::uuid[], $5::uuid[], $6::uuid[],
                                  $7::uuid[], $8::uuid[], $9::uuid[], $10::uuid[], $11::bigint[], $12::text[],
                                  $13::jsonb[], $14::timestamptz[])
             on conflict on constraint commission_entry_once do nothing",
        )
        .bind(&self.kind)
        .bind(&self.source)
        .bind(&self.party)
        .bind(&self.agency)
        .bind(&self.host)
        .bind(&self.session)
        .bind(&self.order)
        .bind(&self.refund)
        .bind(&self.shift)
        .bind(&self.terms)
        .bind(&self.amount)
        .bind(&self.currency)
        .bind(&self.detail)
        .bind(&self.occurred)
        .execute(&mut **tx)
        .await?;
        if let Some(kind) = kinds.first() {
            metrics::counter!("hawker_commission_entries_total", "kind" => *kind).increment(written);
        }
        Ok(())
    }
}

#[derive(Debug, sqlx::FromRow)]
struct SaleRow {
    order_id: Uuid,
    session_id: Uuid,
    agency_id: Uuid,
    host_id: Option<Uuid>,
    amount_minor: i64,
    currency: String,
    paid_at: DateTime<Utc>,
    terms_id: Option<Uuid>,
}

async fn accrue_sales(db: &PgPool) -> Result<usize> {
    let mut tx = db.begin().await?;
    if !try_lock(&mut tx, 1).await? {
        return Ok(0);
    }
    let rows: Vec<SaleRow> = sqlx::query_as(
        "select o.order_id, o.session_id, s.agency_id, o.host_id, o.amount_minor, o.currency::text as currency,
                o.paid_at, terms_in_force(o.session_id, o.created_at) as terms_id
           from customer_order o join live_session s using (session_id)
          where o.paid_at is not null and o.status in ('paid', 'partially_refunded', 'refunded')
            and not exists (select 1 from commission_accrual a where a.kind = 'sale' and a.source_id = o.order_id)
          order by o.paid_at
          limit $1",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.order_id).collect();
    let terms_ids: Vec<Option<Uuid>> = rows.iter().map(|r| r.terms_id).collect();
    let claimed = claim(&mut tx, "sale", &ids, &terms_ids).await?;
    let terms = load_terms(&mut tx, &terms_ids).await?;
    let mut entries = Entries::default();
    for row in rows.iter().filter(|r| claimed.contains(&r.order_id)) {
        let Some(t) = row.terms_id.and_then(|id| terms.get(&id)) else {
            continue;
        };
        let split = commission::on_sale(
            row.amount_minor,
            i64::from(t.percent_bps),
            i64::from(t.host_share_bps),
            row.host_id.is_some(),
        );
        let about = About {
            kind: "sale",
            source: row.order_id,
            agency: row.agency_id,
            session: row.session_id,
            order: Some(row.order_id),
            refund: None,
            shift: None,
            terms: t.terms_id,
            currency: row.currency.clone(),
            detail: json!({
                "order_amount_minor": row.amount_minor,
                "percent_bps": t.percent_bps,
                "commission_minor": split.total(),
                "host_share_bps": t.host_share_bps,
            }),
            occurred: row.paid_at,
        };
        entries.push_split(&about, row.host_id, split);
    }
    entries.insert(&mut tx).await?;
    tx.commit().await?;
    Ok(claimed.len())
}

#[derive(Debug, sqlx::FromRow)]
struct RefundRow {
    refund_id: Uuid,
    order_id: Uuid,
    refund_minor: i64,
    kind: String,
    created_at: DateTime<Utc>,
    order_minor: i64,
    refunded_before: i64,
    currency: String,
    host_id: Option<Uuid>,
    session_id: Uuid,
    agency_id: Uuid,
    /// The terms of the sale (null if none were in force: nothing to claw back).
    terms_id: Option<Uuid>,
}

async fn accrue_clawbacks(db: &PgPool) -> Result<usize> {
    let mut tx = db.begin().await?;
    if !try_lock(&mut tx, 2).await? {
        return Ok(0);
    }
    let rows: Vec<RefundRow> = sqlx::query_as(
        "select r.refund_id, r.order_id, r.amount_minor as refund_minor, r.kind, r.created_at,
                o.amount_minor as order_minor,
                (select coalesce(sum(x.amount_minor), 0)::bigint from refund x
                  where x.order_id = r.order_id and (x.created_at, x.refund_id) < (r.created_at, r.refund_id))
                    as refunded_before,
                o.currency::text as currency, o.host_id, o.session_id, s.agency_id, a.terms_id
           from refund r
           join customer_order o using (order_id)
           join live_session s on s.session_id = o.session_id
           join commission_accrual a on a.kind = 'sale' and a.source_id = r.order_id
          where not exists (select 1 from commission_accrual c
                             where c.kind = 'clawback' and c.source_id = r.refund_id)
          order by r.created_at, r.refund_id
          limit $1",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.refund_id).collect();
    let terms_ids: Vec<Option<Uuid>> = rows.iter().map(|r| r.terms_id).collect();
    let claimed = claim(&mut tx, "clawback", &ids, &terms_ids).await?;
    let terms = load_terms(&mut tx, &terms_ids).await?;
    let mut entries = Entries::default();
    for row in rows.iter().filter(|r| claimed.contains(&r.refund_id)) {
        let Some(t) = row.terms_id.and_then(|id| terms.get(&id)) else {
            continue;
        };
        let split = commission::clawback(
            row.order_minor,
            row.refunded_before,
            row.refund_minor,
            i64::from(t.percent_bps),
            i64::from(t.host_share_bps),
            row.host_id.is_some(),
        );
        let about = About {
            kind: "clawback",
            source: row.refund_id,
            agency: row.agency_id,
            session: row.session_id,
            order: Some(row.order_id),
            refund: Some(row.refund_id),
            shift: None,
            terms: t.terms_id,
            currency: row.currency.clone(),
            detail: json!({
                "refund_kind": row.kind,
                "refund_amount_minor": row.refund_minor,
                "refunded_before_minor": row.refunded_before,
                "order_amount_minor": row.order_minor,
                "percent_bps": t.percent_bps,
                "commission_minor": split.total(),
                "host_share_bps": t.host_share_bps,
            }),
            occurred: row.created_at,
        };
        entries.push_split(&about, row.host_id, split);
    }
    entries.insert(&mut tx).await?;
    tx.commit().await?;
    Ok(claimed.len())
}

#[derive(Debug, sqlx::FromRow)]
struct WorkedShiftRow {
    shift_id: Uuid,
    session_id: Uuid,
    agency_id: Uuid,
    host_id: Uuid,
    actual_start: DateTime<Utc>,
    actual_end: DateTime<Utc>,
    seconds: i64,
    terms_id: Option<Uuid>,
}

async fn accrue_hourly(db: &PgPool) -> Result<usize> {
    let mut tx = db.begin().await?;
    if !try_lock(&mut tx, 3).await? {
        return Ok(0);
    }
    let rows: Vec<WorkedShiftRow> = sqlx::query_as(
        "select sh.shift_id, sh.session_id, s.agency_id, sh.host_id, sh.actual_start, sh.actual_end,
                floor(extract(epoch from sh.actual_end - sh.actual_start))::bigint as seconds,
                terms_in_force(sh.session_id, sh.actual_start) as terms_id
           from shift sh join live_session s using (session_id)
          where sh.actual_end is not null
            and not exists (select 1 from commission_accrual a where a.kind = 'hourly' and a.source_id = sh.shift_id)
          order by sh.actual_end
          limit $1",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.shift_id).collect();
    let terms_ids: Vec<Option<Uuid>> = rows.iter().map(|r| r.terms_id).collect();
    let claimed = claim(&mut tx, "hourly", &ids, &terms_ids).await?;
    let terms = load_terms(&mut tx, &terms_ids).await?;
    let mut entries = Entries::default();
    for row in rows.iter().filter(|r| claimed.contains(&r.shift_id)) {
        let Some(t) = row.terms_id.and_then(|id| terms.get(&id)) else {
            continue;
        };
        let pay = commission::hourly(t.hourly_rate_minor, row.seconds);
        let split = commission::split(pay, i64::from(t.host_share_bps), true);
        let about = About {
            kind: "hourly",
            source: row.shift_id,
            agency: row.agency_id,
            session: row.session_id,
            order: None,
            refund: None,
            shift: Some(row.shift_id),
            terms: t.terms_id,
            currency: t.currency.clone(),
            detail: json!({
                "on_air_from": row.actual_start,
                "on_air_to": row.actual_end,
                "seconds": row.seconds,
                "hourly_rate_minor": t.hourly_rate_minor,
                "pay_minor": pay,
                "host_share_bps": t.host_share_bps,
            }),
            occurred: row.actual_end,
        };
        entries.push_split(&about, Some(row.host_id), split);
    }
    entries.insert(&mut tx).await?;
    tx.commit().await?;
    Ok(claimed.len())
}

#[derive(Debug, sqlx::FromRow)]
struct EndedSessionRow {
    session_id: Uuid,
    agency_id: Uuid,
    ended_at: DateTime<Utc>,
    terms_id: Option<Uuid>,
}

async fn accrue_slot_fees(db: &PgPool) -> Result<usize> {
    let mut tx = db.begin().await?;
    if !try_lock(&mut tx, 4).await? {
        return Ok(0);
    }
    let rows: Vec<EndedSessionRow> = sqlx::query_as(
        "select s.session_id, s.agency_id, s.ended_at,
                terms_in_force(s.session_id, coalesce(s.started_at, s.planned_start)) as terms_id
           from live_session s
          where s.status = 'ended' and s.ended_at is not null
            and not exists (select 1 from commission_accrual a
                             where a.kind = 'slot_fee' and a.source_id = s.session_id)
          order by s.ended_at
          limit $1",
    )
    .bind(BATCH)
    .fetch_all(&mut *tx)
    .await?;
    if rows.is_empty() {
        return Ok(0);
    }
    let ids: Vec<Uuid> = rows.iter().map(|r| r.session_id).collect();
    let terms_ids: Vec<Option<Uuid>> = rows.iter().map(|r| r.terms_id).collect();
    let claimed = claim(&mut tx, "slot_fee", &ids, &terms_ids).await?;
    let terms = load_terms(&mut tx, &terms_ids).await?;
    let worked: Vec<(Uuid, Uuid, i64)> = sqlx::query_as(
        "select session_id, host_id, sum(floor(extract(epoch from actual_end - actual_start)))::bigint
           from shift where session_id = any($1) and actual_end is not null
          group by session_id, host_id
          order by session_id, host_id",
    )
    .bind(&claimed)
    .fetch_all(&mut *tx)
    .await?;
    let mut entries = Entries::default();
    for row in rows.iter().filter(|r| claimed.contains(&r.session_id)) {
        let Some(t) = row.terms_id.and_then(|id| terms.get(&id)) else {
            continue;
        };
        let hosts: Vec<(Uuid, i64)> = worked
            .iter()
            .filter(|(s, _, _)| *s == row.session_id)
            .map(|(_, h, secs)| (*h, *secs))
            .collect();
        let (agency_part, host_parts) =
            commission::slot_fee(t.slot_fee_minor, i64::from(t.host_share_bps), &hosts);
        let about = About {
            kind: "slot_fee",
            source: row.session_id,
            agency: row.agency_id,
            session: row.session_id,
            order: None,
            refund: None,
            shift: None,
            terms: t.terms_id,
            currency: t.currency.clone(),
            detail: json!({
                "slot_fee_minor": t.slot_fee_minor,
                "host_share_bps": t.host_share_bps,
                "seconds_on_air": hosts.iter().map(|(h, s)| json!({"host_id": h, "seconds": s})).collect::<Vec<_>>(),
            }),
            occurred: row.ended_at,
        };
        entries.push(&about, "agency", None, agency_part);
        for (host, amount) in host_parts {
            entries.push(&about, "host", Some(host), amount);
        }
    }
    entries.insert(&mut tx).await?;
    tx.commit().await?;
    Ok(claimed.len())
}
