//! The commission ledger's writer: a worker on every node that, about once a
//! second, finds what has happened without entries yet — paid orders,
//! refunds and returns, shifts that ended, sessions that ended — and appends
//! the entries, with the terms in force at the time.
//!
//! It runs no SQL on other crates' tables: it reads its sources through
//! `hawker_commerce::sales` ([`paid_orders`], [`refunds`]) and
//! `hawker_agency::schedule` ([`ended_shifts`], [`ended_sessions`]), each
//! in (time, id) order, and the terms through `hawker_agency::terms`.
//!
//! Finding new work: `commission_accrual_cursor` keeps two positions per
//! kind. A pass reads on from the newest source it has read (*fresh*); that
//! alone would miss a source whose transaction stamped its time (`now()`,
//! the transaction's start) but committed after newer ones had been read. So
//! a second position (*settled*) trails a margin ([`MARGIN`], five minutes)
//! behind the database's clock: each stretch between the two is read once
//! more when it passes the margin, by when every transaction that could have
//! stamped a time in it has ended (hawker's are bounded by its statement and
//! idle-in-transaction timeouts, seconds). Each source is so read about
//! twice, never again and again.
//!
//! Exactly once, across nodes and restarts: each source event gets one
//! `commission_accrual` row (primary key `(kind, source_id)`) inserted in the
//! same transaction as its entries, and only the transaction whose insert
//! claimed the row writes them; `commission_entry_once` is a second guard.
//! Reading a source again (the sweep, a retry) therefore never accrues it
//! twice. The cursor moves in the same transaction, its row locked; a
//! transaction-scoped advisory lock per kind keeps nodes from doing the same
//! work at once (an optimisation, not what makes it correct).
//!
//! A clawback needs its sale's terms: a refund whose sale is not accrued yet
//! (paid and refunded between two passes, or paid in a transaction that
//! committed late) has its sale accrued first, in the same transaction.
//!
//! Which terms: a sale and its refunds use the terms in force when the order
//! was placed; a shift's hourly pay those in force when it went on air; the
//! slot fee those in force when the session went live.
//!
//! [`paid_orders`]: hawker_commerce::sales::paid_orders
//! [`refunds`]: hawker_commerce::sales::refunds
//! [`ended_shifts`]: hawker_agency::schedule::ended_shifts
//! [`ended_sessions`]: hawker_agency::schedule::ended_sessions

use std::collections::{HashMap, HashSet};
use std::ops::AddAssign;
use std::time::Duration;

use chrono::{DateTime, Utc};
use serde_json::json;
use sqlx::{PgPool, Postgres, Transaction};
use tokio_util::sync::CancellationToken;
use uuid::Uuid;

use crate::commission::{self, Split};
use hawker_agency::campaigns::Terms;
use hawker_agency::schedule::{self, EndedSession, EndedShift};
use hawker_agency::terms::{self, TermsAt};
use hawker_commerce::sales::{self, PaidOrder, RefundFact};
use hawker_core::error::{Error, Result};

/// Source events read per kind per transaction.
const BATCH: i64 = 500;
/// Transactions per kind per pass while there is more to read (catching up).
const STEPS_PER_PASS: usize = 8;
/// Advisory lock keys ("hawkagen" + kind).
const LOCK_BASE: i64 = 0x6861_776b_6167_0000;

/// How far behind the database's clock the sweep for late commits trails.
pub const MARGIN: Duration = Duration::from_secs(5 * 60);

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

impl AddAssign for Accrued {
    fn add_assign(&mut self, other: Accrued) {
        self.sales += other.sales;
        self.clawbacks += other.clawbacks;
        self.hourly += other.hourly;
        self.slot_fees += other.slot_fees;
    }
}

/// Runs [`accrue_within`] every `every` until `shutdown`.
pub async fn run(db: PgPool, every: Duration, margin: Duration, shutdown: CancellationToken) {
    let mut tick = hawker_core::ticks::interval(every);
    loop {
        tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => {}
        }
        // A pass stuck on an unreachable Postgres must not hold up shutdown.
        let pass = tokio::select! {
            _ = shutdown.cancelled() => return,
            pass = accrue_within(&db, margin) => pass,
        };
        match pass {
            Ok(done) if done.total() > 0 => tracing::debug!(?done, "commissions accrued"),
            Ok(_) => {}
            Err(e) => tracing::warn!(error = %e, "commission accrual failed; retrying next tick"),
        }
    }
}

/// One pass with the usual [`MARGIN`].
pub async fn accrue(db: &PgPool) -> Result<Accrued> {
    accrue_within(db, MARGIN).await
}

/// One pass over every kind, in dependency order (a clawback needs its
/// sale), re-reading for late commits up to `margin` behind the database's
/// clock. The margin must exceed the longest a transaction that stamps a
/// source's time can take to commit.
#[tracing::instrument(skip_all)]
pub async fn accrue_within(db: &PgPool, margin: Duration) -> Result<Accrued> {
    let margin = chrono::Duration::from_std(margin)
        .map_err(|_| Error::Internal(anyhow::anyhow!("accrual margin {margin:?} out of range")))?;
    let mut done = Accrued::default();
    for kind in Kind::ALL {
        for _ in 0..STEPS_PER_PASS {
            let step = step(db, kind, margin).await?;
            done += step.accrued;
            if !step.more {
                break;
            }
        }
    }
    Ok(done)
}

/// The kinds of source event, in the order a pass takes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Kind {
    Sale,
    Clawback,
    Hourly,
    SlotFee,
}

impl Kind {
    const ALL: [Kind; 4] = [Kind::Sale, Kind::Clawback, Kind::Hourly, Kind::SlotFee];

    fn name(self) -> &'static str {
        match self {
            Kind::Sale => "sale",
            Kind::Clawback => "clawback",
            Kind::Hourly => "hourly",
            Kind::SlotFee => "slot_fee",
        }
    }

    fn lock_key(self) -> i64 {
        LOCK_BASE
            + match self {
                Kind::Sale => 1,
                Kind::Clawback => 2,
                Kind::Hourly => 3,
                Kind::SlotFee => 4,
            }
    }
}

/// A position among a kind's sources: their time, then their id (the order
/// the owning crates return them in; `Uuid` orders like Postgres' `uuid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
struct Key {
    at: DateTime<Utc>,
    id: Uuid,
}

impl Key {
    fn new(at: DateTime<Utc>, id: Uuid) -> Key {
        Key { at, id }
    }

    fn pair(self) -> (DateTime<Utc>, Uuid) {
        (self.at, self.id)
    }
}

/// A kind's two positions (see the module's documentation); `None` is
/// before the first source.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
struct Cursor {
    /// The newest source read.
    fresh: Option<Key>,
    /// Every source before it is accrued.
    settled: Option<Key>,
}

impl Cursor {
    /// After a fresh read whose last source was `last`.
    fn read(self, last: Option<Key>) -> Cursor {
        Cursor {
            fresh: self.fresh.max(last),
            ..self
        }
    }

    /// Where the sweep stops (exclusive): `margin` behind the database's
    /// clock `now`, and not past what the fresh reads have covered. `None`:
    /// nothing to sweep.
    fn sweep_until(self, now: DateTime<Utc>, margin: chrono::Duration) -> Option<DateTime<Utc>> {
        let fresh = self.fresh?;
        let until = now.checked_sub_signed(margin)?.min(fresh.at);
        match self.settled {
            Some(settled) if settled.at >= until => None,
            _ => Some(until),
        }
    }

    /// After a sweep up to `until` whose last source was `last`: past
    /// everything before `until` unless the page was full.
    fn swept(self, until: DateTime<Utc>, full: bool, last: Option<Key>) -> Cursor {
        // The nil id is below every source's, so (until, nil) settles
        // everything stamped before `until` and nothing at it.
        let settled = if full {
            last
        } else {
            Some(Key::new(until, Uuid::nil()))
        };
        Cursor {
            settled: self.settled.max(settled),
            ..self
        }
    }
}

async fn try_lock(tx: &mut Transaction<'_, Postgres>, kind: Kind) -> Result<bool> {
    Ok(sqlx::query_scalar("select pg_try_advisory_xact_lock($1)")
        .bind(kind.lock_key())
        .fetch_one(&mut **tx)
        .await?)
}

#[derive(sqlx::FromRow)]
struct CursorRow {
    fresh_at: Option<DateTime<Utc>>,
    fresh_id: Option<Uuid>,
    settled_at: Option<DateTime<Utc>>,
    settled_id: Option<Uuid>,
    now: DateTime<Utc>,
}

/// The kind's cursor, locked for this transaction, and the database's clock.
async fn load_cursor(tx: &mut Transaction<'_, Postgres>, kind: Kind) -> Result<(Cursor, DateTime<Utc>)> {
    const SELECT: &str = "select fresh_at, fresh_id, settled_at, settled_id, now() as now
                            from commission_accrual_cursor where kind = $1 for update";
    let mut row: Option<CursorRow> = sqlx::query_as(SELECT)
        .bind(kind.name())
        .fetch_optional(&mut **tx)
        .await?;
    if row.is_none() {
        sqlx::query("insert into commission_accrual_cursor (kind) values ($1) on conflict do nothing")
            .bind(kind.name())
            .execute(&mut **tx)
            .await?;
        row = sqlx::query_as(SELECT)
            .bind(kind.name())
            .fetch_optional(&mut **tx)
            .await?;
    }
    let row = row.ok_or_else(|| Error::Internal(anyhow::anyhow!("no accrual cursor for {}", kind.name())))?;
    let key = |at: Option<DateTime<Utc>>, id: Option<Uuid>| Some(Key::new(at?, id?));
    Ok((
        Cursor {
            fresh: key(row.fresh_at, row.fresh_id),
            settled: key(row.settled_at, row.settled_id),
        },
        row.now,
    ))
}

async fn save_cursor(tx: &mut Transaction<'_, Postgres>, kind: Kind, cursor: Cursor) -> Result<()> {
    sqlx::query(
        "update commission_accrual_cursor
            set fresh_at = $2, fresh_id = $3, settled_at = $4, settled_id = $5, updated_at = now()
          where kind = $1",
    )
    .bind(kind.name())
    .bind(cursor.fresh.map(|k| k.at))
    .bind(cursor.fresh.map(|k| k.id))
    .bind(cursor.settled.map(|k| k.at))
    .bind(cursor.settled.map(|k| k.id))
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[derive(Debug, Default)]
struct Step {
    accrued: Accrued,
    /// A page was full: there may be more to read now.
    more: bool,
}

/// One transaction for one kind: a page of what is new, then a page of the
/// sweep for late commits, then the cursor moves.
async fn step(db: &PgPool, kind: Kind, margin: chrono::Duration) -> Result<Step> {
    let mut tx = db.begin().await?;
    if !try_lock(&mut tx, kind).await? {
        return Ok(Step::default());
    }
    let (cursor, now) = load_cursor(&mut tx, kind).await?;
    let fresh = read(&mut tx, kind, cursor.fresh, None).await?;
    let mut cursor = cursor.read(fresh.last);
    let mut done = Step {
        accrued: fresh.accrued,
        more: fresh.full,
    };
    if let Some(until) = cursor.sweep_until(now, margin) {
        let sweep = read(&mut tx, kind, cursor.settled, Some(until)).await?;
        let late = sweep.accrued.total();
        if late > 0 {
            tracing::info!(
                kind = kind.name(),
                late,
                "accrued sources that committed after newer ones"
            );
            metrics::counter!("hawker_commission_late_sources_total", "kind" => kind.name())
                .increment(late as u64);
        }
        done.accrued += sweep.accrued;
        done.more |= sweep.full;
        cursor = cursor.swept(until, sweep.full, sweep.last);
    }
    save_cursor(&mut tx, kind, cursor).await?;
    tx.commit().await?;
    Ok(done)
}

/// What reading one page of sources did.
struct Page {
    accrued: Accrued,
    /// The last source read.
    last: Option<Key>,
    /// As many as asked for: there may be more.
    full: bool,
}

impl Page {
    fn new<T>(rows: &[T], key: impl Fn(&T) -> Key, accrued: Accrued) -> Page {
        Page {
            accrued,
            last: rows.last().map(key),
            full: i64::try_from(rows.len()).unwrap_or(i64::MAX) >= BATCH,
        }
    }
}

/// Reads a page of the kind's sources after `after` (stamped before
/// `before`, if set) and accrues those not accrued yet.
async fn read(
    tx: &mut Transaction<'_, Postgres>,
    kind: Kind,
    after: Option<Key>,
    before: Option<DateTime<Utc>>,
) -> Result<Page> {
    let after = after.map(Key::pair);
    Ok(match kind {
        Kind::Sale => {
            let orders = sales::paid_orders(&mut **tx, after, before, BATCH).await?;
            let sales = accrue_sales(tx, &orders).await?;
            Page::new(
                &orders,
                |o| Key::new(o.paid_at, o.order_id),
                Accrued {
                    sales,
                    ..Accrued::default()
                },
            )
        }
        Kind::Clawback => {
            let refunds = sales::refunds(&mut **tx, after, before, BATCH).await?;
            let accrued = accrue_clawbacks(tx, &refunds).await?;
            Page::new(&refunds, |r| Key::new(r.created_at, r.refund_id), accrued)
        }
        Kind::Hourly => {
            let shifts = schedule::ended_shifts(&mut **tx, after, before, BATCH).await?;
            let hourly = accrue_hourly(tx, &shifts).await?;
            Page::new(
                &shifts,
                |s| Key::new(s.actual_end, s.shift_id),
                Accrued {
                    hourly,
                    ..Accrued::default()
                },
            )
        }
        Kind::SlotFee => {
            let sessions = schedule::ended_sessions(&mut **tx, after, before, BATCH).await?;
            let slot_fees = accrue_slot_fees(tx, &sessions).await?;
            Page::new(
                &sessions,
                |s| Key::new(s.ended_at, s.session_id),
                Accrued {
                    slot_fees,
                    ..Accrued::default()
                },
            )
        }
    })
}

/// Those of `sources` without a `commission_accrual` row of `kind` (committed).
async fn not_accrued(
    tx: &mut Transaction<'_, Postgres>,
    kind: Kind,
    sources: &[Uuid],
) -> Result<HashSet<Uuid>> {
    let done: HashSet<Uuid> = sqlx::query_scalar(
        "select source_id from commission_accrual where kind = $1 and source_id = any($2)",
    )
    .bind(kind.name())
    .bind(sources)
    .fetch_all(&mut **tx)
    .await?
    .into_iter()
    .collect();
    Ok(sources.iter().filter(|s| !done.contains(s)).copied().collect())
}

/// Claims source events; returns those this transaction claimed. A source
/// another transaction is claiming waits for it, and is not claimed if it
/// commits.
async fn claim(
    tx: &mut Transaction<'_, Postgres>,
    kind: Kind,
    sources: &[Uuid],
    terms: &[Option<Uuid>],
) -> Result<HashSet<Uuid>> {
    if sources.is_empty() {
        return Ok(HashSet::new());
    }
    let claimed: Vec<Uuid> = sqlx::query_scalar(
        "insert into commission_accrual (kind, source_id, terms_id)
         select $1, s, t from unnest($2::uuid[], $3::uuid[]) as u(s, t)
         order by s
         on conflict (kind, source_id) do nothing
         returning source_id",
    )
    .bind(kind.name())
    .bind(sources)
    .bind(terms)
    .fetch_all(&mut **tx)
    .await?;
    Ok(claimed.into_iter().collect())
}

/// The versions of terms named, by id.
async fn load_terms(
    tx: &mut Transaction<'_, Postgres>,
    ids: &[Option<Uuid>],
) -> Result<HashMap<Uuid, Terms>> {
    let mut ids: Vec<Uuid> = ids.iter().flatten().copied().collect();
    ids.sort();
    ids.dedup();
    Ok(terms::versions(&mut **tx, &ids)
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

/// Accrues the sales of those `orders` not accrued yet; returns how many
/// this transaction claimed.
async fn accrue_sales(tx: &mut Transaction<'_, Postgres>, orders: &[PaidOrder]) -> Result<usize> {
    let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
    let todo = not_accrued(tx, Kind::Sale, &ids).await?;
    let orders: Vec<&PaidOrder> = orders.iter().filter(|o| todo.contains(&o.order_id)).collect();
    if orders.is_empty() {
        return Ok(0);
    }
    let asks: Vec<TermsAt> = orders
        .iter()
        .map(|o| TermsAt {
            session_id: o.session_id,
            at: o.created_at,
        })
        .collect();
    let in_force = terms::in_force(&mut **tx, &asks).await?;
    let ids: Vec<Uuid> = orders.iter().map(|o| o.order_id).collect();
    let terms_ids: Vec<Option<Uuid>> = in_force.iter().map(|f| f.terms_id).collect();
    let claimed = claim(tx, Kind::Sale, &ids, &terms_ids).await?;
    let terms = load_terms(tx, &terms_ids).await?;
    let mut entries = Entries::default();
    for (order, found) in orders.iter().zip(&in_force) {
        if !claimed.contains(&order.order_id) {
            continue;
        }
        let Some(t) = found.terms_id.and_then(|id| terms.get(&id)) else {
            continue;
        };
        let split = commission::on_sale(
            order.amount_minor,
            i64::from(t.percent_bps),
            i64::from(t.host_share_bps),
            order.host_id.is_some(),
        );
        let about = About {
            kind: "sale",
            source: order.order_id,
            agency: found.agency_id,
            session: order.session_id,
            order: Some(order.order_id),
            refund: None,
            shift: None,
            terms: t.terms_id,
            currency: order.currency.clone(),
            detail: json!({
                "order_amount_minor": order.amount_minor,
                "percent_bps": t.percent_bps,
                "commission_minor": split.total(),
                "host_share_bps": t.host_share_bps,
            }),
            occurred: order.paid_at,
        };
        entries.push_split(&about, order.host_id, split);
    }
    entries.insert(tx).await?;
    Ok(claimed.len())
}

/// The terms each of these orders' sales was accrued with (`None`: no terms
/// were in force), for those whose sale is accrued.
async fn sale_terms(
    tx: &mut Transaction<'_, Postgres>,
    order_ids: &[Uuid],
) -> Result<HashMap<Uuid, Option<Uuid>>> {
    let rows: Vec<(Uuid, Option<Uuid>)> = sqlx::query_as(
        "select source_id, terms_id from commission_accrual where kind = 'sale' and source_id = any($1)",
    )
    .bind(order_ids)
    .fetch_all(&mut **tx)
    .await?;
    Ok(rows.into_iter().collect())
}

/// Accrues the clawbacks of those `refunds` not accrued yet, and first the
/// sales of their orders that are not; returns how many of each this
/// transaction claimed.
async fn accrue_clawbacks(tx: &mut Transaction<'_, Postgres>, refunds: &[RefundFact]) -> Result<Accrued> {
    let ids: Vec<Uuid> = refunds.iter().map(|r| r.refund_id).collect();
    let todo = not_accrued(tx, Kind::Clawback, &ids).await?;
    let refunds: Vec<&RefundFact> = refunds.iter().filter(|r| todo.contains(&r.refund_id)).collect();
    if refunds.is_empty() {
        return Ok(Accrued::default());
    }
    let mut order_ids: Vec<Uuid> = refunds.iter().map(|r| r.order_id).collect();
    order_ids.sort();
    order_ids.dedup();
    let mut sale_terms = sale_terms(tx, &order_ids).await?;
    let unaccrued: Vec<Uuid> = order_ids
        .iter()
        .filter(|o| !sale_terms.contains_key(o))
        .copied()
        .collect();
    let mut sales = 0;
    if !unaccrued.is_empty() {
        let orders = sales::paid_orders_by_id(&mut **tx, &unaccrued).await?;
        sales = accrue_sales(tx, &orders).await?;
        sale_terms.extend(self::sale_terms(tx, &unaccrued).await?);
    }
    let mut sessions: Vec<Uuid> = refunds.iter().map(|r| r.session_id).collect();
    sessions.sort();
    sessions.dedup();
    let agencies: HashMap<Uuid, Uuid> = schedule::session_agencies(&mut **tx, &sessions)
        .await?
        .into_iter()
        .collect();
    // Commerce refunds paid orders only, so every order here has a sale.
    let (refunds, unpaid): (Vec<&RefundFact>, Vec<&RefundFact>) = refunds
        .into_iter()
        .partition(|r| sale_terms.contains_key(&r.order_id));
    for r in unpaid {
        tracing::warn!(refund_id = %r.refund_id, order_id = %r.order_id, "a refund of an order never paid: nothing to claw back");
    }
    let ids: Vec<Uuid> = refunds.iter().map(|r| r.refund_id).collect();
    let terms_ids: Vec<Option<Uuid>> = refunds
        .iter()
        .map(|r| sale_terms.get(&r.order_id).copied().flatten())
        .collect();
    let claimed = claim(tx, Kind::Clawback, &ids, &terms_ids).await?;
    let terms = load_terms(tx, &terms_ids).await?;
    let mut entries = Entries::default();
    for (row, terms_id) in refunds.iter().zip(&terms_ids) {
        if !claimed.contains(&row.refund_id) {
            continue;
        }
        let Some(t) = terms_id.and_then(|id| terms.get(&id)) else {
            continue;
        };
        let agency = *agencies.get(&row.session_id).ok_or(Error::NotFound("session"))?;
        let split = commission::clawback(
            row.order_amount_minor,
            row.refunded_before_minor,
            row.amount_minor,
            i64::from(t.percent_bps),
            i64::from(t.host_share_bps),
            row.host_id.is_some(),
        );
        let about = About {
            kind: "clawback",
            source: row.refund_id,
            agency,
            session: row.session_id,
            order: Some(row.order_id),
            refund: Some(row.refund_id),
            shift: None,
            terms: t.terms_id,
            currency: row.currency.clone(),
            detail: json!({
                "refund_kind": row.kind,
                "refund_amount_minor": row.amount_minor,
                "refunded_before_minor": row.refunded_before_minor,
                "order_amount_minor": row.order_amount_minor,
                "percent_bps": t.percent_bps,
                "commission_minor": split.total(),
                "host_share_bps": t.host_share_bps,
            }),
            occurred: row.created_at,
        };
        entries.push_split(&about, row.host_id, split);
    }
    entries.insert(tx).await?;
    Ok(Accrued {
        sales,
        clawbacks: claimed.len(),
        ..Accrued::default()
    })
}

/// Accrues the hourly pay of those `shifts` not accrued yet.
async fn accrue_hourly(tx: &mut Transaction<'_, Postgres>, shifts: &[EndedShift]) -> Result<usize> {
    let ids: Vec<Uuid> = shifts.iter().map(|s| s.shift_id).collect();
    let todo = not_accrued(tx, Kind::Hourly, &ids).await?;
    let shifts: Vec<&EndedShift> = shifts.iter().filter(|s| todo.contains(&s.shift_id)).collect();
    if shifts.is_empty() {
        return Ok(0);
    }
    let asks: Vec<TermsAt> = shifts
        .iter()
        .map(|s| TermsAt {
            session_id: s.session_id,
            at: s.actual_start,
        })
        .collect();
    let in_force = terms::in_force(&mut **tx, &asks).await?;
    let ids: Vec<Uuid> = shifts.iter().map(|s| s.shift_id).collect();
    let terms_ids: Vec<Option<Uuid>> = in_force.iter().map(|f| f.terms_id).collect();
    let claimed = claim(tx, Kind::Hourly, &ids, &terms_ids).await?;
    let terms = load_terms(tx, &terms_ids).await?;
    let mut entries = Entries::default();
    for (row, terms_id) in shifts.iter().zip(&terms_ids) {
        if !claimed.contains(&row.shift_id) {
            continue;
        }
        let Some(t) = terms_id.and_then(|id| terms.get(&id)) else {
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
    entries.insert(tx).await?;
    Ok(claimed.len())
}

/// Accrues the slot fees of those `sessions` not accrued yet.
async fn accrue_slot_fees(tx: &mut Transaction<'_, Postgres>, sessions: &[EndedSession]) -> Result<usize> {
    let ids: Vec<Uuid> = sessions.iter().map(|s| s.session_id).collect();
    let todo = not_accrued(tx, Kind::SlotFee, &ids).await?;
    let sessions: Vec<&EndedSession> = sessions.iter().filter(|s| todo.contains(&s.session_id)).collect();
    if sessions.is_empty() {
        return Ok(0);
    }
    let asks: Vec<TermsAt> = sessions
        .iter()
        .map(|s| TermsAt {
            session_id: s.session_id,
            at: s.started_at.unwrap_or(s.planned_start),
        })
        .collect();
    let in_force = terms::in_force(&mut **tx, &asks).await?;
    let ids: Vec<Uuid> = sessions.iter().map(|s| s.session_id).collect();
    let terms_ids: Vec<Option<Uuid>> = in_force.iter().map(|f| f.terms_id).collect();
    let claimed = claim(tx, Kind::SlotFee, &ids, &terms_ids).await?;
    let terms = load_terms(tx, &terms_ids).await?;
    let claimed_ids: Vec<Uuid> = ids.iter().filter(|id| claimed.contains(id)).copied().collect();
    let worked = if claimed_ids.is_empty() {
        Vec::new()
    } else {
        schedule::seconds_on_air(&mut **tx, &claimed_ids).await?
    };
    let mut entries = Entries::default();
    for (row, terms_id) in sessions.iter().zip(&terms_ids) {
        if !claimed.contains(&row.session_id) {
            continue;
        }
        let Some(t) = terms_id.and_then(|id| terms.get(&id)) else {
            continue;
        };
        let hosts: Vec<(Uuid, i64)> = worked
            .iter()
            .filter(|w| w.session_id == row.session_id)
            .map(|w| (w.host_id, w.seconds))
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
    entries.insert(tx).await?;
    Ok(claimed.len())
}

#[cfg(test)]
mod tests {
    use super::*;
    use chrono::TimeZone;

    fn t(secs: i64) -> DateTime<Utc> {
        Utc.timestamp_opt(1_800_000_000 + secs, 0)
            .single()
            .unwrap_or_default()
    }

    fn key(secs: i64, id: u128) -> Key {
        Key::new(t(secs), Uuid::from_u128(id))
    }

    const MARGIN_300: chrono::Duration = chrono::Duration::seconds(300);

    #[test]
    fn keys_order_by_time_then_id_and_none_comes_first() {
        assert!(key(1, 9) < key(2, 1));
        assert!(key(2, 1) < key(2, 2));
        assert!(None < Some(key(0, 0)));
        // The nil id is below every real id at the same time.
        assert!(Key::new(t(5), Uuid::nil()) < key(5, 1));
    }

    #[test]
    fn a_fresh_read_only_moves_the_fresh_position_forward() {
        let c = Cursor::default().read(Some(key(10, 1)));
        assert_eq!(c.fresh, Some(key(10, 1)));
        assert_eq!(c.settled, None);
        // An empty page leaves it; so would an older key (it cannot happen, but never go back).
        assert_eq!(c.read(None), c);
        assert_eq!(c.read(Some(key(5, 1))), c);
        assert_eq!(c.read(Some(key(10, 2))).fresh, Some(key(10, 2)));
    }

    #[test]
    fn nothing_is_swept_before_anything_was_read() {
        assert_eq!(Cursor::default().sweep_until(t(1_000), MARGIN_300), None);
    }

    #[test]
    fn the_sweep_trails_the_clock_by_the_margin_and_never_passes_the_fresh_position() {
        let read = Cursor::default().read(Some(key(1_000, 1)));
        // The clock is far ahead: stop at the fresh position.
        assert_eq!(read.sweep_until(t(5_000), MARGIN_300), Some(t(1_000)));
        // The clock is close: stop a margin behind it.
        assert_eq!(read.sweep_until(t(1_100), MARGIN_300), Some(t(800)));
        // Settled up to there already: nothing to do.
        let settled = read.swept(t(800), false, None);
        assert_eq!(settled.sweep_until(t(1_100), MARGIN_300), None);
        assert_eq!(settled.sweep_until(t(1_101), MARGIN_300), Some(t(801)));
    }

    #[test]
    fn a_short_sweep_settles_everything_before_its_end_and_a_full_one_up_to_its_last_source() {
        let c = Cursor::default().read(Some(key(1_000, 1)));
        let short = c.swept(t(700), false, Some(key(650, 3)));
        assert_eq!(short.settled, Some(Key::new(t(700), Uuid::nil())));
        assert_eq!(short.fresh, c.fresh);
        let full = c.swept(t(700), true, Some(key(650, 3)));
        assert_eq!(full.settled, Some(key(650, 3)));
        // Never backwards.
        assert_eq!(short.swept(t(600), false, None).settled, short.settled);
    }

    /// Sources stamped at `stamp` become visible at `visible`; the pass at
    /// each second reads what is visible then, like the worker, and every
    /// source must be read while its key is in a window some read covers.
    #[test]
    fn late_commits_within_the_margin_are_read_by_the_sweep() {
        // (stamp, visible from, id): the second was stamped at 100 but
        // committed at 160, after the third (stamped 120) had been read; the
        // fourth committed 270 s after its stamp, after the fifth was read.
        let sources = [
            (90, 90, 1u128),
            (100, 160, 2),
            (120, 120, 3),
            (130, 400, 4),
            (140, 140, 5),
        ];
        let margin = chrono::Duration::seconds(60);
        let mut cursor = Cursor::default();
        let mut seen: Vec<u128> = Vec::new();
        let visible = |now: i64, after: Option<Key>, before: Option<DateTime<Utc>>| -> Vec<Key> {
            let mut keys: Vec<Key> = sources
                .iter()
                .filter(|(_, v, _)| *v <= now)
                .map(|(s, _, id)| key(*s, *id))
                .filter(|k| after.is_none_or(|a| *k > a) && before.is_none_or(|b| k.at < b))
                .collect();
            keys.sort();
            keys
        };
        for now in 0..600 {
            let fresh = visible(now, cursor.fresh, None);
            seen.extend(fresh.iter().map(|k| k.id.as_u128()));
            cursor = cursor.read(fresh.last().copied());
            if let Some(until) = cursor.sweep_until(t(now), margin) {
                let swept = visible(now, cursor.settled, Some(until));
                seen.extend(swept.iter().map(|k| k.id.as_u128()));
                cursor = cursor.swept(until, false, swept.last().copied());
            }
        }
        seen.sort();
        seen.dedup();
        // Source 4 took longer than the 60 s margin: missed (hence a margin
        // far above any transaction's length).
        assert_eq!(seen, vec![1, 2, 3, 5]);
    }
}
